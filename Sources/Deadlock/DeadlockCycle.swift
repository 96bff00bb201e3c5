/// A confirmed deadlock: a cycle of blocked processes, each waiting for the
/// next (the last for the first), that all existed at one instant.
///
/// `hops` starts at the victim, the highest global PID on the cycle, so every
/// member that computes the cycle computes the same value.
public struct DeadlockCycle: Sendable, Hashable, CustomStringConvertible {
    public let hops: [Hop]

    /// Rotates `path` so that the victim comes first. `path` must be non-empty
    /// and name each process at most once.
    public init(path: [Hop]) {
        precondition(!path.isEmpty, "an empty cycle")
        let start = path.indices.max { path[$0].pid < path[$1].pid }!
        hops = Array(path[start...] + path[..<start])
    }

    /// The victim rule: the highest global PID on the cycle.
    public var victim: UInt64 { hops[0].pid }

    public var processes: [UInt64] { hops.map(\.pid) }

    /// "pid 9@b waits for pid 4@a (lock 3) -> pid 4@a waits for pid 9@b (receive from pid 9)".
    public var description: String {
        hops.indices.map { i in
            let next = hops[(i + 1) % hops.count]
            return "\(hops[i].label) waits for \(next.label) (\(hops[i].resource))"
        }.joined(separator: " -> ")
    }

    /// The cycle's wait-for graph in Graphviz DOT: one node per process,
    /// labelled "pid N@node" (the victim drawn in red), one edge per wait,
    /// labelled by its resource.
    public func dot(name: String = "deadlock") -> String {
        var lines = ["digraph \(Self.quoted(name)) {", "  rankdir=LR;", "  node [shape=box];"]
        for (i, hop) in hops.enumerated() {
            let style = i == 0 ? ", color=red, fontcolor=red, penwidth=2" : ""
            let label = i == 0 ? "\(hop.label) (victim)" : hop.label
            lines.append("  \(Self.quoted("p\(hop.pid)")) [label=\(Self.quoted(label))\(style)];")
        }
        for (i, hop) in hops.enumerated() {
            let next = hops[(i + 1) % hops.count]
            lines.append("  \(Self.quoted("p\(hop.pid)")) -> \(Self.quoted("p\(next.pid)")) [label=\(Self.quoted(hop.resource.description))];")
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    /// A DOT string literal: quotes and backslashes escaped, line breaks
    /// written as DOT's `\n`.
    static func quoted(_ s: String) -> String {
        var out = "\""
        for c in s {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n", "\r", "\r\n": out += "\\n"
            default: out.append(c)
            }
        }
        return out + "\""
    }
}

/// The error a victim's blocked call fails with.
public enum DeadlockError: Error, Sendable, Equatable, CustomStringConvertible {
    /// This process was chosen as the victim of `cycle` (it has the highest
    /// global PID on it); its wait was aborted to break the cycle.
    case victim(of: DeadlockCycle)

    public var description: String {
        switch self {
        case .victim(let cycle):
            let nodes = Set(cycle.hops.map(\.node)).sorted().joined(separator: ", ")
            return "deadlock of \(cycle.hops.count) processes on nodes \(nodes): \(cycle); "
                + "pid \(cycle.victim) (the highest global PID on the cycle) was chosen as the victim and its wait aborted"
        }
    }
}
