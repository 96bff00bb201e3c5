import Wire

/// A probe of edge chasing: started by `initiator` in its wait `sequence`
/// (attempt `round` of that wait), forwarded by blocked processes along their
/// wait-for edges; `path` lists every process it passed, the initiator first.
public struct Probe: Sendable, Hashable {
    public var initiator: UInt64
    public var sequence: UInt64
    public var round: UInt32
    public var path: [Hop]

    public init(initiator: UInt64, sequence: UInt64, round: UInt32, path: [Hop]) {
        self.initiator = initiator
        self.sequence = sequence
        self.round = round
        self.path = path
    }
}

/// The confirmation pass over a cycle a probe closed: `cycle` is the probe's
/// path (the initiator, who is the victim, first) and the message is for
/// `cycle[index % cycle.count]`; it went around once when `index == cycle.count`.
public struct Confirm: Sendable, Hashable {
    public var cycle: [Hop]
    public var index: Int

    public init(cycle: [Hop], index: Int) {
        self.cycle = cycle
        self.index = index
    }

    /// The process this message is for.
    public var recipient: UInt64 { cycle[index % cycle.count].pid }
}

/// The messages detectors send each other.
///
/// Encoding (little-endian, `Wire.ByteWriter`): a tag byte (1 probe, 2
/// confirm), then
/// - probe: initiator u64, sequence u64, round u32, path;
/// - confirm: index u32, path;
/// where a path is a u32 hop count and the hops, and a hop is pid u64,
/// sequence u64, version u64, node (u32 length + UTF-8), resource (a tag byte:
/// 1 lock, 2 barrier, 3 receive, 4 exit — each with a u64 — or 5 other with a
/// kind string and a u64).
///
/// Decoding rejects, with a `WireError` and before allocating for them, inputs
/// longer than `Limits.maxBytes`, paths longer than `Limits.maxPath`, strings
/// over their bounds, unknown tags, truncation and trailing bytes; and, as
/// malformed, paths naming a process twice, a probe whose path does not start
/// at its initiator's wait, and a confirm whose index is not on its cycle.
public enum DeadlockMessage: Sendable, Hashable {
    case probe(Probe)
    case confirm(Confirm)

    public struct Limits: Sendable, Equatable {
        /// Longest path (number of processes) a message may carry.
        public var maxPath: Int
        /// Longest encoded message.
        public var maxBytes: Int

        public init(maxPath: Int = 4096, maxBytes: Int = 2 << 20) {
            self.maxPath = maxPath
            self.maxBytes = maxBytes
        }
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 64)
        switch self {
        case .probe(let p):
            w.u8(1)
            w.u64(p.initiator)
            w.u64(p.sequence)
            w.u32(p.round)
            Self.write(p.path, to: &w)
        case .confirm(let c):
            w.u8(2)
            w.u32(UInt32(clamping: c.index))
            Self.write(c.cycle, to: &w)
        }
        return w.bytes
    }

    public init(decoding bytes: [UInt8], limits: Limits = Limits()) throws(WireError) {
        guard bytes.count <= limits.maxBytes else {
            throw .oversized(what: "deadlock message", length: bytes.count, limit: limits.maxBytes)
        }
        var r = ByteReader(bytes)
        switch try r.u8("deadlock message tag") {
        case 1:
            let initiator = try r.u64("probe initiator")
            let sequence = try r.u64("probe sequence")
            let round = try r.u32("probe round")
            let path = try Self.readPath(&r, limits: limits)
            guard path[0].pid == initiator, path[0].sequence == sequence else {
                throw .malformed("probe path starts at \(path[0]), not at the initiator's wait \(initiator)/\(sequence)")
            }
            self = .probe(Probe(initiator: initiator, sequence: sequence, round: round, path: path))
        case 2:
            let index = Int(try r.u32("confirm index"))
            let cycle = try Self.readPath(&r, limits: limits)
            guard (1...cycle.count).contains(index) else {
                throw .malformed("confirm index \(index) outside 1...\(cycle.count)")
            }
            self = .confirm(Confirm(cycle: cycle, index: index))
        case let tag:
            throw .malformed("unknown deadlock message tag \(tag)")
        }
        try r.expectEnd("deadlock message")
    }

    static func write(_ path: [Hop], to w: inout ByteWriter) {
        w.u32(UInt32(clamping: path.count))
        for hop in path {
            w.u64(hop.pid)
            w.u64(hop.sequence)
            w.u64(hop.version)
            w.string(hop.node)
            switch hop.resource {
            case .lock(let id): w.u8(1); w.u64(id)
            case .barrier(let id): w.u8(2); w.u64(id)
            case .receive(let from): w.u8(3); w.u64(from)
            case .exit(let pid): w.u8(4); w.u64(pid)
            case .other(let kind, let id): w.u8(5); w.string(kind); w.u64(id)
            }
        }
    }

    /// Smallest encoded hop: three u64, an empty node, a resource tag and its u64.
    static let minHopBytes = 8 * 3 + 4 + 1 + 8

    static func readPath(_ r: inout ByteReader, limits: Limits) throws(WireError) -> [Hop] {
        let count = Int(try r.u32("path length"))
        guard count <= limits.maxPath else { throw .oversized(what: "path", length: count, limit: limits.maxPath) }
        guard count > 0 else { throw .malformed("empty path") }
        guard count * minHopBytes <= r.remaining else { throw .truncated(what: "path of \(count) hops") }
        var path: [Hop] = []
        path.reserveCapacity(count)
        var seen = Set<UInt64>(minimumCapacity: count)
        for _ in 0..<count {
            let pid = try r.u64("hop pid")
            let sequence = try r.u64("hop sequence")
            let version = try r.u64("hop version")
            let node = try r.string("hop node", limit: Hop.maxNodeBytes)
            let resource: Resource
            switch try r.u8("resource tag") {
            case 1: resource = .lock(try r.u64("lock id"))
            case 2: resource = .barrier(try r.u64("barrier id"))
            case 3: resource = .receive(from: try r.u64("sender"))
            case 4: resource = .exit(of: try r.u64("exiting pid"))
            case 5:
                let kind = try r.string("resource kind", limit: Resource.maxKindBytes)
                resource = .other(kind: kind, id: try r.u64("resource id"))
            case let tag: throw .malformed("unknown resource tag \(tag)")
            }
            guard seen.insert(pid).inserted else { throw .malformed("path names pid \(pid) twice") }
            path.append(Hop(pid: pid, sequence: sequence, version: version, node: node, resource: resource))
        }
        return path
    }
}
