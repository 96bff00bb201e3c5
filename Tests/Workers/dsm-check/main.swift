// dsm-check: the job program of the shared-memory integration tests
// (Tests/MemoryIntegrationTests). One scenario per run:
//   plexus run -n N [--protocol P] .build/debug/dsm-check SCENARIO [ITERATIONS] [seed=N] [at=...] [threads=N] [others=exit]
// Rank 0 prints "PASS SCENARIO: ..." or "FAIL SCENARIO: ..."; the job exits
// non-zero on failure. `dsm-check protocols` (run directly, not in a job)
// lists the registered protocols and their memory models.
#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Memory
import Plexus

let scenarios: [(name: String, ranks: String, run: (Plexus, Options) throws -> Bool)] = [
    ("visibility-barrier", "2+", visibilityBarrier),
    ("visibility-lock", "2+", visibilityLock),
    ("lock-counter", "1+", lockCounter),
    ("misuse", "2+", misuse),
    ("crash-owner", "2+", crashOwner),
    ("segv-outside", "2+", segvOutside),
    ("scheduling", "1+", scheduling),
    ("binding", "1+", binding),
    ("prefetch", "2+", prefetchHints),
    ("bulk-both-ways", "2+", bulkBothWays),
] + refusedAccesses + litmusTests.map { test in ("litmus-\(test.name)", "\(test.roles)+", { px, o in try litmus(px, test, o) }) }
    + failureScenarios() + crashScenarios() + deadlockScenarios()

let options = Options(Array(CommandLine.arguments.dropFirst()))

if options.scenario == "protocols" {
    for p in ProtocolRegistry.protocols { print("\(p.name) \(p.model == .sequential ? "sequential" : "release")") }
    exit(0)
}
guard let scenario = scenarios.first(where: { $0.name == options.scenario }) else {
    let list = scenarios.map { "  \($0.name) (\($0.ranks) ranks)" }.joined(separator: "\n")
    FileHandle.standardError.write(Data("usage: dsm-check SCENARIO [ITERATIONS] [seed=N] [at=low|past-end] [threads=N] [others=exit]\nscenarios:\n\(list)\n  protocols (run directly: lists the registered protocols)\n".utf8))
    exit(2)
}

beforeJoin(options)
do {
    let px = try Plexus.join()
    guard px.memory != nil || runsWithoutSharedMemory(scenario.name) else {
        say("FAIL \(scenario.name): the job has no shared memory (--shared-memory 0)")
        exit(1)
    }
    let passed = try scenario.run(px, options)
    try px.finalize()
    exit(passed ? 0 : 1)
} catch {
    say("FAIL \(scenario.name): \(error)")
    exit(1)
}
