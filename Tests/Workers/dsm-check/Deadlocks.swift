import Deadlock
import Foundation
import Plexus

// Deadlocks among Plexus locks, found and resolved in a real job, and their
// absence: run under `plexus run --deadlock abort` (the default) unless a
// test says otherwise.

func deadlockScenarios() -> [(name: String, ranks: String, run: (Plexus, Options) throws -> Bool)] { [
    ("deadlock-inversion", "2+", deadlockInversion),
    ("deadlock-philosophers", "2+", diningPhilosophers),
    ("lock-ordered", "1+", lockOrdered),
    ("lock-tokens", "1+", lockTokens),
] }

/// Acquires `lock`: nil once it is held, the report when this process was
/// chosen as the victim of a deadlock (it does not hold the lock then).
func acquireOrVictim(_ lock: DistributedLock) throws -> DeadlockReport? {
    do {
        try lock.acquire()
        return nil
    } catch {
        guard case .deadlock(let report) = error else { throw error }
        return report
    }
}

/// What one rank of a deadlock scenario saw: "victim", "completed" or
/// "idle", then the victim's error message.
private func outcomes(_ px: Plexus, _ mine: String) throws -> [String] {
    try px.allGather(Array(mine.utf8)).map { String(decoding: $0, as: UTF8.self) }
}

/// Ranks 0 and 1 take locks 1 and 2 in opposite order (the others watch),
/// ITERATIONS rounds (default 1): in each, exactly one of them is the
/// victim, its error names both ranks and both locks, the other completes,
/// and afterwards nobody holds the lock the victim asked for (the survivor
/// takes it with `tryAcquire`).
func deadlockInversion(_ px: Plexus, _ o: Options) throws -> Bool {
    let rounds = o.iterations ?? 1
    var failures = Failures()
    let playing = px.rank < 2
    let first = px.lock(px.rank == 0 ? 1 : 2), second = px.lock(px.rank == 0 ? 2 : 1)
    var victimRounds = [Int](repeating: 0, count: px.size)
    var lastReport = ""
    for _ in 0..<rounds {
        if playing { try first.acquire() }
        // Both hold their first lock before either asks for its second.
        try px.barrier()
        var mine = "idle"
        if playing {
            if let report = try acquireOrVictim(second) {
                mine = "victim"
                lastReport = report.description
                if second.token != nil { failures.add("the victim holds lock \(second.id) after its acquire failed") }
                if report.ranks != [px.rank, 1 - px.rank] { failures.add("the cycle's ranks are \(report.ranks), expected [\(px.rank), \(1 - px.rank)]") }
                if report.lock != second.id || report.held != [first.id] {
                    failures.add("the report says lock \(report.lock) failed holding \(report.held), expected lock \(second.id) holding [\(first.id)]")
                }
                for word in ["rank 0", "rank 1", "lock 1", "lock 2", "victim", "pid \(px.pids[0])@", "pid \(px.pids[1])@", "one order"]
                where !report.description.contains(word) {
                    failures.add("the error does not mention '\(word)': \(report.description)")
                }
            } else {
                mine = "completed"
                try second.release()
            }
            try first.release()
        }
        let all = try outcomes(px, mine)
        let victims = all.indices.filter { all[$0] == "victim" }
        let completed = all.indices.filter { all[$0] == "completed" }
        if victims.count != 1 || completed.count != 1 {
            failures.add("expected one victim and one rank that completed, got victims \(victims) and completed \(completed)")
        }
        for v in victims { victimRounds[v] += 1 }
        // The victim's withdrawn request left nothing behind at the manager.
        if completed == [px.rank] {
            if try second.tryAcquire() {
                try second.release()
            } else {
                failures.add("lock \(second.id), which the victim asked for, is held by someone after the victim gave up")
            }
        }
        try px.barrier()
    }
    let reports = try outcomes(px, lastReport)
    if px.rank == 0, let r = reports.first(where: { !$0.isEmpty }) { say(r) }
    let detail = "\(rounds) round(s), one victim each: " + victimRounds.indices.filter { victimRounds[$0] > 0 }
        .map { "rank \($0) was the victim \(victimRounds[$0]) time(s)" }.joined(separator: ", ")
    return try verdict(px, "deadlock-inversion", failures, detail: detail)
}

/// Dining philosophers: rank i takes fork i, then fork (i + 1) % n. With
/// every left fork taken before any right one, the ranks form one cycle:
/// exactly one is the victim and every other rank eats.
func diningPhilosophers(_ px: Plexus, _ o: Options) throws -> Bool {
    var failures = Failures()
    let left = px.lock(px.rank), right = px.lock((px.rank + 1) % px.size)
    try left.acquire()
    try px.barrier()
    var mine: String
    if let report = try acquireOrVictim(right) {
        mine = "victim"
        if report.cycle.hops.count != px.size { failures.add("the cycle has \(report.cycle.hops.count) processes, expected \(px.size): \(report)") }
        if report.cycle.victim != px.pids.max() { failures.add("pid \(report.cycle.victim) is the victim, not the highest \(px.pids.max()!)") }
    } else {
        mine = "ate"
        try right.release()
    }
    try left.release()
    let all = try outcomes(px, mine)
    let victims = all.indices.filter { all[$0] == "victim" }
    if victims.count != 1 { failures.add("expected exactly one victim, got ranks \(victims)") }
    if all.filter({ $0 == "ate" }).count != px.size - 1 { failures.add("expected \(px.size - 1) ranks to eat: \(all)") }
    return try verdict(px, "deadlock-philosophers", failures, detail: "\(px.size) philosophers, victims \(victims), \(all.filter { $0 == "ate" }.count) ate")
}

/// Lock-heavy without a cycle: every rank takes random subsets of locks
/// 1...4 in increasing order (so no cycle can form) and releases them in a
/// random order; waits chain through blocked holders all the time. No
/// acquire may fail, and each lock's counter must be exact.
func lockOrdered(_ px: Plexus, _ o: Options) throws -> Bool {
    let k = o.iterations ?? 200
    let locks = 4
    let counters = try px.allocate(Int.self, count: locks * 8, name: "counters", alignment: px.pageSize!)
    try px.barrier()
    var failures = Failures()
    var rng = SystemRandomNumberGenerator()
    var taken = [Int](repeating: 0, count: locks)
    for _ in 0..<k {
        var subset = (0..<locks).filter { _ in Bool.random(using: &rng) }
        if subset.isEmpty { subset = [Int.random(in: 0..<locks, using: &rng)] }
        for l in subset {
            do { try px.lock(l + 1).acquire() } catch {
                failures.add("acquire of lock \(l + 1) failed: \(error)")
                return try verdict(px, "lock-ordered", failures, detail: "aborted")
            }
            store(counters.base + l * 8, load(counters.base + l * 8) + 1)
            taken[l] += 1
        }
        for l in subset.shuffled(using: &rng) { try px.lock(l + 1).release() }
    }
    try px.barrier()
    let all = try px.allGather(encode(taken)).map(decode)
    for l in 0..<locks {
        let want = all.map { $0[l] }.reduce(0, +), got = load(counters.base + l * 8)
        if got != want { failures.add("lock \(l + 1)'s counter is \(got), expected \(want)") }
    }
    // How much the detectors worked: probes started and forwarded, job-wide.
    let stats = px.deadlockStatistics ?? DeadlockStatistics()
    let probes = try px.allGather(encode([stats.probesStarted, stats.probesForwarded, stats.deadlocksDeclared])).map(decode)
    let started = probes.map { $0[0] }.reduce(0, +), forwarded = probes.map { $0[1] }.reduce(0, +)
    let declared = probes.map { $0[2] }.reduce(0, +)
    if declared != 0 { failures.add("\(declared) deadlock(s) declared without a cycle") }
    return try verdict(px, "lock-ordered", failures,
                       detail: "\(k) rounds x \(px.size) ranks over \(locks) locks, no acquire failed; probes started \(started), forwarded \(forwarded)")
}

/// Fencing tokens: under lock 1, each holder checks its token is above the
/// last holder's (kept in shared memory) and writes it there; so tokens
/// strictly increase across all grants of the lock, job-wide.
func lockTokens(_ px: Plexus, _ o: Options) throws -> Bool {
    let k = o.iterations ?? 100
    let last = try px.allocate(Int.self, count: 1, name: "last-token", alignment: px.pageSize!)
    try px.barrier()
    var failures = Failures()
    let lock = px.lock(1)
    if lock.token != nil { failures.add("a token before the lock was acquired") }
    for _ in 0..<k {
        try lock.acquire()
        guard let token = lock.token else {
            failures.add("no token while holding the lock")
            try lock.release()
            break
        }
        let previous = load(last.base)
        if Int(token) <= previous { failures.add("token \(token) is not above the previous holder's \(previous)") }
        store(last.base, Int(token))
        try lock.release()
        if lock.token != nil { failures.add("a token after the lock was released") }
    }
    try px.barrier()
    let final = load(last.base)
    if final != px.size * k { failures.add("the last token is \(final), expected \(px.size * k) (one per grant)") }
    return try verdict(px, "lock-tokens", failures, detail: "\(px.size * k) grants, tokens strictly increasing up to \(final)")
}
