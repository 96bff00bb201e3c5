import Testing
import Transport
@testable import Lincheck

/// A simulated recording against the name service: `clients` clients issue operations one after
/// another for `duration` milliseconds (each op takes 1–300 ms, then 0–500 ms of think time).
/// Every operation takes effect at a random point inside its interval, in that order, so the
/// history is linearizable. `unknownAllocations` allocations time out: their clients never see
/// the result; half of them took effect (used a PID), half never reached the service.
struct NamesWorkload {
    typealias I = NamesModel.Input
    typealias O = NamesModel.Output
    var clients = 8
    var duration = 600_000
    var unknownAllocations = 100
    var seed: UInt64 = 1

    func make() -> [HistoryOperation<I, O>] {
        var rng = SplitMix64(seed: seed)
        let keys = (0..<8).map { "/jobs/k\($0)" }
        var ops: [HistoryOperation<I, O>] = []
        var points: [Int] = []
        for client in 0..<clients {
            var t = Int.random(in: 0..<500, using: &rng)
            var n = 0
            while t < duration {
                n += 1
                let key = keys.randomElement(using: &rng)!
                let value = "c\(client)-\(n)"
                let input: I
                switch Int.random(in: 0..<20, using: &rng) {
                case 0..<6: input = .allocatePID
                case 6..<10: input = .put(path: key, value: value)
                case 10..<13: input = .cas(path: key, expectedVersion: UInt64.random(in: 1...30, using: &rng), value: value)
                case 13..<18: input = .get(path: key)
                case 18: input = .create(path: key, value: value)
                default: input = .delete(path: key)
                }
                let length = Int.random(in: 1...300, using: &rng)
                ops.append(HistoryOperation(id: ops.count, client: client, input: input, output: nil, call: t, ret: t + length))
                points.append(t + Int.random(in: 0...length, using: &rng))
                t += length + Int.random(in: 0...500, using: &rng)
            }
        }
        // Which allocations time out, and which of those reached the service.
        var allocations = ops.indices.filter { if case .allocatePID = ops[$0].input { return true } else { return false } }
        allocations.shuffle(using: &rng)
        let unknown = Set(allocations.prefix(unknownAllocations))
        var lost = Set<Int>()
        for (i, index) in unknown.sorted().enumerated() where i % 2 == 1 { lost.insert(index) }
        // Execute in linearisation-point order.
        let model = NamesModel(firstPID: 1)
        var state = model.initial
        state.pidsBefore = 0
        for index in ops.indices.sorted(by: { (points[$0], $0) < (points[$1], $1) }) where !lost.contains(index) {
            if case .allocatePID = ops[index].input {
                state.allocations += 1
                ops[index].output = .pid(state.allocations)
            } else {
                let (output, next) = model.apply(state, ops[index].input)
                state = next
                ops[index].output = output
            }
        }
        for index in unknown {
            ops[index].output = nil
            ops[index].ret = nil
        }
        return ops
    }
}

@Suite struct ScaleTests {
    /// Ten minutes of 8 clients with 100 timed-out allocations: decided in seconds, and a planted
    /// violation (two PIDs swapped between allocations far apart in time) is found.
    @Test func hundredUnknownAllocationsAreCheap() throws {
        let ops = NamesWorkload().make()
        let allocations = ops.filter { if case .allocatePID = $0.input { return true } else { return false } }
        #expect(allocations.filter(\.isIndefinite).count == 100)
        let model = NamesModel(firstPID: 1)
        // (Not `check`: its independent validation is quadratic in the witness length.)
        let good = checkLinearizability(model: model, history: try History(operations: ops), options: CheckOptions(timeout: .seconds(60)))
        #expect(good.verdict == .linearizable)
        #expect(good.elapsed < .seconds(10), "took \(good.elapsed)")

        var bad = ops
        let definite = allocations.filter { !$0.isIndefinite }.sorted { $0.call < $1.call }
        let (a, b) = (definite[definite.count / 4], definite[3 * definite.count / 4])
        #expect(a.ret! < b.call)
        bad[a.id].output = b.output
        bad[b.id].output = a.output
        let violated = checkLinearizability(model: model, history: try History(operations: bad), options: CheckOptions(timeout: .seconds(60)))
        #expect(violated.verdict == .notLinearizable)
        #expect(violated.elapsed < .seconds(10), "took \(violated.elapsed)")
        print("names workload: \(ops.count) operations, \(allocations.count) allocations (100 unknown); "
            + "linearizable in \(formatSeconds(good.elapsed)) (\(good.statesExplored) states), "
            + "planted violation found in \(formatSeconds(violated.elapsed)) (\(violated.statesExplored) states)")
    }
}
