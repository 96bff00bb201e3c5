#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NameService
import NamesCore
import Testing
import TestSupport

/// The replicated name service with real `plexus node` processes on loopback:
/// crashes (SIGKILL), partitions (fault injection in the replicas' transport),
/// restarts from disk. Every client history is checked for linearizability.
@Suite(.serialized) struct ReplicatedClusterTests {
    func okCount(_ recorder: HistoryRecorder) -> Int { recorder.counts.value["ok"] ?? 0 }

    /// Reads every key and the process table through a fresh client; every
    /// acknowledged PID must be in the table, and the reads join the history.
    func verifyNothingLost(_ cluster: NameCluster, _ recorder: HistoryRecorder, keys: [String], clientID: Int = 99) throws {
        let client = try cluster.client(timeoutMillis: 10_000)
        for key in keys { recorder.run(.get(key), client: clientID, on: client) }
        let table = Set(try client.processes().map(\.pid.rawValue))
        let acknowledged = recorder.acknowledgedPIDs.value
        let missing = acknowledged.filter { !table.contains($0) }
        #expect(missing.isEmpty, "acknowledged PIDs missing from the process table: \(missing)")
        #expect(!acknowledged.isEmpty)
    }

    @Test func leaderKilledUnderLoadLosesNothing() throws {
        let cluster = try NameCluster(size: 3)
        let first = try cluster.waitForLeader()
        let recorder = HistoryRecorder()
        let load = Workload(recorder: recorder)
        load.start(clients: try (0..<4).map { _ in try cluster.client() })
        defer { load.stop() }
        try eventually(20, "100 acknowledged operations") { okCount(recorder) >= 100 }
        cluster.kill(first)
        let killedAt = okCount(recorder)
        let second = try cluster.waitForLeader(among: (1...3).filter { $0 != first })
        #expect(second != first)
        try eventually(20, "100 more acknowledged operations after the leader died") { okCount(recorder) >= killedAt + 100 }
        load.stop()
        try cluster.start(first)
        try verifyNothingLost(cluster, recorder, keys: load.keys)
        recorder.expectLinearizable("leader-killed")
    }

    /// LESSONS: a single-node cluster lost an acknowledged write on crash. Here a
    /// lone replica is SIGKILLed under load and restarted from its disk.
    @Test func singleReplicaCrashLosesNoAcknowledgedWrite() throws {
        let cluster = try NameCluster(size: 1)
        try cluster.waitForLeader()
        let recorder = HistoryRecorder()
        let load = Workload(recorder: recorder)
        load.start(clients: try (0..<4).map { _ in try cluster.client(timeoutMillis: 1500) })
        defer { load.stop() }
        try eventually(20, "100 acknowledged operations") { okCount(recorder) >= 100 }
        cluster.kill(1)
        load.stop()
        try cluster.start(1)
        try cluster.waitForLeader()
        try verifyNothingLost(cluster, recorder, keys: load.keys)
        recorder.expectLinearizable("single-replica-crash")
    }

    @Test func fiveReplicasServeWithTwoDownAndRefuseWithThree() throws {
        let cluster = try NameCluster(size: 5)
        try cluster.waitForLeader()
        let recorder = HistoryRecorder()
        let load = Workload(recorder: recorder)
        load.start(clients: try (0..<3).map { _ in try cluster.client(timeoutMillis: 3000) })
        defer { load.stop() }
        try eventually(20, "30 acknowledged operations") { okCount(recorder) >= 30 }
        // Two down, the leader among them: the other three keep serving.
        let leader = try cluster.waitForLeader()
        let victims = [leader, leader % 5 + 1]
        for v in victims { cluster.kill(v) }
        let before = okCount(recorder)
        try eventually(20, "30 acknowledged operations with 2 of 5 replicas down") { okCount(recorder) >= before + 30 }
        load.stop()

        // A third down: no quorum, said as such, quickly, for writes and reads.
        let third = (1...5).first { !victims.contains($0) }!
        cluster.kill(third)
        let probe = try cluster.client(timeoutMillis: 8000)
        let started = Date()
        let write = recorder.run(.put("/k1", "after-quorum-loss"), client: 50, on: probe)
        let elapsed = Date().timeIntervalSince(started)
        guard case .noQuorum(let reachable, let members, let needed, _)? = write.error else {
            Issue.record("expected no quorum, got \(String(describing: write.error))")
            return
        }
        #expect((reachable, members, needed) == (2, 5, 3))
        #expect(write.error!.description.hasPrefix("no quorum: 2 of 5 replicas reachable, 3 needed"))
        #expect(elapsed < 2 * Double(2 * NameCluster.electionTimeoutMillis) / 1000 + 1, "no-quorum answer took \(elapsed) s")
        let read = recorder.run(.get("/k1"), client: 51, on: probe)
        if case .noQuorum? = read.error {} else { Issue.record("a read on a minority must fail with no quorum, got \(read)") }

        // Everyone back: every acknowledged PID and name is still there.
        for v in victims + [third] { try cluster.start(v) }
        try cluster.waitForLeader()
        try verifyNothingLost(cluster, recorder, keys: load.keys)
        recorder.expectLinearizable("five-replicas")
    }

    @Test func partitionedMinorityRefusesAndMajorityServes() throws {
        let cluster = try NameCluster(size: 5, extraArguments: ["--names-fault-injection"])
        let leader = try cluster.waitForLeader()
        let recorder = HistoryRecorder()
        let setup = try cluster.client()
        recorder.run(.put("/p", "before"), client: 1, on: setup)

        // The old leader and one follower on the minority side.
        let minority = [leader, leader % 5 + 1]
        let majority = (1...5).filter { !minority.contains($0) }
        try cluster.partition(minority)
        let cutAt = Date()
        let minorityClient = try cluster.client(minority, timeoutMillis: 5000, followRedirects: false)
        let refused = recorder.run(.put("/p", "minority-write"), client: 2, on: minorityClient)
        let elapsed = Date().timeIntervalSince(cutAt)
        guard case .noQuorum? = refused.error else {
            Issue.record("a write on the minority side must fail with no quorum, got \(String(describing: refused.error))")
            return
        }
        #expect(elapsed < Double(2 * NameCluster.electionTimeoutMillis) / 1000 + 1, "minority answered after \(elapsed) s")

        // The majority elects a leader and serves; the minority never returns the old value.
        let newLeader = try cluster.waitForLeader(among: majority)
        #expect(majority.contains(newLeader))
        let majorityClient = try cluster.client(majority)
        recorder.run(.put("/p", "majority-write"), client: 3, on: majorityClient)
        #expect(recorder.acknowledgedValues.value["/p"]?.contains("majority-write") == true)
        let stale = recorder.run(.get("/p"), client: 4, on: minorityClient)
        if case .noQuorum? = stale.error {} else { Issue.record("a read on the minority must fail with no quorum, got \(stale)") }

        try cluster.heal()
        try cluster.waitForLeader(everyoneAgrees: true)
        let healedClient = try cluster.client(minority, timeoutMillis: 5000)
        let after = recorder.run(.get("/p"), client: 5, on: healedClient)
        #expect(after.entry.map { String(decoding: $0.value, as: UTF8.self) } == "majority-write", "\(after)")
        recorder.expectLinearizable("partition")
    }

    @Test func restartFromDiskWithSnapshotsKeepsEverything() throws {
        let cluster = try NameCluster(size: 3, extraArguments: ["--snapshot-every", "16"])
        try cluster.waitForLeader()
        let client = try cluster.client()
        var pids: [UInt64] = []
        for i in 0..<40 {
            _ = try client.put("/restart/n\(i)", value: Array("v\(i)".utf8))
            pids.append(try client.allocatePID(node: "n", address: "a\(i)", parent: nil).rawValue)
        }
        #expect(Set(pids).count == pids.count)
        let statuses = (1...3).compactMap { cluster.status($0) }
        #expect(statuses.allSatisfy { $0.snapshotIndex > 0 }, "every replica should have compacted: \(statuses)")
        for r in 1...3 { cluster.kill(r) }
        for r in 1...3 { try cluster.start(r) }
        try cluster.waitForLeader()
        let again = try cluster.client()
        for i in 0..<40 {
            #expect(try again.get("/restart/n\(i)").value == Array("v\(i)".utf8))
        }
        #expect(try again.processes().map(\.pid.rawValue) == pids)
        // New PIDs continue after the old ones: none is issued twice across restarts.
        let next = try again.allocatePID(node: "n", address: "after", parent: nil).rawValue
        #expect(next > pids.max()!)
    }

    /// A replica that was down while the others compacted their logs catches up
    /// from an InstallSnapshot (Raft §7) and can then form the quorum that serves.
    @Test func laggingReplicaCatchesUpFromASnapshot() throws {
        let cluster = try NameCluster(size: 3, extraArguments: ["--snapshot-every", "8"])
        let leader = try cluster.waitForLeader()
        let lagging = leader % 3 + 1
        cluster.kill(lagging)
        let client = try cluster.client()
        for i in 0..<40 { _ = try client.put("/lag/n\(i)", value: Array("v\(i)".utf8)) }
        let compacted = try #require(cluster.status(leader))
        #expect(compacted.snapshotIndex > 8, "the leader should have compacted: \(compacted)")
        try cluster.start(lagging)
        try eventually(10, "replica \(lagging) catches up") {
            (cluster.status(lagging)?.appliedIndex ?? 0) >= compacted.commitIndex
        }
        #expect((cluster.status(lagging)?.snapshotIndex ?? 0) > 0, "the lagging replica should have installed a snapshot")
        // Without the replica that never lagged, the caught-up one must hold everything.
        let other = (1...3).first { $0 != leader && $0 != lagging }!
        cluster.kill(other)
        let again = try cluster.client([leader, lagging], timeoutMillis: 8000)
        for i in 0..<40 { #expect(try again.get("/lag/n\(i)").value == Array("v\(i)".utf8)) }
        cluster.kill(leader)
        try cluster.start(other)
        let survivors = try cluster.client([lagging, other], timeoutMillis: 8000)
        #expect(try survivors.get("/lag/n39").value == Array("v39".utf8))
    }

    @Test func tornAndCorruptWalTailsAreCutAtStartup() throws {
        let cluster = try NameCluster(size: 3, extraArguments: ["--snapshot-every", "100000"])
        try cluster.waitForLeader()
        let client = try cluster.client()
        for i in 0..<10 { _ = try client.put("/torn/n\(i)", value: Array("v\(i)".utf8)) }
        for r in 1...3 { cluster.kill(r) }
        // r1: a torn record (header promising more bytes than follow);
        // r2: the last record's payload flipped (checksum mismatch).
        let wal1 = cluster.dataDirectory(1) + "/wal"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: wal1))
        handle.seekToEndOfFile()
        handle.write(Data([200, 0, 0, 0, 1, 2, 3, 4, 9, 9]))
        try handle.close()
        let wal2 = cluster.dataDirectory(2) + "/wal"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: wal2)))
        bytes[bytes.count - 2] ^= 0xFF
        try Data(bytes).write(to: URL(fileURLWithPath: wal2))

        for r in 1...3 { try cluster.start(r) }
        try eventually(10, "the replicas report the discarded tails") {
            cluster.stderr(1).contains("discarded 10 bytes") && cluster.stderr(2).contains("discarded")
        }
        #expect(cluster.stderr(2).contains("checksum mismatch"), "\(cluster.stderr(2))")
        try cluster.waitForLeader()
        let again = try cluster.client()
        for i in 0..<10 { #expect(try again.get("/torn/n\(i)").value == Array("v\(i)".utf8)) }
        // The bad tails were cut on disk, not only skipped in memory: records the
        // replicas appended since then (votes, terms, entries) follow the cut, so a
        // second restart reads both logs to the end and discards nothing. (Comparing
        // file sizes would race with those appends.)
        for r in 1...2 {
            cluster.kill(r)
            try cluster.start(r)
            #expect(!cluster.stderr(r).contains("discarded"), "replica \(r) after a clean restart: \(cluster.stderr(r))")
        }
        try cluster.waitForLeader()
        for i in 0..<10 { #expect(try again.get("/torn/n\(i)").value == Array("v\(i)".utf8)) }
    }

    @Test func fullDiskMakesTheReplicaRefuseWrites() throws {
        // One replica whose disk "fills up" after a few writes (ENOSPC injected).
        let cluster = try NameCluster(size: 1, extraArguments: ["--names-fail-writes-after", "6"])
        try cluster.waitForLeader()
        let client = try cluster.client(timeoutMillis: 3000)
        var failure: NameServiceError?
        for i in 0..<10 {
            do { _ = try client.put("/disk/n\(i)", value: [1]) } catch {
                failure = error
                break
            }
        }
        guard case .storage(let message)? = failure else {
            Issue.record("expected a storage failure, got \(String(describing: failure))")
            return
        }
        #expect(message.contains("No space left on device") && message.contains("free space"), "\(message)")
        // Later requests are refused at once with the same error, reads included.
        do {
            _ = try client.get("/disk/n0")
            Issue.record("a replica with a failed disk must not serve")
        } catch {
            #expect(error.description.contains("No space left on device"), "\(error)")
        }
        let status = cluster.status(1)
        #expect(status?.storageFailure != nil)
    }

    @Test func retriedAllocationReturnsTheSamePID() throws {
        let cluster = try NameCluster(size: 3)
        try cluster.waitForLeader()
        // Two clients sharing one session id: the second's first request carries the
        // same (client id, request id) as the first's, exactly what a retry sends.
        let a = try NameClient(replicas: cluster.addresses, clientID: 4242)
        let b = try NameClient(replicas: cluster.addresses, clientID: 4242)
        let first = try a.allocatePID(node: "n", address: "x", parent: nil)
        let retried = try b.allocatePID(node: "n", address: "x", parent: nil)
        #expect(first == retried)
        let other = try NameClient(replicas: cluster.addresses)
        #expect(try other.allocatePID(node: "n", address: "y", parent: nil).rawValue == first.rawValue + 1)
    }
}

/// Leases: kept alive by their holder, ended by the leader's clock, renewed
/// (never cut short) by a new leader.
@Suite(.serialized) struct LeaseTests {
    @Test func ephemeralNameLivesWhileKeptAliveAndGoesWhenTheLeaseExpires() throws {
        let cluster = try NameCluster(size: 3)
        try cluster.waitForLeader()
        let client = try cluster.client()
        let lease = try client.grantLease(ttlMillis: 600)
        _ = try client.createEphemeral("/eph/worker", value: Array("up".utf8), lease: lease)
        // Kept alive for longer than its TTL, it stays.
        let keepUntil = Date().addingTimeInterval(1.2)
        while Date() < keepUntil {
            try client.keepAlive(lease)
            #expect(try client.get("/eph/worker").value == Array("up".utf8))
            usleep(100_000)  // the holder's keep-alive period, not synchronisation
        }
        // Abandoned, it ends and takes the name with it.
        try eventually(10, "the lease expires and /eph/worker is deleted") {
            do {
                _ = try client.get("/eph/worker")
                return false
            } catch let error as NameServiceError {
                return error == .rejected(.nameNotFound("/eph/worker"))
            }
        }
        #expect(throws: NameServiceError.rejected(.leaseNotFound(lease))) { try client.keepAlive(lease) }
        guard case .events(let batch) = try client.query(.watch(fromRevision: 1, prefix: "/eph", limit: 10)) else {
            Issue.record("watch did not return events")
            return
        }
        #expect(batch.events.contains { $0.kind == .nameDeleted(name: "/eph/worker", lease: lease) }, "\(batch.events)")
    }

    @Test func revokedLeaseDeletesItsNamesAtOnce() throws {
        let cluster = try NameCluster(size: 1)
        try cluster.waitForLeader()
        let client = try cluster.client()
        let lease = try client.grantLease(ttlMillis: 60_000)
        _ = try client.createEphemeral("/eph/a", value: [1], lease: lease)
        try client.revokeLease(lease)
        #expect(throws: NameServiceError.rejected(.nameNotFound("/eph/a"))) { _ = try client.get("/eph/a") }
    }
}
