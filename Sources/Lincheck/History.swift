/// One client operation of a recorded history.
///
/// Times are abstract, totally ordered integers: either real timestamps or, more commonly, the
/// position of the invocation / completion event in the recorded event stream. Operation `a`
/// precedes `b` in real time iff `a.ret! < b.call`; equal times count as concurrent.
public struct HistoryOperation<Input: Sendable, Output: Sendable>: Sendable {
    /// Identifier used in reports; ``History/init(events:)`` numbers operations by invocation order.
    public var id: Int
    /// The client (process, thread) that issued the operation. Informational only: the checker
    /// relies on the times, and one client's operations never overlap anyway.
    public var client: Int
    public var input: Input
    /// What the client observed, or `nil` when the outcome is unknown.
    public var output: Output?
    /// When the operation was invoked.
    public var call: Int
    /// When it returned, or `nil` for +infinity: the operation is *indefinite* (timed out, or still
    /// open at the end of the recording). It may take effect at any point after `call`, or never.
    public var ret: Int?

    public init(id: Int, client: Int, input: Input, output: Output?, call: Int, ret: Int?) {
        self.id = id
        self.client = client
        self.input = input
        self.output = output
        self.call = call
        self.ret = ret
    }

    /// An indefinite operation may be linearised anywhere after its invocation, or left out.
    public var isIndefinite: Bool { ret == nil }
}

/// One event of a recorded history, in recording order (the index of the event is its time).
public enum HistoryEvent<Input: Sendable, Output: Sendable>: Sendable {
    /// The client starts an operation. A client has at most one operation open.
    case invoke(client: Int, input: Input)
    /// The client's open operation completed and the client observed `output`.
    case complete(client: Int, output: Output)
    /// The outcome of the client's open operation is unknown (e.g. timed out): it stays
    /// indefinite, returning at +infinity. The client may invoke a new operation afterwards.
    case indefinite(client: Int)
    /// The client's open operation definitely did not take effect: it is dropped from the history.
    case discard(client: Int)
}

public enum HistoryError: Error, Equatable, CustomStringConvertible {
    case invokeWhileOpen(client: Int, event: Int)
    case completionWithoutInvoke(client: Int, event: Int)
    case returnBeforeCall(operation: Int)
    case timesMismatch
    case timesNotMonotonic(event: Int)

    public var description: String {
        switch self {
        case let .invokeWhileOpen(client, event):
            return "event \(event): client \(client) invoked an operation while its previous one was still open"
        case let .completionWithoutInvoke(client, event):
            return "event \(event): client \(client) completed an operation it never invoked"
        case let .returnBeforeCall(operation):
            return "operation #\(operation) returns before it is invoked"
        case .timesMismatch:
            return "the number of times differs from the number of events"
        case let .timesNotMonotonic(event):
            return "event \(event) happens before the event preceding it"
        }
    }
}

/// A recorded client history: a set of operations with call and return times.
public struct History<Input: Sendable, Output: Sendable>: Sendable {
    public var operations: [HistoryOperation<Input, Output>]

    /// Uses the operations as given (their ids are kept for reports).
    public init(operations: [HistoryOperation<Input, Output>]) throws {
        for op in operations {
            if let ret = op.ret, ret < op.call { throw HistoryError.returnBeforeCall(operation: op.id) }
        }
        self.operations = operations
    }

    /// Builds a history from an event stream; event `i` happens at time `i`. Operations still open
    /// at the end become indefinite, as their effect may land at any later moment.
    public init(events: [HistoryEvent<Input, Output>]) throws {
        try self.init(events: events, times: Array(events.indices))
    }

    /// Builds a history from an event stream with explicit, non-decreasing times (e.g. the line
    /// numbers of a log file, so that reports point into the file).
    public init(events: [HistoryEvent<Input, Output>], times: [Int]) throws {
        guard times.count == events.count else { throw HistoryError.timesMismatch }
        var open: [Int: (input: Input, call: Int)] = [:]
        // (call time, client, input, output, ret); sorted by call time at the end.
        var done: [(call: Int, client: Int, input: Input, output: Output?, ret: Int?)] = []
        for (index, (event, time)) in zip(events, times).enumerated() {
            if index > 0, time < times[index - 1] { throw HistoryError.timesNotMonotonic(event: index) }
            switch event {
            case let .invoke(client, input):
                if open[client] != nil { throw HistoryError.invokeWhileOpen(client: client, event: index) }
                open[client] = (input, time)
            case let .complete(client, output):
                guard let op = open.removeValue(forKey: client) else {
                    throw HistoryError.completionWithoutInvoke(client: client, event: index)
                }
                done.append((op.call, client, op.input, output, time))
            case let .indefinite(client):
                guard let op = open.removeValue(forKey: client) else {
                    throw HistoryError.completionWithoutInvoke(client: client, event: index)
                }
                done.append((op.call, client, op.input, nil, nil))
            case let .discard(client):
                guard open.removeValue(forKey: client) != nil else {
                    throw HistoryError.completionWithoutInvoke(client: client, event: index)
                }
            }
        }
        for (client, op) in open { done.append((op.call, client, op.input, nil, nil)) }
        done.sort { $0.call < $1.call }
        operations = done.enumerated().map { index, op in
            HistoryOperation(id: index, client: op.client, input: op.input, output: op.output, call: op.call, ret: op.ret)
        }
    }
}
