import Foundation
import Testing
import TestSupport

/// `plexus bench` is not a test, but what it prints is part of the product:
/// every row with its floor and ratio, its limit and the ratio to it, the
/// floors of the limits as rows of their own, and the same rows as JSON. A
/// tiny run checks the shape, never the figures.
@Suite struct BenchSmokeTests {
    /// The latency rows under every registered protocol end: a barrier whose
    /// completion comes from a reader thread (hlrc's, after the homes
    /// acknowledge the diffs) once deadlocked against a thread waiting in
    /// `synchronize` (lock-order inversion in the engine).
    @Test(arguments: try Registered.all())
    func latencyRowsEndUnderEveryProtocol(protocol: String) throws {
        let c = try Child(try product("plexus"), ["bench", "--protocol", `protocol`, "--skip-jacobi", "--samples", "2000",
                                                  "--floor-samples", "20"])
        let status = try c.wait(timeout: 120)
        #expect(status == 0, "\(c.stderr)")
        #expect(c.stdout.contains("remote read miss"), "\(c.stdout)")
    }

    @Test func everyRowHasItsFloorAndRatioInTheTableAndTheJSON() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("plexus-bench-\(UInt32.random(in: 0...UInt32.max)).json")
        defer { try? FileManager.default.removeItem(at: file) }
        let c = try Child(try product("plexus"), ["bench", "--samples", "20", "--floor-samples", "20", "--jacobi-size", "128",
                                                  "--jacobi-iterations", "2", "--jacobi-runs", "1", "--json", file.path])
        let status = try c.wait(timeout: 120)
        #expect(status == 0, "\(c.stderr)")
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [[String: Any]])
        let names = rows.compactMap { $0["name"] as? String }
        for expected in ["plexus message round trip", "remote read miss", "first read miss of a page", "write fault, invalidate 1 reader",
                         "same, remote page manager", "remote lock acquire+release", "barrier, 2 processes", "jacobi 128x128", "same, without prefetch hints",
                         "same split on private memory, no DSM (ceiling)", "same, with a barrier per iteration (no DSM)",
                         "busy-poll TCP round trip 16 B -> 4 KiB, plain processes", "same, 16 B -> 16 B", "fault served by one mprotect"] {
            #expect(names.contains { $0.hasPrefix(expected) }, "no row '\(expected)' in \(names)")
        }
        for row in rows {
            for key in ["unit", "median", "p99", "samples", "run"] { #expect(row[key] != nil, "\(key) missing in \(row)") }
            // Every row but the limits' floors has a floor; every latency row a limit.
            let isLimitFloor = ["busy-poll", "same, 16 B", "fault served"].contains { (row["name"] as? String ?? "").hasPrefix($0) }
            if !isLimitFloor { for key in ["floor", "ratio"] { #expect(row[key] != nil, "\(key) missing in \(row)") } }
            if row["unit"] as? String == "us" && !isLimitFloor {
                for key in ["limitOf", "limit", "limitRatio"] { #expect(row[key] != nil, "\(key) missing in \(row)") }
            }
            // The Jacobi rows (in ms) also give their speedup.
            if row["unit"] as? String == "ms" { #expect(row["speedup"] is Double, "\(row)") }
            // Each printed line names the row and shows its ratio.
            let name = try #require(row["name"] as? String)
            #expect(c.stdout.split(separator: "\n").contains { $0.hasPrefix(name) }, "row '\(name)' not printed:\n\(c.stdout)")
        }
        #expect(c.stdout.contains("floor") && c.stdout.contains("ratio") && c.stdout.contains("ratio/limit"), "\(c.stdout)")
    }
}

/// `plexus bench deadlock` in a tiny run: every row, its floor, ratio and
/// target in the table and the JSON, each JSON row with its run.
@Suite struct DeadlockBenchSmokeTests {
    @Test func rowsHaveTheirFloorRatioAndTarget() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("plexus-bench-deadlock-\(UInt32.random(in: 0...UInt32.max)).json")
        defer { try? FileManager.default.removeItem(at: file) }
        let c = try Child(try product("plexus"), ["bench", "deadlock", "--threshold-ms", "20", "--cycles", "2,3", "--rounds", "2",
                                                  "--pings", "20", "--ops", "50", "--blocks", "1", "--repeats", "1", "--think-us", "10",
                                                  "--json", file.path])
        let status = try c.wait(timeout: 120)
        #expect(status == 0, "\(c.stderr)")
        let rows = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [[String: Any]])
        let names = rows.compactMap { $0["name"] as? String }
        for expected in ["detect a 2-cycle", "same, against threshold + 2 round trips", "detect a 3-cycle",
                         "uncontended lock, remote manager, --deadlock abort", "uncontended lock, remote manager, --deadlock off",
                         "uncontended lock, local manager, --deadlock abort", "lightly contended lock, 2 processes",
                         "one-way message (half a send/receive round trip), job of 2", "one-way message (half a send/receive round trip), job of 3"] {
            #expect(names.contains { $0.hasPrefix(expected) }, "no row '\(expected)' in \(names)")
        }
        for row in rows {
            for key in ["unit", "median", "p99", "samples", "run"] { #expect(row[key] != nil, "\(key) missing in \(row)") }
            let name = try #require(row["name"] as? String)
            if name.hasPrefix("detect") || name.hasSuffix("--deadlock abort") {
                for key in ["floor", "floorName", "ratio", "target", "met"] { #expect(row[key] != nil, "\(key) missing in \(row)") }
            }
            if name.hasSuffix("--deadlock abort") { #expect(row["overheadPercent"] is Double, "\(row)") }
            #expect((row["run"] as? [String: Any])?["commit"] is String, "\(row)")
            #expect(c.stdout.split(separator: "\n").contains { $0.hasPrefix(name) }, "row '\(name)' not printed:\n\(c.stdout)")
        }
        #expect(c.stderr.contains("-deadlock.json"), "\(c.stderr)")
    }

    @Test func badOptionsAreRefusedBeforeAnythingRuns() throws {
        let r = try runPlexus(["bench", "deadlock", "--cycles", "1,2"])
        #expect(r.status != 0 && r.stderr.contains("--cycles takes cycle lengths from 2 to 64"), "\(r.stderr)")
        let j = try runPlexus(["bench", "deadlock", "--json", "/nonexistent-dir/x.json"])
        #expect(j.status != 0 && j.stderr.contains("does not exist"), "\(j.stderr)")
    }
}
