import Testing
@testable import NamesCore

/// Single-server membership change (dissertation §4.1) as the replicated
/// service uses it: configuration contexts (member addresses, the request that
/// made the change) survive compaction, snapshots and restarts; retried
/// requests take effect once; a joining replica never campaigns; a removed
/// replica learns that it was removed.
@Suite("Membership change")
struct MembershipChangeTests {
    let r1: ReplicaID = 1, r2: ReplicaID = 2, r3: ReplicaID = 3, r4: ReplicaID = 4

    /// A 3-replica cluster with a leader that has committed an entry of its term.
    func settledCluster() -> (RaftTestCluster, ReplicaID) {
        var cluster = RaftTestCluster(size: 3)
        let leader = cluster.electLeader()!
        cluster.tickAll(times: 3)
        cluster.deliverAll()
        return (cluster, leader)
    }

    func run(_ cluster: inout RaftTestCluster, rounds: Int = 10) {
        for _ in 0..<rounds {
            cluster.tickAll()
            cluster.deliverAll()
        }
    }

    @Test("a joining replica with no bootstrap members never campaigns")
    func joinerWaits() {
        var cluster = RaftTestCluster(size: 3)
        cluster.cores[r4] = RaftCore(configuration: RaftTestCluster.configuration(r4, members: []))
        cluster.tick(r4, times: 200)
        #expect(cluster.cores[r4]!.role == .follower && cluster.cores[r4]!.term == 0)
        #expect(cluster.queue.allSatisfy { $0.from != r4 }, "a joiner must send nothing before it is added")
        #expect(cluster.cores[r4]!.currentMembers.isEmpty)
    }

    @Test("the added replica's address travels in the entry and in snapshots, to members and the joiner alike")
    func contextTravels() throws {
        var (cluster, leader) = settledCluster()
        cluster.cores[r4] = RaftCore(configuration: RaftTestCluster.configuration(r4, members: []))
        let ready = cluster.cores[leader]!.onProposeMembershipChange(
            .add(r4), clientID: 5, requestID: 1, addresses: [r1: "h:1", r2: "h:2", r3: "h:3", r4: "h:4"])
        cluster.perform(ready, at: leader)
        guard case .appended(let index, _) = ready.proposalOutcomes.first?.result else {
            Issue.record("change refused: \(ready.proposalOutcomes)")
            return
        }
        run(&cluster)
        let expected = ConfigurationContext(addresses: [r1: "h:1", r2: "h:2", r3: "h:3", r4: "h:4"], clientID: 5, requestID: 1)
        for id in [r1, r2, r3, r4] {
            #expect(cluster.cores[id]!.currentMembers == [1, 2, 3, 4], "\(id)")
            #expect(cluster.cores[id]!.currentConfigurationContext == expected, "\(id)")
            #expect(cluster.cores[id]!.currentConfigurationIndex == index)
            #expect(!cluster.cores[id]!.configurationChangePending)
        }

        // Compact past the entry: the snapshot carries the context, on disk
        // too, and a restart from storage alone knows the addresses.
        var core = cluster.cores[r2]!
        let compacted = core.onCompact(throughIndex: core.lastAppliedIndex, stateMachineSnapshot: [1, 2])
        cluster.cores[r2] = core
        cluster.perform(compacted, at: r2)
        let snapshot = try #require(compacted.snapshot)
        #expect(snapshot.members == [1, 2, 3, 4] && snapshot.context == expected)
        #expect(try RaftSnapshot(decoding: snapshot.encoded()) == snapshot)
        cluster.restart(r2, members: [r1, r2, r3])
        #expect(cluster.cores[r2]!.currentMembers == [1, 2, 3, 4])
        #expect(cluster.cores[r2]!.currentConfigurationContext == expected)

        // A later change keeps the others' addresses and drops the removed one's.
        run(&cluster)
        let newLeader = cluster.leader!
        let victim = [r1, r2, r3].first { $0 != newLeader }!
        let removal = cluster.cores[newLeader]!.onProposeMembershipChange(.remove(victim), clientID: 5, requestID: 2)
        cluster.perform(removal, at: newLeader)
        run(&cluster)
        var remaining = expected.addresses
        remaining[victim] = nil
        #expect(cluster.cores[newLeader]!.currentConfigurationContext.addresses == remaining)
    }

    @Test("dissertation §6.3: a retried change is answered with its first entry; a new request for the same change is refused")
    func retriedChangeTakesEffectOnce() {
        var (cluster, leader) = settledCluster()
        cluster.cores[r4] = RaftCore(configuration: RaftTestCluster.configuration(r4, members: []))
        let first = cluster.cores[leader]!.onProposeMembershipChange(.add(r4), clientID: 9, requestID: 3)
        cluster.perform(first, at: leader)
        // Retried before it committed: same entry, not "change in progress".
        let early = cluster.cores[leader]!.onProposeMembershipChange(.add(r4), clientID: 9, requestID: 3)
        #expect(early.proposalOutcomes.first?.result == first.proposalOutcomes.first?.result)
        #expect(early.entriesToAppend.isEmpty)
        run(&cluster)
        // Retried after it committed: same entry again.
        let late = cluster.cores[leader]!.onProposeMembershipChange(.add(r4), clientID: 9, requestID: 3)
        #expect(late.proposalOutcomes.first?.result == first.proposalOutcomes.first?.result)
        let other = cluster.cores[leader]!.onProposeMembershipChange(.add(r4), clientID: 9, requestID: 4)
        #expect(other.proposalOutcomes.first?.result == .rejected(.invalidConfigurationChange("r4 is already a member")))
        // After compaction the snapshot's context still answers the retry.
        var core = cluster.cores[leader]!
        _ = core.onCompact(throughIndex: core.lastAppliedIndex, stateMachineSnapshot: [])
        let compactedRetry = core.onProposeMembershipChange(.add(r4), clientID: 9, requestID: 3)
        if case .appended(let index, _) = compactedRetry.proposalOutcomes.first?.result,
           case .appended(let firstIndex, _) = first.proposalOutcomes.first?.result {
            #expect(index == core.snapshotIndex && core.snapshotIndex >= firstIndex)
        } else {
            Issue.record("a retry after compaction must be answered from the snapshot: \(compactedRetry.proposalOutcomes)")
        }
    }

    @Test("dissertation §4.1: one change at a time; the last member cannot be removed")
    func oneAtATimeAndLastMember() {
        var (cluster, leader) = settledCluster()
        let follower = [r1, r2, r3].first { $0 != leader }!
        cluster.perform(cluster.cores[leader]!.onProposeMembershipChange(.remove(follower), clientID: 1, requestID: 1), at: leader)
        #expect(cluster.cores[leader]!.configurationChangePending)
        let second = cluster.cores[leader]!.onProposeMembershipChange(.add(follower), clientID: 1, requestID: 2)
        #expect(second.proposalOutcomes.first?.result == .rejected(.configurationChangeInProgress))
        run(&cluster)
        #expect(!cluster.cores[leader]!.configurationChangePending)
        let other = [r1, r2, r3].first { $0 != leader && $0 != follower }!
        cluster.perform(cluster.cores[leader]!.onProposeMembershipChange(.remove(other), clientID: 1, requestID: 3), at: leader)
        run(&cluster)
        #expect(cluster.cores[leader]!.currentMembers == [leader])
        let last = cluster.cores[leader]!.onProposeMembershipChange(.remove(leader), clientID: 1, requestID: 4)
        #expect(last.proposalOutcomes.first?.result == .rejected(.invalidConfigurationChange("cannot remove the last member")))
    }

    @Test("a removed replica receives the entry that removes it, then stops campaigning and is no longer sent to")
    func removedReplicaLearnsItsRemoval() {
        var (cluster, leader) = settledCluster()
        let victim = [r1, r2, r3].first { $0 != leader }!
        let ready = cluster.cores[leader]!.onProposeMembershipChange(.remove(victim), clientID: 1, requestID: 1)
        cluster.perform(ready, at: leader)
        run(&cluster)
        #expect(!cluster.cores[victim]!.currentMembers.contains(victim))
        #expect(cluster.cores[leader]!.progress[victim] == nil, "the leader stops replicating once the victim knows")
        let termBefore = cluster.cores[leader]!.term
        cluster.queue.removeAll()
        cluster.tick(victim, times: 200)
        #expect(cluster.queue.allSatisfy { $0.from != victim }, "a removed replica must not campaign")
        run(&cluster, rounds: 50)
        #expect(cluster.cores[leader]!.role == .leader && cluster.cores[leader]!.term == termBefore)
    }
}
