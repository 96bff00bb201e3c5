import Foundation
import Memory
import Plexus
import Transport

// Litmus tests: plain loads and stores on shared memory with no lock and no
// barrier between them. Under sequential consistency every outcome must be
// explainable by one interleaving of the ranks' operations in program order;
// each test has an outcome no interleaving gives, and finding it once is a
// failure. Release-consistency protocols promise nothing for racy programs,
// so these run only for protocols whose model is `.sequential`.
//
// Shape of one run (`litmus-mp 2000`): the job's ranks form instances of
// the test (2 or 4 ranks each; spare ranks only take part in barriers).
// Iterations start at a barrier; then every rank waits a random time before
// its operations, so the ranks' orders vary: the delay is drawn from
// [0, this rank's recent average operation time], which keeps "before",
// "after" and "overlapping" likely whatever a fault costs on this machine.
// One role per iteration (the same on every rank, from the shared seed) is
// late by up to one more average: that lets any rank's operations complete
// before another's start, which otherwise rarely happens for the ranks
// leaving the barrier last (rank 0 releases the others).
//
// Locations: each instance cycles through a pool of `poolSize` pairs (x, y),
// x and y on different pages (with different managers). Iteration i stores
// 4i+1 for "1" and 4i+2 for "2", so no reset is needed between iterations:
// a load that returns 4i+k read this iteration's k, one that returns less
// than 4i read an older value ("0"), anything else is impossible. Reusing
// pages means each iteration starts from the sharing state the previous
// ones left (owners, read copies to invalidate), not only from fresh pages,
// and keeps the statistics small. Final values (2+2W) are read after a
// barrier once per pool cycle, before the pool is reused.
//
// Rank 0 prints the outcome histogram (every outcome, the forbidden ones
// marked) and PASS or FAIL.

/// One litmus test. Roles are the test's threads (P0, P1, ...); `locations`
/// are x and y.
struct Litmus {
    var name: String
    var roles: Int
    /// What each role does; returns the values its loads read, in order.
    /// `b` is the iteration's base: the test stores b+1 for "1" and b+2 for "2".
    var run: @Sendable (_ role: Int, _ x: UnsafeMutablePointer<Int>, _ y: UnsafeMutablePointer<Int>, _ b: Int) -> [Int]
    /// How many values each role's `run` returns.
    var reads: [Int]
    /// Whether the outcome is the final values of x and y (2+2W), which role 0
    /// reads after a barrier, rather than the values the roles loaded.
    var readsFinal: Bool
    /// Names of the outcome's components, e.g. "P1:y" (what P1 read from y).
    var labels: [String]
    /// The values each component can take.
    var domain: [Int]
    var forbidden: @Sendable ([Int]) -> Bool
    var summary: String
}

let litmusTests: [Litmus] = [
    Litmus(name: "mp", roles: 2,
           run: { role, x, y, b in
               if role == 0 { store(x, b + 1); store(y, b + 1); return [] }
               let a = load(y)
               return [a, load(x)]
           },
           reads: [0, 2], readsFinal: false, labels: ["P1:y", "P1:x"], domain: [0, 1],
           forbidden: { $0 == [1, 0] },
           summary: "message passing: P0: x=1; y=1 | P1: r0=y; r1=x; forbidden r0=1 r1=0"),
    Litmus(name: "sb", roles: 2,
           run: { role, x, y, b in
               if role == 0 { store(x, b + 1); return [load(y)] }
               store(y, b + 1)
               return [load(x)]
           },
           reads: [1, 1], readsFinal: false, labels: ["P0:y", "P1:x"], domain: [0, 1],
           forbidden: { $0 == [0, 0] },
           summary: "store buffering: P0: x=1; r0=y | P1: y=1; r1=x; forbidden r0=0 r1=0"),
    Litmus(name: "lb", roles: 2,
           run: { role, x, y, b in
               if role == 0 { let r0 = load(x); store(y, b + 1); return [r0] }
               let r1 = load(y)
               store(x, b + 1)
               return [r1]
           },
           reads: [1, 1], readsFinal: false, labels: ["P0:x", "P1:y"], domain: [0, 1],
           forbidden: { $0 == [1, 1] },
           summary: "load buffering: P0: r0=x; y=1 | P1: r1=y; x=1; forbidden r0=1 r1=1"),
    Litmus(name: "iriw", roles: 4,
           run: { role, x, y, b in
               switch role {
               case 0: store(x, b + 1); return []
               case 1: store(y, b + 1); return []
               case 2: let a = load(x); return [a, load(y)]
               default: let c = load(y); return [c, load(x)]
               }
           },
           reads: [0, 0, 2, 2], readsFinal: false, labels: ["P2:x", "P2:y", "P3:y", "P3:x"], domain: [0, 1],
           forbidden: { $0 == [1, 0, 1, 0] },
           summary: "independent reads of independent writes: P0: x=1 | P1: y=1 | P2: r0=x; r1=y | P3: r2=y; r3=x; "
               + "forbidden r0=1 r1=0 r2=1 r3=0 (P2 and P3 disagree on the order of the writes)"),
    Litmus(name: "2+2w", roles: 2,
           run: { role, x, y, b in
               if role == 0 { store(x, b + 1); store(y, b + 2) } else { store(y, b + 1); store(x, b + 2) }
               return []
           },
           reads: [0, 0], readsFinal: true, labels: ["x", "y"], domain: [1, 2],
           forbidden: { $0 == [1, 1] },
           summary: "2+2 writes: P0: x=1; y=2 | P1: y=1; x=2; final values read after a barrier; forbidden x=1 y=1"),
]

/// `litmus-NAME [ITERATIONS] [seed=N]`.
func litmus(_ px: Plexus, _ test: Litmus, _ o: Options) throws -> Bool {
    let scenario = "litmus-\(test.name)"
    let (protocolName, model) = memoryModel(of: px)
    // Under release consistency the outcomes sc forbids are allowed: they
    // are counted as relaxed (they prove the protocol is in effect), not failed.
    let strict = model == .sequential
    let iterations = o.iterations ?? 2000
    let instances = px.size / test.roles
    guard instances > 0 else {
        if px.rank == 0 { say("FAIL \(scenario): needs at least \(test.roles) ranks, the job has \(px.size)") }
        return false
    }
    let pageSize = px.pageSize!
    let wordsPerPage = pageSize / MemoryLayout<Int>.stride
    let poolSize = 16
    let cells = try px.allocate(Int.self, count: instances * poolSize * 2 * wordsPerPage, name: "\(scenario)-cells", alignment: pageSize)
    func location(_ iteration: Int, _ instance: Int, _ which: Int) -> UnsafeMutablePointer<Int> {
        cells.base + ((instance * poolSize + iteration % poolSize) * 2 + which) * wordsPerPage
    }
    // Rank 0's seed for everyone: `shared` draws the same numbers on every
    // rank (who is late this iteration), `rng` this rank's own delays.
    let seed = decode(try px.allGather(encode([Int(o.seed ?? nowNanos() % 1_000_000_007)]))[0])[0]
    var shared = SplitMix64(seed: UInt64(seed))
    var rng = SplitMix64(seed: UInt64(seed) &+ UInt64(px.rank + 1) &* 0x9E37_79B9)
    let instance = px.rank / test.roles, role = px.rank % test.roles
    let active = instance < instances
    var results: [Int] = []  // raw values, classified by rank 0
    results.reserveCapacity(iterations * 2)
    var averageNanos = 100_000.0  // what this rank's operations cost lately
    try px.barrier()
    let t0 = nowNanos()
    for i in 0..<iterations {
        try px.barrier()
        let late = Int.random(in: 0..<test.roles, using: &shared)
        if active {
            let extra = role == late ? UInt64.random(in: 0...UInt64(averageNanos), using: &rng) : 0
            delay(nanos: UInt64.random(in: 0...UInt64(averageNanos), using: &rng) + extra)
            let start = nowNanos()
            results += test.run(role, location(i, instance, 0), location(i, instance, 1), 4 * i)
            averageNanos = 0.9 * averageNanos + 0.1 * Double(nowNanos() - start)
        }
        if test.readsFinal && (i % poolSize == poolSize - 1 || i == iterations - 1) {
            try px.barrier()
            if active && role == 0 {
                for j in (i - i % poolSize)...i { results += [load(location(j, instance, 0)), load(location(j, instance, 1))] }
            }
        }
    }
    try px.barrier()
    let seconds = Double(nowNanos() - t0) / 1e9
    let all = try px.allGather(encode(results)).map(decode)
    var failures = Failures()
    var histogram: [[Int]: Int] = [:]
    if px.rank == 0 {
        for inst in 0..<instances {
            let ranks = (0..<test.roles).map { inst * test.roles + $0 }
            let widths = test.readsFinal ? [2] + Array(repeating: 0, count: test.roles - 1) : test.reads
            for (r, w) in zip(ranks, widths) where all[r].count != iterations * w {
                failures.add("rank \(r) reported \(all[r].count) values, expected \(iterations * w)")
            }
            guard failures.isEmpty else { break }
            for i in 0..<iterations {
                var raw: [Int] = []
                for (r, w) in zip(ranks, widths) { raw += all[r][(i * w)..<(i * w + w)] }
                let outcome = raw.map { classify($0, iteration: i, poolSize: poolSize) }
                if outcome.contains(where: { !test.domain.contains($0) }) {
                    failures.add("iteration \(i) of instance \(inst): impossible values \(zip(test.labels, raw).map { "\($0)=\($1)" }) for base \(4 * i)")
                    continue
                }
                histogram[outcome, default: 0] += 1
                if test.forbidden(outcome) && strict {
                    failures.add("iteration \(i) of instance \(inst): forbidden outcome \(describe(outcome, test.labels))")
                }
            }
        }
        say("\(scenario): \(test.summary)")
        say("\(scenario): protocol \(protocolName), \(iterations) iterations x \(instances) instance(s) in \(String(format: "%.2f", seconds)) s, seed \(seed)")
        var every: [[Int]] = [[]]
        for _ in test.labels { every = every.flatMap { p in test.domain.map { p + [$0] } } }
        for outcome in Set(every).union(histogram.keys).sorted(by: { $0.lexicographicallyPrecedes($1) }) {
            let n = histogram[outcome] ?? 0
            let mark = test.forbidden(outcome) ? (strict ? "  forbidden" : "  relaxed (forbidden under sc)") : ""
            say("\(scenario):   \(describe(outcome, test.labels)): \(String(n).leftPadded(6))\(mark)")
        }
        let allowedSeen = histogram.filter { !test.forbidden($0.key) && $0.value > 0 }.count
        let allowedTotal = Set(every).filter { !test.forbidden($0) }.count
        say("\(scenario): distinct allowed outcomes seen: \(allowedSeen) of \(allowedTotal)")
    }
    let forbiddenCount = histogram.filter { test.forbidden($0.key) }.values.reduce(0, +)
    return try verdict(px, scenario, failures,
                       detail: strict ? "\(forbiddenCount) forbidden outcome(s) in \(iterations * instances) runs under \(protocolName)"
                                      : "\(forbiddenCount) relaxed outcome(s) in \(iterations * instances) runs under \(protocolName)")
}

/// What a value read in iteration `i` means: 4i+k is this iteration's k;
/// the initial 0, or a value stored by the previous iteration on the same
/// pair of locations (i - poolSize), is "0"; anything else is impossible (-1).
private func classify(_ v: Int, iteration i: Int, poolSize: Int) -> Int {
    if (1...2).contains(v - 4 * i) { return v - 4 * i }
    let previous = i - poolSize
    if previous < 0 ? v == 0 : (1...2).contains(v - 4 * previous) { return 0 }
    return -1
}

private func describe(_ outcome: [Int], _ labels: [String]) -> String {
    zip(labels, outcome).map { "\($0)=\($1)" }.joined(separator: " ")
}

extension String {
    func leftPadded(_ width: Int) -> String { String(repeating: " ", count: max(0, width - count)) + self }
}
