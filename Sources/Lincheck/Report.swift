extension CheckResult {
    /// A human-readable verdict. On a violation it shows the last `maxPrefix` steps of the longest
    /// linearisable prefix, the state reached, and why each candidate next operation fails.
    public func report(maxPrefix: Int = 20) -> String {
        let total = partitions.reduce(0) { $0 + $1.operations.count }
        var lines: [String] = []
        let headline: String
        switch verdict {
        case .linearizable: headline = "LINEARIZABLE"
        case .notLinearizable: headline = "NOT LINEARIZABLE"
        case let .unknown(reason): headline = "\(Self.unknownHeadline(reason)): \(reason)"
        }
        lines.append("\(headline) — \(total) operations in \(partitions.count) partition(s), "
            + "\(statesExplored) states explored in \(formatSeconds(elapsed))")
        if let index = partitions.firstIndex(where: { $0.counterexample != nil }),
           let counterexample = partitions[index].counterexample {
            lines.append("")
            lines.append("Partition \(index + 1) of \(partitions.count) "
                + "(\(partitions[index].operations.count) operations) cannot be linearised.")
            lines.append("(Operations read #id client [t=invoked..returned]; for parsed files the times are line")
            lines.append(" numbers, or the recorded `time` fields. \"inf\": indefinite, outcome unknown.)")
            lines.append(contentsOf: explain(counterexample, maxPrefix: maxPrefix))
        }
        return lines.joined(separator: "\n")
    }

    /// `UNKNOWN (time limit)` or `UNKNOWN (state limit)`: which bound stopped the search.
    static func unknownHeadline(_ reason: String) -> String {
        if reason.hasPrefix("time limit") { return "UNKNOWN (time limit)" }
        if reason.hasPrefix("state limit") { return "UNKNOWN (state limit)" }
        return "UNKNOWN"
    }

    private func explain(_ c: Counterexample<M>, maxPrefix: Int) -> [String] {
        var lines: [String] = []
        let shown = c.prefix.suffix(max(0, maxPrefix))
        lines.append("Longest linearisable prefix found: \(c.prefix.count) operation(s)"
            + (shown.count < c.prefix.count ? ", last \(shown.count) shown:" : ":"))
        if shown.count < c.prefix.count {
            lines.append("    ... \(c.prefix.count - shown.count) earlier operation(s)")
        }
        for (offset, step) in zip(shown.indices, shown) {
            lines.append("  \(pad("\(offset + 1).", 5)) \(describe(step.operation))"
                + "   => state \(model.describe(state: step.stateAfter))")
        }
        lines.append("Then, in state \(model.describe(state: c.state)), operation")
        lines.append("    \(describe(c.blocking))")
        lines.append("has returned, so it must take effect before anything invoked later;")
        lines.append("but none of the operations that could come next can be placed:")
        for candidate in c.candidates {
            let why: String
            switch candidate.reason {
            case .impossible: why = "impossible in this state"
            case .exhausted: why = "allowed here, but every continuation fails"
            }
            lines.append("    \(describe(candidate.operation))   -- \(why)")
        }
        return lines
    }

    private func describe(_ op: HistoryOperation<M.Input, M.Output>) -> String {
        let span = "t=\(op.call)..\(op.ret.map(String.init) ?? "inf")"
        let text = model.describe(op.input, op.output) + (op.isIndefinite ? " (indefinite)" : "")
        return "#\(op.id) client \(op.client) [\(span)] \(text)"
    }
}

func formatSeconds(_ d: Duration) -> String {
    let (seconds, attoseconds) = d.components
    let millis = seconds * 1000 + attoseconds / 1_000_000_000_000_000
    return "\(millis / 1000).\(pad(String(millis % 1000), 3, fill: "0", leading: true)) s"
}

func pad(_ s: String, _ width: Int, fill: Character = " ", leading: Bool = false) -> String {
    guard s.count < width else { return s }
    let padding = String(repeating: fill, count: width - s.count)
    return leading ? padding + s : s + padding
}
