import Foundation

/// Entry point for `plexus lincheck --model register|names FILE`.
///
/// Auto-detects the format: Jepsen etcd logs (lines with `jepsen.util - CLIENT :type …`) or
/// JSON lines (see ``JSONLinesHistory``). Jepsen logs are register histories, so they require
/// `model == "register"`.
///
/// - Returns: the report (verdict, statistics and, on a violation, the longest linearisable
///   prefix and the operations that could not be placed) and whether the history is
///   linearizable. An `unknown` verdict (a bound of `options` was hit) returns `false` with a
///   report saying so.
/// - Throws: ``LincheckError`` for an unreadable file, an unknown model name or malformed input.
public func checkFile(path: String, model: String) throws -> (report: String, linearizable: Bool) {
    try checkFile(path: path, model: model, options: defaultFileCheckOptions)
}

/// Bounds for the CLI: generous, but a pathological history ends as "unknown", not a hang.
public let defaultFileCheckOptions = CheckOptions(maxStates: 5_000_000, timeout: .seconds(300))

/// ``checkFile(path:model:)`` with explicit search bounds.
public func checkFile(
    path: String,
    model: String,
    options: CheckOptions
) throws -> (report: String, linearizable: Bool) {
    let text: String
    do {
        text = try String(contentsOfFile: path, encoding: .utf8)
    } catch {
        throw LincheckError("cannot read \(path): \(error.localizedDescription)")
    }
    return try checkText(text, model: model, options: options)
}

/// ``checkFile(path:model:)`` on text already in memory.
public func checkText(
    _ text: String,
    model: String,
    options: CheckOptions = defaultFileCheckOptions
) throws -> (report: String, linearizable: Bool) {
    let jepsen = JepsenHistory.looksLikeJepsen(text)
    switch model {
    case "register":
        let history = jepsen ? try JepsenHistory.parse(text) : try JSONLinesHistory.parseRegister(text)
        let result = checkLinearizability(model: RegisterModel(), history: history, options: options)
        return (header(jepsen, "register") + result.report(), result.isLinearizable)
    case "names":
        if jepsen {
            throw LincheckError("this is a Jepsen etcd register history; check it with --model register")
        }
        let history = try JSONLinesHistory.parseNames(text)
        let result = checkLinearizability(model: NamesModel(), history: history, options: options)
        return (header(jepsen, "names") + result.report(), result.isLinearizable)
    default:
        throw LincheckError("unknown model \"\(model)\" (expected register or names)")
    }
}

private func header(_ jepsen: Bool, _ model: String) -> String {
    "model: \(model), format: \(jepsen ? "Jepsen etcd log" : "JSON lines")\n"
}
