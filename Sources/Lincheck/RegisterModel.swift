/// A single integer compare-and-set register, initially `nil` (never written).
/// This is the object of the Jepsen etcd histories.
public struct RegisterModel: Model {
    public enum Input: Hashable, Sendable {
        case read
        case write(Int)
        /// Swap to `to` iff the register holds `from`.
        case cas(from: Int, to: Int)
    }

    public enum Output: Hashable, Sendable {
        /// A read's result (`nil`: never written).
        case value(Int?)
        /// A write completed, or a cas swapped.
        case ok
        /// A cas found a value other than `from` and did nothing.
        case failed
    }

    public init() {}

    public var initial: Int? { nil }

    public func step(_ state: Int?, _ input: Input, _ output: Output?) -> Int?? {
        switch (input, output) {
        case (.read, .none):
            return .some(state)
        case let (.read, .value(v)?):
            return v == state ? .some(state) : nil
        case (.write(let v), .none), (.write(let v), .ok?):
            return .some(v)
        case let (.cas(from, to), .none):
            // Unknown outcome: it swaps iff the register holds `from` — there is no other choice.
            return .some(state == from ? to : state)
        case let (.cas(from, to), .ok?):
            return state == from ? .some(to) : nil
        case let (.cas(from, _), .failed?):
            return state != from ? .some(state) : nil
        default:
            // An output of the wrong kind for the input (e.g. a read answered "ok") never fits.
            return nil
        }
    }

    public func describe(_ input: Input, _ output: Output?) -> String {
        let call: String
        switch input {
        case .read: call = "read"
        case let .write(v): call = "write \(v)"
        case let .cas(from, to): call = "cas \(from)->\(to)"
        }
        let result: String
        switch output {
        case nil: result = "?"
        case let .value(v)?: result = v.map(String.init) ?? "nil"
        case .ok?: result = "ok"
        case .failed?: result = "fail"
        }
        return "\(call) -> \(result)"
    }

    public func describe(state: Int?) -> String {
        state.map(String.init) ?? "nil"
    }
}
