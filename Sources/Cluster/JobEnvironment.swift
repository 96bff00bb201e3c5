/// The environment of a job's processes, the same on the embedded local node
/// and on remote nodes: the variables of the caller (`plexus run`) in
/// `defaultNames`, those named with `-x NAME` / `--env NAME[=VALUE]`, then the
/// runtime's own `PLEXUS_` settings, which win. A node adds only the
/// variables of the account the process runs as (`nodeNames`) unless the
/// job sets them; nothing else of the node's or the caller's environment
/// reaches a process.
public enum JobEnvironment {
    /// Caller's variables every process gets when set: names, or prefixes
    /// ending in `*`.
    public static let defaultNames = ["PATH", "LD_LIBRARY_PATH", "OMP_*", "PLEXUS_*"]

    /// Node's variables a process gets unless the job sets them: they
    /// describe the account on that machine, not the caller's.
    public static let nodeNames = ["HOME", "USER", "LOGNAME", "SHELL"]

    /// The caller's variables for `defaultNames`.
    public static func defaults(from environment: [String: String]) -> [String: String] {
        environment.filter { entry in defaultNames.contains { matches(entry.key, $0) } }
    }

    /// What a node gives a process from its own environment (`nodeNames`).
    public static func nodeBase(_ environment: [String: String]) -> [String: String] {
        environment.filter { nodeNames.contains($0.key) }
    }

    /// The variables a job's processes get from `environment` (the
    /// caller's): the default set, then each of `requests` in order. A
    /// request is `NAME` (the caller's value; it must be set), `NAME=VALUE`,
    /// or `PREFIX*` (every caller's variable starting with PREFIX).
    public static func inherited(from environment: [String: String], requests: [String]) throws(EnvironmentError) -> [String: String] {
        var out = defaults(from: environment)
        for request in requests {
            if let eq = request.firstIndex(of: "=") {
                let name = String(request[..<eq])
                guard isName(name) else { throw .badName(request) }
                out[name] = String(request[request.index(after: eq)...])
            } else if request.hasSuffix("*") {
                guard request.count == 1 || isName(String(request.dropLast())) else { throw .badName(request) }
                for (k, v) in environment where matches(k, request) { out[k] = v }
            } else {
                guard isName(request) else { throw .badName(request) }
                guard let v = environment[request] else { throw .unset(request) }
                out[request] = v
            }
        }
        return out
    }

    static func matches(_ name: String, _ pattern: String) -> Bool {
        pattern.hasSuffix("*") ? name.hasPrefix(pattern.dropLast()) : name == pattern
    }

    /// A shell variable name: letters, digits and `_`, not starting with a digit.
    static func isName(_ s: String) -> Bool {
        guard let first = s.utf8.first, !(48...57).contains(first) else { return false }
        return s.utf8.allSatisfy { ($0 >= 65 && $0 <= 90) || ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 95 }
    }
}

/// A `-x` / `--env` request that cannot be honoured. The message says what to do.
public enum EnvironmentError: Error, Equatable, Sendable, CustomStringConvertible {
    case badName(String)
    case unset(String)

    public var description: String {
        switch self {
        case .badName(let r):
            return "--env '\(r)' is not NAME, NAME=VALUE or PREFIX*: a name has letters, digits and _ and does not start with a digit"
        case .unset(let n):
            return "-x \(n): \(n) is not set in this environment; export it first, or give its value with --env \(n)=VALUE"
        }
    }
}

/// Which processes of a job read `plexus run`'s standard input; the others
/// read /dev/null.
public enum StandardInputTarget: Equatable, Sendable, CustomStringConvertible {
    case none
    case all
    case rank(Int)

    /// `all`, `none` or a rank number.
    public init?(parsing s: String) {
        switch s {
        case "all": self = .all
        case "none": self = .none
        default:
            guard let r = Int(s), r >= 0 else { return nil }
            self = .rank(r)
        }
    }

    public var description: String {
        switch self {
        case .none: "none"
        case .all: "all"
        case .rank(let r): "\(r)"
        }
    }

    /// The ranks, of a job of `size`, that read the input.
    public func ranks(size: Int) -> [Int] {
        switch self {
        case .none: []
        case .all: Array(0..<size)
        case .rank(let r): r < size ? [r] : []
        }
    }
}
