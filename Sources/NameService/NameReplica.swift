// NameService is the shell around the pure cores in NamesCore: replicas, storage, clients, membership and the etcd backend, with all their I/O.

import Foundation
import Logging
import NamesCore
import Transport
import Wire

/// How to run one replica of the name service.
public struct ReplicaConfiguration: Sendable {
    public var id: ReplicaID
    /// Every founding replica's address (this one included): peers dial these
    /// for Raft traffic and clients for requests. Replicas added later are
    /// learnt from the configuration entries that add them.
    public var replicas: [ReplicaID: SocketAddress]
    /// Start as a replica that is not a member yet: it never forms a cluster of
    /// its own nor campaigns, and learns the membership from the leader once
    /// `plexus cluster add` has added it. (`replicas` then lists the current
    /// members and this replica.) Harmless on a replica that has state.
    public var joinExisting: Bool
    public var dataDirectory: String
    /// Length of one Raft tick.
    public var tickMillis: Int
    /// Election timeout in ticks (each wait is drawn from [T, 2T)).
    public var electionTicks: Int
    public var heartbeatTicks: Int
    /// Take a snapshot (and compact the log) after this many applied entries.
    public var snapshotEvery: UInt64
    /// Honour `ClientRequest.isolate` (tests only).
    public var faultInjection: Bool
    /// Bound on requests waiting for commit or read confirmation.
    public var maxPendingRequests: Int
    /// Test hook for the storage layer.
    public var storageFaults: StorageFaults

    public init(id: ReplicaID, replicas: [ReplicaID: SocketAddress], dataDirectory: String,
                tickMillis: Int = 25, electionTicks: Int = 12, heartbeatTicks: Int = 3,
                snapshotEvery: UInt64 = 1000, faultInjection: Bool = false, maxPendingRequests: Int = 4096,
                storageFaults: StorageFaults = StorageFaults(), joinExisting: Bool = false) {
        self.id = id
        self.replicas = replicas
        self.joinExisting = joinExisting
        self.dataDirectory = dataDirectory
        self.tickMillis = tickMillis
        self.electionTicks = electionTicks
        self.heartbeatTicks = heartbeatTicks
        self.snapshotEvery = snapshotEvery
        self.faultInjection = faultInjection
        self.maxPendingRequests = maxPendingRequests
        self.storageFaults = storageFaults
    }

    /// Parses "1=10.0.0.1:7401,2=10.0.0.2:7401,…".
    public static func parseReplicas(_ text: String) throws(NameServiceError) -> [ReplicaID: SocketAddress] {
        var out: [ReplicaID: SocketAddress] = [:]
        for part in text.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, let id = UInt64(pair[0]), id > 0, id < 1 << 32 else {
                throw .invalidArgument("'\(part)' is not ID=IP:PORT with ID a positive integer (e.g. 1=127.0.0.1:7401)")
            }
            let address: SocketAddress
            do { address = try SocketAddress(parsing: String(pair[1])) } catch {
                throw .invalidArgument("replica \(id): \(error)")
            }
            guard address.port != 0 else { throw .invalidArgument("replica \(id): port 0 cannot be dialled by peers; give a fixed port") }
            guard out.updateValue(address, forKey: ReplicaID(id)) == nil else {
                throw .invalidArgument("replica \(id) is listed twice")
            }
        }
        guard !out.isEmpty else { throw .invalidArgument("no replicas given (expected ID=IP:PORT,…)") }
        return out
    }
}

/// One replica of the name service: a `RaftCore` and a `NameServiceState`
/// driven by a thin engine.
///
/// Threads: a timer thread posts ticks; transport reader threads decode
/// frames and post them; the engine thread owns the core, the state machine
/// and the storage and performs every `RaftReady` in the contract's order —
/// persist (fdatasync), then send, then apply, then answer. Sends and client
/// replies go through bounded per-destination queues drained by their own
/// threads, so a dead peer or slow client never blocks the engine. Every queue
/// is bounded; when one is full the input is dropped (Raft messages, ticks) or
/// refused with "busy" (client requests).
///
/// A disk failure (full, read-only, I/O error) stops the replica's Raft
/// participation for good — its in-memory state would be ahead of its disk —
/// and every later request is answered with the storage error. Restart the
/// replica once the disk is fixed.
public final class NameReplica: @unchecked Sendable {
    public let configuration: ReplicaConfiguration
    public let recovery: ReplicaStorage.Recovery
    private let log: Logger
    private let inbox = BoundedQueue<Input>(capacity: 8192)
    private let replies = BoundedQueue<(ProcessID, Frame)>(capacity: 8192)
    private let links = Locked<[ReplicaID: BoundedQueue<Frame>]>([:])
    private let transport: FaultInjectingTransport
    private let tcp: TCPTransport
    private let running = Locked(true)
    private let statusBox: Locked<ReplicaStatus>

    // Engine-thread state.
    private var core: RaftCore
    private var state: NameServiceState
    private let storage: ReplicaStorage
    private var storageFailure: String?
    private var pendingWrites: [UInt64: PendingWrite] = [:]
    /// Proposals whose outcome (appended or rejected) is in the batch being built.
    private var awaitingOutcome: [RequestKey: [ReplyTarget]] = [:]
    /// Effects of the inputs taken so far, performed together (group commit).
    private var batch = RaftReady()
    private var pendingReads: [UInt64: PendingRead] = [:]
    private var nextReadID: UInt64 = 1
    private var wasLeader = false
    /// Where every replica this one knows of is: the founders from
    /// `configuration.replicas`, overridden by the latest configuration's
    /// addresses (replicas added later). Engine thread.
    private var directory: [ReplicaID: SocketAddress]
    /// Whether this replica has been a voting member (then leaving the
    /// configuration means it was removed, not that it waits to join).
    private var everMember: Bool
    /// The configuration context whose addresses are in `directory`.
    private var learntContext = ConfigurationContext()
    /// Index of the last entry applied to `state`.
    private var stateIndex: UInt64
    /// Leader's clock (monotonic ms) when it last proposed `expireLeases`.
    private var lastExpiryProposal: UInt64 = 0

    enum Input: Sendable {
        case tick
        case peer(ReplicaID, RaftMessage)
        case client(ProcessID, UInt64, ClientRequest)
    }

    struct ReplyTarget {
        var client: ProcessID
        var correlation: UInt64
        var deadline: UInt64
    }

    struct RequestKey: Hashable {
        var client: UInt64
        var request: UInt64
    }

    struct PendingWrite {
        var term: UInt64
        var target: ReplyTarget
    }

    struct PendingRead {
        var query: NameQuery
        var target: ReplyTarget
    }

    /// Recovers from the data directory and starts serving.
    public init(configuration: ReplicaConfiguration, logger: Logger) throws {
        guard let own = configuration.replicas[configuration.id] else {
            throw NameServiceError.invalidArgument(
                "--replica-id \(configuration.id.rawValue) is not in --replicas (ids: \(configuration.replicas.keys.sorted().map { "\($0.rawValue)" }.joined(separator: ", ")))")
        }
        self.configuration = configuration
        self.log = logger
        storage = try ReplicaStorage(directory: configuration.dataDirectory, faults: configuration.storageFaults)
        recovery = try storage.load()
        if let snapshot = recovery.state.snapshot {
            do { state = try NameServiceState(snapshotBytes: snapshot.data) } catch {
                throw StorageError.corrupt(path: storage.snapshotPath, reason: "state-machine snapshot: \(error)")
            }
        } else {
            state = NameServiceState()
        }
        // A joining replica has no bootstrap membership: with [] it never
        // campaigns (RaftCore.tickElection) and takes its configuration from
        // the leader's log or snapshot.
        let raft = RaftConfiguration(
            id: configuration.id, bootstrapMembers: configuration.joinExisting ? [] : Array(configuration.replicas.keys),
            electionTimeoutTicks: configuration.electionTicks, heartbeatIntervalTicks: configuration.heartbeatTicks,
            randomSeed: UInt64.random(in: 0...UInt64.max))
        core = RaftCore(configuration: raft, persisted: recovery.state)
        directory = configuration.replicas
        stateIndex = recovery.state.snapshot?.lastIncludedIndex ?? 0
        let me = configuration.id
        everMember = !configuration.joinExisting || (recovery.state.snapshot?.members.contains(me) ?? false)
            || recovery.state.entries.contains { entry in
                if case .configuration(let members, _) = entry.payload { return members.contains(me) }
                return false
            }
        statusBox = Locked(ReplicaStatus(
            id: configuration.id, role: "follower", term: 0, leader: nil, commitIndex: 0, appliedIndex: 0, lastLogIndex: 0,
            snapshotIndex: 0, members: [], quorum: "starting", storageFailure: nil,
            addresses: configuration.replicas.mapValues(\.description)))

        let inbox = self.inbox
        let replies = self.replies
        let handler = TransportHandler(onFrame: { from, frame in
            Self.onFrame(from: from, frame, inbox: inbox, replies: replies)
        })
        var tcp: TCPTransport?
        transport = try FaultInjectingTransport(seed: configuration.id.rawValue, handler: handler) { h throws(TransportError) in
            let t = try TCPTransport(job: namesJob, localID: configuration.id.rawValue, bind: own,
                                     connectTimeoutMillis: 250, handler: h)
            tcp = t
            return t
        }
        self.tcp = tcp!
        self.tcp.updateDirectory(Dictionary(uniqueKeysWithValues: configuration.replicas.map { ($0.key.rawValue, $0.value) }))
        learnAddresses()
        publishStatus()
        start()
    }

    /// Stops the threads and closes the transport. In-flight requests are not answered.
    public func stop() {
        running.withLock { $0 = false }
        inbox.close()
        replies.close()
        for link in links.value.values { link.close() }
        transport.close()
    }

    /// This replica's latest status (updated by the engine after every input).
    public var status: ReplicaStatus { statusBox.value }

    // MARK: - Threads

    private func start() {
        let engine = Thread { [self] in runEngine() }
        engine.name = "plexus-names-engine"
        engine.start()
        let tick = configuration.tickMillis
        let timer = Thread { [self] in
            // The timer only paces the core; being late or dropping a tick when
            // the engine is busy only stretches Raft's time, never breaks it.
            while running.value {
                usleep(useconds_t(tick * 1000))
                inbox.offer(.tick)
            }
        }
        timer.name = "plexus-names-timer"
        timer.start()
        for peer in directory.keys where peer != configuration.id { _ = link(to: peer) }
        let replier = Thread { [self] in
            while let (client, frame) = replies.take(timeout: 3600) {
                try? transport.send(frame, to: client)
            }
        }
        replier.name = "plexus-names-reply"
        replier.start()
    }

    /// The send queue to `peer`, with its sender thread, created on first use.
    private func link(to peer: ReplicaID) -> BoundedQueue<Frame>? {
        guard running.value else { return nil }
        let (queue, created) = links.withLock { links -> (BoundedQueue<Frame>, Bool) in
            if let existing = links[peer] { return (existing, false) }
            let queue = BoundedQueue<Frame>(capacity: 1024)
            links[peer] = queue
            return (queue, true)
        }
        guard created else { return queue }
        let t = Thread { [self] in
            while let frame = queue.take(timeout: 3600) {
                do { try transport.send(frame, to: peer.rawValue) } catch {
                    // The peer is down or cut off: what is queued is stale, and
                    // Raft retransmits on the next heartbeat.
                    queue.drain()
                }
            }
        }
        t.name = "plexus-names-send \(peer)"
        t.start()
        return queue
    }

    /// Takes the addresses the latest configuration carries into the
    /// directory and the transport (replicas added after this one started).
    /// Called after every batch: a configuration takes effect when appended.
    private func learnAddresses() {
        if core.currentMembers.contains(configuration.id) { everMember = true }
        let context = core.currentConfigurationContext
        guard context != learntContext else { return }
        learntContext = context
        var learnt: [ProcessID: SocketAddress] = [:]
        for (id, text) in context.addresses where id != configuration.id {
            guard let address = try? SocketAddress(parsing: text) else {
                log.error("configuration carries an unusable address for \(id): \(text)")
                continue
            }
            if directory[id] != address {
                directory[id] = address
                learnt[id.rawValue] = address
            }
        }
        if !learnt.isEmpty {
            tcp.updateDirectory(learnt)
            log.info("learnt replica addresses", metadata: ["addresses": "\(learnt)"])
        }
    }

    /// Runs on transport reader threads: decode, then queue for the engine.
    private static func onFrame(from: ProcessID, _ frame: Frame, inbox: BoundedQueue<Input>,
                                replies: BoundedQueue<(ProcessID, Frame)>) {
        switch frame.kind {
        case .namesPeer:
            guard from < 1 << 32, let message = try? RaftMessage(decoding: frame.payload) else { return }
            inbox.offer(.peer(ReplicaID(from), message))
        case .names:
            let response: ClientResponse
            do {
                let request = try ClientRequest(decoding: frame.payload, limit: maxClientPayload)
                if inbox.offer(.client(from, frame.requestID, request)) { return }
                response = .unavailable(reason: "replica busy: its request queue is full; retry shortly",
                                        mayHaveTakenEffect: false, storageFailure: false)
            } catch {
                response = .unavailable(reason: "malformed request: \(error)", mayHaveTakenEffect: false, storageFailure: false)
            }
            replies.offer((from, Frame(.names, requestID: frame.requestID, payload: response.encoded())))
        default:
            return
        }
    }

    /// Takes inputs one at a time, but performs the effects of everything
    /// already queued (up to `maxBatch` inputs) together: one fdatasync for many
    /// proposals and messages (group commit), then their sends and applies.
    private func runEngine() {
        let maxBatch = 256
        while running.value {
            guard var input = inbox.take(timeout: 1) else { continue }
            var taken = 0
            while true {
                switch input {
                case .tick:
                    if storageFailure == nil { enqueue(core.onTick()) }
                    expireRequests()
                    maybeExpireLeases()
                case .peer(let from, let message):
                    if storageFailure == nil { enqueue(core.onMessage(from: from, message)) }
                case .client(let client, let correlation, let request):
                    onClientRequest(client: client, correlation: correlation, request)
                }
                taken += 1
                guard taken < maxBatch, let next = inbox.poll() else { break }
                input = next
            }
            flush()
            learnAddresses()
            publishStatus()
        }
    }

    /// Adds one input's effects to the batch. A snapshot or a log truncation is
    /// performed on its own, after what came before, so that the batch stays a
    /// plain "append these entries" for storage.
    private func enqueue(_ ready: RaftReady) {
        if ready.snapshot != nil || ready.logTruncateFrom != nil || batch.snapshot != nil {
            flush()
            batch = ready
            return
        }
        if let hard = ready.hardState { batch.hardState = hard }
        batch.entriesToAppend += ready.entriesToAppend
        batch.messages += ready.messages
        batch.committedEntries += ready.committedEntries
        batch.readStates += ready.readStates
        batch.proposalOutcomes += ready.proposalOutcomes
    }

    /// Performs the batch; effects enqueued while performing (the leader's
    /// lease maintenance) are performed right after.
    private func flush() {
        while !batch.isEmpty {
            let ready = batch
            batch = RaftReady()
            perform(ready)
        }
    }

    // MARK: - Client requests

    private func onClientRequest(client: ProcessID, correlation: UInt64, _ request: ClientRequest) {
        let now = monotonicMillis()
        func target(_ timeout: UInt64) -> ReplyTarget {
            ReplyTarget(client: client, correlation: correlation, deadline: now + min(max(timeout, 50), 30_000))
        }
        switch request {
        case .status:
            reply(ReplyTarget(client: client, correlation: correlation, deadline: 0), .status(statusBox.value))
        case .isolate(let peers):
            guard configuration.faultInjection else {
                reply(target(0), .unavailable(reason: "fault injection is off on this replica (start it with --names-fault-injection)",
                                              mayHaveTakenEffect: false, storageFailure: false))
                return
            }
            let me = configuration.id.rawValue
            transport.update { plan in
                plan.heal()
                for peer in peers where peer != configuration.id { plan.partition(me, peer.rawValue) }
            }
            log.notice("fault injection: isolated from \(peers)")
            reply(target(0), .done)
        case .command(let clientID, let requestID, let command, let timeout):
            if let refusal = refusal() ?? notMemberRefusal() { return reply(target(timeout), refusal) }
            guard clientID != 0 else {
                return reply(target(timeout), .result(.failure(.invalidArgument("client id 0 is reserved for the leader"))))
            }
            awaitingOutcome[RequestKey(client: clientID, request: requestID), default: []].append(target(timeout))
            enqueue(core.onPropose(leaderTimed(command).encoded(), clientID: clientID, requestID: requestID))
        case .membership(let clientID, let requestID, let change, let timeout):
            if let refusal = refusal() ?? notMemberRefusal() { return reply(target(timeout), refusal) }
            guard clientID != 0 else {
                return reply(target(timeout), .membershipRefused(reason: "client id 0 is reserved for the leader"))
            }
            let proposal: MembershipChange
            var addresses: [ReplicaID: String] = [:]
            switch change {
            case .add(let id, let text):
                let address: SocketAddress
                do { address = try SocketAddress(parsing: text) } catch {
                    return reply(target(timeout), .membershipRefused(reason: "--address \(text): \(error)"))
                }
                guard address.port != 0 else {
                    return reply(target(timeout), .membershipRefused(
                        reason: "--address \(text): port 0 cannot be dialled by the other replicas; give the port the new replica listens on"))
                }
                if let user = core.currentMembers.first(where: { $0 != id && directory[$0] == address }) {
                    return reply(target(timeout), .membershipRefused(
                        reason: "\(address) is the address of member \(user); give the address replica \(id.rawValue) listens on"))
                }
                // Every member's address goes into the entry, the founders'
                // too, so that replicas that learn the configuration from the
                // log (a later joiner) can reach all of them.
                for member in core.currentMembers { addresses[member] = directory[member]?.description }
                addresses[id] = address.description
                proposal = .add(id)
            case .remove(let id):
                proposal = .remove(id)
            }
            awaitingOutcome[RequestKey(client: clientID, request: requestID), default: []].append(target(timeout))
            enqueue(core.onProposeMembershipChange(proposal, clientID: clientID, requestID: requestID, addresses: addresses))
        case .query(let query, let timeout):
            if let refusal = refusal() ?? notMemberRefusal() { return reply(target(timeout), refusal) }
            let id = nextReadID
            nextReadID += 1
            pendingReads[id] = PendingRead(query: query, target: target(timeout))
            enqueue(core.onReadIndex(requestID: id))
        }
    }

    /// Why a new request cannot be taken at all, if it cannot.
    private func refusal() -> ClientResponse? {
        if let storageFailure {
            return .unavailable(reason: storageFailure, mayHaveTakenEffect: false, storageFailure: true)
        }
        if pendingWrites.count + pendingReads.count + awaitingOutcome.count >= configuration.maxPendingRequests {
            return .unavailable(reason: "replica busy: \(configuration.maxPendingRequests) requests in flight; retry shortly",
                                mayHaveTakenEffect: false, storageFailure: false)
        }
        return nil
    }

    /// Requests a replica outside the configuration refuses: one that was
    /// removed must not answer from a state that no longer advances, and one
    /// that waits to be added has nothing to serve yet.
    private func notMemberRefusal() -> ClientResponse? {
        let me = configuration.id
        let members = core.currentMembers
        guard !members.contains(me) else { return nil }
        let current = members.map { m in directory[m].map { "\(m) at \($0)" } ?? "\(m)" }.joined(separator: ", ")
        if everMember {
            return .notMember(reason: "replica \(me) was removed from the name-service cluster (configuration of entry "
                + "\(core.currentConfigurationIndex): \(current)); send requests to the current members instead")
        }
        return .notMember(reason: "replica \(me) is not a member of the name-service cluster yet: it waits to be added "
            + "with `plexus cluster add --id \(me.rawValue) --address \(directory[me]?.description ?? "IP:PORT") --names MEMBERS`")
    }

    private func response(for rejection: RaftRejection) -> ClientResponse {
        switch rejection {
        case .notLeader(let hint):
            return .notLeader(leaderHint: hint, leaderAddress: hint.flatMap { directory[$0]?.description })
        case .noQuorum(let report):
            return .noQuorum(reachable: report.reachable, members: report.members, needed: report.needed)
        case .invalidConfigurationChange(let why):
            return .membershipRefused(reason: why)
        case .configurationChangeInProgress where core.configurationChangePending:
            let members = core.currentMembers.map(\.description).joined(separator: ", ")
            return .membershipRefused(reason: "the change to [\(members)] (entry \(core.currentConfigurationIndex)) is not "
                + "committed yet, and membership changes one replica at a time: wait until `plexus cluster status` shows "
                + "it committed, then retry")
        case .configurationChangeInProgress, .leadershipLost:
            // A new leader that has not committed an entry of its term yet.
            return .unavailable(reason: rejection.description + "; retry", mayHaveTakenEffect: false, storageFailure: false)
        }
    }

    /// The answer to a committed (or earlier) membership change.
    private func membershipChanged(at index: UInt64) -> ClientResponse {
        let members = core.currentMembers
        var addresses: [ReplicaID: String] = [:]
        for member in members { addresses[member] = directory[member]?.description }
        return .membershipChanged(index: index, members: members, addresses: addresses)
    }

    private func reply(_ target: ReplyTarget, _ response: ClientResponse) {
        replies.offer((target.client, Frame(.names, requestID: target.correlation, payload: response.encoded())))
    }

    /// Answers requests whose deadline passed.
    private func expireRequests() {
        let now = monotonicMillis()
        for (index, write) in pendingWrites where write.target.deadline <= now {
            pendingWrites[index] = nil
            reply(write.target, .unavailable(reason: "no commit before the deadline (entry \(index))",
                                             mayHaveTakenEffect: true, storageFailure: false))
        }
        for (id, read) in pendingReads where read.target.deadline <= now {
            pendingReads[id] = nil
            reply(read.target, .unavailable(reason: "read not confirmed by a majority before the deadline",
                                            mayHaveTakenEffect: false, storageFailure: false))
        }
    }

    // MARK: - Performing RaftReady

    /// The RaftReady contract: persist, send, apply, answer.
    private func perform(_ ready: RaftReady) {
        guard storageFailure == nil else { return }
        do { try storage.persist(ready) } catch {
            failStorage(error)
            return
        }
        if !ready.entriesToAppend.isEmpty || ready.snapshot != nil { learnAddresses() }
        for outgoing in ready.messages {
            let frame = Frame(.namesPeer, payload: outgoing.message.encoded())
            link(to: outgoing.to)?.offer(frame)
        }
        for outcome in ready.proposalOutcomes {
            let key = RequestKey(client: outcome.clientID, request: outcome.requestID)
            guard var targets = awaitingOutcome[key], !targets.isEmpty else { continue }
            let target = targets.removeFirst()
            awaitingOutcome[key] = targets.isEmpty ? nil : targets
            switch outcome.result {
            case .appended(let index, _) where index <= stateIndex:
                // A retried membership change that was applied before.
                reply(target, membershipChanged(at: index))
            case .appended(let index, let term):
                if let displaced = pendingWrites.updateValue(PendingWrite(term: term, target: target), forKey: index) {
                    reply(displaced.target, .unavailable(reason: "entry \(index) was replaced; retry", mayHaveTakenEffect: true,
                                                         storageFailure: false))
                }
            case .rejected(let rejection):
                reply(target, response(for: rejection))
            }
        }
        if ready.restoresStateMachine, let snapshot = ready.snapshot {
            do { state = try NameServiceState(snapshotBytes: snapshot.data) } catch {
                storageFailure = "the leader's snapshot at index \(snapshot.lastIncludedIndex) does not decode (\(error)); restart this replica"
                log.critical("\(storageFailure!)")
                failAllPending(storageFailure!, storage: true)
                return
            }
            stateIndex = snapshot.lastIncludedIndex
            for (index, write) in pendingWrites where index <= snapshot.lastIncludedIndex {
                pendingWrites[index] = nil
                reply(write.target, .unavailable(reason: "replaced by a snapshot; retry", mayHaveTakenEffect: true, storageFailure: false))
            }
        }
        for entry in ready.committedEntries {
            var result: NameResult?
            if case .command(let client, let request, let data) = entry.payload {
                result = state.apply(encoded: data, clientID: client, requestID: request)
            }
            stateIndex = entry.index
            guard let write = pendingWrites.removeValue(forKey: entry.index) else { continue }
            if write.term == entry.term, case .configuration = entry.payload {
                learnAddresses()
                reply(write.target, membershipChanged(at: entry.index))
            } else if write.term == entry.term, let result {
                reply(write.target, .result(result))
            } else {
                reply(write.target, .unavailable(reason: "leadership changed before the request committed; retry",
                                                 mayHaveTakenEffect: true, storageFailure: false))
            }
        }
        for readState in ready.readStates {
            guard let read = pendingReads.removeValue(forKey: readState.requestID) else { continue }
            switch readState.result {
            case .ready(let index):
                precondition(index <= core.lastAppliedIndex, "read index \(index) beyond applied \(core.lastAppliedIndex)")
                reply(read.target, .queryResult(state.answer(read.query)))
            case .rejected(let rejection):
                reply(read.target, response(for: rejection))
            }
        }
        let leading = core.currentRole == .leader
        if wasLeader && !leading && !pendingWrites.isEmpty {
            for (_, write) in pendingWrites {
                reply(write.target, .unavailable(reason: "leadership lost before the request committed; retry",
                                                 mayHaveTakenEffect: true, storageFailure: false))
            }
            pendingWrites = [:]
        }
        if !wasLeader && leading {
            log.info("became leader", metadata: ["term": "\(core.currentTerm)"])
            // Lease deadlines are in the previous leader's clock: restart them
            // all in ours before expiring any (see NameServiceState).
            proposeMaintenance(.renewAllLeases(nowMillis: monotonicMillis()))
        }
        wasLeader = leading
        if core.lastAppliedIndex >= core.snapshotIndex + configuration.snapshotEvery {
            perform(core.onCompact(throughIndex: core.lastAppliedIndex, stateMachineSnapshot: state.snapshotBytes()))
        }
    }

    // MARK: - Leases (leader only)

    /// Lease commands carry the leader's clock, whatever the client sent.
    private func leaderTimed(_ command: NameCommand) -> NameCommand {
        switch command {
        case .grantLease(let ttl, _): .grantLease(ttlMillis: ttl, nowMillis: monotonicMillis())
        case .keepAlive(let lease, _): .keepAlive(lease: lease, nowMillis: monotonicMillis())
        case .expireLeases: .expireLeases(nowMillis: monotonicMillis())
        case .renewAllLeases: .renewAllLeases(nowMillis: monotonicMillis())
        default: command
        }
    }

    /// Proposes `expireLeases` when a lease's deadline passed in the leader's
    /// clock, at most every 4 ticks while it is pending.
    private func maybeExpireLeases() {
        guard storageFailure == nil, core.currentRole == .leader else { return }
        let now = monotonicMillis()
        guard now >= lastExpiryProposal + UInt64(4 * configuration.tickMillis),
              state.activeLeases.values.contains(where: { $0.expiresAtMillis <= now }) else { return }
        lastExpiryProposal = now
        proposeMaintenance(.expireLeases(nowMillis: now))
    }

    /// A leader's own command: client id 0, never deduplicated, no reply.
    private func proposeMaintenance(_ command: NameCommand) {
        enqueue(core.onPropose(command.encoded(), clientID: 0, requestID: 0))
    }

    private func failStorage(_ error: StorageError) {
        storageFailure = "replica \(configuration.id.rawValue) cannot write its log: \(error)"
        log.critical("\(storageFailure!); this replica stops taking part until restarted")
        failAllPending(storageFailure!, storage: true)
        for link in links.value.values { link.drain() }
    }

    private func failAllPending(_ reason: String, storage: Bool) {
        for (_, write) in pendingWrites {
            reply(write.target, .unavailable(reason: reason, mayHaveTakenEffect: true, storageFailure: storage))
        }
        for (_, read) in pendingReads {
            reply(read.target, .unavailable(reason: reason, mayHaveTakenEffect: false, storageFailure: storage))
        }
        for target in awaitingOutcome.values.joined() {
            reply(target, .unavailable(reason: reason, mayHaveTakenEffect: true, storageFailure: storage))
        }
        pendingWrites = [:]
        pendingReads = [:]
        awaitingOutcome = [:]
    }

    private func publishStatus() {
        let s = core.status
        var role = s.role.rawValue
        var quorum = s.quorum.description
        if !s.members.contains(s.id) {
            role = everMember ? "removed" : "joining"
            quorum = everMember
                ? "removed from the cluster by entry \(core.currentConfigurationIndex); serves nothing"
                : "not a member yet: waits for `plexus cluster add --id \(s.id.rawValue)`"
        }
        // The members' addresses (and this replica's), so that `plexus cluster
        // status` finds replicas added after the ones it was given.
        var addresses: [ReplicaID: String] = [:]
        for id in s.members + [s.id] { addresses[id] = directory[id]?.description }
        let status = ReplicaStatus(
            id: s.id, role: role, term: s.term, leader: s.leader, commitIndex: s.commitIndex,
            appliedIndex: s.appliedIndex, lastLogIndex: s.lastLogIndex, snapshotIndex: s.snapshotIndex,
            members: s.members, quorum: quorum, storageFailure: storageFailure, addresses: addresses)
        statusBox.withLock { $0 = status }
    }
}
