import Foundation
import NameService
import NamesCore
import Testing
import TestSupport

/// `plexus run --names`: every process gets a global PID from the service and
/// is entered in its process table; without it, PIDs stay job-scoped.
@Suite(.serialized) struct LaunchWithNamesTests {
    @Test func jobProcessesGetGlobalPIDsThatAreNeverReused() throws {
        let cluster = try NameCluster(size: 3)
        try cluster.waitForLeader()
        let names = cluster.addresses.joined(separator: ",")
        var seen: [UInt64] = []
        for _ in 0..<2 {
            let r = try runPlexus(["run", "-n", "3", "--names", names, "sh", "-c", "echo PID=$PLEXUS_PID"], timeout: 30)
            #expect(r.status == 0, "\(r.stderr)")
            for line in r.stdout.split(separator: "\n") {
                if let range = line.range(of: "PID=") { seen.append(UInt64(line[range.upperBound...])!) }
            }
        }
        #expect(seen.count == 6)
        #expect(Set(seen).count == 6, "a PID was reused: \(seen)")
        let table = try cluster.client().processes()
        #expect(Set(table.map(\.pid.rawValue)) == Set(seen))
        #expect(table.allSatisfy { $0.state == .exited && $0.exitStatus == 0 }, "\(table)")
        let ps = try runPlexus(["ps", "--names", names])
        #expect(ps.stdout.contains("exited"), "\(ps.stdout)")
    }

    @Test func unreachableNameServiceStopsTheJobBeforeItStarts() throws {
        let marker = uniqueMarker()
        let r = try runPlexus(["run", "-n", "2", "--names", "127.0.0.1:1", "sh", "-c", "sleep 30", marker], timeout: 30)
        #expect(r.status == 1)
        #expect(r.stderr.contains("cannot get global PIDs from the name service"), "\(r.stderr)")
        #expect(processes(containing: marker).isEmpty)
    }

    @Test func withoutANameServicePIDsAreJobScoped() throws {
        let help = try runPlexus(["run", "--help"])
        #expect(help.stdout.contains("PIDs are job-scoped"), "\(help.stdout)")
        let r = try runPlexus(["run", "-n", "2", "sh", "-c", "echo PID=$PLEXUS_PID"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("PID="))
    }

    @Test func nodesRegisterThemselvesAndTellLaunchersWhichServiceToUse() throws {
        let cluster = try NameCluster(size: 3, registerNodes: true)
        try cluster.waitForLeader()
        let client = try cluster.client()
        let nodes = try (1...3).map { try cluster.nodeAddress($0) }
        try eventually(10, "every node is registered under /nodes") {
            Set(try client.list("/nodes").map(\.name)) == Set(nodes.map { "/nodes/" + $0 })
        }
        let entry = try client.get("/nodes/" + nodes[0])
        #expect(entry.lease != nil, "a node's name must be ephemeral: \(entry)")
        #expect(String(decoding: entry.value, as: UTF8.self) == nodes[0])

        // No --names: the node tells the launcher where the service is.
        let r = try runPlexus(["run", "-n", "2", "--nodes", nodes[1], "sh", "-c", "echo PID=$PLEXUS_PID"], timeout: 30)
        #expect(r.status == 0, "\(r.stderr)")
        let pids = r.stdout.split(separator: "\n").compactMap { line in
            line.range(of: "PID=").flatMap { UInt64(line[$0.upperBound...]) }
        }
        #expect(pids.count == 2)
        let table = try client.processes()
        for pid in pids {
            let row = table.first { $0.pid.rawValue == pid }
            #expect(row?.state == .exited && row?.exitStatus == 0, "pid \(pid): \(String(describing: row))")
            #expect(row?.lease != nil, "pid \(pid) must hold a lease")
        }
    }

    @Test func aKilledNodeLeavesNodesWithinItsLeaseTTL() throws {
        let cluster = try NameCluster(size: 3)
        try cluster.waitForLeader()
        let client = try cluster.client()
        let node = try Child(try product("plexus"), [
            "node", "--listen", "127.0.0.1:0", "--names", cluster.addresses.joined(separator: ","), "--lease-ttl-ms", "600",
        ])
        let line = try node.waitForLine(containing: "plexus node listening on ")
        let name = "/nodes/" + String(line.dropFirst("plexus node listening on ".count))
        try eventually(10, "\(name) is registered") { (try? client.get(name)) != nil }
        let lease = try #require(try client.get(name).lease)
        node.kill()
        _ = try node.wait(timeout: 10)
        try eventually(10, "\(name) is gone after its lease ended") {
            do {
                _ = try client.get(name)
                return false
            } catch let error as NameServiceError {
                guard case .rejected(.nameNotFound) = error else { throw error }
                return true
            }
        }
        // Watchers see the name go because its lease ended.
        let events = try Self.events(client, from: 1, prefix: "/nodes/")
        #expect(events.contains { if case .nameDeleted(name, lease) = $0.kind { true } else { false } }, "\(events)")
    }

    @Test func processesOfAKilledLauncherAreMarkedLost() throws {
        let cluster = try NameCluster(size: 3)
        try cluster.waitForLeader()
        let client = try cluster.client()
        let marker = uniqueMarker()
        let run = try Child(try product("plexus"), [
            "run", "-n", "2", "--names", cluster.addresses.joined(separator: ","), "--lease-ttl-ms", "600",
            "sh", "-c", "echo up; sleep 60", marker,
        ])
        try eventually(20, "both ranks started") { run.stdout.contains("[0] up") && run.stdout.contains("[1] up") }
        // A fresh service: the job's two processes are its whole table.
        var mine: [ProcessRecord] = []
        try eventually(10, "both processes are running in the table") {
            mine = try client.processes()
            return mine.count == 2 && mine.allSatisfy { $0.state == .running && $0.lease != nil }
        }
        // One lease for the whole job: one keep-alive stream whatever its size.
        #expect(Set(mine.compactMap(\.lease)).count == 1, "\(mine)")
        run.kill()
        _ = try run.wait(timeout: 10)
        try eventually(10, "the job's processes are marked lost") {
            let rows = try client.processes().filter { r in mine.contains { $0.pid == r.pid } }
            return rows.count == 2 && rows.allSatisfy { $0.state == .lost }
        }
        let events = try Self.events(client, from: 1, prefix: nil)
        for p in mine {
            #expect(events.contains { if case .processChanged(let q) = $0.kind { q.pid == p.pid && q.state == .lost } else { false } },
                    "no 'lost' event for \(p.pid)")
        }
        try eventually(10, "no process of the job is left") { processes(containing: marker).isEmpty }
    }

    /// A lost node's process is marked lost by the launcher at once, not when
    /// the job's lease would expire (a minute here), and the job's lease ends
    /// with the job.
    @Test func aLostNodesProcessIsMarkedLostAtOnce() throws {
        let cluster = try NameCluster(size: 3)
        try cluster.waitForLeader()
        let client = try cluster.client()
        let marker = uniqueMarker()
        let nodes = try (0..<2).map { _ in try Child(try product("plexus"), ["node", "--listen", "127.0.0.1:0"]) }
        let addresses = try nodes.map { String(try $0.waitForLine(containing: "listening on").split(separator: " ").last!) }
        let job = try Child(try product("plexus"), [
            "run", "-n", "2", "--nodes", addresses.joined(separator: ","), "--names", cluster.addresses.joined(separator: ","),
            "--lease-ttl-ms", "60000", "sh", "-c", "echo ready; exec sleep 60", marker,
        ])
        for _ in 0..<2 { _ = try job.waitForLine(containing: "ready") }
        let rows = try client.processes()
        let onFirst = try #require(rows.first { $0.node == addresses[0] }, "\(rows)")
        let lease = try #require(onFirst.lease)
        nodes[0].kill()
        #expect(try job.wait(timeout: 10) != 0)
        try eventually(10, "the lost node's process is marked lost") {
            try client.process(onFirst.pid).state == .lost
        }
        // The other process was stopped by the launcher: it ended too, and so did the lease.
        try eventually(10, "every process of the job ended") { try client.processes().allSatisfy { $0.state.isTerminal } }
        let events = try Self.events(client, from: 1, prefix: nil)
        #expect(events.contains { if case .leaseEnded(lease, expired: false) = $0.kind { true } else { false } }, "\(events)")
        nodes[1].kill()
        try eventually(10, "no process of the job is left") { processes(containing: marker).isEmpty }
    }

    static func events(_ client: NameClient, from revision: UInt64, prefix: String?) throws -> [WatchEvent] {
        var all: [WatchEvent] = []
        var next = revision
        while true {
            guard case .events(let batch) = try client.query(.watch(fromRevision: next, prefix: prefix, limit: 256)) else {
                throw HarnessError("watch did not return events")
            }
            all += batch.events
            if batch.events.isEmpty || batch.nextRevision == next { return all }
            next = batch.nextRevision
        }
    }
}
