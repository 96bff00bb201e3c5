import Foundation
import Testing
@testable import Deadlock

/// Seeded whole-job simulations (`DeadlockSimulation`) checked against an
/// oracle that knows the true wait-for graph. A failure prints its seed,
/// schedule and a one-line replay:
/// `DEADLOCK_SEED=<seed> swift test --skip-build --filter DeadlockTests.DeadlockSimulationTests/replay`
/// (add `DEADLOCK_POLICY=report` for the report policy). `DEADLOCK_SEEDS=<n>`
/// changes the number of seeds per shard (soak runs).
@Suite("Deadlock simulation")
struct DeadlockSimulationTests {
    static let environment = ProcessInfo.processInfo.environment

    static func seeds(_ defaultCount: Int) -> Int {
        environment["DEADLOCK_SEEDS"].flatMap(Int.init) ?? defaultCount
    }

    static func runMany(_ name: String, seeds: Range<UInt64>, policy: DeadlockPolicy) {
        var total = DeadlockSimulation.Stats()
        var failure: DeadlockSimulation.Failure?
        for seed in seeds {
            let (f, stats) = DeadlockSimulation.check(seed: seed, policy: policy)
            total.add(stats)
            if let f {
                // Run it again with the trace for the report.
                failure = DeadlockSimulation.check(seed: seed, policy: policy, tracing: true).0 ?? f
                break
            }
        }
        print("""
            [\(name)] \(total.schedules) schedules: \(total.realRings) real rings, \(total.transientRings) transient rings, \
            \(total.declared) declared; \(total.messages) messages (\(total.lost) lost, \(total.duplicated) duplicated), \
            \(total.delayedGrants) delayed lock replies
            """)
        if let failure {
            Issue.record("\(failure)")
            return
        }
        #expect(total.declared >= total.realRings)
        #expect(total.realRings > 0 && total.transientRings > 0 && total.lost > 0 && total.duplicated > 0 && total.delayedGrants > 0)
    }

    @Test("policy abort: every ring broken by exactly one victim, no phantom", arguments: 0..<4 as Range<UInt64>)
    func abortPolicy(shard: UInt64) {
        let n = UInt64(Self.seeds(300))
        Self.runMany("abort, shard \(shard)", seeds: shard * n ..< (shard + 1) * n, policy: .abort)
    }

    @Test("policy report: every ring reported once by its victim, nothing aborted")
    func reportPolicy() {
        let n = UInt64(Self.seeds(250))
        Self.runMany("report", seeds: 1_000_000 ..< 1_000_000 + n, policy: .report)
    }

    /// Replays one seed (DEADLOCK_SEED, else a fixed one) with its trace.
    @Test func replay() {
        let seed = Self.environment["DEADLOCK_SEED"].flatMap { UInt64($0) } ?? 42
        let policy = Self.environment["DEADLOCK_POLICY"].flatMap(DeadlockPolicy.init(rawValue:)) ?? .abort
        let (failure, stats) = DeadlockSimulation.check(seed: seed, policy: policy, tracing: true)
        print("[replay] seed \(seed): \(stats.declared) declared, \(stats.messages) messages")
        if let failure { Issue.record("\(failure)") }
    }

    /// The oracle is not blind: detectors with a deliberate defect declare
    /// phantoms, and it says so.
    @Test("the oracle catches a detector that skips the confirmation pass")
    func catchesSkippedConfirmation() {
        #expect(Self.phantomCaught(with: .skipConfirmation) != nil)
    }

    @Test("the oracle catches a detector that forwards probes after its wait ended")
    func catchesActingAfterWaitEnded() {
        #expect(Self.phantomCaught(with: .actAfterWaitEnded) != nil)
    }

    /// The first seed whose defective run the oracle reports as a phantom.
    static func phantomCaught(with defects: DeadlockDetector.Defects) -> UInt64? {
        for seed in UInt64(0)..<2000 {
            let (failure, _) = DeadlockSimulation.check(seed: seed, defects: defects)
            if let failure, failure.message.contains("phantom") || failure.message.contains("no deadlock exists") {
                print("[defect \(defects.rawValue)] caught at seed \(seed): \(failure.message)")
                return seed
            }
        }
        return nil
    }
}
