import Foundation

/// The outcome of checking a history file: the report to print and the verdict.
public struct FileCheck: Sendable {
    public var report: String
    public var verdict: Verdict
}

/// Bounds for the CLI: generous, but a pathological history ends as "unknown", not a hang.
public let defaultFileCheckOptions = CheckOptions(maxStates: 5_000_000, timeout: .seconds(300))

/// Largest history file read; bigger ones are refused before reading.
public let maxHistoryFileBytes = 1 << 30

/// Entry point for `plexus lincheck --model register|names|kv FILE`.
///
/// Formats: Jepsen etcd logs (lines with `jepsen.util - CLIENT :type …`, register model), JSON
/// lines (``JSONLinesHistory``; register or names) and Jepsen EDN maps (``EDNHistory``; kv).
/// The kv model is checked key by key on parallel workers
/// (``checkLinearizabilityInParallel(model:history:options:parallel:)``); its report names the
/// non-linearizable keys and shows a minimal failing sub-history of the first.
///
/// The verdict is ``Verdict/unknown(reason:)`` when a bound of `options` was hit first
/// (`UNKNOWN (time limit)` in the report for the timeout): never a guess.
/// - Throws: ``LincheckError`` for an unreadable or oversized file, an unknown model name or
///   malformed input.
public func checkHistoryFile(path: String, model: String, options: CheckOptions = defaultFileCheckOptions) throws -> FileCheck {
    if let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int, size > maxHistoryFileBytes {
        throw LincheckError("\(path) is \(size) bytes, more than the \(maxHistoryFileBytes) a history may have; split it")
    }
    let text: String
    do {
        text = try String(contentsOfFile: path, encoding: .utf8)
    } catch {
        throw LincheckError("cannot read \(path): \(error.localizedDescription)")
    }
    return try checkHistoryText(text, model: model, options: options)
}

/// ``checkHistoryFile(path:model:options:)`` on text already in memory.
public func checkHistoryText(_ text: String, model: String, options: CheckOptions = defaultFileCheckOptions) throws -> FileCheck {
    let jepsen = JepsenHistory.looksLikeJepsen(text)
    switch model {
    case "register":
        let history = jepsen ? try JepsenHistory.parse(text) : try JSONLinesHistory.parseRegister(text)
        let result = checkLinearizability(model: RegisterModel(), history: history, options: options)
        return FileCheck(report: header("register", jepsen ? "Jepsen etcd log" : "JSON lines") + result.report(), verdict: result.verdict)
    case "names":
        if jepsen {
            throw LincheckError("this is a Jepsen etcd register history; check it with --model register")
        }
        let history = try JSONLinesHistory.parseNames(text)
        let result = checkLinearizability(model: NamesModel(), history: history, options: options)
        return FileCheck(report: header("names", "JSON lines") + result.report(), verdict: result.verdict)
    case "kv":
        if jepsen {
            throw LincheckError("this is a Jepsen etcd register history; check it with --model register")
        }
        let start = ContinuousClock.now
        let history = try EDNHistory.parseKV(text)
        let result = checkLinearizabilityInParallel(model: KVModel(), history: history, options: options)
        // Shrinking gets what is left of the time limit, at most 10 s: the verdict is already known.
        let shrinkEnd = min(start + (options.timeout ?? .seconds(10)), ContinuousClock.now + .seconds(10))
        return FileCheck(report: header("kv", "Jepsen EDN") + kvReport(result, shrinkDeadline: shrinkEnd), verdict: result.verdict)
    default:
        throw LincheckError("unknown model \"\(model)\" (expected register, names or kv)")
    }
}

/// The generic report, plus the keys that are not linearizable and a minimal failing
/// sub-history of the first of them.
func kvReport(_ result: CheckResult<KVModel>, shrinkDeadline: ContinuousClock.Instant) -> String {
    var lines = [result.report()]
    let bad = result.partitions.filter { $0.verdict == .notLinearizable }
    let undecided = result.partitions.filter { if case .unknown = $0.verdict { return true } else { return false } }
    if !bad.isEmpty {
        lines.append("")
        lines.append("Non-linearizable key(s): " + bad.map { "\"\($0.operations[0].input.key)\"" }.joined(separator: ", "))
        let first = bad[0]
        let (ops, minimal) = shrinkViolation(model: result.model, operations: first.operations, deadline: shrinkDeadline)
        lines.append((minimal ? "A minimal failing sub-history" : "A reduced failing sub-history (shrinking ran out of time)")
            + " of key \"\(first.operations[0].input.key)\": \(ops.count) of its \(first.operations.count) operations:")
        let shown = 60
        for op in ops.sorted(by: { ($0.call, $0.id) < ($1.call, $1.id) }).prefix(shown) {
            lines.append("    #\(op.id) process \(op.client) [t=\(op.call)..\(op.ret.map(String.init) ?? "inf")] "
                + result.model.describe(op.input, op.output))
        }
        if ops.count > shown { lines.append("    ... \(ops.count - shown) more") }
    }
    if !undecided.isEmpty {
        lines.append("")
        lines.append("Undecided key(s): " + undecided.map { "\"\($0.operations[0].input.key)\"" }.joined(separator: ", "))
    }
    return lines.joined(separator: "\n")
}

/// ``checkHistoryFile(path:model:options:)`` reduced to "is it linearizable" (an unknown
/// verdict is `false`).
public func checkFile(path: String, model: String, options: CheckOptions = defaultFileCheckOptions) throws -> (report: String, linearizable: Bool) {
    let check = try checkHistoryFile(path: path, model: model, options: options)
    return (check.report, check.verdict == .linearizable)
}

/// ``checkHistoryText(_:model:options:)`` reduced to "is it linearizable".
public func checkText(_ text: String, model: String, options: CheckOptions = defaultFileCheckOptions) throws -> (report: String, linearizable: Bool) {
    let check = try checkHistoryText(text, model: model, options: options)
    return (check.report, check.verdict == .linearizable)
}

private func header(_ model: String, _ format: String) -> String {
    "model: \(model), format: \(format)\n"
}
