import Cluster
import Testing
import Wire

/// The launcher/node/process control messages: every kind round-trips, and
/// the decoder refuses truncated, mutated and random payloads with an error.
@Suite struct ControlMessageTests {
    static let samples: [ControlMessage] = [
        .spawn(SpawnRequest(job: "job-1", rank: 2, size: 4, pid: 77, program: "/bin/echo", arguments: ["a", "b c"],
                            environment: ["PLEXUS_RANK": "2", "X": ""], workingDirectory: "/tmp")),
        .spawn(SpawnRequest(job: "job-1", rank: 0, size: 1, pid: 78, program: "cat", arguments: [],
                            environment: [:], workingDirectory: "/", standardInput: true)),
        .spawned(rank: 3, osPID: 4242),
        .spawnFailed(rank: 1, reason: "not found"),
        .output(rank: 0, stream: 2, bytes: Array("hello\n".utf8)),
        .exited(rank: 1, osPID: 9, status: .signaled(9)),
        .exited(rank: 1, osPID: 9, status: .exited(3)),
        .killJob(graceMillis: 250),
        .killJob(graceMillis: 250, except: [0, 3]),
        .finalized(rank: 2),
        .statusRequest,
        .reportRequest,
        .status(ProcessStatus(rank: 1, waits: [.init(target: .barrier(7), millis: 31_000), .init(target: .lock(3), millis: 5),
                                               .init(target: .page(12), millis: 40)],
                              heldLocks: [4], managedLocks: [(lock: 1, holder: 0)])),
        .register(rank: 2, pid: 1 << 40, address: "127.0.0.1:4000"),
        .directory([DirectoryEntry(rank: 0, pid: 5, address: "a:1"), DirectoryEntry(rank: 1, pid: 6, address: "b:2")]),
        .nodeJoin(address: "10.0.0.1:7400"),
        .nodeMembers(["10.0.0.1:7400", "10.0.0.2:7400"]),
        .processReport(rank: 1, json: Array("{}".utf8)),
        .peerLost(rank: 0, lost: 1, reason: "reset"),
        .nodeInfoRequest,
        .nodeInfo(names: []),
        .nodeInfo(names: ["127.0.0.1:7401", "127.0.0.1:7402"]),
        .input(rank: 0, bytes: Array("data\n".utf8), end: false),
        .input(rank: 3, bytes: [], end: true),
        .input(rank: 1, bytes: [UInt8](repeating: 7, count: ControlMessage.maxInputChunk), end: true),
        .inputCredit(rank: 2, bytes: 65_536),
    ]

    @Test(arguments: samples)
    func roundTrips(_ message: ControlMessage) throws {
        let decoded = try ControlMessage(frame: message.frame())
        #expect(decoded == message)
    }

    @Test(arguments: samples)
    func truncatedPayloadsAreRefused(_ message: ControlMessage) {
        let frame = message.frame()
        for cut in 0..<frame.payload.count {
            let short = Frame(frame.kind, payload: Array(frame.payload.prefix(cut)))
            #expect(throws: WireError.self, "\(message.kind) cut at \(cut)") { try ControlMessage(frame: short) }
        }
    }

    @Test func mutatedAndRandomPayloadsNeverCrash() {
        var rng = SystemRandomNumberGenerator()
        var refused = 0
        for i in 0..<20_000 {
            let base = Self.samples[i % Self.samples.count].frame()
            var payload = base.payload
            if i % 2 == 0, !payload.isEmpty {
                for _ in 0...(Int(rng.next() as UInt8) % 4) {
                    payload[Int(rng.next() as UInt32) % payload.count] = rng.next()
                }
            } else {
                payload = (0..<Int(rng.next() as UInt8)).map { _ in rng.next() }
            }
            do { _ = try ControlMessage(frame: Frame(base.kind, payload: payload)) } catch { refused += 1 }
        }
        #expect(refused > 0)
    }

    /// Standard input is bounded on the wire: no chunk above
    /// `maxInputChunk`, no credit above the window, no flag but 0 or 1.
    @Test func oversizedOrMalformedInputIsRefused() {
        var chunk = ByteWriter()
        chunk.u32(0); chunk.u8(0); chunk.blob([UInt8](repeating: 1, count: ControlMessage.maxInputChunk + 1))
        #expect(throws: WireError.self) { try ControlMessage(frame: Frame(.input, payload: chunk.bytes)) }
        var claimed = ByteWriter()
        claimed.u32(0); claimed.u8(1); claimed.u32(1 << 30)
        #expect(throws: WireError.self) { try ControlMessage(frame: Frame(.input, payload: claimed.bytes)) }
        var flag = ByteWriter()
        flag.u32(0); flag.u8(2); flag.blob([])
        #expect(throws: WireError.self) { try ControlMessage(frame: Frame(.input, payload: flag.bytes)) }
        var credit = ByteWriter()
        credit.u32(0); credit.u32(UInt32(ControlMessage.inputWindow + 1))
        #expect(throws: WireError.self) { try ControlMessage(frame: Frame(.inputCredit, payload: credit.bytes)) }
    }

    @Test func anOversizedNameServiceListIsRefused() {
        var w = ByteWriter()
        w.u32(1 << 30)
        #expect(throws: WireError.self) { try ControlMessage(frame: Frame(.nodeInfo, payload: w.bytes)) }
    }
}
