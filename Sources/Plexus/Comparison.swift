import Foundation

/// One figure `plexus compare` reports for a configuration (protocol, page
/// size): the job's wall time, or a sum over its processes' statistics
/// reports (`Plexus.statisticsJSON`, whose `totals` hold the counters).
public enum ComparisonMetric: String, CaseIterable, Sendable, Codable {
    case wallSeconds
    case faults
    case messages
    case bytes
    case pagesTransferred
    case diffsCreated
    case diffsApplied
    case faultBlockedMillis
    case lockBlockedMillis
    case barrierBlockedMillis

    /// The column's name in the table and the CSV.
    public var column: String {
        switch self {
        case .wallSeconds: "wall_s"
        case .faults: "faults"
        case .messages: "messages"
        case .bytes: "bytes"
        case .pagesTransferred: "pages"
        case .diffsCreated: "diffs_created"
        case .diffsApplied: "diffs_applied"
        case .faultBlockedMillis: "fault_ms"
        case .lockBlockedMillis: "lock_ms"
        case .barrierBlockedMillis: "barrier_ms"
        }
    }

    /// A title for a chart's panel.
    public var title: String {
        switch self {
        case .wallSeconds: "Wall time"
        case .faults: "Faults"
        case .messages: "Messages"
        case .bytes: "Bytes sent"
        case .pagesTransferred: "Pages transferred"
        case .diffsCreated: "Diffs created"
        case .diffsApplied: "Diffs applied"
        case .faultBlockedMillis: "Blocked in faults"
        case .lockBlockedMillis: "Blocked in locks"
        case .barrierBlockedMillis: "Blocked in barriers"
        }
    }

    /// The unit of a value, for axis labels ("" for counts).
    public var unit: String {
        switch self {
        case .wallSeconds: "s"
        case .bytes: "B"
        case .faultBlockedMillis, .lockBlockedMillis, .barrierBlockedMillis: "ms"
        default: ""
        }
    }

    /// What the column means, for `plexus compare --help`.
    public var meaning: String {
        switch self {
        case .wallSeconds: "seconds from launch to the exit of the last process"
        case .faults: "read and write faults that asked for a page"
        case .messages: "memory-protocol messages sent"
        case .bytes: "bytes of those messages, pages included"
        case .pagesTransferred: "whole pages received"
        case .diffsCreated: "diffs of written pages made (multiple writers)"
        case .diffsApplied: "diffs applied to pages (multiple writers)"
        case .faultBlockedMillis: "milliseconds waited for pages in faults"
        case .lockBlockedMillis: "milliseconds in lock acquire and release"
        case .barrierBlockedMillis: "milliseconds in barriers and other collectives"
        }
    }

    /// The value of this figure in one run: `seconds` is the job's wall
    /// time, `reports` its processes' statistics documents. Nil when no
    /// report holds it (a job without shared memory or statistics, or a
    /// runtime that does not measure it).
    func value(seconds: Double, reports: [[String: Any]]) -> Double? {
        func sum(_ keys: [String], scale: Double = 1) -> Double? {
            var total = 0.0
            var seen = false
            for report in reports {
                let totals = report["totals"] as? [String: Any] ?? [:]
                // The first key a report has counts: later keys are
                // fallbacks for reports that lack the earlier ones.
                guard let v = keys.lazy.compactMap({ Comparison.number(totals[$0]) }).first else { continue }
                total += v
                seen = true
            }
            return seen ? total * scale : nil
        }
        switch self {
        case .wallSeconds: return seconds
        case .faults:
            guard let r = sum(["readFaults"]), let w = sum(["writeFaults"]) else { return nil }
            return r + w
        case .messages: return sum(["messagesSent"])
        case .bytes: return sum(["bytesSent"])
        case .pagesTransferred: return sum(["pagesReceived"])
        // "diffsCreated" counts every diff a process makes; a runtime whose
        // reports predate that counter only has "diffsSent", the diffs it
        // sent to their homes, which is the same number for hlrc (a diff is
        // made to be sent), so it stands in.
        case .diffsCreated: return sum(["diffsCreated", "diffsSent"])
        case .diffsApplied: return sum(["diffsApplied"])
        case .faultBlockedMillis: return sum(["blockedMicros"], scale: 1e-3)
        case .lockBlockedMillis: return sum(["lockBlockedMicros"], scale: 1e-3)
        case .barrierBlockedMillis: return sum(["barrierBlockedMicros"], scale: 1e-3)
        }
    }
}

/// The figures of one run of a job, by metric (a metric no report held is
/// missing).
public struct RunFigures: Sendable, Equatable {
    public var values: [ComparisonMetric: Double]

    public init(values: [ComparisonMetric: Double]) { self.values = values }

    /// The figures of a run that took `seconds` and whose processes sent
    /// these statistics documents (in any order).
    public init(seconds: Double, reports: [[String: Any]]) {
        var values: [ComparisonMetric: Double] = [:]
        for m in ComparisonMetric.allCases {
            if let v = m.value(seconds: seconds, reports: reports) { values[m] = v }
        }
        self.values = values
    }
}

/// The median, smallest and largest of a figure over the repeated runs of
/// one configuration.
public struct Spread: Sendable, Equatable, Codable {
    public var median: Double
    public var min: Double
    public var max: Double

    public init(median: Double, min: Double, max: Double) {
        self.median = median
        self.min = min
        self.max = max
    }
}

/// Pure arithmetic of `plexus compare`.
public enum Comparison {
    /// The median of `values`: the middle one of an odd count, the mean of
    /// the two middle ones of an even count; nil for none. Order does not
    /// matter; NaN is not expected (figures are measured, never computed).
    public static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        let mid = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
    }

    /// Median, minimum and maximum of `values`; nil for none.
    public static func spread(_ values: [Double]) -> Spread? {
        guard let median = median(values), let lo = values.min(), let hi = values.max() else { return nil }
        return Spread(median: median, min: lo, max: hi)
    }

    /// Each metric's spread over `runs` (the runs of one configuration);
    /// a metric that no run has is missing.
    public static func summarize(_ runs: [RunFigures]) -> [ComparisonMetric: Spread] {
        var out: [ComparisonMetric: Spread] = [:]
        for m in ComparisonMetric.allCases {
            if let s = spread(runs.compactMap { $0.values[m] }) { out[m] = s }
        }
        return out
    }

    /// A JSON number as a Double (JSONSerialization gives Int, Double or
    /// NSNumber depending on the platform and the literal); nil otherwise.
    static func number(_ any: Any?) -> Double? {
        switch any {
        case let v as Int: Double(v)
        case let v as Double: v
        case let v as NSNumber: v.doubleValue
        default: nil
        }
    }
}
