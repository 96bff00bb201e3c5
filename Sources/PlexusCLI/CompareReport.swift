import Foundation
import Plexus

/// What `plexus compare` found: the runs of each configuration, as a table,
/// CSV and JSON (the chart is `CompareChart`).
struct CompareReport {
    /// The program and its arguments, as the table and chart title it.
    var title: String
    var processes: Int
    var repeats: Int
    var results: [ConfigurationResult]

    // MARK: Table

    /// One row per configuration with the medians, then a line per failed one.
    func table() -> String {
        var rows: [[String]] = [["protocol", "page", "runs"] + ComparisonMetric.allCases.map(\.column)]
        for r in results {
            var row = [r.configuration.protocol, "\(r.configuration.pageSize)", "\(r.runs.count)"]
            if let summary = r.summary {
                row += ComparisonMetric.allCases.map { m in summary[m].map { Self.tableNumber($0.median, m) } ?? "-" }
            } else {
                row += ["failed"] + Array(repeating: "-", count: ComparisonMetric.allCases.count - 1)
            }
            rows.append(row)
        }
        let widths = rows[0].indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
        var s = "\(title): \(processes) process\(processes == 1 ? "" : "es"), median of \(repeats) run\(repeats == 1 ? "" : "s") per configuration\n"
        for row in rows {
            // Names left-aligned, figures right-aligned.
            let cells = row.indices.map { i in
                let pad = String(repeating: " ", count: widths[i] - row[i].count)
                return i < 2 ? row[i] + pad : pad + row[i]
            }
            s += cells.joined(separator: "  ").trimmingCharacters(in: .whitespaces) + "\n"
        }
        for r in results {
            if let why = r.failure { s += "\(r.configuration.name) failed: \(why)\n" }
        }
        return s
    }

    /// Seconds to the millisecond, milliseconds to a tenth, counts whole
    /// (a median of an even number of runs may end in .5).
    static func tableNumber(_ v: Double, _ m: ComparisonMetric) -> String {
        switch m.unit {
        case "s": return String(format: "%.3f", v)
        case "ms": return String(format: "%.1f", v)
        default: return v == v.rounded() ? String(format: "%.0f", v) : String(format: "%.1f", v)
        }
    }

    // MARK: CSV

    /// A header and one row per configuration: protocol, page_size, runs,
    /// status, each figure's median, then each figure's min and max
    /// (`wall_s_min`, `wall_s_max`, ...), then why it failed. A figure no
    /// process reported, and every figure of a failed configuration, is empty.
    func csv() -> String {
        let metrics = ComparisonMetric.allCases
        let header = ["protocol", "page_size", "runs", "status"] + metrics.map(\.column)
            + metrics.flatMap { [$0.column + "_min", $0.column + "_max"] } + ["failure"]
        var lines = [header.joined(separator: ",")]
        for r in results {
            let summary = r.summary ?? [:]
            var row = [r.configuration.protocol, "\(r.configuration.pageSize)", "\(r.runs.count)", r.failure == nil ? "ok" : "failed"]
            row += metrics.map { m in summary[m].map { Self.csvNumber($0.median, m) } ?? "" }
            row += metrics.flatMap { m in summary[m].map { [Self.csvNumber($0.min, m), Self.csvNumber($0.max, m)] } ?? ["", ""] }
            row.append(r.failure ?? "")
            lines.append(row.map(Self.csvField).joined(separator: ","))
        }
        return lines.joined(separator: "\n") + "\n"
    }

    /// Seconds to the microsecond, milliseconds to the microsecond, counts
    /// whole (a median of an even number of runs may end in .5); no
    /// trailing zeros.
    static func csvNumber(_ v: Double, _ m: ComparisonMetric) -> String {
        let text: String
        switch m.unit {
        case "s": text = String(format: "%.6f", v)
        case "ms": text = String(format: "%.3f", v)
        default: text = v == v.rounded() ? String(format: "%.0f", v) : String(format: "%.1f", v)
        }
        guard text.contains(".") else { return text }
        var t = Substring(text)
        while t.hasSuffix("0") { t = t.dropLast() }
        if t.hasSuffix(".") { t = t.dropLast() }
        return String(t)
    }

    /// A field quoted as RFC 4180 asks when it holds a comma, quote or newline.
    static func csvField(_ text: String) -> String {
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    // MARK: JSON

    struct Document: Encodable {
        /// The program and its arguments.
        var command: [String]
        var processes: Int
        var repeats: Int
        var run: RunMetadata
        var configurations: [Entry]
    }

    /// A configuration: every run's figures, and their median, min and max
    /// (absent when a run failed), keyed by `ComparisonMetric` raw value.
    struct Entry: Encodable {
        var `protocol`: String
        var pageSize: Int
        var status: String
        var failure: String?
        var runs: [[String: Double]]
        var median: [String: Double]?
        var min: [String: Double]?
        var max: [String: Double]?
    }

    func document(command: [String], run: RunMetadata) -> Document {
        Document(command: command, processes: processes, repeats: repeats, run: run, configurations: results.map { r in
            func keyed(_ value: (Spread) -> Double) -> [String: Double]? {
                r.summary.map { s in Dictionary(uniqueKeysWithValues: s.map { ($0.key.rawValue, value($0.value)) }) }
            }
            return Entry(protocol: r.configuration.protocol, pageSize: r.configuration.pageSize, status: r.failure == nil ? "ok" : "failed",
                         failure: r.failure,
                         runs: r.runs.map { f in Dictionary(uniqueKeysWithValues: f.values.map { ($0.key.rawValue, $0.value) }) },
                         median: keyed(\.median), min: keyed(\.min), max: keyed(\.max))
        })
    }
}
