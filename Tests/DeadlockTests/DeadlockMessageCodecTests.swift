import Testing
import Wire
@testable import Deadlock

@Suite struct DeadlockMessageCodecTests {
    static func randomResource(using rng: inout SplitMix64) -> Resource {
        let id = UInt64.random(in: 0...UInt64.max, using: &rng) >> UInt64.random(in: 0...63, using: &rng)
        switch Int.random(in: 0..<5, using: &rng) {
        case 0: return .lock(id)
        case 1: return .barrier(id)
        case 2: return .receive(from: id)
        case 3: return .exit(of: id)
        default: return .other(kind: ["cond", "sémaphore", "", "rw-lock"].randomElement(using: &rng)!, id: id)
        }
    }

    static func randomPath(using rng: inout SplitMix64) -> [Hop] {
        let pids = Array(Set((0..<Int.random(in: 1...12, using: &rng)).map { _ in UInt64.random(in: 0...50, using: &rng) }))
        return pids.map { pid in
            Hop(pid: pid, sequence: UInt64.random(in: 0...1000, using: &rng), version: UInt64.random(in: 0...5, using: &rng),
                node: ["node-a", "", "ñode \"b\"", String(repeating: "x", count: Hop.maxNodeBytes)].randomElement(using: &rng)!,
                resource: randomResource(using: &rng))
        }
    }

    static func randomMessage(using rng: inout SplitMix64) -> DeadlockMessage {
        let path = randomPath(using: &rng)
        if Bool.random(using: &rng) {
            return .probe(Probe(initiator: path[0].pid, sequence: path[0].sequence, round: UInt32.random(in: 0...9, using: &rng), path: path))
        }
        return .confirm(Confirm(cycle: path, index: Int.random(in: 1...path.count, using: &rng)))
    }

    @Test func roundTrips() throws {
        var rng = SplitMix64(seed: 1)
        for _ in 0..<500 {
            let message = Self.randomMessage(using: &rng)
            #expect(try DeadlockMessage(decoding: message.encoded()) == message)
        }
    }

    @Test func everyTruncationIsRejected() {
        var rng = SplitMix64(seed: 2)
        for _ in 0..<50 {
            let bytes = Self.randomMessage(using: &rng).encoded()
            for n in 0..<bytes.count {
                #expect(throws: WireError.self) { try DeadlockMessage(decoding: Array(bytes.prefix(n))) }
            }
            #expect(throws: WireError.self) { try DeadlockMessage(decoding: bytes + [0]) }
        }
    }

    /// Random bytes and mutated encodings never crash the decoder; whatever it
    /// accepts encodes back to the same bytes.
    @Test func fuzzedInputNeverCrashes() {
        var rng = SplitMix64(seed: 3)
        var accepted = 0
        for i in 0..<20_000 {
            var bytes: [UInt8]
            if i % 2 == 0 {
                bytes = (0..<Int.random(in: 0...96, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if !bytes.isEmpty, Bool.random(using: &rng) { bytes[0] = UInt8.random(in: 1...2, using: &rng) }
            } else {
                bytes = Self.randomMessage(using: &rng).encoded()
                for _ in 0..<Int.random(in: 1...3, using: &rng) {
                    let at = Int.random(in: 0..<bytes.count, using: &rng)
                    switch Int.random(in: 0..<3, using: &rng) {
                    case 0: bytes[at] = UInt8.random(in: 0...255, using: &rng)
                    case 1: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: at)
                    default: if bytes.count > 1 { bytes.remove(at: at) }
                    }
                }
            }
            if let message = try? DeadlockMessage(decoding: bytes) {
                accepted += 1
                #expect(message.encoded() == bytes)
            }
        }
        #expect(accepted > 0)
    }

    @Test func boundsAndContentsAreChecked() throws {
        let hop = Hop(pid: 1, sequence: 1, version: 0, node: "a", resource: .lock(1))
        func probe(_ path: [Hop]) -> [UInt8] {
            DeadlockMessage.probe(Probe(initiator: path[0].pid, sequence: path[0].sequence, round: 1, path: path)).encoded()
        }
        // A path longer than the bound, however many bytes follow.
        var w = ByteWriter()
        w.u8(2); w.u32(1); w.u32(4097)
        #expect(throws: WireError.oversized(what: "path", length: 4097, limit: 4096)) { try DeadlockMessage(decoding: w.bytes) }
        // A path count the input cannot hold is rejected before allocating.
        var huge = ByteWriter()
        huge.u8(2); huge.u32(1); huge.u32(4000)
        #expect(throws: WireError.self) { try DeadlockMessage(decoding: huge.bytes) }
        // Input over the byte bound.
        #expect(throws: WireError.self) { try DeadlockMessage(decoding: [UInt8](repeating: 0, count: 100), limits: .init(maxBytes: 99)) }
        // A node name over its bound.
        var long = hop
        long.node = String(repeating: "n", count: Hop.maxNodeBytes + 1)
        #expect(throws: WireError.self) { try DeadlockMessage(decoding: probe([long])) }
        // A process twice on a path.
        #expect(throws: WireError.self) { try DeadlockMessage(decoding: probe([hop, hop])) }
        // A probe whose path does not start at its initiator.
        var other = hop
        other.pid = 2
        let wrong = DeadlockMessage.probe(Probe(initiator: 1, sequence: 1, round: 1, path: [other])).encoded()
        #expect(throws: WireError.self) { try DeadlockMessage(decoding: wrong) }
        // A confirm index off its cycle.
        for index in [0, 2] {
            let bad = DeadlockMessage.confirm(Confirm(cycle: [hop], index: index)).encoded()
            #expect(throws: WireError.self) { try DeadlockMessage(decoding: bad) }
        }
        // The full-length path is accepted.
        let full = (0..<4096).map { Hop(pid: UInt64($0), sequence: 0, version: 0, node: "", resource: .exit(of: 1)) }
        #expect(try DeadlockMessage(decoding: probe(full)) == .probe(Probe(initiator: 0, sequence: 0, round: 1, path: full)))
    }
}
