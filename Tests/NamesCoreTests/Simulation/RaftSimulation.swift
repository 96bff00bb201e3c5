/// A deterministic cluster simulator in the style of TigerBeetle's VOPR
/// (`src/vopr.zig`, `src/testing/cluster/state_checker.zig`): N `RaftCore`
/// replicas with `NameServiceState` machines, a seeded network that delays,
/// drops, duplicates and reorders, partitions (symmetric and one-way),
/// crashes and restarts from exactly what was persisted, log compaction by
/// length, and clients that propose, retry and read. Safety invariants are
/// checked after every step; after a healing phase the run must make progress.
///
/// Everything derives from one seed; a failing seed replays exactly.
@testable import NamesCore

struct SimulationOptions {
    var replicas = 3
    var faultSteps = 200
    var healSteps = 150
    var clients = 2
    var requestsPerClient = 6
    var dropPercent = 5
    var duplicatePercent = 3
    /// Compact when the retained log exceeds this many entries.
    var snapshotThreshold = 12
    var electionTimeoutTicks = 10
    var heartbeatIntervalTicks = 2
    /// Keep a trace of events (for replaying a failing seed).
    var tracing = false
    /// Extra replicas that start outside the configuration (bootstrap []) and
    /// wait to be added.
    var spareReplicas = 0
    /// Per-mille chance per step (while faulty) that an administrator proposes
    /// a single-server membership change (dissertation §4.1). 0: never, and
    /// the schedules are those of a fixed membership.
    var membershipChangePerMille = 0
}

struct SimulationStats {
    var steps = 0
    var messagesSent = 0
    var messagesDropped = 0
    var crashes = 0
    var leadersElected = 0
    var snapshotsTaken = 0
    var snapshotsInstalled = 0
    var requestsAcknowledged = 0
    var readsChecked = 0
    var membershipChangesAppended = 0
    var membershipChangesCommitted = 0

    mutating func add(_ other: SimulationStats) {
        membershipChangesAppended += other.membershipChangesAppended
        membershipChangesCommitted += other.membershipChangesCommitted
        steps += other.steps
        messagesSent += other.messagesSent
        messagesDropped += other.messagesDropped
        crashes += other.crashes
        leadersElected += other.leadersElected
        snapshotsTaken += other.snapshotsTaken
        snapshotsInstalled += other.snapshotsInstalled
        requestsAcknowledged += other.requestsAcknowledged
        readsChecked += other.readsChecked
    }
}

struct SimulationFailure: Error, CustomStringConvertible {
    var seed: UInt64
    var step: Int
    var message: String
    var trace: [String]

    var description: String {
        "seed \(seed) failed at step \(step): \(message)\nreplay with PLEXUS_SEED=\(seed) swift test --filter replaySeed"
            + (trace.isEmpty ? "" : "\nlast events:\n" + trace.suffix(80).joined(separator: "\n"))
    }
}

struct Simulation {
    /// A class so that the simulator can reach into a node without copying it
    /// (debug builds copy large structs on every subscript).
    final class Node {
        let id: ReplicaID
        var core: RaftCore?
        var up = false
        var storage = RaftPersistentState()
        var machine = NameServiceState()
        var applied: UInt64 = 0
        var incarnation: UInt64 = 0
        /// Confirmed reads waiting for the machine to reach `index`:
        /// the next PID must then be at least `minimumNextPID`.
        var pendingReads: [(index: UInt64, minimumNextPID: UInt64)] = []
        /// Reads issued here, by read request id, with their lower bound.
        var issuedReads: [UInt64: UInt64] = [:]

        init(id: ReplicaID) { self.id = id }
    }

    struct Packet {
        var deliverAt: UInt64
        var from: Int
        var to: Int
        var message: RaftMessage
    }

    struct Link: Hashable {
        var from: Int
        var to: Int
    }

    struct RequestKey: Hashable {
        var client: UInt64
        var request: UInt64
    }

    struct Client {
        let id: UInt64
        var nextRequestID: UInt64 = 1
        var issued = 0
        var target: Int
        var outstanding: (requestID: UInt64, bytes: [UInt8], retryAt: UInt64)?
        var casVersion: UInt64 = 0
    }

    let seed: UInt64
    let options: SimulationOptions
    var rng: SeededGenerator
    var now: UInt64 = 0
    var step = 0
    var nodes: [Node] = []
    var network: [Packet] = []
    var blocked: Set<Link> = []
    var faulty = true
    var clients: [Client] = []
    var nextReadID: UInt64 = 1
    var adminRequests: UInt64 = 0
    var stats = SimulationStats()
    var failure: SimulationFailure?
    /// A reference so that `note` need not mutate the simulation (its message
    /// autoclosure reads simulation state).
    final class TraceBuffer { var lines: [String] = [] }
    let traceBuffer = TraceBuffer()
    var trace: [String] { traceBuffer.lines }

    // Checker state.
    var leaderOfTerm: [UInt64: ReplicaID] = [:]
    var maxLeaderTerm: UInt64 = 0
    /// (index, term) → the entry and the term before it, for log matching.
    var entryAt: [IndexTerm: (payload: EntryPayload, previousTerm: UInt64)] = [:]
    /// Every entry applied anywhere, by index - 1: committed entries.
    var committed: [LogEntry] = []
    var snapshotBytesAt: [UInt64: [UInt8]] = [:]
    var pidOwner: [UInt64: RequestKey] = [:]
    var maxPIDIssued: UInt64 = 0
    var firstResult: [RequestKey: NameResult] = [:]
    var acknowledged: [RequestKey: NameResult] = [:]
    var maxAcknowledgedPID: UInt64 = 0

    struct IndexTerm: Hashable {
        var index: UInt64
        var term: UInt64
    }

    /// Half of the schedules run without pre-vote, where competing candidates
    /// in one term (and so vote-safety bugs) are far more common.
    let preVote: Bool

    init(seed: UInt64, options: SimulationOptions) {
        self.seed = seed
        self.options = options
        self.rng = SeededGenerator(seed: seed)
        self.preVote = rng.next() % 2 == 0
        for i in 0..<(options.replicas + options.spareReplicas) {
            nodes.append(Node(id: ReplicaID(UInt64(i + 1))))
        }
        for i in nodes.indices { start(i) }
        for c in 0..<options.clients {
            clients.append(Client(id: UInt64(c + 1), target: Int(rng.next() % UInt64(options.replicas))))
        }
    }

    // MARK: - Randomness

    mutating func chance(_ percent: Int) -> Bool { Int(rng.next() % 1000) < percent * 10 }
    mutating func chancePerMille(_ perMille: Int) -> Bool { Int(rng.next() % 1000) < perMille }
    mutating func pick(_ count: Int) -> Int { Int(rng.next() % UInt64(count)) }

    func note(_ line: @autoclosure () -> String) {
        if options.tracing { traceBuffer.lines.append("[\(step)] " + line()) }
    }

    mutating func fail(_ message: String) {
        if failure == nil {
            failure = SimulationFailure(seed: seed, step: step, message: message, trace: trace)
        }
    }

    // MARK: - Run

    mutating func run() -> SimulationFailure? {
        let total = options.faultSteps + options.healSteps
        while step < total, failure == nil {
            if step == options.faultSteps { heal() }
            if faulty { injectFaults() }
            deliverDuePackets()
            for i in nodes.indices where nodes[i].up {
                let ready = nodes[i].core!.onTick()
                handle(ready, at: i)
            }
            actClients()
            if faulty && options.membershipChangePerMille > 0 && chancePerMille(options.membershipChangePerMille) {
                proposeMembershipChange()
            }
            checkStepInvariants()
            now += 1
            step += 1
            stats.steps += 1
        }
        if failure == nil { checkFinalProgress() }
        return failure
    }

    // MARK: - Replicas

    mutating func start(_ i: Int) {
        let node = nodes[i]
        node.incarnation += 1
        // Spares join later: no bootstrap membership, so they never campaign
        // before a configuration that includes them reaches them.
        let members = i < options.replicas ? (1...options.replicas).map { ReplicaID(UInt64($0)) } : []
        let configuration = RaftConfiguration(
            id: node.id, bootstrapMembers: members,
            electionTimeoutTicks: options.electionTimeoutTicks,
            heartbeatIntervalTicks: options.heartbeatIntervalTicks,
            preVote: preVote,
            maxEntriesPerMessage: 8,
            randomSeed: seed ^ (node.id.rawValue &* 0x9E37_79B9) ^ (node.incarnation << 40))
        node.core = RaftCore(configuration: configuration, persisted: node.storage)
        node.up = true
        if let snapshot = node.storage.snapshot {
            do {
                node.machine = try NameServiceState(snapshotBytes: snapshot.data)
            } catch {
                fail("\(node.id) cannot decode its own snapshot: \(error)")
            }
            node.applied = snapshot.lastIncludedIndex
        } else {
            node.machine = NameServiceState()
            node.applied = 0
        }
        node.pendingReads = []
        node.issuedReads = [:]
        note("start \(node.id) incarnation \(node.incarnation) log \(node.storage.entries.count) term \(node.storage.hardState.term)")
    }

    mutating func crash(_ i: Int) {
        guard nodes[i].up else { return }
        nodes[i].up = false
        nodes[i].core = nil
        nodes[i].pendingReads = []
        nodes[i].issuedReads = [:]
        stats.crashes += 1
        note("crash \(nodes[i].id)")
    }

    /// Performs a `RaftReady` in the required order: persist, send, apply,
    /// reads, proposal outcomes; then compacts if the log grew too long.
    mutating func handle(_ ready: RaftReady, at i: Int) {
        guard nodes[i].up else { return }
        nodes[i].storage.persist(ready)
        checkAppended(ready.entriesToAppend, at: i)
        if faulty && chancePerMille(2) && ready.mustPersist {
            // Crash after fsync but before anything leaves the node.
            crash(i)
            return
        }
        for outgoing in ready.messages {
            enqueue(from: i, to: Int(outgoing.to.rawValue) - 1, outgoing.message)
        }
        if faulty && ready.hardState != nil && chancePerMille(30) {
            // Reboot right after persisting and sending a term or vote: the
            // restarted replica must honour a vote it no longer holds in memory.
            crash(i)
            start(i)
            return
        }
        if let snapshot = ready.snapshot, ready.restoresStateMachine {
            do {
                nodes[i].machine = try NameServiceState(snapshotBytes: snapshot.data)
            } catch {
                fail("\(nodes[i].id) cannot decode a leader snapshot: \(error)")
                return
            }
            if let known = snapshotBytesAt[snapshot.lastIncludedIndex], known != snapshot.data {
                fail("snapshot at \(snapshot.lastIncludedIndex) differs between replicas")
            }
            nodes[i].applied = snapshot.lastIncludedIndex
            stats.snapshotsInstalled += 1
            note("\(nodes[i].id) installs snapshot at \(snapshot.lastIncludedIndex)")
        }
        for entry in ready.committedEntries { apply(entry, at: i) }
        for read in ready.readStates { onReadState(read, at: i) }
        for outcome in ready.proposalOutcomes { onProposalOutcome(outcome, at: i) }
        checkReads(at: i)
        maybeCompact(i)
    }

    mutating func maybeCompact(_ i: Int) {
        let node = nodes[i]
        guard node.up, node.core!.log.entries.count > options.snapshotThreshold,
              node.applied > node.core!.log.snapshotIndex else { return }
        let index = nodes[i].applied
        let bytes = nodes[i].machine.snapshotBytes()
        if let known = snapshotBytesAt[index], known != bytes {
            fail("\(nodes[i].id) snapshot at \(index) differs from another replica's")
        }
        snapshotBytesAt[index] = bytes
        stats.snapshotsTaken += 1
        let ready = nodes[i].core!.onCompact(throughIndex: index, stateMachineSnapshot: bytes)
        note("\(nodes[i].id) compacts through \(index)")
        handle(ready, at: i)
    }

    mutating func apply(_ entry: LogEntry, at i: Int) {
        let node = nodes[i].id
        guard entry.index == nodes[i].applied + 1 else {
            fail("\(node) applies \(entry.index) after \(nodes[i].applied)")
            return
        }
        nodes[i].applied = entry.index
        // State machine safety (Raft §5.4.3): one entry per index, everywhere.
        let slot = Int(entry.index) - 1
        if slot < committed.count {
            if committed[slot] != entry {
                fail("state machine safety: \(node) applies \(entry) at \(entry.index), another replica applied \(committed[slot])")
                return
            }
        } else if slot == committed.count {
            committed.append(entry)
            if case .configuration = entry.payload { stats.membershipChangesCommitted += 1 }
        } else {
            fail("\(node) applies \(entry.index) beyond the known committed prefix \(committed.count)")
            return
        }
        guard case .command(let clientID, let requestID, let data) = entry.payload else { return }
        let result = nodes[i].machine.apply(encoded: data, clientID: clientID, requestID: requestID)
        let key = RequestKey(client: clientID, request: requestID)
        if case .failure(.staleRequest) = result {
            // A duplicate of an older request applied after a newer one.
        } else if let first = firstResult[key] {
            if first != result {
                fail("request \(key) answered \(first) then \(result)")
            }
        } else {
            firstResult[key] = result
            if case .success(.allocated(let pid)) = result {
                guard pid.rawValue > maxPIDIssued else {
                    fail("PID \(pid.rawValue) issued after \(maxPIDIssued): not monotonic")
                    return
                }
                maxPIDIssued = pid.rawValue
            }
        }
        if case .success(.allocated(let pid)) = result {
            if let owner = pidOwner[pid.rawValue], owner != key {
                fail("PID \(pid.rawValue) issued twice: to \(owner) and \(key)")
            }
            pidOwner[pid.rawValue] = key
        }
        // The client hears the result from the replica it asked.
        let c = Int(clientID) - 1
        if c >= 0, c < clients.count, let outstanding = clients[c].outstanding,
           outstanding.requestID == requestID, clients[c].target == i {
            acknowledge(c, requestID: requestID, result: result)
        }
    }

    mutating func acknowledge(_ c: Int, requestID: UInt64, result: NameResult) {
        let key = RequestKey(client: clients[c].id, request: requestID)
        acknowledged[key] = result
        clients[c].outstanding = nil
        stats.requestsAcknowledged += 1
        switch result {
        case .success(.allocated(let pid)):
            maxAcknowledgedPID = max(maxAcknowledgedPID, pid.rawValue)
        case .success(.written(let entry)) where entry.name == "/shared/counter":
            clients[c].casVersion = entry.version
        case .failure(.versionMismatch(_, _, let found)):
            clients[c].casVersion = found
        default:
            break
        }
        note("client \(clients[c].id) acknowledged request \(requestID): \(result)")
    }

    // MARK: - Network

    mutating func enqueue(from: Int, to: Int, _ message: RaftMessage) {
        stats.messagesSent += 1
        if faulty && chance(options.dropPercent) {
            stats.messagesDropped += 1
            return
        }
        let copies = faulty && chance(options.duplicatePercent) ? 2 : 1
        for _ in 0..<copies {
            var delay = 1 + UInt64(pick(3))
            if faulty && chance(2) { delay += 5 + UInt64(pick(15)) }
            network.append(Packet(deliverAt: now + delay, from: from, to: to, message: message))
        }
    }

    mutating func deliverDuePackets() {
        var due: [Packet] = []
        var later: [Packet] = []
        for packet in network {
            if packet.deliverAt <= now { due.append(packet) } else { later.append(packet) }
        }
        network = later
        due.shuffle(using: &rng)
        for packet in due {
            guard nodes[packet.to].up else { continue }
            if blocked.contains(Link(from: packet.from, to: packet.to)) {
                stats.messagesDropped += 1
                continue
            }
            let ready = nodes[packet.to].core!.onMessage(from: nodes[packet.from].id, packet.message)
            handle(ready, at: packet.to)
        }
    }

    // MARK: - Faults

    mutating func injectFaults() {
        let n = nodes.count
        if chancePerMille(12) {
            crash(pick(n))
        }
        if chancePerMille(30) {
            let down = nodes.indices.filter { !nodes[$0].up }
            if !down.isEmpty { start(down[pick(down.count)]) }
        }
        if chancePerMille(10) {
            blocked = []
            switch pick(3) {
            case 0:
                // Isolate a minority (possibly the leader).
                let size = 1 + pick(max(1, (n - 1) / 2))
                var minority = Set<Int>()
                while minority.count < size { minority.insert(pick(n)) }
                for a in 0..<n { for b in 0..<n where minority.contains(a) != minority.contains(b) {
                    blocked.insert(Link(from: a, to: b))
                } }
                note("partition: minority \(minority.sorted().map { nodes[$0].id })")
            case 1:
                // One-way: a replica can send but not receive (or the reverse).
                let victim = pick(n)
                let inbound = pick(2) == 0
                for other in 0..<n where other != victim {
                    blocked.insert(inbound ? Link(from: other, to: victim) : Link(from: victim, to: other))
                }
                note("partition: \(nodes[victim].id) \(inbound ? "deaf" : "mute")")
            default:
                // Random link cuts.
                for a in 0..<n { for b in 0..<n where a != b && chance(25) { blocked.insert(Link(from: a, to: b)) } }
                note("partition: \(blocked.count) links cut")
            }
        }
        if !blocked.isEmpty && chancePerMille(25) {
            blocked = []
            note("partition healed")
        }
    }

    mutating func heal() {
        faulty = false
        blocked = []
        for i in nodes.indices where !nodes[i].up { start(i) }
        note("heal: all replicas up, network reliable")
    }

    // MARK: - Clients

    mutating func makeCommand(_ c: Int) -> NameCommand {
        let client = clients[c]
        switch pick(6) {
        case 0, 1:
            return .allocatePID(node: "node-\(pick(nodes.count))", address: "10.0.0.\(pick(250)):7000",
                                parent: nil, startTimeMillis: now, lease: nil)
        case 2:
            return .create(name: "/jobs/c\(client.id)/n\(client.nextRequestID)", value: [UInt8(truncatingIfNeeded: now)], lease: nil)
        case 3:
            return client.casVersion == 0
                ? .create(name: "/shared/counter", value: [0], lease: nil)
                : .compareAndSet(name: "/shared/counter", expectedVersion: client.casVersion, value: [UInt8(truncatingIfNeeded: client.id)])
        case 4:
            return .createSequential(prefix: "/queue/item-", value: [], lease: nil)
        default:
            return .put(name: "/config/c\(client.id)", value: [UInt8(truncatingIfNeeded: step)], lease: nil)
        }
    }

    mutating func actClients() {
        for c in clients.indices {
            if let outstanding = clients[c].outstanding {
                if now >= outstanding.retryAt {
                    // Timed out: retry the same request id, maybe elsewhere.
                    if chance(50) { clients[c].target = pick(nodes.count) }
                    submit(c)
                }
            } else if faulty && clients[c].issued < options.requestsPerClient && chance(20) {
                let command = makeCommand(c)
                clients[c].outstanding = (clients[c].nextRequestID, command.encoded(), now)
                clients[c].nextRequestID += 1
                clients[c].issued += 1
                submit(c)
            } else if chance(5) {
                issueRead(from: pick(nodes.count))
            }
        }
    }

    mutating func submit(_ c: Int) {
        guard let outstanding = clients[c].outstanding else { return }
        clients[c].outstanding!.retryAt = now + UInt64(3 * options.electionTimeoutTicks)
        let target = clients[c].target
        guard nodes[target].up else {
            clients[c].target = pick(nodes.count)
            return
        }
        note("client \(clients[c].id) proposes request \(outstanding.requestID) at \(nodes[target].id)")
        let ready = nodes[target].core!.onPropose(outstanding.bytes, clientID: clients[c].id, requestID: outstanding.requestID)
        handle(ready, at: target)
    }

    mutating func onProposalOutcome(_ outcome: ProposalOutcome, at i: Int) {
        let c = Int(outcome.clientID) - 1
        guard c >= 0, c < clients.count, clients[c].outstanding?.requestID == outcome.requestID else { return }
        guard case .rejected(let rejection) = outcome.result else { return }
        // Retry soon, at the hinted leader if there is one.
        if case .notLeader(let hint?) = rejection {
            clients[c].target = Int(hint.rawValue) - 1
        } else {
            clients[c].target = pick(nodes.count)
        }
        clients[c].outstanding!.retryAt = now + 3
    }

    // MARK: - Membership

    /// An administrator asks the replica that believes it leads to add a
    /// replica outside its configuration or remove a member (most are refused:
    /// not the leader, a change in progress, the last member).
    mutating func proposeMembershipChange() {
        let candidates = nodes.indices.filter { nodes[$0].up && nodes[$0].core!.role == .leader }
        guard !candidates.isEmpty else { return }
        let i = candidates[pick(candidates.count)]
        let members = nodes[i].core!.currentMembers
        let outsiders = nodes.map(\.id).filter { !members.contains($0) }
        let change: MembershipChange
        if !outsiders.isEmpty && (members.count <= 2 || pick(2) == 0) {
            change = .add(outsiders[pick(outsiders.count)])
        } else {
            change = .remove(members[pick(members.count)])
        }
        adminRequests += 1
        let ready = nodes[i].core!.onProposeMembershipChange(
            change, clientID: 1000, requestID: adminRequests, addresses: [change.replica: "node-\(change.replica.rawValue)"])
        if case .appended(let index, _) = ready.proposalOutcomes.first?.result {
            stats.membershipChangesAppended += 1
            note("\(nodes[i].id) appends \(change) at \(index)")
        }
        handle(ready, at: i)
    }

    // MARK: - Reads

    mutating func issueRead(from i: Int) {
        guard nodes[i].up else { return }
        let readID = nextReadID
        nextReadID += 1
        nodes[i].issuedReads[readID] = maxAcknowledgedPID + 1
        let ready = nodes[i].core!.onReadIndex(requestID: readID)
        handle(ready, at: i)
    }

    mutating func onReadState(_ read: ReadState, at i: Int) {
        guard let minimum = nodes[i].issuedReads.removeValue(forKey: read.requestID) else { return }
        if case .ready(let index) = read.result {
            nodes[i].pendingReads.append((index, minimum))
        }
    }

    /// Linearizable reads (dissertation §6.4): a read confirmed after a PID was
    /// acknowledged must see that allocation.
    mutating func checkReads(at i: Int) {
        guard !nodes[i].pendingReads.isEmpty else { return }
        let applied = nodes[i].applied
        let nextPID = nodes[i].machine.nextUnallocatedPID.rawValue
        var waiting: [(index: UInt64, minimumNextPID: UInt64)] = []
        for read in nodes[i].pendingReads {
            if read.index > applied {
                waiting.append(read)
            } else if nextPID < read.minimumNextPID {
                fail("stale read at \(nodes[i].id): next PID \(nextPID) but PID \(read.minimumNextPID - 1) was acknowledged before the read")
            } else {
                stats.readsChecked += 1
            }
        }
        nodes[i].pendingReads = waiting
    }

    // MARK: - Invariants

    /// Log matching (§5.3): an (index, term) pair names one entry with one
    /// predecessor term, so by induction equal pairs mean equal prefixes.
    mutating func checkAppended(_ entries: [LogEntry], at i: Int) {
        let node = nodes[i]
        guard node.up, !entries.isEmpty else { return }
        for entry in entries {
            let previous = entry.index == 1 ? 0 : node.core!.log.term(at: entry.index - 1)
            guard let previous else {
                fail("\(node.id) appended \(entry.index) without its predecessor")
                return
            }
            let key = IndexTerm(index: entry.index, term: entry.term)
            if let known = entryAt[key] {
                if known.payload != entry.payload || known.previousTerm != previous {
                    fail("log matching: \(node.id) has \(entry) after term \(previous), another log has \(known)")
                }
            } else {
                entryAt[key] = (entry.payload, previous)
            }
        }
    }

    mutating func checkStepInvariants() {
        for i in nodes.indices {
            let node = nodes[i]
            guard node.up else { continue }
            if node.core!.commitIndex > node.core!.log.lastIndex {
                fail("\(node.id) commit \(node.core!.commitIndex) beyond its log \(node.core!.log.lastIndex)")
            }
            guard node.core!.role == .leader else { continue }
            let core = node.core!
            // Election safety (§5.2): at most one leader per term.
            if let known = leaderOfTerm[core.term] {
                if known != core.id { fail("election safety: \(known) and \(core.id) both lead term \(core.term)") }
            } else {
                leaderOfTerm[core.term] = core.id
                maxLeaderTerm = max(maxLeaderTerm, core.term)
                stats.leadersElected += 1
                note("\(core.id) leads term \(core.term)")
                // Leader completeness (§5.4): every committed entry is in the new leader's log.
                for entry in committed where entry.index > core.snapshotIndex {
                    if core.logEntry(at: entry.index) != entry {
                        fail("leader completeness: \(core.id) (term \(core.term)) lacks committed \(entry)")
                        break
                    }
                }
            }
            if core.term == maxLeaderTerm, let last = committed.last, last.index > core.snapshotIndex,
               core.logEntry(at: last.index) != last {
                fail("leader completeness: newest leader \(core.id) lacks committed \(last)")
            }
        }
    }

    mutating func checkFinalProgress() {
        let live = nodes.compactMap(\.core)
        let leaders = live.filter { $0.role == .leader }
        guard let leader = leaders.max(by: { $0.term < $1.term }) else {
            fail("no leader after healing")
            return
        }
        for c in clients.indices {
            if let outstanding = clients[c].outstanding {
                fail("client \(clients[c].id) request \(outstanding.requestID) never acknowledged after healing")
                return
            }
        }
        // Every member of the final configuration converges (replicas removed
        // or never added are not replicated to).
        let reference = nodes[Int(leader.id.rawValue) - 1]
        for i in nodes.indices {
            guard let core = nodes[i].core, leader.currentMembers.contains(core.id) else { continue }
            if core.commitIndex != leader.commitIndex || nodes[i].applied != leader.commitIndex {
                fail("\(core.id) did not converge: commit \(core.commitIndex) applied \(nodes[i].applied), leader \(leader.id) commit \(leader.commitIndex)")
                return
            }
            if nodes[i].machine != reference.machine {
                fail("\(core.id) state machine differs from \(reference.id) after convergence")
                return
            }
            if core.currentMembers != leader.currentMembers {
                fail("\(core.id) ends with members \(core.currentMembers), the leader with \(leader.currentMembers)")
                return
            }
        }
        var appliedRequests = Set<RequestKey>()
        for entry in committed {
            if case .command(let client, let request, _) = entry.payload {
                appliedRequests.insert(RequestKey(client: client, request: request))
            }
        }
        for key in acknowledged.keys where !appliedRequests.contains(key) {
            fail("acknowledged request \(key) is not in the committed log")
        }
        // Full pairwise log matching over retained logs.
        for a in live.indices {
            for b in live.indices where a < b {
                let lo = max(live[a].snapshotIndex, live[b].snapshotIndex) + 1
                let hi = min(live[a].lastLogIndex, live[b].lastLogIndex)
                guard lo <= hi else { continue }
                var matched = false
                for index in stride(from: hi, through: lo, by: -1) {
                    let x = live[a].logEntry(at: index)!
                    let y = live[b].logEntry(at: index)!
                    if matched && x != y { fail("log matching: \(live[a].id) and \(live[b].id) differ at \(index)") }
                    if x.term == y.term { matched = true }
                    if x.term == y.term && x != y { fail("log matching: \(live[a].id) and \(live[b].id) differ at \(index)") }
                }
            }
        }
    }
}

extension Simulation {
    /// Runs `count` schedules with seeds derived from `baseSeed`; returns the
    /// first failure and the summed statistics.
    static func runMany(baseSeed: UInt64, count: Int, options: SimulationOptions) -> (SimulationFailure?, SimulationStats) {
        var total = SimulationStats()
        var seeds = SeededGenerator(seed: baseSeed)
        for _ in 0..<count {
            let seed = seeds.next()
            var simulation = Simulation(seed: seed, options: options)
            let failure = simulation.run()
            total.add(simulation.stats)
            if failure != nil {
                // Replay with tracing for a readable report.
                var traced = options
                traced.tracing = true
                var replay = Simulation(seed: seed, options: traced)
                return (replay.run() ?? failure, total)
            }
        }
        return (nil, total)
    }
}
