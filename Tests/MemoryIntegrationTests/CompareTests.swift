import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Plexus
import Testing
import TestSupport

/// `plexus compare`: a real comparison of the false-sharing example under
/// two protocols gives a table row, a CSV row and a bar per configuration;
/// what it refuses, it refuses before anything runs; the medians are right.
@Suite struct CompareTests {
    static func scratch(_ name: String, _ ext: String) -> URL {
        FileManager.default.temporaryDirectory.appendingPathComponent("plexus-compare-\(name)-\(UInt32.random(in: 0...UInt32.max)).\(ext)")
    }

    // MARK: Arithmetic

    @Test func medianOfOddAndEvenCountsInAnyOrder() {
        #expect(Comparison.median([]) == nil)
        #expect(Comparison.median([7]) == 7)
        #expect(Comparison.median([3, 1, 2]) == 2)
        #expect(Comparison.median([4, 1, 3, 2]) == 2.5)
        #expect(Comparison.median([0.5, 10, 10]) == 10)
        #expect(Comparison.spread([2, 9, 4]) == Spread(median: 4, min: 2, max: 9))
        #expect(Comparison.spread([]) == nil)
    }

    @Test func aRunsFiguresAreSumsOverItsProcesses() {
        // One report has the newer diffsCreated counter, the other only diffsSent.
        let reports: [[String: Any]] = [
            ["rank": 0, "totals": ["readFaults": 3, "writeFaults": 1, "messagesSent": 10, "bytesSent": 100, "pagesReceived": 2,
                                   "diffsCreated": 5, "diffsSent": 4, "diffsApplied": 1, "blockedMicros": 1500.0,
                                   "lockBlockedMicros": 250.0, "barrierBlockedMicros": 1000]],
            ["rank": 1, "totals": ["readFaults": 2, "writeFaults": 0, "messagesSent": 6, "bytesSent": 50, "pagesReceived": 1,
                                   "diffsSent": 2, "diffsApplied": 0, "blockedMicros": 500.0,
                                   "lockBlockedMicros": 750.0, "barrierBlockedMicros": 3000.5]],
        ]
        let f = RunFigures(seconds: 1.25, reports: reports).values
        #expect(f[.wallSeconds] == 1.25)
        #expect(f[.faults] == 6)
        #expect(f[.messages] == 16)
        #expect(f[.bytes] == 150)
        #expect(f[.pagesTransferred] == 3)
        #expect(f[.diffsCreated] == 7)
        #expect(f[.diffsApplied] == 1)
        #expect(f[.faultBlockedMillis] == 2)
        #expect(f[.lockBlockedMillis] == 1)
        #expect(abs((f[.barrierBlockedMillis] ?? 0) - 4.0005) < 1e-9)
        // Without reports only the wall time is known.
        #expect(RunFigures(seconds: 2, reports: []).values == [.wallSeconds: 2])
        // The medians of three runs, figure by figure.
        let runs = [3.0, 1, 2].map { RunFigures(values: [.wallSeconds: $0, .messages: $0 * 10]) }
        let summary = Comparison.summarize(runs)
        #expect(summary[.wallSeconds] == Spread(median: 2, min: 1, max: 3))
        #expect(summary[.messages]?.median == 20)
        #expect(summary[.faults] == nil)
    }

    // MARK: A real comparison

    @Test func comparesTheFalseSharingExampleUnderTwoProtocols() throws {
        let csv = Self.scratch("csv", "csv"), svg = Self.scratch("svg", "svg"), json = Self.scratch("json", "json")
        defer { for f in [csv, svg, json] { try? FileManager.default.removeItem(at: f) } }
        let c = try Child(try product("plexus"), ["compare", "--protocols", "sc,hlrc", "--repeat", "1", "-n", "2",
                                                  "--csv", csv.path, "--svg", svg.path, "--json", json.path,
                                                  try product("false-sharing"), "2000"])
        let status = try c.wait(timeout: 60)
        try #require(status == 0, "plexus compare exited with \(status)\n\(c.stdout)\n\(c.stderr)")
        let configurations = ["sc page 4096", "hlrc page 4096"]

        // Progress on stderr, one line per run.
        #expect(c.stderr.contains("[1/2] sc page 4096 run 1/1 ...") && c.stderr.contains("[2/2] hlrc page 4096 run 1/1 ..."), "\(c.stderr)")
        // The table: a header, then one row per configuration; the program's own output is not in it.
        let lines = c.stdout.split(separator: "\n").map(String.init)
        let header = try #require(lines.firstIndex { $0.hasPrefix("protocol") }, "no header in\n\(c.stdout)")
        let rows = lines[(header + 1)...].map { $0.split(separator: " ").map(String.init) }
        #expect(rows.map { $0.first ?? "" } == ["sc", "hlrc"], "\(c.stdout)")
        let columns = lines[header].split(separator: " ").count
        for row in rows { #expect(row.count == columns, "\(row) has not the \(columns) columns of the header\n\(c.stdout)") }
        #expect(!c.stdout.contains("false sharing: 2 processes"), "the program's output is in the table:\n\(c.stdout)")

        // The CSV: the header, then one row per configuration with as many fields.
        let csvLines = try String(contentsOf: csv, encoding: .utf8).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        try #require(csvLines.count == 3, "\(csvLines)")
        let names = csvLines[0]
        #expect(Array(names.prefix(5)) == ["protocol", "page_size", "runs", "status", "wall_s"], "\(names)")
        for m in ["faults", "messages", "bytes", "pages", "diffs_created", "diffs_applied", "fault_ms", "lock_ms", "barrier_ms",
                  "wall_s_min", "wall_s_max"] {
            #expect(names.contains(m), "no column \(m) in \(names)")
        }
        for (row, p) in zip(csvLines.dropFirst(), ["sc", "hlrc"]) {
            #expect(row.count == names.count, "\(row)")
            let field = Dictionary(uniqueKeysWithValues: zip(names, row))
            #expect(field["protocol"] == p && field["page_size"] == "4096" && field["runs"] == "1" && field["status"] == "ok", "\(row)")
            #expect((Double(field["wall_s"] ?? "") ?? 0) > 0, "\(row)")
            // The processes fault on the shared counters' page and report it.
            #expect((Double(field["faults"] ?? "") ?? 0) > 0, "\(row)")
            #expect(Double(field["barrier_ms"] ?? "") != nil, "\(row)")
        }

        // The SVG parses, and each panel has one bar per configuration.
        let chart = try Data(contentsOf: svg)
        let bars = ChartBars()
        let parser = XMLParser(data: chart)
        parser.delegate = bars
        #expect(parser.parse(), "the SVG is not well-formed: \(String(describing: parser.parserError))")
        #expect(bars.root == "svg")
        for metric in [ComparisonMetric.wallSeconds, .messages, .pagesTransferred] {
            #expect(bars.bars[metric.rawValue] == configurations, "panel \(metric.rawValue): \(bars.bars)")
        }
        #expect(bars.texts.contains { $0.contains("false-sharing 2000") }, "no title naming the program")

        // The JSON holds each configuration's run and medians.
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any])
        let entries = try #require(doc["configurations"] as? [[String: Any]])
        #expect(entries.map { $0["protocol"] as? String } == ["sc", "hlrc"])
        for e in entries {
            #expect((e["runs"] as? [[String: Any]])?.count == 1, "\(e)")
            #expect((e["median"] as? [String: Any])?["wallSeconds"] != nil, "\(e)")
        }
    }

    // MARK: Refusals

    /// The arguments with a program that leaves a file if it ever runs.
    static func refused(_ args: [String]) throws -> (status: Int32, stderr: String, ran: Bool) {
        let ran = scratch("ran", "txt")
        defer { try? FileManager.default.removeItem(at: ran) }
        let r = try runPlexus(["compare"] + args + ["/bin/sh", "-c", "touch \(ran.path)"], timeout: 30)
        return (r.status, r.stderr, FileManager.default.fileExists(atPath: ran.path))
    }

    @Test func anUnknownProtocolIsRefusedNamingTheRegisteredOnes() throws {
        let r = try Self.refused(["--protocols", "sc,nonesuch", "--repeat", "1"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("unknown protocol 'nonesuch'"), "\(r.stderr)")
        for name in try Registered.all() { #expect(r.stderr.contains(name), "\(name) not offered in \(r.stderr)") }
        #expect(!r.ran, "a run started")
        #expect(!r.stderr.contains("[1/"), "a run started:\n\(r.stderr)")
    }

    @Test func anUnwritableCSVIsRefusedBeforeAnyRun() throws {
        let directory = "/nonexistent-dir-\(UInt32.random(in: 0...UInt32.max))"
        let r = try Self.refused(["--protocols", "sc", "--repeat", "1", "--csv", directory + "/out.csv"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("--csv") && r.stderr.contains(directory) && r.stderr.contains("does not exist"), "\(r.stderr)")
        #expect(!r.ran, "a run started")
        #expect(!FileManager.default.fileExists(atPath: directory))
    }

    @Test func aFailedRunStopsTheComparisonNamingItsConfiguration() throws {
        let csv = Self.scratch("failed", "csv")
        defer { try? FileManager.default.removeItem(at: csv) }
        let r = try runPlexus(["compare", "--protocols", "sc", "--repeat", "2", "-n", "1", "--csv", csv.path,
                               "/bin/sh", "-c", "echo the-last-words >&2; exit 3"], timeout: 30)
        #expect(r.status == 1)
        #expect(r.stderr.contains("sc page 4096 failed in run 1 of 2") && r.stderr.contains("exited with status 3"), "\(r.stderr)")
        #expect(r.stderr.contains("the-last-words") && r.stderr.contains("--keep-going"), "\(r.stderr)")
        #expect(!r.stderr.contains("run 2/2"), "it went on after the failure:\n\(r.stderr)")
        #expect(!FileManager.default.fileExists(atPath: csv.path), "a failed comparison wrote its CSV")
    }
}

/// Collects, per chart panel (`data-metric`), the configurations of its
/// bars in order; and the texts.
final class ChartBars: NSObject, XMLParserDelegate {
    var root: String?
    var bars: [String: [String]] = [:]
    var texts: [String] = []
    /// The open groups' metrics (nil for a group that is not a panel).
    private var groups: [String?] = []
    private var text: String?

    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        if root == nil { root = name }
        if name == "g" { groups.append(attributes["class"] == "panel" ? attributes["data-metric"] : nil) }
        if name == "rect", attributes["class"] == "bar", let panel = groups.compactMap({ $0 }).last {
            bars[panel, default: []].append(attributes["data-configuration"] ?? "?")
        }
        if name == "text" { text = "" }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) { text? += string }

    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        if name == "g" { groups.removeLast() }
        if name == "text", let t = text { texts.append(t); text = nil }
    }
}
