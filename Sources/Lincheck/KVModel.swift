/// A map from string keys to string values with get, put and append: the object of the
/// Jepsen-style key-value histories (as in Porcupine's `kv` test data).
///
/// - `get(key)` returns the value; a key never written reads as the empty string (Jepsen's
///   `nil` and `""` are the same here, as in Porcupine's model).
/// - `put(key, v)` sets the value; `append(key, v)` concatenates `v` to it.
///
/// Every operation touches one key, so the history is partitioned by key
/// (P-compositionality) and each key is searched on its own — in parallel, with
/// ``checkLinearizabilityInParallel(model:history:options:parallel:)``.
public struct KVModel: Model {
    public enum Operation: Hashable, Sendable {
        case get
        case put(String)
        case append(String)
    }

    public struct Input: Hashable, Sendable {
        public var key: String
        public var operation: Operation

        public init(key: String, _ operation: Operation) {
            self.key = key
            self.operation = operation
        }
    }

    public enum Output: Hashable, Sendable {
        /// What a get returned.
        case value(String)
        /// A put or append completed.
        case ok
    }

    /// The values of the keys written so far (absent = empty string).
    public typealias State = [String: String]

    public init() {}

    public var initial: State { [:] }

    public func step(_ state: State, _ input: Input, _ output: Output?) -> State? {
        switch (input.operation, output) {
        case (.get, .none):
            return state
        case let (.get, .value(v)?):
            return state[input.key, default: ""] == v ? state : nil
        case let (.put(v), .none), let (.put(v), .ok?):
            var next = state
            next[input.key] = v
            return next
        case let (.append(v), .none), let (.append(v), .ok?):
            var next = state
            next[input.key, default: ""] += v
            return next
        default:
            // A get answered "ok", or a write answered with a value: never fits.
            return nil
        }
    }

    public func partition(_ operations: [HistoryOperation<Input, Output>]) -> [[HistoryOperation<Input, Output>]] {
        var groupOfKey: [String: Int] = [:]
        var groups: [[HistoryOperation<Input, Output>]] = []
        for op in operations {
            if let g = groupOfKey[op.input.key] {
                groups[g].append(op)
            } else {
                groupOfKey[op.input.key] = groups.count
                groups.append([op])
            }
        }
        return groups
    }

    public func describe(_ input: Input, _ output: Output?) -> String {
        let call: String
        switch input.operation {
        case .get: call = "get \(quoted(input.key))"
        case let .put(v): call = "put \(quoted(input.key)) \(quoted(v))"
        case let .append(v): call = "append \(quoted(input.key)) \(quoted(v))"
        }
        let result: String
        switch output {
        case .none: result = "?"
        case let .value(v)?: result = quoted(v)
        case .ok?: result = "ok"
        }
        return "\(call) -> \(result)"
    }

    public func describe(state: State) -> String {
        state.isEmpty ? "{}" : "{" + state.sorted { $0.key < $1.key }.map { "\(quoted($0.key))=\(quoted($0.value))" }
            .joined(separator: ", ") + "}"
    }

    private func quoted(_ s: String) -> String { "\"\(s)\"" }
}
