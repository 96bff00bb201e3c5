import Foundation
import Testing
import TestSupport

/// Every option that names an output file (`bench --json`, `bench memory
/// --json`, `bench names --json`, `bench --stats`, `run --stats`) writes its
/// file, with the metadata of the run, or fails before anything runs with
/// an error that names the option.
@Suite(.serialized) struct OutputFileTests {
    /// The small, fast memory bench: no Jacobi, few samples.
    static let smallBench = ["--skip-jacobi", "--samples", "20", "--floor-samples", "20"]

    /// A path in the temporary directory that no test shares; removed after.
    static func scratchFile(_ name: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("plexus-\(name)-\(UInt32.random(in: 0...UInt32.max)).json")
    }

    /// Runs plexus and expects exit status 0.
    static func runOK(_ args: [String], timeout: Double = 180, sourceLocation: SourceLocation = #_sourceLocation) throws -> Child {
        let c = try Child(try product("plexus"), args)
        let status = try c.wait(timeout: timeout)
        #expect(status == 0, "plexus \(args) exited with \(status)\n\(c.stderr)", sourceLocation: sourceLocation)
        return c
    }

    /// The rows of a benchmark JSON file: an array of objects.
    static func rows(_ file: URL) throws -> [[String: Any]] {
        let data = try Data(contentsOf: file)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]], "not a JSON array of rows: \(file.path)")
    }

    /// The metadata every run carries, whatever the benchmark.
    static func expectCommonMetadata(_ run: [String: Any], sourceLocation: SourceLocation = #_sourceLocation) {
        let date = run["date"] as? String ?? ""
        #expect(ISO8601DateFormatter().date(from: date) != nil, "date '\(date)' is not ISO 8601", sourceLocation: sourceLocation)
        #expect((run["commit"] as? String).map { !$0.isEmpty } == true, "\(run)", sourceLocation: sourceLocation)
        #expect(["debug", "release"].contains(run["build"] as? String ?? ""), "\(run)", sourceLocation: sourceLocation)
        #expect((run["kernel"] as? String).map { !$0.isEmpty } == true, "\(run)", sourceLocation: sourceLocation)
        #expect((run["cpus"] as? Int ?? 0) >= 1, "\(run)", sourceLocation: sourceLocation)
    }

    /// Rows of the memory bench: every one carries its run; those measured
    /// in the job carry the job's protocol, page size, look-ahead, binding
    /// and process count; the read miss has its limit.
    static func expectMemoryRows(_ rows: [[String: Any]], sourceLocation: SourceLocation = #_sourceLocation) throws {
        let names = rows.compactMap { $0["name"] as? String }
        for expected in ["plexus message round trip", "remote read miss", "remote lock acquire+release", "barrier, 2 processes",
                         "busy-poll TCP round trip 16 B -> 4 KiB", "fault served by one mprotect"] {
            #expect(names.contains { $0.hasPrefix(expected) }, "no row '\(expected)' in \(names)", sourceLocation: sourceLocation)
        }
        for row in rows {
            let run = try #require(row["run"] as? [String: Any], "row without run: \(row)", sourceLocation: sourceLocation)
            expectCommonMetadata(run, sourceLocation: sourceLocation)
            #expect(run["processes"] as? Int == ((row["name"] as? String ?? "").hasPrefix("fault") ? 1 : 2), "\(row)",
                    sourceLocation: sourceLocation)
            #expect((run["binding"] as? String).map { !$0.isEmpty } == true, "\(row)", sourceLocation: sourceLocation)
            guard row["limitOf"] != nil else { continue }
            // A row measured in the job.
            #expect(run["protocol"] as? String == "sc", "\(row)", sourceLocation: sourceLocation)
            #expect(run["pageSize"] as? Int == 4096, "\(row)", sourceLocation: sourceLocation)
            #expect(run["lookAhead"] is Int, "\(row)", sourceLocation: sourceLocation)
            #expect((run["binding"] as? String ?? "").contains("rank 1"), "\(row)", sourceLocation: sourceLocation)
            #expect((row["limit"] as? Double ?? 0) > 0 && row["limitRatio"] is Double, "\(row)", sourceLocation: sourceLocation)
        }
        let read = try #require(rows.first { $0["name"] as? String == "remote read miss" })
        #expect((read["run"] as? [String: Any])?["lookAhead"] as? Int == 0, "the page rows run with look-ahead off: \(read)",
                sourceLocation: sourceLocation)
    }

    @Test func benchJSONWritesEveryRowWithItsRun() throws {
        let file = Self.scratchFile("bench")
        defer { try? FileManager.default.removeItem(at: file) }
        let c = try Self.runOK(["bench"] + Self.smallBench + ["--json", file.path])
        try Self.expectMemoryRows(try Self.rows(file))
        #expect(c.stderr.contains("Papers/data/") && c.stderr.contains("-bench.json"), "no suggested file name:\n\(c.stderr)")
    }

    @Test func benchMemoryJSONWritesItsFile() throws {
        let file = Self.scratchFile("bench-memory")
        defer { try? FileManager.default.removeItem(at: file) }
        _ = try Self.runOK(["bench", "memory"] + Self.smallBench + ["--json", file.path])
        try Self.expectMemoryRows(try Self.rows(file))
    }

    @Test func benchNamesJSONWritesItsFile() throws {
        let file = Self.scratchFile("bench-names")
        defer { try? FileManager.default.removeItem(at: file) }
        let c = try Self.runOK(["bench", "names", "--skip-etcd", "--replicas", "1", "--clients", "1", "--ops", "10", "--json", file.path])
        let rows = try Self.rows(file)
        #expect(rows.count == 1, "\(rows)")
        for row in rows {
            #expect(row["backend"] as? String == "plexus", "\(row)")
            let run = try #require(row["run"] as? [String: Any], "row without run: \(row)")
            Self.expectCommonMetadata(run)
            #expect(run["protocol"] == nil && run["pageSize"] == nil, "\(run)")
            #expect(run["processes"] as? Int == 1, "\(run)")
        }
        #expect(c.stderr.contains("-names.json"), "no suggested file name:\n\(c.stderr)")
    }

    @Test func benchStatsWritesItsFile() throws {
        let file = Self.scratchFile("bench-stats")
        defer { try? FileManager.default.removeItem(at: file) }
        _ = try Self.runOK(["bench"] + Self.smallBench + ["--stats", file.path])
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        let processes = try #require(doc["processes"] as? [[String: Any]])
        #expect(processes.compactMap { $0["rank"] as? Int }.sorted() == [0, 1], "\(doc)")
        let run = try #require(doc["run"] as? [String: Any], "\(doc.keys)")
        Self.expectCommonMetadata(run)
        #expect(run["protocol"] as? String == "sc" && run["pageSize"] as? Int == 4096 && run["processes"] as? Int == 2, "\(run)")
    }

    @Test func runStatsWritesItsFile() throws {
        let file = Self.scratchFile("run-stats")
        defer { try? FileManager.default.removeItem(at: file) }
        _ = try Self.runOK(["run", "-n", "2", "--stats", file.path, try product("false-sharing"), "20000"])
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
        #expect((doc["processes"] as? [[String: Any]])?.count == 2, "\(doc)")
        let run = try #require(doc["run"] as? [String: Any], "\(doc.keys)")
        Self.expectCommonMetadata(run)
        #expect(run["processes"] as? Int == 2 && run["protocol"] as? String == "sc", "\(run)")
        #expect((run["binding"] as? String ?? "").contains("rank 1"), "\(run)")
    }

    /// Each option with a file in a directory that does not exist: plexus
    /// fails at once, names the option, runs nothing and creates nothing.
    @Test(arguments: [
        (["bench", "--json"], "--json"),
        (["bench", "memory", "--json"], "--json"),
        (["bench", "names", "--skip-etcd", "--replicas", "1", "--clients", "1", "--ops", "10", "--json"], "--json"),
        (["bench", "--stats"], "--stats"),
        (["run", "-n", "1", "--stats"], "--stats"),
    ])
    func unwritableFileFailsBeforeTheRun(args: [String], option: String) throws {
        let directory = "/nonexistent-dir-\(UInt32.random(in: 0...UInt32.max))"
        let path = directory + "/x.json"
        // What would run: `run` a program that leaves a file; the benches
        // print their first line when they start.
        let ran = Self.scratchFile("ran")
        defer { try? FileManager.default.removeItem(at: ran) }
        let program = args.first == "run" ? ["/bin/sh", "-c", "touch \(ran.path)"] : []
        let r = try runPlexus(args + [path] + program, timeout: 60)
        #expect(r.status != 0, "plexus \(args) \(path) succeeded:\n\(r.stdout)\(r.stderr)")
        #expect(r.stderr.contains(option) && r.stderr.contains(directory) && r.stderr.contains("does not exist"), "\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: ran.path), "the job ran")
        #expect(!r.stderr.contains("plexus bench: 2 processes") && !r.stdout.contains("backend"), "the bench ran:\n\(r.stdout)\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory))
    }
}
