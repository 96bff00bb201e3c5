import Foundation
import Testing
@testable import Lincheck

/// Shorthand for hand-written histories: an operation with explicit times (`ret: nil` = indefinite).
func op<I, O>(_ id: Int, client: Int = 0, _ input: I, _ output: O?, _ call: Int, _ ret: Int?) -> HistoryOperation<I, O> {
    HistoryOperation(id: id, client: client, input: input, output: output, call: call, ret: ret)
}

func check<M: Model>(_ model: M, _ ops: [HistoryOperation<M.Input, M.Output>], options: CheckOptions = CheckOptions()) throws -> CheckResult<M> {
    let result = checkLinearizability(model: model, history: try History(operations: ops), options: options)
    try validate(result)
    return result
}

/// Independent validation of what the checker hands back, so that a verdict is never trusted
/// on its own: a witness must be a real linearisation, a counterexample a real dead end.
func validate<M: Model>(_ result: CheckResult<M>, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let model = result.model
    for part in result.partitions {
        switch part.verdict {
        case .linearizable:
            let witness = try #require(part.witness, sourceLocation: sourceLocation)
            // Every definite operation exactly once, no operation twice.
            let ids = witness.map(\.id)
            #expect(Set(ids).count == ids.count, "witness repeats an operation", sourceLocation: sourceLocation)
            let definite = Set(part.operations.filter { !$0.isIndefinite }.map(\.id))
            #expect(definite.isSubset(of: Set(ids)), "witness misses a definite operation", sourceLocation: sourceLocation)
            #expect(respectsRealTime(witness), "witness violates real-time order", sourceLocation: sourceLocation)
            #expect(replay(model, witness) != nil, "witness rejected by the model", sourceLocation: sourceLocation)
        case .notLinearizable:
            let c = try #require(part.counterexample, sourceLocation: sourceLocation)
            let prefix = c.prefix.map(\.operation)
            #expect(respectsRealTime(prefix), "prefix violates real-time order", sourceLocation: sourceLocation)
            #expect(replay(model, prefix) == c.state, "prefix does not lead to the reported state", sourceLocation: sourceLocation)
            #expect(!c.blocking.isIndefinite, sourceLocation: sourceLocation)
            #expect(!prefix.contains { $0.id == c.blocking.id }, sourceLocation: sourceLocation)
            #expect(c.candidates.contains { $0.operation.id == c.blocking.id }, sourceLocation: sourceLocation)
            for candidate in c.candidates {
                let accepted = model.step(c.state, candidate.operation.input, candidate.operation.output) != nil
                #expect(accepted == (candidate.reason == .exhausted), sourceLocation: sourceLocation)
                #expect(candidate.operation.call <= c.blocking.ret!, sourceLocation: sourceLocation)
            }
        case .unknown:
            #expect(part.witness == nil && part.counterexample == nil, sourceLocation: sourceLocation)
        }
    }
}

/// No operation comes after one that was invoked after it returned.
func respectsRealTime<I, O>(_ sequence: [HistoryOperation<I, O>]) -> Bool {
    for (i, earlier) in sequence.enumerated() {
        for later in sequence[(i + 1)...] {
            if let ret = later.ret, ret < earlier.call { return false }
        }
    }
    return true
}

func replay<M: Model>(_ model: M, _ sequence: [HistoryOperation<M.Input, M.Output>]) -> M.State? {
    var state = model.initial
    for op in sequence {
        guard let next = model.step(state, op.input, op.output) else { return nil }
        state = next
    }
    return state
}

/// Locates `<repository>/../shared/linearizability/jepsen-etcd`, starting from this source file
/// (`<package>/Tests/LincheckTests/Support.swift`); the package root is the repository root.
func jepsenDirectory(filePath: String = #filePath) -> URL {
    URL(fileURLWithPath: filePath)
        .deletingLastPathComponent()  // LincheckTests
        .deletingLastPathComponent()  // Tests
        .deletingLastPathComponent()  // package (repository) root
        .deletingLastPathComponent()  // its parent
        .appendingPathComponent("shared/linearizability/jepsen-etcd")
}

func seconds(_ d: Duration) -> Double {
    Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}
