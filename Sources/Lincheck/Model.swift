/// A sequential specification of a concurrent object: the thing a history is checked against.
///
/// A history is linearizable with respect to a model when its operations can be put in one total
/// order that (1) respects real time — if `a` returned before `b` was invoked, `a` comes first —
/// and (2) is accepted by `step` when replayed from `initial`.
///
/// The checker memoises `(set of linearised operations, State)` pairs, so `State` must be
/// `Hashable` and should be a *value*: two states that behave identically for all future
/// operations ought to compare equal, otherwise the cache is less effective (never wrong).
public protocol Model: Sendable {
    associatedtype State: Hashable & Sendable
    associatedtype Input: Sendable
    associatedtype Output: Sendable

    /// The state before any operation takes effect.
    var initial: State { get }

    /// Applies `input` to `state`, given that the client observed `output`. Must be a pure,
    /// deterministic function: the search memoises its results and reports replay it.
    ///
    /// - Returns: the state after the operation, or `nil` when `output` is impossible from `state`.
    /// - Parameter output: `nil` means the outcome is unknown (an indefinite operation, see
    ///   ``HistoryOperation/isIndefinite``). A model must then accept: return the state the operation
    ///   produces if it *did* take effect. "It never took effect" need not be modelled here,
    ///   because the checker may leave indefinite operations out of the linearisation altogether.
    func step(_ state: State, _ input: Input, _ output: Output?) -> State?

    /// Splits a history into independent sub-histories that can be checked separately
    /// (P-compositionality: the history is linearizable iff every part is). Only sound when the
    /// operations of different parts never read or write the same part of the state, e.g. keys of
    /// a map. The default keeps the history whole.
    func partition(_ operations: [HistoryOperation<Input, Output>]) -> [[HistoryOperation<Input, Output>]]

    /// Human-readable rendering of an operation for reports, e.g. `cas 1->2 -> ok`.
    func describe(_ input: Input, _ output: Output?) -> String

    /// Human-readable rendering of a state for reports.
    func describe(state: State) -> String
}

extension Model {
    public func partition(_ operations: [HistoryOperation<Input, Output>]) -> [[HistoryOperation<Input, Output>]] {
        [operations]
    }

    public func describe(_ input: Input, _ output: Output?) -> String {
        if let output { return "\(input) -> \(output)" }
        return "\(input) -> ?"
    }

    public func describe(state: State) -> String {
        String(describing: state)
    }
}
