/// Data types shared by `RaftCore` and its engine: identifiers, log entries,
/// persistent state, wire messages, the `RaftReady` output batch and the status
/// and quorum reports a client-facing layer reads.
///
/// Everything here is a plain value (`Sendable`, `Equatable`); nothing performs
/// I/O. Byte encodings live in `RaftCodec.swift`.

// MARK: - Identifiers

/// Identity of one name-service replica (a node daemon that holds a copy of the
/// replicated log). Replicas are addressed by this id, never by host:port; the
/// engine maps ids to transport addresses.
public struct ReplicaID: Hashable, Comparable, Sendable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    public var rawValue: UInt64

    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public init(integerLiteral value: UInt64) { self.rawValue = value }

    public static func < (lhs: ReplicaID, rhs: ReplicaID) -> Bool { lhs.rawValue < rhs.rawValue }
    public var description: String { "r\(rawValue)" }
}

// MARK: - Log

/// What a log entry carries.
public enum EntryPayload: Equatable, Sendable {
    /// Appended by every new leader at the start of its term (Raft §8, "a blank
    /// no-op entry"), so that it can commit entries of earlier terms (§5.4.2) and
    /// serve read-index reads.
    case noop
    /// A client command for the state machine. `clientID`/`requestID` let the
    /// state machine deduplicate retried requests (Raft dissertation §6.3).
    case command(clientID: UInt64, requestID: UInt64, data: [UInt8])
    /// The complete new voting membership, sorted ascending. Differs from the
    /// previous configuration by exactly one replica (dissertation §4.1) and takes
    /// effect as soon as it is appended to a log, committed or not. `context`
    /// is the engine's data about it (member addresses, the request that made
    /// it), carried unchanged into later snapshots.
    case configuration(members: [ReplicaID], context: ConfigurationContext = ConfigurationContext())
}

/// What the engine attaches to a configuration entry; the core does not
/// interpret it beyond the request ids, and carries it into every snapshot
/// taken while the configuration is the latest, so that a replica restarted
/// from disk, or one that joined later, knows it too.
public struct ConfigurationContext: Equatable, Sendable {
    /// Where each member can be reached, in the engine's notation (for Plexus
    /// "IP:PORT"). The dissertation's AddServer carries the new server's
    /// address (§4.1); keeping every member's here lets members that started
    /// before a replica existed dial it.
    public var addresses: [ReplicaID: String]
    /// The client request that made the change (0, 0 for none), so that a
    /// retried request is answered with the first attempt's entry (exactly
    /// once, dissertation §6.3) instead of "already a member".
    public var clientID: UInt64
    public var requestID: UInt64

    public init(addresses: [ReplicaID: String] = [:], clientID: UInt64 = 0, requestID: UInt64 = 0) {
        self.addresses = addresses
        self.clientID = clientID
        self.requestID = requestID
    }

    public var isEmpty: Bool { addresses.isEmpty && clientID == 0 && requestID == 0 }
}

/// One entry of the replicated log. Indexes start at 1; index 0 with term 0 is
/// the empty prefix that every log shares.
public struct LogEntry: Equatable, Sendable {
    public var index: UInt64
    public var term: UInt64
    public var payload: EntryPayload

    public init(index: UInt64, term: UInt64, payload: EntryPayload) {
        self.index = index
        self.term = term
        self.payload = payload
    }
}

/// The state that must be on stable storage before a replica answers an RPC
/// (Raft Figure 2, "Persistent state on all servers"). The log entries and
/// snapshot are persisted separately (see `RaftReady`).
public struct HardState: Equatable, Sendable {
    /// `currentTerm`.
    public var term: UInt64
    /// `votedFor` in `term`, or nil.
    public var votedFor: ReplicaID?

    public init(term: UInt64 = 0, votedFor: ReplicaID? = nil) {
        self.term = term
        self.votedFor = votedFor
    }
}

/// A state-machine snapshot that replaces the log prefix up to and including
/// `lastIncludedIndex` (Raft §7).
public struct RaftSnapshot: Equatable, Sendable {
    public var lastIncludedIndex: UInt64
    public var lastIncludedTerm: UInt64
    /// The configuration in effect at `lastIncludedIndex` (§7: "the latest
    /// configuration as of lastIncludedIndex").
    public var members: [ReplicaID]
    /// Opaque state-machine bytes (for Plexus, `NameServiceState.snapshotBytes()`).
    public var data: [UInt8]
    /// The context of the configuration `members` came from.
    public var context: ConfigurationContext

    public init(lastIncludedIndex: UInt64, lastIncludedTerm: UInt64, members: [ReplicaID], data: [UInt8],
                context: ConfigurationContext = ConfigurationContext()) {
        self.lastIncludedIndex = lastIncludedIndex
        self.lastIncludedTerm = lastIncludedTerm
        self.members = members
        self.data = data
        self.context = context
    }
}

/// What survives a crash: the input to `RaftCore.init(configuration:persisted:)`.
/// It is exactly the result of performing, in order, the persist part of every
/// `RaftReady` the core returned.
public struct RaftPersistentState: Equatable, Sendable {
    public var hardState: HardState
    public var snapshot: RaftSnapshot?
    /// Contiguous entries following the snapshot (or starting at index 1).
    public var entries: [LogEntry]

    public init(hardState: HardState = HardState(), snapshot: RaftSnapshot? = nil, entries: [LogEntry] = []) {
        self.hardState = hardState
        self.snapshot = snapshot
        self.entries = entries
    }

    /// Performs the persist part of `ready` in the order the contract requires:
    /// snapshot (dropping entries it covers), truncation, append, hard state.
    /// A reference storage implementation, used by tests and the simulator.
    public mutating func persist(_ ready: RaftReady) {
        if let snapshot = ready.snapshot {
            self.snapshot = snapshot
            entries.removeAll { $0.index <= snapshot.lastIncludedIndex }
        }
        if let from = ready.logTruncateFrom {
            entries.removeAll { $0.index >= from }
        }
        entries.append(contentsOf: ready.entriesToAppend)
        if let hardState = ready.hardState { self.hardState = hardState }
    }
}

// MARK: - Messages

/// RequestVote (Raft §5.2, Figure 2), also used for pre-vote (dissertation §9.6).
public struct VoteRequest: Equatable, Sendable {
    /// The candidate's term, or for a pre-vote the term it would campaign in.
    public var term: UInt64
    public var lastLogIndex: UInt64
    public var lastLogTerm: UInt64
    public var isPreVote: Bool

    public init(term: UInt64, lastLogIndex: UInt64, lastLogTerm: UInt64, isPreVote: Bool) {
        self.term = term
        self.lastLogIndex = lastLogIndex
        self.lastLogTerm = lastLogTerm
        self.isPreVote = isPreVote
    }
}

public struct VoteResponse: Equatable, Sendable {
    /// The voter's term; for a granted pre-vote the term that was asked for.
    public var term: UInt64
    public var granted: Bool
    public var isPreVote: Bool

    public init(term: UInt64, granted: Bool, isPreVote: Bool) {
        self.term = term
        self.granted = granted
        self.isPreVote = isPreVote
    }
}

/// AppendEntries (Raft §5.3, Figure 2); an empty one is a heartbeat.
public struct AppendEntries: Equatable, Sendable {
    public var term: UInt64
    public var prevLogIndex: UInt64
    public var prevLogTerm: UInt64
    public var entries: [LogEntry]
    public var leaderCommit: UInt64
    /// Read-index round this message belongs to; echoed in the response so the
    /// leader knows which pending reads a majority has confirmed (dissertation §6.4).
    public var readSequence: UInt64

    public init(term: UInt64, prevLogIndex: UInt64, prevLogTerm: UInt64, entries: [LogEntry], leaderCommit: UInt64, readSequence: UInt64) {
        self.term = term
        self.prevLogIndex = prevLogIndex
        self.prevLogTerm = prevLogTerm
        self.entries = entries
        self.leaderCommit = leaderCommit
        self.readSequence = readSequence
    }
}

public struct AppendResponse: Equatable, Sendable {
    public var term: UInt64
    public var success: Bool
    /// On success, the follower's match index: the last index known to equal the
    /// leader's log. On rejection, the next index the leader should try (the
    /// "conflicting term" optimisation sketched at the end of Raft §5.3).
    public var index: UInt64
    public var readSequence: UInt64

    public init(term: UInt64, success: Bool, index: UInt64, readSequence: UInt64) {
        self.term = term
        self.success = success
        self.index = index
        self.readSequence = readSequence
    }
}

/// InstallSnapshot (Raft §7, Figure 13), sent in one piece (no `offset`/`done`
/// chunking: the engine's transport frames large messages).
public struct InstallSnapshot: Equatable, Sendable {
    public var term: UInt64
    public var snapshot: RaftSnapshot
    public var readSequence: UInt64

    public init(term: UInt64, snapshot: RaftSnapshot, readSequence: UInt64) {
        self.term = term
        self.snapshot = snapshot
        self.readSequence = readSequence
    }
}

public struct SnapshotResponse: Equatable, Sendable {
    public var term: UInt64
    /// The follower's match index after handling the snapshot.
    public var matchIndex: UInt64
    public var readSequence: UInt64

    public init(term: UInt64, matchIndex: UInt64, readSequence: UInt64) {
        self.term = term
        self.matchIndex = matchIndex
        self.readSequence = readSequence
    }
}

/// Every message replicas exchange.
public enum RaftMessage: Equatable, Sendable {
    case voteRequest(VoteRequest)
    case voteResponse(VoteResponse)
    case appendEntries(AppendEntries)
    case appendResponse(AppendResponse)
    case installSnapshot(InstallSnapshot)
    case snapshotResponse(SnapshotResponse)

    public var term: UInt64 {
        switch self {
        case .voteRequest(let m): m.term
        case .voteResponse(let m): m.term
        case .appendEntries(let m): m.term
        case .appendResponse(let m): m.term
        case .installSnapshot(let m): m.term
        case .snapshotResponse(let m): m.term
        }
    }
}

/// A message to hand to the transport.
public struct RaftOutgoing: Equatable, Sendable {
    public var to: ReplicaID
    public var message: RaftMessage

    public init(to: ReplicaID, message: RaftMessage) {
        self.to = to
        self.message = message
    }
}

// MARK: - Client-visible outcomes

/// Why the core refused a proposal or a read.
public enum RaftRejection: Error, Equatable, Sendable, CustomStringConvertible {
    /// This replica is not the leader; retry at `leaderHint` if known.
    case notLeader(leaderHint: ReplicaID?)
    /// No leader can be reached and this replica cannot see a majority.
    case noQuorum(QuorumReport)
    /// A configuration change is still uncommitted, or the leader has not yet
    /// committed an entry of its term; retry shortly.
    case configurationChangeInProgress
    /// The requested membership change is not a single-server change.
    case invalidConfigurationChange(String)
    /// The leader stepped down before the read was confirmed; retry elsewhere.
    case leadershipLost

    public var description: String {
        switch self {
        case .notLeader(let hint): "not the leader" + (hint.map { "; leader is \($0)" } ?? "; leader unknown")
        case .noQuorum(let report): report.description
        case .configurationChangeInProgress: "a configuration change is in progress"
        case .invalidConfigurationChange(let why): "invalid configuration change: \(why)"
        case .leadershipLost: "leadership lost before the request completed"
        }
    }
}

/// The answer to `onPropose`/`onProposeMembershipChange`.
public struct ProposalOutcome: Equatable, Sendable {
    public enum Result: Equatable, Sendable {
        /// Appended to the leader's log; the result is known once this index is
        /// applied with the same term (a different term at that index means the
        /// entry was lost in a leader change and must be retried).
        case appended(index: UInt64, term: UInt64)
        case rejected(RaftRejection)
    }
    public var clientID: UInt64
    public var requestID: UInt64
    public var result: Result

    public init(clientID: UInt64, requestID: UInt64, result: Result) {
        self.clientID = clientID
        self.requestID = requestID
        self.result = result
    }
}

/// The answer to `onReadIndex` (dissertation §6.4): once the local state machine
/// has applied `index`, a read of it is linearizable.
public struct ReadState: Equatable, Sendable {
    public enum Result: Equatable, Sendable {
        case ready(index: UInt64)
        case rejected(RaftRejection)
    }
    public var requestID: UInt64
    public var result: Result

    public init(requestID: UInt64, result: Result) {
        self.requestID = requestID
        self.result = result
    }
}

/// A single-server membership change (dissertation §4.1).
public enum MembershipChange: Equatable, Sendable {
    case add(ReplicaID)
    case remove(ReplicaID)

    public var replica: ReplicaID {
        switch self {
        case .add(let id), .remove(let id): id
        }
    }
}

// MARK: - Ready

/// One effect of a `RaftCore` input, in the order the engine must perform them.
public enum RaftEffect: Equatable, Sendable {
    /// Durably store the snapshot and drop persisted entries at or below its
    /// index. If `restoreStateMachine`, the snapshot came from the leader and the
    /// state machine must be replaced by `snapshot.data` before applying more.
    case persistSnapshot(RaftSnapshot, restoreStateMachine: Bool)
    /// Durably delete persisted entries with index >= the given one.
    case truncateLog(from: UInt64)
    /// Durably append entries (contiguous, following the persisted log).
    case appendLog([LogEntry])
    /// Durably store term and vote.
    case persistHardState(HardState)
    /// Send only after every persist effect of the same batch is durable.
    case send(RaftOutgoing)
    /// Apply a committed entry to the state machine, in order.
    case apply(LogEntry)
    /// Answer a read-index request.
    case confirmRead(ReadState)
    /// Tell a proposer what happened to its proposal.
    case proposal(ProposalOutcome)
}

/// Everything one input produced (etcd-io/raft's `Ready`). The engine must:
///  1. make `snapshot`, `logTruncateFrom`, `entriesToAppend` and `hardState`
///     durable (fsync) — in that order for the log;
///  2. then send `messages`;
///  3. then apply `committedEntries` in order (after restoring `snapshot` if
///     `restoresStateMachine`);
///  4. then answer `readStates` once the state machine has applied their index,
///     and report `proposalOutcomes`.
/// The core treats `committedEntries` as applied once returned.
public struct RaftReady: Equatable, Sendable {
    public var hardState: HardState?
    public var snapshot: RaftSnapshot?
    public var restoresStateMachine: Bool = false
    public var logTruncateFrom: UInt64?
    public var entriesToAppend: [LogEntry] = []
    public var messages: [RaftOutgoing] = []
    public var committedEntries: [LogEntry] = []
    public var readStates: [ReadState] = []
    public var proposalOutcomes: [ProposalOutcome] = []

    public init() {}

    /// True when the engine has nothing to do.
    public var isEmpty: Bool {
        hardState == nil && snapshot == nil && logTruncateFrom == nil && entriesToAppend.isEmpty
            && messages.isEmpty && committedEntries.isEmpty && readStates.isEmpty && proposalOutcomes.isEmpty
    }

    /// True when something must be made durable before `messages` are sent.
    public var mustPersist: Bool {
        hardState != nil || snapshot != nil || logTruncateFrom != nil || !entriesToAppend.isEmpty
    }

    /// The batch as a flat list in execution order.
    public var effects: [RaftEffect] {
        var out: [RaftEffect] = []
        if let snapshot { out.append(.persistSnapshot(snapshot, restoreStateMachine: restoresStateMachine)) }
        if let logTruncateFrom { out.append(.truncateLog(from: logTruncateFrom)) }
        if !entriesToAppend.isEmpty { out.append(.appendLog(entriesToAppend)) }
        if let hardState { out.append(.persistHardState(hardState)) }
        out += messages.map { .send($0) }
        out += committedEntries.map { .apply($0) }
        out += readStates.map { .confirmRead($0) }
        out += proposalOutcomes.map { .proposal($0) }
        return out
    }

    /// Records a log truncation so that "truncate, then append" stays equivalent
    /// to the sequence of operations the core performed.
    mutating func recordTruncate(from index: UInt64) {
        if let first = entriesToAppend.first, index > first.index {
            entriesToAppend.removeAll { $0.index >= index }
        } else {
            entriesToAppend.removeAll()
            logTruncateFrom = Swift.min(logTruncateFrom ?? index, index)
        }
    }
}

// MARK: - Status

public enum RaftRole: String, Equatable, Sendable {
    case follower, preCandidate, candidate, leader
}

/// Whether this replica can currently serve, from its own point of view.
public struct QuorumReport: Equatable, Sendable, CustomStringConvertible {
    public enum State: Equatable, Sendable {
        /// This replica leads and heard from a majority within an election timeout.
        case leading
        /// This replica follows `leader`, heard from within two election timeouts.
        case following(ReplicaID)
        /// No leader yet, but for less than two election timeouts.
        case electing
        /// Leader without a recent majority, or no leader for longer than two
        /// election timeouts: a minority must refuse writes and reads.
        case noQuorum
    }
    public var state: State
    /// Members (this replica included, if a member) heard from within one
    /// election timeout.
    public var reachable: Int
    /// Voting members in this replica's configuration.
    public var members: Int
    /// Majority size ⌊members/2⌋+1.
    public var needed: Int

    public init(state: State, reachable: Int, members: Int, needed: Int) {
        self.state = state
        self.reachable = reachable
        self.members = members
        self.needed = needed
    }

    public var hasQuorum: Bool {
        switch state {
        case .leading, .following: true
        case .electing, .noQuorum: false
        }
    }

    public var description: String {
        switch state {
        case .leading: "leading: \(reachable) of \(members) replicas reachable, \(needed) needed"
        case .following(let leader): "following \(leader)"
        case .electing: "electing: \(reachable) of \(members) replicas reachable, \(needed) needed"
        case .noQuorum: "no quorum: \(reachable) of \(members) replicas reachable, \(needed) needed"
        }
    }
}

public struct RaftStatus: Equatable, Sendable {
    public var id: ReplicaID
    public var role: RaftRole
    public var term: UInt64
    public var leader: ReplicaID?
    public var commitIndex: UInt64
    public var appliedIndex: UInt64
    public var lastLogIndex: UInt64
    public var snapshotIndex: UInt64
    public var members: [ReplicaID]
    public var quorum: QuorumReport
}

// MARK: - Configuration and randomness

public struct RaftConfiguration: Equatable, Sendable {
    public var id: ReplicaID
    /// Membership used when neither the log nor a snapshot holds a configuration
    /// entry: the founding replicas list all founders; a replica that will be
    /// added later passes [] and learns its configuration from the leader.
    public var bootstrapMembers: [ReplicaID]
    /// Base election timeout; each wait is drawn uniformly from [T, 2T) (Raft §5.2).
    public var electionTimeoutTicks: Int
    /// Leader heartbeat period; must be well below the election timeout.
    public var heartbeatIntervalTicks: Int
    /// Pre-vote phase (dissertation §9.6): a partitioned replica does not inflate
    /// terms and disrupt the cluster when it returns.
    public var preVote: Bool
    /// Leader steps down without a majority heard within an election timeout, and
    /// followers ignore votes while they have a live leader (dissertation §6.2, §4.2.3).
    public var checkQuorum: Bool
    /// Upper bound on entries in one AppendEntries.
    public var maxEntriesPerMessage: Int
    /// Seed of the generator that randomises election timeouts.
    public var randomSeed: UInt64

    public init(
        id: ReplicaID,
        bootstrapMembers: [ReplicaID],
        electionTimeoutTicks: Int = 10,
        heartbeatIntervalTicks: Int = 2,
        preVote: Bool = true,
        checkQuorum: Bool = true,
        maxEntriesPerMessage: Int = 64,
        randomSeed: UInt64 = 0
    ) {
        precondition(electionTimeoutTicks > heartbeatIntervalTicks && heartbeatIntervalTicks > 0,
                     "election timeout must exceed the heartbeat interval")
        precondition(maxEntriesPerMessage > 0)
        self.id = id
        self.bootstrapMembers = bootstrapMembers.sorted()
        self.electionTimeoutTicks = electionTimeoutTicks
        self.heartbeatIntervalTicks = heartbeatIntervalTicks
        self.preVote = preVote
        self.checkQuorum = checkQuorum
        self.maxEntriesPerMessage = maxEntriesPerMessage
        self.randomSeed = randomSeed
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): a small seeded generator so that a core
/// and a simulation are reproducible from one number.
public struct SeededGenerator: RandomNumberGenerator, Equatable, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
