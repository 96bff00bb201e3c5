/// Values of the replicated name service: identifiers, records, commands,
/// queries, results and errors. `NameServiceState` defines their semantics;
/// `NameCodec.swift` their byte encoding.

/// A cluster-wide process id, issued once by the name service and never reused.
public struct GlobalPID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (lhs: GlobalPID, rhs: GlobalPID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "pid \(rawValue)" }
}

/// A lease: a TTL that a holder keeps alive; ephemeral names and processes
/// bound to it go away when it expires.
public struct LeaseID: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public static func < (lhs: LeaseID, rhs: LeaseID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "lease \(rawValue)" }
}

public enum ProcessState: UInt8, Equatable, Sendable, CaseIterable, CustomStringConvertible {
    case starting = 0, running = 1, migrating = 2, exited = 3, lost = 4

    /// Exited and lost are final.
    public var isTerminal: Bool { self == .exited || self == .lost }

    public var description: String {
        switch self {
        case .starting: "starting"
        case .running: "running"
        case .migrating: "migrating"
        case .exited: "exited"
        case .lost: "lost"
        }
    }
}

/// One row of the global process table.
public struct ProcessRecord: Equatable, Sendable {
    public var pid: GlobalPID
    /// Node the process currently runs on.
    public var node: String
    /// Transport address peers use to reach it (changes on migration).
    public var address: String
    public var state: ProcessState
    public var parent: GlobalPID?
    /// Start time from the command (the proposer's clock), never read locally.
    public var startTimeMillis: UInt64
    public var exitStatus: Int32?
    /// Lease whose expiry marks this process lost.
    public var lease: LeaseID?

    public init(pid: GlobalPID, node: String, address: String, state: ProcessState, parent: GlobalPID?,
                startTimeMillis: UInt64, exitStatus: Int32?, lease: LeaseID?) {
        self.pid = pid
        self.node = node
        self.address = address
        self.state = state
        self.parent = parent
        self.startTimeMillis = startTimeMillis
        self.exitStatus = exitStatus
        self.lease = lease
    }
}

/// A name in the hierarchical namespace.
public struct NameEntry: Equatable, Sendable {
    /// Absolute path, e.g. "/jobs/42/rank-0".
    public var name: String
    public var value: [UInt8]
    /// 1 at creation, +1 on every change; the compare-and-set token.
    public var version: UInt64
    public var createRevision: UInt64
    public var modRevision: UInt64
    /// Set for an ephemeral name: deleted when this lease ends.
    public var lease: LeaseID?

    public init(name: String, value: [UInt8], version: UInt64, createRevision: UInt64, modRevision: UInt64, lease: LeaseID?) {
        self.name = name
        self.value = value
        self.version = version
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.lease = lease
    }
}

public struct Lease: Equatable, Sendable {
    public var id: LeaseID
    public var ttlMillis: UInt64
    /// In the leader's clock (see `NameServiceState` on the clock assumption).
    public var expiresAtMillis: UInt64
    public var names: Set<String>
    public var pids: Set<GlobalPID>

    public init(id: LeaseID, ttlMillis: UInt64, expiresAtMillis: UInt64, names: Set<String> = [], pids: Set<GlobalPID> = []) {
        self.id = id
        self.ttlMillis = ttlMillis
        self.expiresAtMillis = expiresAtMillis
        self.names = names
        self.pids = pids
    }
}

/// One change, as recorded in the bounded event log watchers read.
public struct WatchEvent: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case nameCreated(NameEntry)
        case nameUpdated(NameEntry)
        /// `lease` is set when the name went away because that lease ended.
        case nameDeleted(name: String, lease: LeaseID?)
        /// A process was registered or changed state/location.
        case processChanged(ProcessRecord)
        case processReaped(GlobalPID)
        case leaseEnded(LeaseID, expired: Bool)
    }
    public var revision: UInt64
    public var kind: Kind

    public init(revision: UInt64, kind: Kind) {
        self.revision = revision
        self.kind = kind
    }

    /// The name this event is about, if any (for prefix filters).
    public var name: String? {
        switch kind {
        case .nameCreated(let entry), .nameUpdated(let entry): entry.name
        case .nameDeleted(let name, _): name
        case .processChanged, .processReaped, .leaseEnded: nil
        }
    }
}

/// A state-changing request. Times are given by the proposer (the leader's
/// clock for lease commands); the state machine never reads a clock.
public enum NameCommand: Equatable, Sendable {
    /// Issue a fresh PID and register the process as starting.
    case allocatePID(node: String, address: String, parent: GlobalPID?, startTimeMillis: UInt64, lease: LeaseID?)
    /// Move a process to running, migrating or lost.
    case setProcessState(pid: GlobalPID, state: ProcessState)
    /// Record a process's new location (end of a migration).
    case rebindProcess(pid: GlobalPID, node: String, address: String)
    case exitProcess(pid: GlobalPID, status: Int32)
    /// Remove an exited or lost process from the table (its PID stays used).
    case reapProcess(pid: GlobalPID)
    /// Fails if the name exists.
    case create(name: String, value: [UInt8], lease: LeaseID?)
    /// Creates `prefix` + a 10-digit counter kept per parent directory.
    case createSequential(prefix: String, value: [UInt8], lease: LeaseID?)
    /// Creates or overwrites.
    case put(name: String, value: [UInt8], lease: LeaseID?)
    /// Overwrites only if the current version equals `expectedVersion`.
    case compareAndSet(name: String, expectedVersion: UInt64, value: [UInt8])
    /// Deletes; with `expectedVersion`, only if it matches.
    case delete(name: String, expectedVersion: UInt64?)
    case grantLease(ttlMillis: UInt64, nowMillis: UInt64)
    case keepAlive(lease: LeaseID, nowMillis: UInt64)
    case revokeLease(lease: LeaseID)
    /// Proposed by the leader when its clock passes lease deadlines.
    case expireLeases(nowMillis: UInt64)
    /// Proposed by a new leader at term start: every deadline becomes now + TTL.
    case renewAllLeases(nowMillis: UInt64)
}

/// Successful outcome of a command.
public enum NameOutput: Equatable, Sendable {
    case allocated(GlobalPID)
    case process(ProcessRecord)
    case reaped(GlobalPID)
    /// The entry as written (its `name` is the generated one for sequential names).
    case written(NameEntry)
    case deleted(name: String, revision: UInt64)
    case lease(id: LeaseID, ttlMillis: UInt64, expiresAtMillis: UInt64)
    case leaseRevoked(LeaseID)
    case leasesExpired([LeaseID])
    case leasesRenewed(count: UInt64)
}

/// Why a command or query failed. Each message names the PID, name or lease.
public enum NameError: Error, Equatable, Sendable, CustomStringConvertible {
    /// `create` of a name that exists; read it or CAS it instead.
    case nameExists(String)
    /// The name does not exist.
    case nameNotFound(String)
    /// CAS or conditional delete lost a race; re-read and retry.
    case versionMismatch(name: String, expected: UInt64, found: UInt64)
    /// The path is not absolute, has empty/dot components, is too long, etc.
    case invalidName(String, reason: String)
    /// The lease expired, was revoked or never existed.
    case leaseNotFound(LeaseID)
    case processNotFound(GlobalPID)
    /// The requested process state change is not allowed.
    case invalidTransition(pid: GlobalPID, from: ProcessState, to: ProcessState)
    /// A request older than the client's latest; its result is gone.
    case staleRequest(clientID: UInt64, requestID: UInt64, latest: UInt64)
    /// A watch asked for events that fell out of the bounded event log.
    case compacted(requested: UInt64, oldestAvailable: UInt64)
    /// A field out of range (message says which).
    case invalidArgument(String)
    /// The log entry did not decode as a command.
    case malformedCommand(String)

    public var description: String {
        switch self {
        case .nameExists(let name): "name exists: \(name)"
        case .nameNotFound(let name): "not found: \(name)"
        case .versionMismatch(let name, let expected, let found): "version mismatch on \(name): expected \(expected) found \(found)"
        case .invalidName(let name, let reason): "invalid name \"\(name)\": \(reason)"
        case .leaseNotFound(let lease): "\(lease) not found"
        case .processNotFound(let pid): "\(pid) not found"
        case .invalidTransition(let pid, let from, let to): "\(pid) cannot go from \(from) to \(to)"
        case .staleRequest(let client, let request, let latest): "client \(client) request \(request) is older than its latest request \(latest)"
        case .compacted(let requested, let oldest): "revision \(requested) compacted, restart from \(oldest)"
        case .invalidArgument(let what): "invalid argument: \(what)"
        case .malformedCommand(let why): "malformed command: \(why)"
        }
    }
}

public typealias NameResult = Result<NameOutput, NameError>

/// A read, answered from the local state after a read-index confirmation.
public enum NameQuery: Equatable, Sendable {
    case process(GlobalPID)
    case get(name: String)
    case children(of: String)
    case watch(fromRevision: UInt64, prefix: String?, limit: UInt64)
    case lease(LeaseID)
    /// Process-table rows with PID > `after`, ascending, at most `limit` (a page
    /// of `plexus ps`; continue from the last PID returned).
    case processes(after: GlobalPID, limit: UInt64)
}

/// One child of a directory in a listing.
public struct ChildName: Equatable, Sendable {
    /// Full path of the child.
    public var name: String
    /// True if the child itself is a stored name (not only an implicit directory).
    public var isEntry: Bool
    /// True if names exist below the child.
    public var hasChildren: Bool

    public init(name: String, isEntry: Bool, hasChildren: Bool) {
        self.name = name
        self.isEntry = isEntry
        self.hasChildren = hasChildren
    }
}

/// Events from a watch position.
public struct WatchBatch: Equatable, Sendable {
    public var events: [WatchEvent]
    /// Pass as `fromRevision` to continue.
    public var nextRevision: UInt64

    public init(events: [WatchEvent], nextRevision: UInt64) {
        self.events = events
        self.nextRevision = nextRevision
    }
}

public enum NameQueryOutput: Equatable, Sendable {
    case process(ProcessRecord)
    case entry(NameEntry)
    case children([ChildName])
    case events(WatchBatch)
    case lease(Lease)
    case processes([ProcessRecord])
}

public typealias NameQueryResult = Result<NameQueryOutput, NameError>
