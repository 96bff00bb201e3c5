// NamesCore is the pure core of the name service (Raft and the replicated state machine: values in, effects out, no I/O); NameService is its shell.

/// RaftCore — the consensus core of the Plexus name service.
///
/// Implements Raft: D. Ongaro and J. Ousterhout, "In Search of an Understandable
/// Consensus Algorithm (Extended Version)", 2014 (cited as §N), and where the
/// paper is silent, D. Ongaro, "Consensus: Bridging Theory and Practice", PhD
/// dissertation, 2014 (cited as "dissertation §N"). The shape follows
/// etcd-io/raft: a value type fed one input at a time that returns its effects
/// as data; it never touches sockets, threads, clocks, logging or global
/// randomness.
///
/// Driving the core (compare etcd-io/raft `doc.go`):
///
///     var core = RaftCore(configuration: config, persisted: storage.load())
///     loop {
///         let ready = core.onTick()            // or onMessage / onPropose / onReadIndex / onCompact
///         storage.persist(ready); fsync        // snapshot, truncate, append, hard state
///         transport.send(ready.messages)       // only after the fsync
///         stateMachine.apply(ready.committedEntries)
///         answer(ready.readStates) when applied >= index; report(ready.proposalOutcomes)
///     }
///
/// Thread safety: a `RaftCore` is a plain value; one engine (an actor or a
/// single thread) owns it and feeds it inputs one at a time.
///
/// Terminology (paper → here):
///  - currentTerm / votedFor → `term` / `votedFor`, persisted as `HardState`
///  - nextIndex[] / matchIndex[] → `Progress.next` / `Progress.match`
///  - lastIncludedIndex/Term → `RaftSnapshot.lastIncludedIndex/Term`
///  - election timeout → `electionTimeoutTicks`, randomised in [T, 2T) per wait
///  - ReadIndex (dissertation §6.4) → `onReadIndex` + `ReadState`
///  - AddServer/RemoveServer (dissertation §4.1) → `onProposeMembershipChange`
///
/// Deviations and why:
///  - Time is a tick count, not wall time: the engine calls `onTick` on a timer,
///    so tests and the simulator control time exactly.
///  - Pre-vote (dissertation §9.6) and check-quorum (§6.2) are on by default:
///    a minority leader steps down within one election timeout, so a partitioned
///    minority stops serving; followers that heard from a leader within the
///    election timeout ignore vote requests (dissertation §4.2.3).
///  - AppendEntries rejections carry a hint (the first index of the conflicting
///    term, or the follower's log end) instead of backing up one index at a
///    time (the optimisation sketched at the end of §5.3).
///  - `nextIndex` advances optimistically when entries are sent; every heartbeat
///    resends from `matchIndex + 1`, which doubles as retransmission of lost
///    appends (the paper leaves retry policy open: "retries indefinitely").
///  - InstallSnapshot is sent whole, not in chunks (the transport frames it).
///  - The core assumes committed entries returned in a `RaftReady` are applied
///    before the next input (etcd-io/raft's `Advance` is implicit).
///  - Membership change is single-server only (dissertation §4.1), with the
///    fix from the raft-dev "bug in single-server membership changes" post: a
///    leader accepts a change only after it has committed an entry of its own
///    term, and only one uncommitted change at a time. A leader that removes
///    itself keeps leading, not counting itself in majorities, until the
///    change commits, then steps down (dissertation §4.2.2).
///  - Commit index is not persisted; after a restart it is rediscovered from
///    the leader (it starts at the snapshot index). Applied index is volatile
///    too: the state machine is rebuilt from the snapshot and re-applied.
public struct RaftCore: Sendable {
    public let configuration: RaftConfiguration

    var log: RaftLog
    /// The latest snapshot, kept to send to lagging followers (§7).
    var snapshot: RaftSnapshot?
    var term: UInt64
    var votedFor: ReplicaID?
    var role: RaftRole = .follower
    var leader: ReplicaID?
    var commitIndex: UInt64
    var appliedIndex: UInt64
    /// Voting members, sorted; the latest configuration in the log (§4.1: in
    /// effect once appended), else the snapshot's, else the bootstrap members.
    var members: [ReplicaID] = []
    /// Index of the entry that defined `members` (0 for bootstrap).
    var configurationIndex: UInt64 = 0

    /// Ticks since start; the only clock.
    var now: UInt64 = 0
    var electionElapsed = 0
    var heartbeatElapsed = 0
    var randomizedElectionTimeout = 0
    var rng: SeededGenerator
    var votesReceived: [ReplicaID: Bool] = [:]
    /// Leader only: replication state per other member.
    var progress: [ReplicaID: Progress] = [:]
    /// Tick at which each peer was last heard from (any message).
    var lastHeard: [ReplicaID: UInt64] = [:]
    /// Tick of the last message from the current leader (or of becoming leader).
    var lastLeaderContact: UInt64 = 0
    var leaderSince: UInt64 = 0

    /// Leader only: read-index rounds (dissertation §6.4).
    var readSequence: UInt64 = 0
    var pendingReads: [PendingRead] = []
    /// Reads that arrived before the leader committed an entry of its term.
    var readsAwaitingTermCommit: [UInt64] = []

    var persistedHardState: HardState
    /// The effects accumulated while handling the current input.
    var out = RaftReady()

    struct Progress: Equatable, Sendable {
        var next: UInt64
        var match: UInt64
        /// Highest read sequence this follower echoed in the current term.
        var readAck: UInt64 = 0
    }

    struct PendingRead: Equatable, Sendable {
        var requestID: UInt64
        var index: UInt64
        var sequence: UInt64
    }

    // MARK: - Construction and recovery

    /// Builds a core from what was persisted (empty for a fresh replica).
    public init(configuration: RaftConfiguration, persisted: RaftPersistentState = RaftPersistentState()) {
        self.configuration = configuration
        self.rng = SeededGenerator(seed: configuration.randomSeed)
        let snapshotIndex = persisted.snapshot?.lastIncludedIndex ?? 0
        self.log = RaftLog(
            snapshotIndex: snapshotIndex,
            snapshotTerm: persisted.snapshot?.lastIncludedTerm ?? 0,
            entries: persisted.entries)
        self.snapshot = persisted.snapshot
        self.term = persisted.hardState.term
        self.votedFor = persisted.hardState.votedFor
        self.persistedHardState = persisted.hardState
        self.commitIndex = snapshotIndex
        self.appliedIndex = snapshotIndex
        refreshMembership()
        resetRandomizedElectionTimeout()
    }

    // MARK: - Inputs

    /// One unit of time passed.
    public mutating func onTick() -> RaftReady {
        now += 1
        if role == .leader { tickLeader() } else { tickElection() }
        return takeReady()
    }

    /// A message arrived from `from`. Duplicated, reordered and stale messages
    /// are all safe to feed.
    public mutating func onMessage(from: ReplicaID, _ message: RaftMessage) -> RaftReady {
        guard from != id else { return takeReady() }
        lastHeard[from] = now
        step(from: from, message)
        return takeReady()
    }

    /// A client command; appended if this replica leads, else rejected with a
    /// hint (`ProposalOutcome` in the returned batch).
    public mutating func onPropose(_ command: [UInt8], clientID: UInt64, requestID: UInt64) -> RaftReady {
        if let rejection = proposalRejection() {
            out.proposalOutcomes.append(ProposalOutcome(clientID: clientID, requestID: requestID, result: .rejected(rejection)))
        } else {
            let entry = appendLocal(.command(clientID: clientID, requestID: requestID, data: command))
            out.proposalOutcomes.append(ProposalOutcome(
                clientID: clientID, requestID: requestID, result: .appended(index: entry.index, term: entry.term)))
            broadcastAppend()
        }
        return takeReady()
    }

    /// Adds or removes one voting replica (dissertation §4.1).
    ///
    /// `addresses` is the engine's directory for the new configuration (at
    /// least the added replica's address); it is merged over the current
    /// configuration's and kept for the new members only. A request whose
    /// (`clientID`, `requestID`) already made a retained configuration entry
    /// is answered with that entry again instead of being applied twice.
    public mutating func onProposeMembershipChange(
        _ change: MembershipChange, clientID: UInt64, requestID: UInt64, addresses: [ReplicaID: String] = [:]
    ) -> RaftReady {
        out.proposalOutcomes.append(ProposalOutcome(
            clientID: clientID, requestID: requestID,
            result: proposeMembershipChange(change, clientID: clientID, requestID: requestID, addresses: addresses)))
        return takeReady()
    }

    mutating func proposeMembershipChange(
        _ change: MembershipChange, clientID: UInt64, requestID: UInt64, addresses: [ReplicaID: String]
    ) -> ProposalOutcome.Result {
        if let rejection = proposalRejection() { return .rejected(rejection) }
        if clientID != 0 {
            if let earlier = log.configurationEntry(clientID: clientID, requestID: requestID) {
                return .appended(index: earlier.index, term: earlier.term)
            }
            if let snapshot, log.snapshotIndex == snapshot.lastIncludedIndex,
               snapshot.context.clientID == clientID, snapshot.context.requestID == requestID {
                return .appended(index: snapshot.lastIncludedIndex, term: snapshot.lastIncludedTerm)
            }
        }
        if log.term(at: commitIndex) != term || configurationIndex > commitIndex {
            return .rejected(.configurationChangeInProgress)
        }
        var next = members
        switch change {
        case .add(let replica):
            if next.contains(replica) { return .rejected(.invalidConfigurationChange("\(replica) is already a member")) }
            next.append(replica)
            next.sort()
        case .remove(let replica):
            guard next.contains(replica) else { return .rejected(.invalidConfigurationChange("\(replica) is not a member")) }
            guard next.count > 1 else { return .rejected(.invalidConfigurationChange("cannot remove the last member")) }
            next.removeAll { $0 == replica }
        }
        var known = currentConfigurationContext.addresses
        known.merge(addresses) { _, new in new }
        let context = ConfigurationContext(
            addresses: known.filter { next.contains($0.key) }, clientID: clientID, requestID: requestID)
        let entry = appendLocal(.configuration(members: next, context: context))
        broadcastAppend()
        return .appended(index: entry.index, term: entry.term)
    }

    /// A linearizable read (dissertation §6.4). The leader records its commit
    /// index, confirms it is still leader with a heartbeat round acknowledged by
    /// a majority, then returns `ReadState.ready(index)`; the caller answers the
    /// read once its state machine has applied that index.
    public mutating func onReadIndex(requestID: UInt64) -> RaftReady {
        if role != .leader {
            out.readStates.append(ReadState(requestID: requestID, result: .rejected(notLeaderRejection())))
        } else if log.term(at: commitIndex) != term {
            // §6.4 step 1: the leader's commit index is only known to be current
            // once its term-start no-op has committed.
            readsAwaitingTermCommit.append(requestID)
        } else {
            registerReads([requestID])
        }
        return takeReady()
    }

    /// The state machine has been snapshotted at `index` (<= applied index): the
    /// log prefix up to `index` is replaced by the snapshot (§7).
    public mutating func onCompact(throughIndex index: UInt64, stateMachineSnapshot data: [UInt8]) -> RaftReady {
        precondition(index <= appliedIndex, "cannot compact unapplied entry \(index) (applied \(appliedIndex))")
        guard index > log.snapshotIndex else { return takeReady() }
        let latest = log.lastConfiguration(atOrBelow: index)
        let members = latest?.members ?? snapshot?.members ?? configuration.bootstrapMembers
        let context = latest?.context ?? snapshot?.context ?? ConfigurationContext()
        let newSnapshot = RaftSnapshot(
            lastIncludedIndex: index, lastIncludedTerm: log.term(at: index)!, members: members, data: data, context: context)
        log.compact(through: index)
        snapshot = newSnapshot
        out.snapshot = newSnapshot
        out.restoresStateMachine = false
        return takeReady()
    }

    // MARK: - Observation

    public var id: ReplicaID { configuration.id }
    public var currentRole: RaftRole { role }
    public var currentTerm: UInt64 { term }
    public var currentLeader: ReplicaID? { leader }
    public var committedIndex: UInt64 { commitIndex }
    public var lastAppliedIndex: UInt64 { appliedIndex }
    public var lastLogIndex: UInt64 { log.lastIndex }
    public var snapshotIndex: UInt64 { log.snapshotIndex }
    public var currentMembers: [ReplicaID] { members }
    /// Index of the entry that defined `currentMembers` (the snapshot index if
    /// the snapshot did, 0 for the bootstrap members).
    public var currentConfigurationIndex: UInt64 { configurationIndex }
    /// The context of the latest configuration (empty for the bootstrap members).
    public var currentConfigurationContext: ConfigurationContext {
        if let latest = log.lastConfiguration(atOrBelow: log.lastIndex) { return latest.context }
        return snapshot?.context ?? ConfigurationContext()
    }
    /// True while the latest configuration entry is not yet committed (a
    /// membership change is in progress; dissertation §4.1 allows one at a time).
    public var configurationChangePending: Bool { configurationIndex > commitIndex }
    /// The retained log (entries after the snapshot).
    public var logEntries: [LogEntry] { log.entries }
    public func logTerm(at index: UInt64) -> UInt64? { log.term(at: index) }
    public func logEntry(at index: UInt64) -> LogEntry? { log.entry(at: index) }

    public var status: RaftStatus {
        RaftStatus(
            id: id, role: role, term: term, leader: leader, commitIndex: commitIndex,
            appliedIndex: appliedIndex, lastLogIndex: log.lastIndex, snapshotIndex: log.snapshotIndex,
            members: members, quorum: quorumReport())
    }

    /// This replica's view of whether the cluster can serve: on a leader, how
    /// many members it heard from within an election timeout; on a follower or
    /// candidate that has had no leader for more than two election timeouts, "no
    /// quorum" with the members it heard from recently.
    public func quorumReport() -> QuorumReport {
        let timeout = UInt64(configuration.electionTimeoutTicks)
        // A leader hears every member each heartbeat; without a leader,
        // members only speak when their randomised election timer (up to
        // 2T) fires, so a window of T would miss live ones.
        let reachable = reachableMembers(withinTicks: role == .leader ? timeout : 2 * timeout)
        let needed = members.count / 2 + 1
        let state: QuorumReport.State
        if role == .leader {
            state = reachable >= needed ? .leading : .noQuorum
        } else if now - lastLeaderContact <= 2 * timeout {
            state = leader.map { .following($0) } ?? .electing
        } else if reachable >= needed {
            // No leader for a while, but a majority answers: an election can
            // still succeed (a slow or busy machine), so this is not the
            // minority's "no quorum", and clients should retry.
            state = .electing
        } else {
            state = .noQuorum
        }
        return QuorumReport(state: state, reachable: reachable, members: members.count, needed: needed)
    }

    /// Members (self included) heard from within `withinTicks` (default: one election timeout).
    func reachableMembers(withinTicks: UInt64? = nil) -> Int {
        let timeout = withinTicks ?? UInt64(configuration.electionTimeoutTicks)
        var count = 0
        for member in members {
            if member == id {
                count += 1
            } else if let heard = lastHeard[member], now - heard <= timeout {
                count += 1
            }
        }
        return count
    }

    // MARK: - Shared machinery

    var quorum: Int { members.count / 2 + 1 }

    /// Followers that heard from a live leader within an election timeout ignore
    /// vote requests from higher terms (dissertation §4.2.3), so a replica that
    /// rejoins cannot depose a healthy leader.
    var inLease: Bool {
        configuration.checkQuorum && leader != nil
            && (role == .leader || electionElapsed < configuration.electionTimeoutTicks)
    }

    /// Term rules of Figure 2 ("If RPC request or response contains term T >
    /// currentTerm: set currentTerm = T, convert to follower"), with the pre-vote
    /// and lease exceptions, then dispatch by message type.
    mutating func step(from: ReplicaID, _ message: RaftMessage) {
        let messageTerm = message.term
        if messageTerm > term {
            switch message {
            case .voteRequest(let request):
                if inLease { return }
                if !request.isPreVote { becomeFollower(term: messageTerm, leader: nil) }
            case .voteResponse(let response) where response.isPreVote && response.granted:
                break  // a granted pre-vote carries the term we asked for, not the voter's
            case .appendEntries, .installSnapshot:
                becomeFollower(term: messageTerm, leader: from)
            default:
                becomeFollower(term: messageTerm, leader: nil)
            }
        } else if messageTerm < term {
            switch message {
            case .appendEntries, .installSnapshot:
                // A stale leader learns our term from the response and steps down;
                // without this, check-quorum could leave it waiting forever.
                send(to: from, .appendResponse(AppendResponse(term: term, success: false, index: 0, readSequence: 0)))
            case .voteRequest(let request):
                send(to: from, .voteResponse(VoteResponse(term: term, granted: false, isPreVote: request.isPreVote)))
            default:
                break
            }
            return
        }

        switch message {
        case .voteRequest(let request): onVoteRequest(from: from, request)
        case .voteResponse(let response): onVoteResponse(from: from, response)
        case .appendEntries(let request): onAppendEntries(from: from, request)
        case .appendResponse(let response): onAppendResponse(from: from, response)
        case .installSnapshot(let request): onInstallSnapshot(from: from, request)
        case .snapshotResponse(let response): onSnapshotResponse(from: from, response)
        }
    }

    /// Queues a message; it leaves only when the engine performs the batch.
    mutating func send(to: ReplicaID, _ message: RaftMessage) {
        out.messages.append(RaftOutgoing(to: to, message: message))
    }

    @discardableResult
    mutating func appendLocal(_ payload: EntryPayload) -> LogEntry {
        let entry = LogEntry(index: log.lastIndex + 1, term: term, payload: payload)
        log.append(entry)
        out.entriesToAppend.append(entry)
        if case .configuration = payload { refreshMembership() }
        maybeAdvanceCommit()
        return entry
    }

    mutating func resetRandomizedElectionTimeout() {
        let base = configuration.electionTimeoutTicks
        randomizedElectionTimeout = base + Int(rng.next() % UInt64(base))
    }

    /// Recomputes `members` from the log, snapshot or bootstrap list, and on a
    /// leader adds/removes replication progress to match.
    mutating func refreshMembership() {
        if let (index, latest, _) = log.lastConfiguration(atOrBelow: log.lastIndex) {
            members = latest
            configurationIndex = index
        } else if let snapshot {
            members = snapshot.members
            configurationIndex = snapshot.lastIncludedIndex
        } else {
            members = configuration.bootstrapMembers
            configurationIndex = 0
        }
        guard role == .leader else { return }
        for member in members where member != id && progress[member] == nil {
            progress[member] = Progress(next: log.lastIndex + 1, match: 0)
        }
        for peer in progress.keys where !members.contains(peer) {
            dropIfInformed(peer)
        }
    }

    /// A replica removed from the configuration keeps receiving entries (not
    /// counted in any majority) until it holds the entry that removed it, so
    /// that it learns it was removed and stops campaigning and serving
    /// instead of waiting for a leader forever.
    mutating func dropIfInformed(_ peer: ReplicaID) {
        guard !members.contains(peer), let tracked = progress[peer] else { return }
        if tracked.match >= configurationIndex { progress[peer] = nil }
    }

    func notLeaderRejection() -> RaftRejection {
        if let leader, leader != id { return .notLeader(leaderHint: leader) }
        let report = quorumReport()
        if report.state == .noQuorum { return .noQuorum(report) }
        return .notLeader(leaderHint: nil)
    }

    func proposalRejection() -> RaftRejection? {
        guard role == .leader else { return notLeaderRejection() }
        let report = quorumReport()
        if configuration.checkQuorum && now - leaderSince >= UInt64(configuration.electionTimeoutTicks)
            && report.state == .noQuorum {
            return .noQuorum(report)
        }
        return nil
    }

    /// Closes the batch: hands out newly committed entries and the hard state if
    /// it changed.
    mutating func takeReady() -> RaftReady {
        if commitIndex > appliedIndex {
            out.committedEntries = log.entries(from: appliedIndex + 1, through: commitIndex)
            appliedIndex = commitIndex
        }
        let hardState = HardState(term: term, votedFor: votedFor)
        if hardState != persistedHardState {
            out.hardState = hardState
            persistedHardState = hardState
        }
        let ready = out
        out = RaftReady()
        return ready
    }
}
