import Testing
@testable import NamesCore

/// Unit tests named after the Raft paper section (or dissertation section)
/// they check, in the manner of etcd-io/raft `raft_paper_test.go`.

private let r1: ReplicaID = 1
private let r2: ReplicaID = 2
private let r3: ReplicaID = 3
private let r4: ReplicaID = 4

private func makeCore(_ id: ReplicaID, members: [ReplicaID] = [1, 2, 3], preVote: Bool = false, seed: UInt64 = 1,
                      term: UInt64 = 0, votedFor: ReplicaID? = nil, logTerms: [UInt64] = []) -> RaftCore {
    let persisted = RaftPersistentState(
        hardState: HardState(term: term, votedFor: votedFor), snapshot: nil, entries: log(logTerms))
    return RaftCore(configuration: RaftTestCluster.configuration(id, members: members, preVote: preVote, seed: seed), persisted: persisted)
}

/// Entries 1...n with the given terms and distinct command payloads.
private func log(_ terms: [UInt64], from first: UInt64 = 1) -> [LogEntry] {
    terms.enumerated().map { offset, term in
        let index = first + UInt64(offset)
        return LogEntry(index: index, term: term, payload: .command(clientID: 9, requestID: index, data: [UInt8(index), UInt8(term)]))
    }
}

private func voteRequest(term: UInt64, lastIndex: UInt64 = 0, lastTerm: UInt64 = 0, pre: Bool = false) -> RaftMessage {
    .voteRequest(VoteRequest(term: term, lastLogIndex: lastIndex, lastLogTerm: lastTerm, isPreVote: pre))
}

private func voteResponses(_ ready: RaftReady) -> [VoteResponse] {
    ready.messages.compactMap { if case .voteResponse(let r) = $0.message { r } else { nil } }
}

private func appendResponses(_ ready: RaftReady) -> [AppendResponse] {
    ready.messages.compactMap { if case .appendResponse(let r) = $0.message { r } else { nil } }
}

private func appends(_ ready: RaftReady) -> [(ReplicaID, AppendEntries)] {
    ready.messages.compactMap { if case .appendEntries(let m) = $0.message { ($0.to, m) } else { nil } }
}

/// Ticks a follower until it campaigns; returns the campaign batch and tick count.
private func tickUntilCampaign(_ core: inout RaftCore) -> (RaftReady, Int) {
    for tick in 1...1000 {
        let ready = core.onTick()
        if core.role != .follower { return (ready, tick) }
    }
    Issue.record("no campaign within 1000 ticks")
    return (RaftReady(), 0)
}

/// Makes `core` (a member of [1,2,3]) leader of the next term with r2's vote.
private func makeLeader(_ core: inout RaftCore) -> RaftReady {
    _ = tickUntilCampaign(&core)
    return core.onMessage(from: r2, .voteResponse(VoteResponse(term: core.term, granted: true, isPreVote: false)))
}

@Suite("Raft paper sections")
struct RaftPaperTests {
    // MARK: §5.2 Leader election

    @Test("§5.2: a follower that hears nothing for an election timeout campaigns: term+1, self-vote persisted, RequestVote to every peer")
    func followerCampaigns() {
        var core = makeCore(r1)
        let (ready, ticks) = tickUntilCampaign(&core)
        #expect(core.role == .candidate)
        #expect(core.term == 1)
        #expect(ready.hardState == HardState(term: 1, votedFor: r1))
        #expect(ready.mustPersist)
        let requests = ready.messages.compactMap { m -> ReplicaID? in
            if case .voteRequest(let v) = m.message, v.term == 1, !v.isPreVote { m.to } else { nil }
        }
        #expect(requests.sorted() == [r2, r3])
        #expect(ticks >= 10 && ticks < 20)
    }

    @Test("§5.2: election timeouts are drawn from [T, 2T) by the seeded generator, reproducibly")
    func randomisedTimeouts() {
        var seen = Set<Int>()
        for seed in 0..<60 as Range<UInt64> {
            var a = makeCore(r1, seed: seed)
            var b = makeCore(r1, seed: seed)
            let (_, ticksA) = tickUntilCampaign(&a)
            let (_, ticksB) = tickUntilCampaign(&b)
            #expect(ticksA == ticksB)
            #expect(ticksA >= 10 && ticksA < 20)
            seen.insert(ticksA)
        }
        #expect(seen.count >= 5)
    }

    @Test("§5.2: a candidate with a majority of votes becomes leader and appends a no-op of its term (§8)")
    func candidateWins() {
        var core = makeCore(r1)
        _ = tickUntilCampaign(&core)
        let ready = core.onMessage(from: r2, .voteResponse(VoteResponse(term: 1, granted: true, isPreVote: false)))
        #expect(core.role == .leader)
        #expect(core.leader == r1)
        #expect(ready.entriesToAppend == [LogEntry(index: 1, term: 1, payload: .noop)])
        #expect(appends(ready).map(\.0).sorted() == [r2, r3])
    }

    @Test("§5.2: a candidate rejected by a majority returns to follower")
    func candidateLoses() {
        var core = makeCore(r1)
        _ = tickUntilCampaign(&core)
        _ = core.onMessage(from: r2, .voteResponse(VoteResponse(term: 1, granted: false, isPreVote: false)))
        #expect(core.role == .candidate)
        _ = core.onMessage(from: r3, .voteResponse(VoteResponse(term: 1, granted: false, isPreVote: false)))
        #expect(core.role == .follower)
    }

    @Test("§5.2: a replica grants at most one vote per term, first come first served, and persists it")
    func oneVotePerTerm() {
        var voter = makeCore(r3)
        let first = voter.onMessage(from: r1, voteRequest(term: 1))
        #expect(voteResponses(first) == [VoteResponse(term: 1, granted: true, isPreVote: false)])
        #expect(first.hardState == HardState(term: 1, votedFor: r1))
        let second = voter.onMessage(from: r2, voteRequest(term: 1))
        #expect(voteResponses(second) == [VoteResponse(term: 1, granted: false, isPreVote: false)])
        let retry = voter.onMessage(from: r1, voteRequest(term: 1))
        #expect(voteResponses(retry).first?.granted == true)
    }

    @Test("§5.4.1: a voter refuses a candidate whose log is less up-to-date (last term, then length)")
    func upToDateRule() {
        var voter = makeCore(r3, term: 2, logTerms: [1, 2])
        #expect(voteResponses(voter.onMessage(from: r1, voteRequest(term: 3, lastIndex: 5, lastTerm: 1))).first?.granted == false)
        var voter2 = makeCore(r3, term: 2, logTerms: [1, 2])
        #expect(voteResponses(voter2.onMessage(from: r1, voteRequest(term: 3, lastIndex: 1, lastTerm: 2))).first?.granted == false)
        var voter3 = makeCore(r3, term: 2, logTerms: [1, 2])
        #expect(voteResponses(voter3.onMessage(from: r1, voteRequest(term: 3, lastIndex: 2, lastTerm: 2))).first?.granted == true)
    }

    @Test("§5.1: a leader that sees a higher term becomes a follower of that term")
    func higherTermDeposesLeader() {
        var leader = makeCore(r1)
        _ = makeLeader(&leader)
        #expect(leader.role == .leader)
        let ready = leader.onMessage(from: r3, .appendResponse(AppendResponse(term: 9, success: false, index: 0, readSequence: 0)))
        #expect(leader.role == .follower)
        #expect(leader.term == 9)
        #expect(ready.hardState == HardState(term: 9, votedFor: nil))
    }

    // MARK: §5.3 Log replication

    @Test("§5.3: the consistency check rejects a mismatched previous entry and hints where to retry")
    func consistencyCheck() {
        var follower = makeCore(r2, term: 3, logTerms: [1, 1, 2, 2])
        let mismatch = follower.onMessage(from: r1, .appendEntries(AppendEntries(
            term: 3, prevLogIndex: 4, prevLogTerm: 3, entries: [], leaderCommit: 0, readSequence: 0)))
        // First index of the conflicting term 2.
        #expect(appendResponses(mismatch) == [AppendResponse(term: 3, success: false, index: 3, readSequence: 0)])
        let beyond = follower.onMessage(from: r1, .appendEntries(AppendEntries(
            term: 3, prevLogIndex: 7, prevLogTerm: 3, entries: [], leaderCommit: 0, readSequence: 0)))
        #expect(appendResponses(beyond) == [AppendResponse(term: 3, success: false, index: 5, readSequence: 0)])
        #expect(follower.log.lastIndex == 4)
    }

    @Test("§5.3: conflicting entries and all that follow are deleted, the leader's appended (log matching)")
    func conflictTruncation() {
        var follower = makeCore(r2, term: 3, logTerms: [1, 1, 2, 2])
        let incoming = log([3, 3, 3], from: 3)
        let ready = follower.onMessage(from: r1, .appendEntries(AppendEntries(
            term: 3, prevLogIndex: 2, prevLogTerm: 1, entries: incoming, leaderCommit: 4, readSequence: 0)))
        #expect(follower.logEntries.map(\.term) == [1, 1, 3, 3, 3])
        #expect(Array(follower.logEntries[2...]) == incoming)
        #expect(ready.logTruncateFrom == 3)
        #expect(ready.entriesToAppend == incoming)
        #expect(appendResponses(ready) == [AppendResponse(term: 3, success: true, index: 5, readSequence: 0)])
        #expect(ready.committedEntries.map(\.index) == [1, 2, 3, 4])
        // Re-delivering the same message changes nothing (duplicates are safe).
        let again = follower.onMessage(from: r1, .appendEntries(AppendEntries(
            term: 3, prevLogIndex: 2, prevLogTerm: 1, entries: incoming, leaderCommit: 4, readSequence: 0)))
        #expect(again.entriesToAppend.isEmpty && again.logTruncateFrom == nil)
    }

    @Test("§5.3: a follower commits min(leaderCommit, index of last new entry)")
    func followerCommitBound() {
        var follower = makeCore(r2, term: 1, logTerms: [1, 1, 1, 1, 1])
        let ready = follower.onMessage(from: r1, .appendEntries(AppendEntries(
            term: 1, prevLogIndex: 1, prevLogTerm: 1, entries: log([1], from: 2), leaderCommit: 5, readSequence: 0)))
        #expect(follower.commitIndex == 2)
        #expect(ready.committedEntries.map(\.index) == [1, 2])
    }

    // MARK: §5.4.2 Committing entries from previous terms

    @Test("§5.4.2 (Figure 8): an entry of an earlier term on a majority is not committed until an entry of the current term is")
    func figureEight() {
        var leader = makeCore(r1, term: 3, logTerms: [1, 2])
        _ = makeLeader(&leader)
        #expect(leader.role == .leader && leader.term == 4)
        #expect(leader.log.entry(at: 3) == LogEntry(index: 3, term: 4, payload: .noop))
        // Index 2 (term 2) is now stored on r1 and r2: a majority, but not committed.
        let stored = leader.onMessage(from: r2, .appendResponse(AppendResponse(term: 4, success: true, index: 2, readSequence: 0)))
        #expect(leader.commitIndex == 0)
        #expect(stored.committedEntries.isEmpty)
        // Once the term-4 no-op reaches a majority, everything up to it commits.
        let noop = leader.onMessage(from: r2, .appendResponse(AppendResponse(term: 4, success: true, index: 3, readSequence: 0)))
        #expect(leader.commitIndex == 3)
        #expect(noop.committedEntries.map(\.index) == [1, 2, 3])
    }

    @Test("§5.3/§5.4.2: commit needs ⌊N/2⌋+1 replicas; with 5, the leader and two followers", arguments: [false, true])
    func majorityOfFive(preVote: Bool) {
        var cluster = RaftTestCluster(size: 5, preVote: preVote)
        let leader = cluster.electLeader()!
        cluster.tickAll(times: 3)
        cluster.deliverAll()
        let followers = cluster.ids.filter { $0 != leader }
        for f in followers { cluster.isolate(f) }
        guard case .appended(let index, _) = cluster.propose([1], at: leader, request: 1).result else {
            Issue.record("proposal not appended")
            return
        }
        cluster.queue.removeAll()
        var core = cluster.cores[leader]!
        let term = core.term
        _ = core.onMessage(from: followers[0], .appendResponse(AppendResponse(term: term, success: true, index: index, readSequence: 0)))
        #expect(core.commitIndex < index)
        _ = core.onMessage(from: followers[1], .appendResponse(AppendResponse(term: term, success: true, index: index, readSequence: 0)))
        #expect(core.commitIndex == index)
    }

    // MARK: Dissertation §6.4 Read index

    @Test("read-index (dissertation §6.4): answered at the commit index only after a majority acknowledges a later heartbeat")
    func readIndexNeedsHeartbeatQuorum() {
        var cluster = RaftTestCluster(size: 3)
        let leader = cluster.electLeader()!
        cluster.tickAll(times: 3)
        cluster.deliverAll()
        var core = cluster.cores[leader]!
        let commit = core.commitIndex
        #expect(commit >= 1)
        let ready = core.onReadIndex(requestID: 7)
        #expect(ready.readStates.isEmpty)
        let rounds = appends(ready)
        #expect(rounds.count == 2 && rounds.allSatisfy { $0.1.readSequence == 1 })
        let peer = rounds[0].0
        // A response to an older round does not confirm the read.
        let old = core.onMessage(from: peer, .appendResponse(AppendResponse(term: core.term, success: true, index: commit, readSequence: 0)))
        #expect(old.readStates.isEmpty)
        let ack = core.onMessage(from: peer, .appendResponse(AppendResponse(term: core.term, success: true, index: commit, readSequence: 1)))
        #expect(ack.readStates == [ReadState(requestID: 7, result: .ready(index: commit))])
    }

    @Test("read-index: a new leader defers reads until its term's no-op commits")
    func readIndexWaitsForNoop() {
        var core = makeCore(r1, term: 1, logTerms: [1])
        _ = makeLeader(&core)
        let term = core.term
        #expect(core.onReadIndex(requestID: 1).readStates.isEmpty)
        let committed = core.onMessage(from: r2, .appendResponse(AppendResponse(term: term, success: true, index: 2, readSequence: 0)))
        #expect(core.commitIndex == 2)
        #expect(committed.readStates.isEmpty)
        #expect(appends(committed).contains { $0.1.readSequence == 1 })
        let ack = core.onMessage(from: r3, .appendResponse(AppendResponse(term: term, success: true, index: 2, readSequence: 1)))
        #expect(ack.readStates == [ReadState(requestID: 1, result: .ready(index: 2))])
    }

    @Test("read-index: a follower refuses with a leader hint; a deposed leader fails its pending reads")
    func readIndexRejections() {
        var cluster = RaftTestCluster(size: 3)
        let leader = cluster.electLeader()!
        cluster.tickAll(times: 3)
        cluster.deliverAll()
        let follower = cluster.ids.first { $0 != leader }!
        let refused = cluster.cores[follower]!.onReadIndex(requestID: 3)
        #expect(refused.readStates == [ReadState(requestID: 3, result: .rejected(.notLeader(leaderHint: leader)))])
        var core = cluster.cores[leader]!
        _ = core.onReadIndex(requestID: 4)
        let deposed = core.onMessage(from: follower, .appendResponse(AppendResponse(term: core.term + 1, success: false, index: 0, readSequence: 0)))
        #expect(deposed.readStates == [ReadState(requestID: 4, result: .rejected(.leadershipLost))])
    }

    // MARK: Check-quorum, pre-vote, no-quorum reports

    @Test("check-quorum: a leader cut off from the majority steps down and reports 'no quorum'; the majority elects anew")
    func checkQuorum() {
        var cluster = RaftTestCluster(size: 3)
        let old = cluster.electLeader()!
        let oldTerm = cluster.cores[old]!.term
        cluster.tickAll(times: 3)
        cluster.deliverAll()
        #expect(cluster.cores[old]!.quorumReport().state == .leading)
        cluster.isolate(old)
        for _ in 0..<(cluster.electionTimeout + 2) {
            cluster.tickAll()
            cluster.deliverAll()
        }
        #expect(cluster.cores[old]!.role != .leader)
        for _ in 0..<(3 * cluster.electionTimeout) {
            cluster.tickAll()
            cluster.deliverAll()
        }
        let report = cluster.cores[old]!.quorumReport()
        #expect(report.state == .noQuorum)
        #expect(report.description == "no quorum: 1 of 3 replicas reachable, 2 needed")
        let refused = cluster.propose([1], at: old, request: 1)
        #expect(refused.result == .rejected(.noQuorum(report)))
        let newLeader = cluster.leader
        #expect(newLeader != nil && newLeader != old)
        #expect(cluster.cores[newLeader!]!.term > oldTerm)
        #expect(cluster.cores[newLeader!]!.quorumReport().description == "leading: 2 of 3 replicas reachable, 2 needed")
    }

    @Test("a minority without a leader counts every live member at every moment (their election timers fire up to 2T apart)")
    func minorityCountsItsLiveMembers() {
        var cluster = RaftTestCluster(size: 5)
        let leader = cluster.electLeader()!
        let dead = [leader] + cluster.ids.filter { $0 != leader }.prefix(2)
        for d in dead { cluster.crash(d) }
        let live = cluster.ids
        #expect(live.count == 2)
        for step in 0..<(20 * cluster.electionTimeout) {
            cluster.tickAll()
            cluster.deliverAll()
            guard step > 3 * cluster.electionTimeout else { continue }
            for id in live {
                let report = cluster.cores[id]!.quorumReport()
                #expect(report.description == "no quorum: 2 of 5 replicas reachable, 3 needed", "r\(id.rawValue) at tick \(step)")
                if report.reachable != 2 { return }
            }
        }
    }

    @Test("pre-vote (dissertation §9.6): an isolated replica does not raise its term and does not depose the leader on return")
    func preVoteKeepsTerms() {
        var cluster = RaftTestCluster(size: 3, preVote: true)
        let leader = cluster.electLeader()!
        let term = cluster.cores[leader]!.term
        let follower = cluster.ids.first { $0 != leader }!
        cluster.isolate(follower)
        for _ in 0..<100 {
            cluster.tickAll()
            cluster.deliverAll()
        }
        #expect(cluster.cores[follower]!.term == term)
        #expect(cluster.cores[leader]!.role == .leader)
        cluster.cut = []
        for _ in 0..<30 {
            cluster.tickAll()
            cluster.deliverAll()
        }
        #expect(cluster.leader == leader)
        #expect(cluster.cores[leader]!.term == term)
        #expect(cluster.cores[follower]!.currentLeader == leader)
    }

    // MARK: Persistence and recovery

    @Test("recovery: a restarted replica keeps its term, vote and log, and will not vote twice in the term")
    func restartKeepsVote() {
        var cluster = RaftTestCluster(size: 3)
        let ready = cluster.cores[r3]!.onMessage(from: r1, voteRequest(term: 5))
        cluster.perform(ready, at: r3)
        cluster.crash(r3)
        cluster.restart(r3, members: [1, 2, 3])
        #expect(cluster.cores[r3]!.term == 5)
        let again = cluster.cores[r3]!.onMessage(from: r2, voteRequest(term: 5))
        #expect(voteResponses(again) == [VoteResponse(term: 5, granted: false, isPreVote: false)])
    }

    @Test("recovery: a cluster restarted from persisted state keeps and re-applies every committed entry")
    func clusterRestart() {
        var cluster = RaftTestCluster(size: 3)
        let leader = cluster.electLeader()!
        for request in 1...5 as ClosedRange<UInt64> {
            _ = cluster.propose([UInt8(request)], at: leader, request: request)
        }
        cluster.deliverAll()
        cluster.tickAll(times: 3)
        cluster.deliverAll()
        let before = cluster.applied[r1]!.filter { if case .command = $0.payload { true } else { false } }
        #expect(before.count == 5)
        for id in cluster.ids { cluster.crash(id) }
        for id in [r1, r2, r3] { cluster.restart(id, members: [1, 2, 3], seed: id.rawValue) }
        let newLeader = cluster.electLeader()!
        _ = cluster.propose([6], at: newLeader, request: 6)
        cluster.deliverAll()
        cluster.tickAll(times: 3)
        cluster.deliverAll()
        for id in cluster.ids {
            let commands = cluster.applied[id]!.filter { if case .command = $0.payload { true } else { false } }
            #expect(Array(commands.prefix(5)) == before)
            #expect(commands.count == 6)
        }
    }

    // MARK: §7 Log compaction

    @Test("§7: compaction replaces the log prefix by a snapshot; a lagging follower catches up via InstallSnapshot")
    func snapshotCatchUp() {
        var cluster = RaftTestCluster(size: 3)
        let leader = cluster.electLeader()!
        cluster.tickAll(times: 3)
        cluster.deliverAll()
        let lagging = cluster.ids.first { $0 != leader }!
        cluster.isolate(lagging)
        for request in 1...10 as ClosedRange<UInt64> {
            _ = cluster.propose([UInt8(request)], at: leader, request: request)
        }
        cluster.deliverAll()
        cluster.tick(leader, times: 2)
        cluster.deliverAll()
        let applied = cluster.cores[leader]!.appliedIndex
        #expect(applied >= 11)
        let compaction = cluster.cores[leader]!.onCompact(throughIndex: applied, stateMachineSnapshot: [42])
        cluster.perform(compaction, at: leader)
        #expect(compaction.snapshot?.lastIncludedIndex == applied)
        #expect(compaction.restoresStateMachine == false)
        #expect(cluster.cores[leader]!.log.snapshotIndex == applied)
        #expect(cluster.storage[leader]!.entries.allSatisfy { $0.index > applied })
        cluster.cut = []
        for _ in 0..<5 {
            cluster.tickAll()
            cluster.deliverAll()
        }
        #expect(cluster.installedSnapshots[lagging]?.first?.lastIncludedIndex == applied)
        #expect(cluster.installedSnapshots[lagging]?.first?.data == [42])
        #expect(cluster.cores[lagging]!.commitIndex == cluster.cores[leader]!.commitIndex)
        #expect(cluster.storage[lagging]!.snapshot?.lastIncludedIndex == applied)
    }

    @Test("§7 (Figure 13): a follower keeps entries after a snapshot it agrees with, and discards a conflicting log")
    func snapshotRetention() {
        var follower = makeCore(r2, term: 1, logTerms: [1, 1, 1, 1, 1])
        let agreeing = RaftSnapshot(lastIncludedIndex: 3, lastIncludedTerm: 1, members: [1, 2, 3], data: [7])
        let kept = follower.onMessage(from: r1, .installSnapshot(InstallSnapshot(term: 1, snapshot: agreeing, readSequence: 0)))
        #expect(follower.log.snapshotIndex == 3)
        #expect(follower.logEntries.map(\.index) == [4, 5])
        #expect(kept.logTruncateFrom == nil && kept.restoresStateMachine)

        var other = makeCore(r2, term: 2, logTerms: [1, 1, 1, 1, 1])
        let conflicting = RaftSnapshot(lastIncludedIndex: 3, lastIncludedTerm: 2, members: [1, 2, 3], data: [8])
        let discarded = other.onMessage(from: r1, .installSnapshot(InstallSnapshot(term: 2, snapshot: conflicting, readSequence: 0)))
        #expect(other.logEntries.isEmpty && other.log.snapshotIndex == 3)
        #expect(discarded.logTruncateFrom == 4)
        var storage = RaftPersistentState(entries: log([1, 1, 1, 1, 1]))
        storage.persist(discarded)
        #expect(storage.entries.isEmpty && storage.snapshot == conflicting)
    }

    // MARK: Dissertation §4 Membership changes

    @Test("dissertation §4.1: an added replica counts once its entry is appended, and catches up")
    func addReplica() {
        var cluster = RaftTestCluster(size: 3)
        let leader = cluster.electLeader()!
        cluster.tickAll(times: 3)
        cluster.deliverAll()
        cluster.cores[r4] = RaftCore(configuration: RaftTestCluster.configuration(r4, members: []))
        let ready = cluster.cores[leader]!.onProposeMembershipChange(.add(r4), clientID: 1, requestID: 1)
        cluster.perform(ready, at: leader)
        guard case .appended(let index, _) = ready.proposalOutcomes.first?.result else {
            Issue.record("change refused: \(ready.proposalOutcomes)")
            return
        }
        #expect(cluster.cores[leader]!.currentMembers == [1, 2, 3, 4])
        #expect(cluster.cores[leader]!.commitIndex < index)
        let second = cluster.cores[leader]!.onProposeMembershipChange(.remove(r3), clientID: 1, requestID: 2)
        #expect(second.proposalOutcomes.first?.result == .rejected(.configurationChangeInProgress))
        for _ in 0..<5 {
            cluster.tickAll()
            cluster.deliverAll()
        }
        #expect(cluster.cores[leader]!.commitIndex >= index)
        #expect(cluster.cores[r4]!.currentMembers == [1, 2, 3, 4])
        #expect(cluster.cores[r4]!.commitIndex == cluster.cores[leader]!.commitIndex)
        #expect(cluster.cores[leader]!.quorumReport().needed == 3)
    }

    @Test("dissertation §4.2.2: a leader that removes itself steps down once the change commits; the rest elect a leader")
    func removeLeader() {
        var cluster = RaftTestCluster(size: 3)
        let leader = cluster.electLeader()!
        cluster.tickAll(times: 3)
        cluster.deliverAll()
        let ready = cluster.cores[leader]!.onProposeMembershipChange(.remove(leader), clientID: 1, requestID: 1)
        cluster.perform(ready, at: leader)
        for _ in 0..<100 {
            cluster.tickAll()
            cluster.deliverAll()
        }
        #expect(cluster.cores[leader]!.role == .follower)
        #expect(!cluster.cores[leader]!.currentMembers.contains(leader))
        let successor = cluster.leader
        #expect(successor != nil && successor != leader)
        #expect(cluster.cores[successor!]!.currentMembers.count == 2)
    }

    @Test("membership: changes that are not single-server changes are refused with a reason")
    func invalidChanges() {
        var cluster = RaftTestCluster(size: 3)
        let leader = cluster.electLeader()!
        cluster.tickAll(times: 3)
        cluster.deliverAll()
        let add = cluster.cores[leader]!.onProposeMembershipChange(.add(r2), clientID: 1, requestID: 1)
        #expect(add.proposalOutcomes.first?.result == .rejected(.invalidConfigurationChange("r2 is already a member")))
        let remove = cluster.cores[leader]!.onProposeMembershipChange(.remove(9), clientID: 1, requestID: 2)
        #expect(remove.proposalOutcomes.first?.result == .rejected(.invalidConfigurationChange("r9 is not a member")))
    }

    @Test("status reports role, term, leader, commit and applied indexes, and members")
    func status() {
        var cluster = RaftTestCluster(size: 3)
        let leader = cluster.electLeader()!
        cluster.tickAll(times: 3)
        cluster.deliverAll()
        let status = cluster.cores[leader]!.status
        #expect(status.role == .leader && status.leader == leader && status.id == leader)
        #expect(status.term >= 1 && status.commitIndex == 1 && status.appliedIndex == 1)
        #expect(status.members == [1, 2, 3])
        #expect(status.quorum.hasQuorum)
        let follower = cluster.ids.first { $0 != leader }!
        #expect(cluster.cores[follower]!.status.quorum.state == .following(leader))
    }

    @Test("RaftReady.effects lists persistence before sends, sends before applies")
    func effectOrder() {
        var core = makeCore(r2, term: 1, logTerms: [1])
        let ready = core.onMessage(from: r1, .appendEntries(AppendEntries(
            term: 2, prevLogIndex: 1, prevLogTerm: 1, entries: log([2], from: 2), leaderCommit: 2, readSequence: 0)))
        let kinds = ready.effects.map { effect -> Int in
            switch effect {
            case .persistSnapshot, .truncateLog, .appendLog, .persistHardState: 0
            case .send: 1
            case .apply: 2
            case .confirmRead, .proposal: 3
            }
        }
        #expect(kinds == kinds.sorted())
        #expect(kinds.contains(0) && kinds.contains(1) && kinds.contains(2))
    }
}
