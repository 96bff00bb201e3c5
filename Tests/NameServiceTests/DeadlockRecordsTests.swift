#if canImport(FoundationXML)
import FoundationXML
#endif
import Foundation
import NameService
import NamesCore
import Testing
import TestSupport

/// A job with a name service records each deadlock its victim found under
/// /deadlocks/<job>/<n>, and `plexus deadlocks` lists and draws them.
@Suite(.serialized) struct DeadlockRecordsTests {
    @Test func theVictimRecordsTheCycleAndPlexusDeadlocksListsIt() throws {
        let cluster = try NameCluster(size: 3)
        try cluster.waitForLeader()
        let names = cluster.addresses.joined(separator: ",")
        let run = try runPlexus(["run", "-n", "2", "--names", names, try product("dsm-check"), "deadlock-inversion", uniqueMarker()],
                                timeout: 60)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        #expect(!run.stderr.contains("could not record"), "\(run.stderr)")

        // One job, one record: both members, the victim the highest PID.
        let client = try cluster.client()
        let jobs = try client.list("/deadlocks")
        #expect(jobs.count == 1, "\(jobs)")
        let job = try #require(jobs.first)
        let entries = try client.list(job.name)
        #expect(entries.map(\.name) == [job.name + "/0000000000"], "\(entries)")
        let value = try client.get(job.name + "/0000000000").value
        let record = try #require(try JSONSerialization.jsonObject(with: Data(value)) as? [String: Any])
        let members = try #require(record["members"] as? [[String: Any]])
        #expect(members.count == 2, "\(record)")
        let pids = members.compactMap { ($0["pid"] as? NSNumber)?.uint64Value }
        #expect((record["victim"] as? NSNumber)?.uint64Value == pids.max(), "\(record)")
        #expect(Set(members.compactMap { $0["rank"] as? Int }) == [0, 1], "\(record)")
        #expect(members.allSatisfy { $0["resource"] as? String == "lock" }, "\(record)")
        #expect(record["policy"] as? String == "abort" && record["time"] is String, "\(record)")
        // The processes of the table are the members.
        let table = Set(try client.processes().map(\.pid.rawValue))
        #expect(Set(pids).isSubset(of: table), "\(pids) not in \(table)")

        let dir = NSTemporaryDirectory() + "plexus-deadlocks-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let list = try runPlexus(["deadlocks", "--names", names, "--svg", dir, "--dot", dir])
        #expect(list.status == 0, "\(list.stderr)")
        let rows = list.stdout.split(separator: "\n").filter { $0.hasPrefix("/deadlocks/") }
        #expect(rows.count == 1, "\(list.stdout)")
        #expect(rows.first?.contains("waits for lock") == true && rows.first?.contains(" abort ") == true, "\(list.stdout)")
        let jobID = String(job.name.dropFirst("/deadlocks/".count))
        let svg = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/\(jobID)-0000000000.svg"))
        #expect(XMLParser(data: svg).parse(), "the SVG is not well-formed")
        #expect(String(decoding: svg, as: UTF8.self).contains("(victim)"))
        let dot = try String(contentsOfFile: "\(dir)/\(jobID)-0000000000.dot", encoding: .utf8)
        #expect(dot.hasPrefix("digraph ") && dot.contains("(victim)"), "\(dot)")

        // --job filters; an unknown job has nothing.
        let none = try runPlexus(["deadlocks", "--names", names, "--job", "job-none"])
        #expect(none.status == 0 && none.stdout.contains("no deadlocks recorded under /deadlocks/job-none"), "\(none.stdout)")
    }

    /// A name service the job's processes cannot reach: the deadlock is
    /// still found and resolved, the job passes, and the victim warns.
    @Test func anUnreachableServiceCostsAWarningNotTheJob() throws {
        let run = try runPlexus(["run", "-n", "2", "/usr/bin/env", "PLEXUS_NAMES=127.0.0.1:1", try product("dsm-check"),
                                 "deadlock-inversion", uniqueMarker()], timeout: 60)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        #expect(run.stdout.contains("PASS deadlock-inversion"), "\(run.stdout)")
        #expect(run.stderr.contains("could not record the deadlock under /deadlocks/job-"), "\(run.stderr)")
        #expect(run.stderr.contains("plexus cluster status --names 127.0.0.1:1"), "\(run.stderr)")
    }
}
