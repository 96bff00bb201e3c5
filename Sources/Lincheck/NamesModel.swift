/// Sequential specification of the Plexus name service: a hierarchical map from paths to string
/// values with per-entry versions, plus a global PID allocator.
///
/// Operation encoding (``Input`` → expected ``Output``):
///
/// | input                         | success                     | failures                              |
/// |-------------------------------|-----------------------------|---------------------------------------|
/// | `create(path, value)`         | `ok(version: 1)`            | `exists`, `noParent`                  |
/// | `get(path)`                   | `value(v, version: n)`      | `notFound`                            |
/// | `put(path, value)` (upsert)   | `ok(version: n+1 or 1)`     | `noParent` (only when creating)       |
/// | `cas(path, expected, value)`  | `ok(version: expected+1)`   | `notFound`, `versionMismatch`         |
/// | `delete(path)`                | `ok(version: nil)`          | `notFound`, `notEmpty`                |
/// | `allocatePID`                 | `pid(p)`                    | —                                     |
///
/// - Versions are per entry: 1 on creation, +1 on every put/cas, and they restart at 1 when a
///   deleted path is created again (like etcd's per-key `version`, not its global revision — a
///   global revision would couple all keys and forbid partitioning).
/// - A `nil` version in an observed `ok`/`value` output means "not recorded" and matches any.
/// - Paths are `/`-separated, e.g. `/jobs/42`. When ``hierarchical`` is true, creating `/a/b`
///   (by create or put) requires `/a` to exist, and deleting `/a` requires it to have no children.
///   Top-level paths have the always-present root as parent.
/// - PIDs: every allocated PID must be strictly greater than every PID allocated before it in
///   the linearisation. That implies uniqueness (a PID issued twice can never be linearised) and
///   still allows gaps (allocations that timed out may have consumed numbers). The state keeps
///   only the last issued PID, which is all that constrains the future.
public struct NamesModel: Model {
    public struct Entry: Hashable, Sendable {
        public var value: String
        public var version: UInt64

        public init(value: String, version: UInt64) {
            self.value = value
            self.version = version
        }
    }

    public struct State: Hashable, Sendable {
        public var entries: [String: Entry]
        /// Last PID issued; 0 before any allocation (PIDs are positive).
        public var lastPID: UInt64

        public init(entries: [String: Entry] = [:], lastPID: UInt64 = 0) {
            self.entries = entries
            self.lastPID = lastPID
        }
    }

    public enum Input: Hashable, Sendable {
        case create(path: String, value: String)
        case get(path: String)
        case put(path: String, value: String)
        case cas(path: String, expectedVersion: UInt64, value: String)
        case delete(path: String)
        case allocatePID

        /// The path the operation touches; `nil` for PID allocation.
        public var path: String? {
            switch self {
            case let .create(path, _), let .get(path), let .put(path, _), let .cas(path, _, _), let .delete(path):
                return path
            case .allocatePID:
                return nil
            }
        }
    }

    public enum Output: Hashable, Sendable {
        case ok(version: UInt64?)
        case value(String, version: UInt64?)
        case notFound
        case exists
        case versionMismatch
        case noParent
        case notEmpty
        case pid(UInt64)
    }

    /// Whether parent/child existence rules apply (see the type documentation).
    public var hierarchical: Bool

    public init(hierarchical: Bool = true) {
        self.hierarchical = hierarchical
    }

    public var initial: State { State() }

    /// Parent path of `path`, or `nil` for a top-level path (whose parent, the root, always exists).
    public static func parent(of path: String) -> String? {
        guard let slash = path.lastIndex(of: "/"), slash != path.startIndex else { return nil }
        return String(path[..<slash])
    }

    public func step(_ state: State, _ input: Input, _ output: Output?) -> State? {
        if case .allocatePID = input {
            switch output {
            case .none:
                // Unknown PID: the least constraining assumption is the smallest possible one.
                var next = state
                next.lastPID += 1
                return next
            case let .pid(p)?:
                guard p > state.lastPID else { return nil }
                var next = state
                next.lastPID = p
                return next
            default:
                return nil
            }
        }
        let (expected, next) = apply(state, input)
        guard let output else { return next }
        return Self.matches(observed: output, expected: expected) ? next : nil
    }

    /// The deterministic effect of a map operation: the output it must produce and the new state.
    func apply(_ state: State, _ input: Input) -> (Output, State) {
        var next = state
        switch input {
        case let .create(path, value):
            if state.entries[path] != nil { return (.exists, state) }
            if !parentExists(path, in: state) { return (.noParent, state) }
            next.entries[path] = Entry(value: value, version: 1)
            return (.ok(version: 1), next)
        case let .get(path):
            guard let entry = state.entries[path] else { return (.notFound, state) }
            return (.value(entry.value, version: entry.version), state)
        case let .put(path, value):
            if let entry = state.entries[path] {
                next.entries[path] = Entry(value: value, version: entry.version + 1)
                return (.ok(version: entry.version + 1), next)
            }
            if !parentExists(path, in: state) { return (.noParent, state) }
            next.entries[path] = Entry(value: value, version: 1)
            return (.ok(version: 1), next)
        case let .cas(path, expectedVersion, value):
            guard let entry = state.entries[path] else { return (.notFound, state) }
            guard entry.version == expectedVersion else { return (.versionMismatch, state) }
            next.entries[path] = Entry(value: value, version: entry.version + 1)
            return (.ok(version: entry.version + 1), next)
        case let .delete(path):
            guard state.entries[path] != nil else { return (.notFound, state) }
            if hierarchical, state.entries.keys.contains(where: { Self.parent(of: $0) == path }) {
                return (.notEmpty, state)
            }
            next.entries[path] = nil
            return (.ok(version: nil), next)
        case .allocatePID:
            preconditionFailure("allocatePID is handled in step")
        }
    }

    private func parentExists(_ path: String, in state: State) -> Bool {
        guard hierarchical, let parent = Self.parent(of: path) else { return true }
        return state.entries[parent] != nil
    }

    /// Equality, except that an unrecorded (`nil`) version on either side matches any version.
    static func matches(observed: Output, expected: Output) -> Bool {
        switch (observed, expected) {
        case let (.ok(o), .ok(e)):
            return o == nil || e == nil || o == e
        case let (.value(ov, o), .value(ev, e)):
            return ov == ev && (o == nil || e == nil || o == e)
        default:
            return observed == expected
        }
    }

    /// Partitions by key, which is sound because an operation reads and writes only its own
    /// entry — plus, when hierarchical, its parent's existence (create/put) and its children's
    /// (delete). So paths are grouped with their parent when the parent occurs in the history
    /// (union–find); a parent that never occurs never exists, a constant that couples nothing.
    /// All PID allocations share the counter and form one partition of their own.
    public func partition(_ operations: [HistoryOperation<Input, Output>]) -> [[HistoryOperation<Input, Output>]] {
        var index: [String: Int] = [:]   // path -> union-find node
        var parent: [Int] = []
        func find(_ x: Int) -> Int {
            var x = x
            while parent[x] != x {
                parent[x] = parent[parent[x]]
                x = parent[x]
            }
            return x
        }
        for op in operations {
            if let path = op.input.path, index[path] == nil {
                index[path] = parent.count
                parent.append(parent.count)
            }
        }
        if hierarchical {
            for (path, node) in index {
                if let up = Self.parent(of: path), let upNode = index[up] {
                    let (a, b) = (find(node), find(upNode))
                    if a != b { parent[a] = b }
                }
            }
        }
        // Groups in order of first appearance, so reports are deterministic.
        var groupOfRoot: [Int: Int] = [:]
        var groups: [[HistoryOperation<Input, Output>]] = []
        var pidGroup: [HistoryOperation<Input, Output>] = []
        for op in operations {
            guard let path = op.input.path, let node = index[path] else {
                pidGroup.append(op)
                continue
            }
            let root = find(node)
            if let g = groupOfRoot[root] {
                groups[g].append(op)
            } else {
                groupOfRoot[root] = groups.count
                groups.append([op])
            }
        }
        if !pidGroup.isEmpty { groups.append(pidGroup) }
        return groups
    }

    public func describe(_ input: Input, _ output: Output?) -> String {
        let call: String
        switch input {
        case let .create(path, value): call = "create \(path) = \(quoted(value))"
        case let .get(path): call = "get \(path)"
        case let .put(path, value): call = "put \(path) = \(quoted(value))"
        case let .cas(path, v, value): call = "cas \(path) if version \(v) = \(quoted(value))"
        case let .delete(path): call = "delete \(path)"
        case .allocatePID: call = "allocate-pid"
        }
        let result: String
        switch output {
        case .none: result = "?"
        case let .ok(version)?: result = version.map { "ok (version \($0))" } ?? "ok"
        case let .value(value, version)?: result = quoted(value) + (version.map { " (version \($0))" } ?? "")
        case .notFound?: result = "not-found"
        case .exists?: result = "exists"
        case .versionMismatch?: result = "version-mismatch"
        case .noParent?: result = "no-parent"
        case .notEmpty?: result = "not-empty"
        case let .pid(p)?: result = "pid \(p)"
        }
        return "\(call) -> \(result)"
    }

    public func describe(state: State) -> String {
        var parts = state.entries.sorted { $0.key < $1.key }
            .map { "\($0.key)=\(quoted($0.value.value))@v\($0.value.version)" }
        if state.lastPID > 0 { parts.append("last-pid=\(state.lastPID)") }
        return parts.isEmpty ? "{}" : "{" + parts.joined(separator: ", ") + "}"
    }

    private func quoted(_ s: String) -> String { "\"\(s)\"" }
}
