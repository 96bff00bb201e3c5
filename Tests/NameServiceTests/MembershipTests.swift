#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NameService
import NamesCore
import Testing
import TestSupport
import Wire

/// Single-server membership change (Raft dissertation §4.1) with real
/// `plexus node` processes: replicas started with --join-existing are added
/// one at a time, catch up (from a snapshot when the log was compacted), and
/// take over when original members die; removal shrinks the majority and the
/// removed replica refuses to serve; restarted replicas keep the membership
/// from their disk. Client histories are checked for linearizability.
@Suite(.serialized) struct MembershipTests {
    func okCount(_ recorder: HistoryRecorder) -> Int { recorder.counts.value["ok"] ?? 0 }

    /// Polls until `replica` has applied at least `index`.
    func waitForCatchUp(_ cluster: NameCluster, _ replica: Int, to index: UInt64, timeout: Double = 15) throws {
        try eventually(timeout, "replica \(replica) applies entry \(index)") {
            (cluster.status(replica)?.appliedIndex ?? 0) >= index
        }
    }

    /// Runs `plexus cluster …` to completion.
    func cli(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try runPlexus(["cluster"] + args, timeout: 30)
    }

    @Test func addTwoReplicasThenLoseTwoOriginalsAndKeepServing() throws {
        let cluster = try NameCluster(size: 3, extraArguments: ["--snapshot-every", "16"])
        try cluster.waitForLeader()
        let recorder = HistoryRecorder()
        let load = Workload(recorder: recorder)
        load.start(clients: try (0..<3).map { _ in try cluster.client(timeoutMillis: 5000) })
        defer { load.stop() }
        // Enough writes that every replica compacted its log: the new replicas
        // must catch up through InstallSnapshot.
        try eventually(20, "the leader compacts its log") {
            let leader = try cluster.waitForLeader()
            return okCount(recorder) >= 60 && (cluster.status(leader)?.snapshotIndex ?? 0) > 0
        }

        // A replica waiting to be added does not serve and says what to do.
        let r4 = try cluster.startJoiner()
        let waiting = try #require(cluster.status(r4))
        #expect(waiting.role == "joining", "\(waiting)")
        #expect(waiting.members.isEmpty)
        let early = try NameClient(replicas: [cluster.address(r4)], options: NameClient.Options(timeoutMillis: 500))
        do {
            _ = try early.get("/k1")
            Issue.record("a replica that is not a member yet must not answer reads")
        } catch {
            #expect(error.description.contains("not a member of the name-service cluster yet"), "\(error)")
        }

        // Add r4 through the client API.
        let admin = try cluster.client(timeoutMillis: 10_000)
        let added = try admin.addReplica(ReplicaID(UInt64(r4)), address: cluster.address(r4))
        #expect(added.members == [1, 2, 3, 4])
        #expect(added.quorum == 3)
        #expect(added.addresses[ReplicaID(UInt64(r4))] == cluster.address(r4))
        try waitForCatchUp(cluster, r4, to: added.index)
        let caughtUp = try #require(cluster.status(r4))
        #expect(caughtUp.snapshotIndex > 0, "r4 should have installed the leader's snapshot: \(caughtUp)")
        #expect(caughtUp.members == [1, 2, 3, 4] && caughtUp.role == "follower", "\(caughtUp)")

        // Add r5 through the CLI, naming only one original replica.
        let r5 = try cluster.startJoiner()
        let cliAdd = try cli(["add", "--id", "\(r5)", "--address", cluster.address(r5), "--names", cluster.address(1),
                              "--timeout-ms", "10000"])
        #expect(cliAdd.status == 0, "\(cliAdd.stderr)")
        #expect(cliAdd.stdout.contains("members: r1 r2 r3 r4 r5 (5 replicas, 3 needed for a quorum)"), "\(cliAdd.stdout)")
        let again = try cli(["add", "--id", "\(r5)", "--address", cluster.address(r5), "--names", cluster.address(1)])
        #expect(again.status == 1)
        #expect(again.stderr.contains("r5 is already a member"), "\(again.stderr)")
        let leader = try cluster.waitForLeader()
        let commit = try #require(cluster.status(leader)).commitIndex
        try waitForCatchUp(cluster, r5, to: commit)

        // Every original member learnt the new replicas' addresses, and
        // `cluster status` lists all five.
        for r in 1...3 {
            let s = try #require(cluster.status(r))
            #expect(s.members == [1, 2, 3, 4, 5], "r\(r): \(s)")
            #expect(s.addresses[4] == cluster.address(r4) && s.addresses[5] == cluster.address(r5), "r\(r): \(s.addresses)")
        }
        let status = try cli(["status", "--names", cluster.address(2)])
        #expect(status.status == 0, "\(status.stderr)")
        for r in 1...5 { #expect(status.stdout.contains(cluster.address(r)), "r\(r) missing from:\n\(status.stdout)") }

        // Two of the three originals die, the leader among them if it is one:
        // the other original and the two new replicas are a majority of five.
        let victims = leader <= 3 ? [leader, leader % 3 + 1] : [1, 2]
        let before = okCount(recorder)
        for v in victims { cluster.kill(v) }
        let survivors = (1...5).filter { !victims.contains($0) }
        try cluster.waitForLeader(among: survivors, timeout: 15)
        try eventually(20, "30 acknowledged operations with originals \(victims) dead") { okCount(recorder) >= before + 30 }
        load.stop()

        let reader = try NameClient(replicas: survivors.map { cluster.address($0) }, options: NameClient.Options(timeoutMillis: 10_000))
        for key in load.keys { recorder.run(.get(key), client: 99, on: reader) }
        let table = Set(try reader.processes().map(\.pid.rawValue))
        let missing = recorder.acknowledgedPIDs.value.filter { !table.contains($0) }
        #expect(missing.isEmpty, "acknowledged PIDs missing after the originals died: \(missing)")
        recorder.expectLinearizable("membership-grow")
    }

    @Test func removalShrinksTheQuorumAndTheRemovedReplicaRefuses() throws {
        let cluster = try NameCluster(size: 3)
        try cluster.waitForLeader()
        let recorder = HistoryRecorder()
        let load = Workload(recorder: recorder)
        load.start(clients: try (0..<2).map { _ in try cluster.client(timeoutMillis: 5000) })
        defer { load.stop() }
        try eventually(20, "20 acknowledged operations") { okCount(recorder) >= 20 }

        let admin = try cluster.client(timeoutMillis: 10_000)
        #expect(throws: NameServiceError.rejected(.invalidArgument("membership change refused: r7 is not a member"))) {
            _ = try admin.removeReplica(7)
        }
        // Remove a follower; the majority of the three left is two.
        let leader = try cluster.waitForLeader()
        let removed = leader % 3 + 1
        let outcome = try admin.removeReplica(ReplicaID(UInt64(removed)))
        let rest = (1...3).filter { $0 != removed }
        #expect(outcome.members.map { Int($0.rawValue) } == rest)
        #expect(outcome.quorum == 2)
        try eventually(10, "the leader reports 2 members, 2 needed") {
            cluster.status(leader)?.quorum.hasPrefix("leading: 2 of 2 replicas reachable, 2 needed") == true
        }
        let cliStatus = try cli(["status", "--names", cluster.address(leader)])
        #expect(cliStatus.stdout.contains("2 of 2 replicas reachable, 2 needed"), "\(cliStatus.stdout)")
        let members = try cli(["members", "--names", cluster.address(removed)])
        #expect(members.stdout.contains("members: \(rest.map { "r\($0)" }.joined(separator: " ")) (2 replicas, 2 needed"),
                "\(members.stdout)\(members.stderr)")

        // The removed replica learnt its removal: it does not campaign, and
        // it answers requests by saying it was removed.
        try eventually(10, "r\(removed) reports that it was removed") { cluster.status(removed)?.role == "removed" }
        let stale = try NameClient(replicas: [cluster.address(removed)], options: NameClient.Options(timeoutMillis: 500))
        do {
            _ = try stale.get("/k1")
            Issue.record("a removed replica must not answer reads")
        } catch {
            #expect(error.description.contains("replica r\(removed) was removed from the name-service cluster"), "\(error)")
        }
        let termBefore = try #require(cluster.status(leader)).term
        // A client that lists the removed replica first still reaches the members.
        let mixed = try NameClient(replicas: [cluster.address(removed)] + rest.map { cluster.address($0) },
                                   options: NameClient.Options(timeoutMillis: 5000))
        recorder.run(.put("/k2", "after-removal"), client: 90, on: mixed)
        #expect(recorder.acknowledgedValues.value["/k2"]?.contains("after-removal") == true)
        #expect(cluster.status(leader)?.term == termBefore, "the removed replica must not disturb the leader")

        // With the removed one stopped, the two members serve.
        cluster.kill(removed)
        let before = okCount(recorder)
        try eventually(20, "20 acknowledged operations on the two remaining members") { okCount(recorder) >= before + 20 }
        load.stop()
        // Removing the last-but-one leaves one member; the last cannot go.
        let single = try admin.removeReplica(ReplicaID(UInt64(rest.first { $0 != leader }!)))
        #expect(single.members == [ReplicaID(UInt64(leader))])
        let last = try cli(["remove", "--id", "\(leader)", "--names", cluster.address(leader)])
        #expect(last.status == 1)
        #expect(last.stderr.contains("cannot remove the last member"), "\(last.stderr)")
        recorder.expectLinearizable("membership-remove")
    }

    /// Sends `requests` back to back on one connection to `address` (without
    /// waiting between them) and returns the responses by request.
    func burst(_ address: String, _ requests: [ClientRequest]) throws -> [ClientResponse] {
        let connection = try Connection.dial(
            try SocketAddress(parsing: address), hello: Hello(job: namesJob, sender: UInt64.random(in: (1 << 63)...UInt64.max), role: "client"),
            timeoutMillis: 2000, maxPayload: maxClientPayload)
        defer { connection.shutdown() }
        for (i, request) in requests.enumerated() {
            try connection.send(Frame(.names, requestID: UInt64(i + 1), payload: request.encoded()))
        }
        var responses: [UInt64: ClientResponse] = [:]
        while responses.count < requests.count, let frame = try connection.receive() {
            responses[frame.requestID] = try ClientResponse(decoding: frame.payload)
        }
        return try (1...requests.count).map { i in
            guard let response = responses[UInt64(i)] else { throw HarnessError("no response to request \(i)") }
            return response
        }
    }

    /// One change at a time: a change that arrives while the previous one is
    /// not committed is refused and changes nothing. A change retried with
    /// the same request id takes effect once.
    @Test func oneChangeAtATimeAndRetriesTakeEffectOnce() throws {
        let cluster = try NameCluster(size: 3)
        let leader = try cluster.waitForLeader()
        let follower = leader % 3 + 1
        let id = ReplicaID(UInt64(follower))
        // Remove a follower and, right behind it on the same connection, add it
        // back. The add reaches the leader before the followers can have
        // acknowledged the removal (a disk write and a round trip later), so it
        // is refused. Should the machine stall between the two, the add finds
        // the removal committed and undoes it: try again (at most 5 times).
        var refusal: String?
        for attempt in 1...5 where refusal == nil {
            let responses = try burst(cluster.address(leader), [
                .membership(clientID: 7, requestID: UInt64(2 * attempt), change: .remove(id), timeoutMillis: 5000),
                .membership(clientID: 7, requestID: UInt64(2 * attempt + 1), change: .add(id, address: cluster.address(follower)),
                            timeoutMillis: 5000),
            ])
            guard case .membershipChanged(_, let members, _) = responses[0] else {
                Issue.record("the removal failed: \(responses[0])")
                return
            }
            #expect(!members.contains(id))
            if case .membershipRefused(let reason) = responses[1] { refusal = reason }
        }
        let reason = try #require(refusal, "no add was refused while the removal was pending")
        #expect(reason.contains("membership changes one replica at a time"), "\(reason)")
        try eventually(10, "the leader's configuration is the two others") {
            cluster.status(leader)?.members.contains(id) == false && cluster.status(leader)?.commitIndex == cluster.status(leader)?.lastLogIndex
        }

        // Re-adding the removed replica, retried with the same request id, is
        // applied once: the retry gets the first attempt's entry back, where a
        // new request is refused because the replica is already a member.
        let admin = try cluster.client(timeoutMillis: 10_000)
        let first = try admin.changeMembership(.add(id, address: cluster.address(follower)), requestID: 77)
        #expect(first.members == [1, 2, 3])
        let retry = try admin.changeMembership(.add(id, address: cluster.address(follower)), requestID: 77)
        #expect(retry.index == first.index && retry.members == [1, 2, 3])
        #expect(throws: NameServiceError.rejected(.invalidArgument("membership change refused: \(id) is already a member"))) {
            _ = try admin.changeMembership(.add(id, address: cluster.address(follower)), requestID: 78)
        }
        // The re-added replica serves again.
        try eventually(10, "r\(follower) is a member again") {
            cluster.status(follower).map { $0.members == [1, 2, 3] && $0.role == "follower" } ?? false
        }
        let direct = try NameClient(replicas: [cluster.address(follower)], options: NameClient.Options(timeoutMillis: 5000))
        _ = try direct.put("/readded", value: [1])

        // No quorum: with one of three up, a change is refused as such (once
        // the leader has noticed; before, it would append the change and then
        // step down without committing it).
        for r in (1...3) where r != leader { cluster.kill(r) }
        try eventually(10, "r\(leader) notices it has no quorum") { cluster.status(leader)?.quorum.hasPrefix("no quorum") == true }
        let lonely = try NameClient(replicas: [cluster.address(leader)], options: NameClient.Options(timeoutMillis: 5000))
        do {
            _ = try lonely.removeReplica(id)
            Issue.record("a change needs a quorum")
        } catch {
            guard case .noQuorum(let reachable, let members, let needed, _) = error else {
                Issue.record("expected no quorum, got \(error)")
                return
            }
            #expect((reachable, members, needed) == (1, 3, 2))
        }
    }

    @Test func restartedReplicasKeepTheMembershipFromDisk() throws {
        let cluster = try NameCluster(size: 3, extraArguments: ["--snapshot-every", "8"])
        try cluster.waitForLeader()
        let recorder = HistoryRecorder()
        let r4 = try cluster.startJoiner()
        let admin = try cluster.client(timeoutMillis: 10_000)
        let added = try admin.addReplica(ReplicaID(UInt64(r4)), address: cluster.address(r4))
        // Writes after the change, so that every replica's snapshot covers the
        // configuration entry: r1 must learn r4's address from its snapshot.
        let writer = try NameClient(replicas: cluster.allReplicas.map { cluster.address($0) })
        for i in 0..<30 { recorder.run(.put("/restart-\(i % 3)", "v\(i)"), client: 1, on: writer) }
        try eventually(10, "every replica's snapshot covers the configuration entry") {
            cluster.allReplicas.allSatisfy { (cluster.status($0)?.snapshotIndex ?? 0) > added.index }
        }

        // The added replica restarts from its disk: a member at once, no re-add.
        cluster.kill(r4)
        try cluster.start(r4)
        let r4Status = try #require(cluster.status(r4))
        #expect(r4Status.members == [1, 2, 3, 4] && r4Status.role != "joining", "\(r4Status)")

        // Every replica restarts; r1 is given only the founders in --replicas.
        for r in cluster.allReplicas { cluster.kill(r) }
        for r in cluster.allReplicas { try cluster.start(r) }
        try cluster.waitForLeader()
        let r1 = try #require(cluster.status(1))
        #expect(r1.members == [1, 2, 3, 4], "\(r1)")
        #expect(r1.addresses[ReplicaID(UInt64(r4))] == cluster.address(r4), "\(r1.addresses)")

        // With r2 down, three of four are needed: r4 must take part, so
        // whoever leads reaches it at the address it learnt from disk.
        cluster.kill(2)
        let survivors = try NameClient(replicas: [1, 3, 4].map { cluster.address($0) },
                                       options: NameClient.Options(timeoutMillis: 10_000))
        recorder.run(.put("/after-restart", "restart"), client: 2, on: survivors)
        #expect(recorder.acknowledgedValues.value["/after-restart"] == ["restart"])
        for i in 0..<3 { recorder.run(.get("/restart-\(i)"), client: 3, on: survivors) }
        recorder.expectLinearizable("membership-restart")
    }

    @Test func cliRefusesToAddAReplicaThatIsNotRunning() throws {
        let cluster = try NameCluster(size: 1)
        try cluster.waitForLeader()
        let port = try NameCluster.freePorts(host: cluster.host, count: 1)[0]
        let r = try cli(["add", "--id", "2", "--address", "\(cluster.host):\(port)", "--names", cluster.address(1),
                         "--timeout-ms", "2000"])
        #expect(r.status == 1)
        #expect(r.stderr.contains("no name-service replica answers at") && r.stderr.contains("--join-existing"), "\(r.stderr)")
        let wrong = try cli(["add", "--id", "2", "--address", cluster.address(1), "--names", cluster.address(1)])
        #expect(wrong.status == 1)
        #expect(wrong.stderr.contains("is replica r1, not r2"), "\(wrong.stderr)")
        #expect(try #require(cluster.status(1)).members == [1])
    }
}
