/// Sequential specification of the Plexus name service as its clients see it: the namespace and
/// the PID allocator of `NameServiceState` (Sources/NamesCore/NameService), operation for
/// operation, including the failures the service returns.
///
/// Operation encoding (``Input`` → expected ``Output``):
///
/// | input                                | success                          | failures                                  |
/// |--------------------------------------|----------------------------------|-------------------------------------------|
/// | `create(path, value)`                | `ok(version: 1)`                 | `exists`, `invalidName`, `valueTooLarge`  |
/// | `createSequential(prefix, value)`    | `created(name:)`                 | `exists`, `invalidName`, `valueTooLarge`  |
/// | `get(path)`                          | `value(v, version: n)`           | `notFound`, `invalidName`                 |
/// | `put(path, value)` (upsert)          | `ok(version: n+1 or 1)`          | `invalidName`, `valueTooLarge`            |
/// | `cas(path, expectedVersion, value)`  | `ok(version: expected+1)`        | `notFound`, `versionMismatch`, `invalidName`, `valueTooLarge` |
/// | `delete(path, expectedVersion?)`     | `ok(version: nil)`               | `notFound`, `versionMismatch`, `invalidName` |
/// | `list(path)` (immediate children)    | `children([Child])`              | `invalidName`                             |
/// | `allocatePID`                        | `pid(p)`                         | —                                         |
///
/// The rules, as `NameServiceState` implements them:
/// - The namespace is flat with implicit directories (etcd style): `/a/b` can be created whether
///   or not `/a` exists, and deleting `/a` never depends on names below it. `list(path)` derives
///   the children from the stored names: each immediate child is an entry, a directory (names
///   exist below it) or both. `list("/")` lists the top level.
/// - Names start with `/`, are not `/` itself, do not end with `/`, contain no NUL, no empty,
///   `.` or `..` component and are at most ``maxNameBytes`` UTF-8 bytes; values at most
///   ``maxValueBytes``. Anything else fails (`invalidName`, `valueTooLarge`) without effect, and
///   these checks come before every other one.
/// - Versions are per entry: 1 on creation, +1 on every put/cas; they restart at 1 when a deleted
///   name is created again. A `nil` version in an observed `ok`/`value` output means "not
///   recorded" and matches any.
/// - `createSequential(prefix, value)` names the entry `prefix` followed by a counter, zero-padded
///   to 10 digits, kept per parent directory of `prefix + "0"` and starting at 0. The counter
///   advances even when that name already exists (the create then fails with `exists`), but not
///   when the name or value is invalid. A `nil` name in an observed `created` matches any.
/// - PIDs: the service issues them consecutively, never twice: the n-th allocation returns
///   `first + n`. A history may start after earlier allocations, so `first` is fixed by the first
///   definite allocation of the linearisation (or given as ``firstPID``). Because the value is a
///   function of the count, an allocation whose outcome is unknown only advances the count:
///   the state is (PIDs issued before, allocations linearised), which the search never has to
///   branch on. Every allocation performed while recording must be in the history; one made by
///   an unrecorded client shows up as a gap, which is reported as a violation.
/// - Not modelled: leases and ephemeral names (a lease ends on the leader's clock, an event no
///   client records), the process table beyond allocation, watches. Histories with them are
///   rejected by the parser rather than checked against the wrong rules.
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
        /// Sequential-name counters, per parent directory (absent = 0).
        public var sequenceCounters: [String: UInt64]
        /// PIDs issued before the first allocation of the history; `nil` until a definite
        /// allocation fixes it.
        public var pidsBefore: UInt64?
        /// Allocations linearised so far (definite or not).
        public var allocations: UInt64

        public init(entries: [String: Entry] = [:], sequenceCounters: [String: UInt64] = [:],
                    pidsBefore: UInt64? = nil, allocations: UInt64 = 0) {
            self.entries = entries
            self.sequenceCounters = sequenceCounters
            self.pidsBefore = pidsBefore
            self.allocations = allocations
        }
    }

    /// One child in a listing, as `children(of:)` returns it.
    public struct Child: Hashable, Sendable {
        public var name: String
        /// The child is itself a stored name.
        public var isEntry: Bool
        /// Names exist below the child.
        public var hasChildren: Bool

        public init(name: String, isEntry: Bool, hasChildren: Bool) {
            self.name = name
            self.isEntry = isEntry
            self.hasChildren = hasChildren
        }
    }

    public enum Input: Hashable, Sendable {
        case create(path: String, value: String)
        case createSequential(prefix: String, value: String)
        case get(path: String)
        case put(path: String, value: String)
        case cas(path: String, expectedVersion: UInt64, value: String)
        case delete(path: String, expectedVersion: UInt64? = nil)
        case list(path: String)
        case allocatePID
    }

    public enum Output: Hashable, Sendable {
        case ok(version: UInt64?)
        /// A sequential create succeeded; `name` is the generated name (`nil`: not recorded).
        case created(name: String?)
        case value(String, version: UInt64?)
        case children([Child])
        case notFound
        case exists
        case versionMismatch
        case invalidName
        case valueTooLarge
        case pid(UInt64)
    }

    /// The service's limits (`NameServiceState.Limits` defaults).
    public var maxNameBytes: Int
    public var maxValueBytes: Int
    /// The PID of the first allocation the service ever makes, when the history starts with
    /// the service (1 for a fresh one); `nil`: unknown, inferred from the history.
    public var firstPID: UInt64?

    public init(maxNameBytes: Int = 1024, maxValueBytes: Int = 65536, firstPID: UInt64? = nil) {
        self.maxNameBytes = maxNameBytes
        self.maxValueBytes = maxValueBytes
        self.firstPID = firstPID
    }

    public var initial: State {
        State(pidsBefore: firstPID.map { $0 - 1 })
    }

    public func step(_ state: State, _ input: Input, _ output: Output?) -> State? {
        if case .allocatePID = input {
            var next = state
            next.allocations += 1
            switch output {
            case .none:
                return next
            case let .pid(p)?:
                // The n-th allocation (n = allocations + 1) returns pidsBefore + n.
                guard p > state.allocations else { return nil }
                let before = p - state.allocations - 1
                if let known = state.pidsBefore, known != before { return nil }
                next.pidsBefore = before
                return next
            default:
                return nil
            }
        }
        let (expected, next) = apply(state, input)
        guard let output else { return next }
        return Self.matches(observed: output, expected: expected) ? next : nil
    }

    /// The deterministic effect of a namespace operation: the output it produces and the new state.
    func apply(_ state: State, _ input: Input) -> (Output, State) {
        var next = state
        switch input {
        case let .create(path, value):
            if let error = validate(path) ?? validate(value: value) { return (error, state) }
            if state.entries[path] != nil { return (.exists, state) }
            next.entries[path] = Entry(value: value, version: 1)
            return (.ok(version: 1), next)
        case let .createSequential(prefix, value):
            guard prefix.hasPrefix("/") else { return (.invalidName, state) }
            let directory = Self.parentPath(of: prefix + "0")
            let counter = state.sequenceCounters[directory, default: 0]
            let digits = String(counter)
            let name = prefix + String(repeating: "0", count: max(0, 10 - digits.count)) + digits
            if let error = validate(name) ?? validate(value: value) { return (error, state) }
            next.sequenceCounters[directory] = counter + 1
            if state.entries[name] != nil { return (.exists, next) }
            next.entries[name] = Entry(value: value, version: 1)
            return (.created(name: name), next)
        case let .get(path):
            if let error = validate(path) { return (error, state) }
            guard let entry = state.entries[path] else { return (.notFound, state) }
            return (.value(entry.value, version: entry.version), state)
        case let .put(path, value):
            if let error = validate(path) ?? validate(value: value) { return (error, state) }
            let version = (state.entries[path]?.version ?? 0) + 1
            next.entries[path] = Entry(value: value, version: version)
            return (.ok(version: version), next)
        case let .cas(path, expectedVersion, value):
            if let error = validate(path) ?? validate(value: value) { return (error, state) }
            guard let entry = state.entries[path] else { return (.notFound, state) }
            guard entry.version == expectedVersion else { return (.versionMismatch, state) }
            next.entries[path] = Entry(value: value, version: entry.version + 1)
            return (.ok(version: entry.version + 1), next)
        case let .delete(path, expectedVersion):
            if let error = validate(path) { return (error, state) }
            guard let entry = state.entries[path] else { return (.notFound, state) }
            if let expectedVersion, expectedVersion != entry.version { return (.versionMismatch, state) }
            next.entries[path] = nil
            return (.ok(version: nil), next)
        case let .list(path):
            if path != "/", let error = validate(path) { return (error, state) }
            return (.children(Self.children(of: path, in: state.entries.keys)), state)
        case .allocatePID:
            preconditionFailure("allocatePID is handled in step")
        }
    }

    /// `NameServiceState.validateName`: `nil` when `path` is a valid name.
    func validate(_ path: String) -> Output? {
        let bytes = path.utf8
        guard bytes.count <= maxNameBytes, path.hasPrefix("/"), path != "/", !path.hasSuffix("/"),
              !bytes.contains(0)
        else { return .invalidName }
        for component in path.dropFirst().split(separator: "/", omittingEmptySubsequences: false)
        where component.isEmpty || component == "." || component == ".." {
            return .invalidName
        }
        return nil
    }

    func validate(value: String) -> Output? {
        value.utf8.count > maxValueBytes ? .valueTooLarge : nil
    }

    /// `NameServiceState.parentPath(of:)`: everything before the last `/`, or `/` at the top.
    public static func parentPath(of name: String) -> String {
        guard let slash = name.lastIndex(of: "/"), slash != name.startIndex else { return "/" }
        return String(name[..<slash])
    }

    /// The prefix a name must have to be listed under `path`.
    static func listPrefix(_ path: String) -> String {
        path == "/" ? "/" : path + "/"
    }

    /// `NameServiceState.children(of:)`: immediate children of `path`, sorted by name.
    static func children<Names: Sequence<String>>(of path: String, in names: Names) -> [Child] {
        let prefix = listPrefix(path)
        var found: [String: Child] = [:]
        for name in names where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            if let slash = rest.firstIndex(of: "/") {
                let child = prefix + rest[..<slash]
                found[child, default: Child(name: child, isEntry: false, hasChildren: true)].hasChildren = true
            } else {
                let child = prefix + rest
                found[child, default: Child(name: child, isEntry: true, hasChildren: false)].isEntry = true
            }
        }
        return found.keys.sorted().map { found[$0]! }
    }

    /// Equality, except that an unrecorded (`nil`) version or generated name matches any.
    static func matches(observed: Output, expected: Output) -> Bool {
        switch (observed, expected) {
        case let (.ok(o), .ok(e)):
            return o == nil || e == nil || o == e
        case let (.value(ov, o), .value(ev, e)):
            return ov == ev && (o == nil || e == nil || o == e)
        case let (.created(o), .created(e)):
            return o == nil || o == e
        default:
            return observed == expected
        }
    }

    /// Partitions so that operations that can affect one another stay together (sound because
    /// every other pair commutes and observes nothing of the other):
    /// - operations on the same path;
    /// - sequential creates in one directory (they share its counter) with every path that starts
    ///   with one of their prefixes (a name they may generate);
    /// - a `list(path)` with every path below `path` and every sequential create whose prefix is
    ///   below it (their names show up in the listing);
    /// - all PID allocations, which share the counter, as a partition of their own (last).
    public func partition(_ operations: [HistoryOperation<Input, Output>]) -> [[HistoryOperation<Input, Output>]] {
        var nodes: [String: Int] = [:]
        var parent: [Int] = []
        func node(_ key: String) -> Int {
            if let n = nodes[key] { return n }
            nodes[key] = parent.count
            parent.append(parent.count)
            return parent.count - 1
        }
        func find(_ x: Int) -> Int {
            var x = x
            while parent[x] != x {
                parent[x] = parent[parent[x]]
                x = parent[x]
            }
            return x
        }
        func union(_ a: Int, _ b: Int) {
            let (ra, rb) = (find(a), find(b))
            if ra != rb { parent[ra] = rb }
        }
        /// The union-find key of an operation; `nil` for PID allocations.
        func key(_ input: Input) -> String? {
            switch input {
            case let .create(path, _), let .get(path), let .put(path, _), let .cas(path, _, _), let .delete(path, _):
                return "p" + path
            case let .createSequential(prefix, _):
                return "s" + Self.parentPath(of: prefix + "0")
            case let .list(path):
                return "l" + path
            case .allocatePID:
                return nil
            }
        }
        var paths: Set<String> = []
        var prefixes: Set<String> = []
        var listed: Set<String> = []
        for op in operations {
            guard let k = key(op.input) else { continue }
            _ = node(k)
            switch op.input {
            case let .create(path, _), let .get(path), let .put(path, _), let .cas(path, _, _), let .delete(path, _):
                paths.insert(path)
            case let .createSequential(prefix, _): prefixes.insert(prefix)
            case let .list(path): listed.insert(path)
            case .allocatePID: break
            }
        }
        for prefix in prefixes {
            let counter = node("s" + Self.parentPath(of: prefix + "0"))
            for path in paths where path.hasPrefix(prefix) { union(counter, node("p" + path)) }
        }
        for path in listed {
            let list = node("l" + path)
            let below = Self.listPrefix(path)
            for name in paths where name.hasPrefix(below) { union(list, node("p" + name)) }
            for prefix in prefixes where prefix.hasPrefix(below) {
                union(list, node("s" + Self.parentPath(of: prefix + "0")))
            }
        }
        // Groups in order of first appearance, so reports are deterministic.
        var groupOfRoot: [Int: Int] = [:]
        var groups: [[HistoryOperation<Input, Output>]] = []
        var pidGroup: [HistoryOperation<Input, Output>] = []
        for op in operations {
            guard let k = key(op.input), let n = nodes[k] else {
                pidGroup.append(op)
                continue
            }
            let root = find(n)
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
        case let .createSequential(prefix, value): call = "create-sequential \(prefix)* = \(quoted(value))"
        case let .get(path): call = "get \(path)"
        case let .put(path, value): call = "put \(path) = \(quoted(value))"
        case let .cas(path, v, value): call = "cas \(path) if version \(v) = \(quoted(value))"
        case let .delete(path, v): call = "delete \(path)" + (v.map { " if version \($0)" } ?? "")
        case let .list(path): call = "list \(path)"
        case .allocatePID: call = "allocate-pid"
        }
        let result: String
        switch output {
        case .none: result = "?"
        case let .ok(version)?: result = version.map { "ok (version \($0))" } ?? "ok"
        case let .created(name)?: result = name.map { "created \($0)" } ?? "created"
        case let .value(value, version)?: result = quoted(value) + (version.map { " (version \($0))" } ?? "")
        case let .children(children)?:
            result = "[" + children.map(Self.describe).joined(separator: ", ") + "]"
        case .notFound?: result = "not-found"
        case .exists?: result = "exists"
        case .versionMismatch?: result = "version-mismatch"
        case .invalidName?: result = "invalid-name"
        case .valueTooLarge?: result = "value-too-large"
        case let .pid(p)?: result = "pid \(p)"
        }
        return "\(call) -> \(result)"
    }

    /// A child as `plexus ns ls` shows it: a trailing `/` for a directory; an entry that is also
    /// a directory appears as both.
    static func describe(_ child: Child) -> String {
        switch (child.isEntry, child.hasChildren) {
        case (true, true): return "\(child.name), \(child.name)/"
        case (false, true): return "\(child.name)/"
        default: return child.name
        }
    }

    public func describe(state: State) -> String {
        var parts = state.entries.sorted { $0.key < $1.key }
            .map { "\($0.key)=\(quoted($0.value.value))@v\($0.value.version)" }
        parts += state.sequenceCounters.sorted { $0.key < $1.key }.map { "seq(\($0.key))=\($0.value)" }
        if state.allocations > 0 {
            let last = state.pidsBefore.map { "last-pid=\($0 + state.allocations)" } ?? "last-pid=?"
            parts.append("\(last) (\(state.allocations) allocation(s))")
        }
        return parts.isEmpty ? "{}" : "{" + parts.joined(separator: ", ") + "}"
    }

    private func quoted(_ s: String) -> String { "\"\(s)\"" }
}
