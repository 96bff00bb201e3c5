/// What a blocked process waits on: the label of its wait-for edges in
/// reports, errors and drawings. The detector never interprets it; the set of
/// processes waited for (`Wait.waitingFor`) is what makes the edges.
///
/// A new blocking primitive either adds a case here (and a tag in
/// `DeadlockMessage`'s codec) or uses `other(kind:id:)`.
public enum Resource: Sendable, Hashable, CustomStringConvertible {
    /// A distributed lock: waits for its holder and for those queued ahead.
    case lock(UInt64)
    /// A barrier: waits for every participant that has not arrived yet.
    case barrier(UInt64)
    /// A receive from one named sender that has not sent yet.
    case receive(from: UInt64)
    /// Waiting for another process to exit.
    case exit(of: UInt64)
    /// Any other primitive: a short kind (at most `maxKindBytes` of UTF-8) and an id.
    case other(kind: String, id: UInt64)

    public static let maxKindBytes = 64

    public var description: String {
        switch self {
        case .lock(let id): "lock \(id)"
        case .barrier(let id): "barrier \(id)"
        case .receive(let from): "receive from pid \(from)"
        case .exit(let pid): "exit of pid \(pid)"
        case .other(let kind, let id): "\(kind) \(id)"
        }
    }
}

/// One blocked call of one process: "process `waiter` is in its wait number
/// `sequence`, on `resource`, and cannot go on until every process in
/// `waitingFor` has acted" (the AND model: each of them must act — release,
/// arrive, send, exit — before the wait can end).
///
/// `(waiter, sequence)` is the identity of a wait. Sequence numbers of one
/// process strictly increase over its whole life (migration included) and are
/// never reused, so a message that names an ended wait is recognisably stale.
public struct Wait: Sendable, Hashable {
    /// The blocked process's global PID.
    public var waiter: UInt64
    public var sequence: UInt64
    /// The processes whose action this wait needs. The waiter itself is never
    /// a member: a process cannot wait for itself in this model (see
    /// `DeadlockDetector` on lost lock replies), and the detector drops it.
    public var waitingFor: Set<UInt64>
    public var resource: Resource

    public init(waiter: UInt64, sequence: UInt64, waitingFor: Set<UInt64>, resource: Resource) {
        self.waiter = waiter
        self.sequence = sequence
        self.waitingFor = waitingFor
        self.resource = resource
    }
}

/// One process on a probe's path or a detected cycle: who it was, which wait
/// (and which version of that wait's edge set) it was in when the probe passed,
/// where it ran and what it waited on. Its edge goes to the next hop (the last
/// hop's to the first).
public struct Hop: Sendable, Hashable, CustomStringConvertible {
    public var pid: UInt64
    public var sequence: UInt64
    /// Bumped by the detector each time the wait's set of processes changes,
    /// so `(sequence, version)` names one unchanged set of edges.
    public var version: UInt64
    /// The node the process ran on (at most `maxNodeBytes` of UTF-8).
    public var node: String
    public var resource: Resource

    public static let maxNodeBytes = 255

    public init(pid: UInt64, sequence: UInt64, version: UInt64, node: String, resource: Resource) {
        self.pid = pid
        self.sequence = sequence
        self.version = version
        self.node = node
        self.resource = resource
    }

    /// "pid 7@node-a".
    public var label: String { "pid \(pid)@\(node)" }
    public var description: String { "\(label) (wait \(sequence).\(version), \(resource))" }
}
