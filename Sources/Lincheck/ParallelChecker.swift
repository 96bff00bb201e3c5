import Foundation
import Synchronization

/// How ``checkLinearizabilityInParallel(model:history:options:parallel:)`` spreads the work.
public struct ParallelOptions: Sendable {
    /// Worker threads; each checks one partition at a time. At least 1.
    public var workers: Int
    /// States each partition may use in the first round. Partitions still undecided then are
    /// checked again, from scratch, in a second round that shares what is left of the budget, so
    /// that a few hard partitions cannot keep the easy ones from being decided.
    public var firstRoundStates: Int

    public init(workers: Int = ParallelOptions.defaultWorkers, firstRoundStates: Int = 100_000) {
        self.workers = max(1, workers)
        self.firstRoundStates = max(1, firstRoundStates)
    }

    /// The number of CPUs the process may use.
    public static var defaultWorkers: Int {
        max(1, ProcessInfo.processInfo.activeProcessorCount)
    }
}

/// Checks every partition of `history` (keys of a map, say) on a bounded pool of worker threads
/// under one shared budget: `options.timeout` is one deadline for all of them, and
/// `options.maxStates` is split between the partitions being checked. Unlike
/// ``checkLinearizability(model:history:options:)`` it does not stop at the first violation, so
/// the result names every non-linearizable partition that was decided in time.
///
/// Partitions are taken in order of size, smallest first, and searched in two rounds (see
/// ``ParallelOptions/firstRoundStates``). The verdict is not linearizable if any partition is;
/// otherwise unknown if any is undecided; otherwise linearizable.
public func checkLinearizabilityInParallel<M: Model>(
    model: M,
    history: History<M.Input, M.Output>,
    options: CheckOptions = CheckOptions(),
    parallel: ParallelOptions = ParallelOptions()
) -> CheckResult<M> {
    let clock = ContinuousClock()
    let start = clock.now
    let deadline = options.timeout.map { start.advanced(by: $0) }
    let parts = model.partition(history.operations)
    let shared = ParallelRun<M>(partitions: parts.count, states: options.maxStates ?? Int.max)

    func runRound(_ indices: [Int], capPerPartition: Int?) {
        guard !indices.isEmpty else { return }
        let queue = WorkQueue(indices)
        let workers = min(parallel.workers, indices.count)
        DispatchQueue.concurrentPerform(iterations: workers) { _ in
            while let index = queue.next() {
                let states = shared.reserve(cap: capPerPartition, partitionsLeft: queue.remaining + 1)
                var budget = SearchBudget(remainingStates: states, deadline: deadline, clock: clock)
                let result: PartitionResult<M>
                if budget.timeExceeded {
                    result = PartitionResult(
                        operations: parts[index], verdict: .unknown(reason: "time limit reached before this partition was checked"),
                        statesExplored: 0, witness: nil, counterexample: nil)
                } else {
                    var search = Search(model: model, operations: parts[index])
                    result = search.run(budget: &budget)
                }
                shared.finish(index, result, reserved: states)
            }
        }
    }

    let bySize = parts.indices.sorted { (parts[$0].count, $0) < (parts[$1].count, $1) }
    runRound(bySize, capPerPartition: parallel.firstRoundStates)
    // Second round: the partitions stopped by the first round's cap (not by the deadline).
    let retry = bySize.filter { index in
        guard case let .unknown(reason)? = shared.result(index)?.verdict else { return false }
        return reason.hasPrefix("state limit")
    }
    runRound(retry, capPerPartition: nil)

    let results = parts.indices.map { shared.result($0)! }
    let verdict: Verdict
    if results.contains(where: { $0.verdict == .notLinearizable }) {
        verdict = .notLinearizable
    } else if let unknown = results.first(where: { $0.verdict != .linearizable }) {
        verdict = unknown.verdict
    } else {
        verdict = .linearizable
    }
    return CheckResult(
        model: model, verdict: verdict, partitions: results,
        statesExplored: shared.statesExplored,
        elapsed: start.duration(to: clock.now))
}

/// Indices handed out to workers, one at a time.
final class WorkQueue: Sendable {
    private let state: Mutex<(items: [Int], next: Int)>

    init(_ items: [Int]) {
        state = Mutex((items, 0))
    }

    func next() -> Int? {
        state.withLock { s in
            guard s.next < s.items.count else { return nil }
            defer { s.next += 1 }
            return s.items[s.next]
        }
    }

    /// Items not handed out yet.
    var remaining: Int {
        state.withLock { $0.items.count - $0.next }
    }
}

/// The results and the shared state budget of a parallel check.
final class ParallelRun<M: Model>: Sendable {
    private struct State {
        var results: [PartitionResult<M>?]
        var statesLeft: Int
        var statesExplored = 0
    }

    private let state: Mutex<State>

    init(partitions: Int, states: Int) {
        state = Mutex(State(results: Array(repeating: nil, count: partitions), statesLeft: states))
    }

    /// Takes states for one partition: `cap` if given, else an equal share of what is left among
    /// the partitions still to start (so an early one cannot take everything).
    func reserve(cap: Int?, partitionsLeft: Int) -> Int {
        state.withLock { s in
            let share = cap ?? max(1, s.statesLeft / max(1, partitionsLeft))
            let taken = min(share, s.statesLeft)
            s.statesLeft -= taken
            return taken
        }
    }

    /// Records a partition's result and gives back the states it did not use.
    func finish(_ index: Int, _ result: PartitionResult<M>, reserved: Int) {
        state.withLock { s in
            s.statesLeft += max(0, reserved - result.statesExplored)
            s.statesExplored += result.statesExplored
            s.results[index] = result
        }
    }

    func result(_ index: Int) -> PartitionResult<M>? {
        state.withLock { $0.results[index] }
    }

    var statesExplored: Int {
        state.withLock { $0.statesExplored }
    }
}
