@testable import NamesCore

/// A fault-free in-memory cluster for unit tests: FIFO delivery, explicit
/// ticks, links that can be cut. Every `RaftReady` is performed in contract
/// order (persist, send, apply), so storage holds exactly what a crash keeps.
struct RaftTestCluster {
    var cores: [ReplicaID: RaftCore] = [:]
    var storage: [ReplicaID: RaftPersistentState] = [:]
    var queue: [(from: ReplicaID, to: ReplicaID, message: RaftMessage)] = []
    var cut: Set<[ReplicaID]> = []
    var applied: [ReplicaID: [LogEntry]] = [:]
    var reads: [ReplicaID: [ReadState]] = [:]
    var outcomes: [ReplicaID: [ProposalOutcome]] = [:]
    var installedSnapshots: [ReplicaID: [RaftSnapshot]] = [:]
    var electionTimeout: Int

    static func configuration(_ id: ReplicaID, members: [ReplicaID], electionTimeout: Int = 10,
                              preVote: Bool = true, seed: UInt64 = 1) -> RaftConfiguration {
        RaftConfiguration(id: id, bootstrapMembers: members, electionTimeoutTicks: electionTimeout,
                          heartbeatIntervalTicks: 2, preVote: preVote, randomSeed: seed &* 31 &+ id.rawValue)
    }

    init(size: Int, preVote: Bool = true, electionTimeout: Int = 10) {
        self.electionTimeout = electionTimeout
        let members = (1...size).map { ReplicaID(UInt64($0)) }
        for id in members {
            cores[id] = RaftCore(configuration: Self.configuration(id, members: members, electionTimeout: electionTimeout, preVote: preVote))
            storage[id] = RaftPersistentState()
        }
    }

    var ids: [ReplicaID] { cores.keys.sorted() }

    mutating func perform(_ ready: RaftReady, at id: ReplicaID) {
        storage[id, default: RaftPersistentState()].persist(ready)
        for outgoing in ready.messages { queue.append((id, outgoing.to, outgoing.message)) }
        if let snapshot = ready.snapshot, ready.restoresStateMachine {
            installedSnapshots[id, default: []].append(snapshot)
        }
        applied[id, default: []] += ready.committedEntries
        reads[id, default: []] += ready.readStates
        outcomes[id, default: []] += ready.proposalOutcomes
    }

    mutating func tick(_ id: ReplicaID, times: Int = 1) {
        for _ in 0..<times {
            guard cores[id] != nil else { return }
            let ready = cores[id]!.onTick()
            perform(ready, at: id)
        }
    }

    mutating func tickAll(times: Int = 1) {
        for _ in 0..<times {
            for id in ids { tick(id) }
        }
    }

    /// Delivers queued messages (and those they cause) until none are left.
    mutating func deliverAll(limit: Int = 100_000) {
        var delivered = 0
        while !queue.isEmpty && delivered < limit {
            let (from, to, message) = queue.removeFirst()
            delivered += 1
            guard cores[to] != nil, !cut.contains([from, to]) else { continue }
            let ready = cores[to]!.onMessage(from: from, message)
            perform(ready, at: to)
        }
    }

    /// Ticks and delivers until some replica leads; returns it.
    mutating func electLeader(maxTicks: Int = 500) -> ReplicaID? {
        for _ in 0..<maxTicks {
            tickAll()
            deliverAll()
            if let leader = leader { return leader }
        }
        return nil
    }

    var leader: ReplicaID? {
        ids.filter { cores[$0]!.role == .leader }.max { cores[$0]!.term < cores[$1]!.term }
    }

    mutating func propose(_ data: [UInt8], at id: ReplicaID, client: UInt64 = 1, request: UInt64) -> ProposalOutcome {
        let ready = cores[id]!.onPropose(data, clientID: client, requestID: request)
        perform(ready, at: id)
        return ready.proposalOutcomes[0]
    }

    mutating func isolate(_ id: ReplicaID) {
        for other in ids where other != id {
            cut.insert([id, other])
            cut.insert([other, id])
        }
    }

    mutating func crash(_ id: ReplicaID) { cores[id] = nil }

    mutating func restart(_ id: ReplicaID, members: [ReplicaID], seed: UInt64 = 7) {
        cores[id] = RaftCore(configuration: Self.configuration(id, members: members, electionTimeout: electionTimeout, seed: seed),
                             persisted: storage[id] ?? RaftPersistentState())
        applied[id] = []
    }
}
