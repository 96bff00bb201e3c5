/// A small sub-history that is still not linearizable, found by deleting operations
/// (delta debugging): chunks of half the operations, then quarters, … then single ones, each
/// deletion kept if the rest is still decided not linearizable. When it runs to the end the
/// result is 1-minimal: without any one of its operations it would be linearizable.
///
/// Each trial is one search bounded by `statesPerTrial`; a trial that hits the bound counts as
/// "not shown to fail", so the result is always a real violation. Stops early, with what it has,
/// once `deadline` passes.
public func shrinkViolation<M: Model>(
    model: M,
    operations: [HistoryOperation<M.Input, M.Output>],
    statesPerTrial: Int = 20_000,
    deadline: ContinuousClock.Instant? = nil
) -> (operations: [HistoryOperation<M.Input, M.Output>], minimal: Bool) {
    let clock = ContinuousClock()
    func fails(_ ops: [HistoryOperation<M.Input, M.Output>]) -> Bool {
        var budget = SearchBudget(remainingStates: statesPerTrial, deadline: deadline, clock: clock)
        var search = Search(model: model, operations: ops)
        return search.run(budget: &budget).verdict == .notLinearizable
    }
    var current = operations
    var chunk = max(1, current.count / 2)
    while true {
        var start = 0
        var removed = false
        while start < current.count {
            if let deadline, clock.now >= deadline { return (current, false) }
            var candidate = current
            candidate.removeSubrange(start..<min(current.count, start + chunk))
            if !candidate.isEmpty, fails(candidate) {
                current = candidate
                removed = true
            } else {
                start += chunk
            }
        }
        // Single deletions are repeated until none works: that is 1-minimality.
        if chunk == 1 && !removed { return (current, true) }
        chunk = max(1, chunk / 2)
    }
}
