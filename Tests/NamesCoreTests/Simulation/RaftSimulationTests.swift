import Foundation
import Testing
@testable import NamesCore

/// Seeded whole-cluster simulations (see `RaftSimulation.swift`). Each test
/// runs many schedules; a failure prints the seed and a trace, and
/// `PLEXUS_SEED=<seed> swift test --filter replaySeed` replays one schedule.
@Suite("Raft simulation")
struct RaftSimulationTests {
    /// Schedules per test; PLEXUS_SIM_SCHEDULES overrides (e.g. for soak runs).
    static func schedules(_ defaultCount: Int) -> Int {
        ProcessInfo.processInfo.environment["PLEXUS_SIM_SCHEDULES"].flatMap(Int.init) ?? defaultCount
    }

    static func run(_ name: String, baseSeed: UInt64, count: Int, options: SimulationOptions) {
        let clock = ContinuousClock()
        var result: (SimulationFailure?, SimulationStats) = (nil, SimulationStats())
        let elapsed = clock.measure {
            result = Simulation.runMany(baseSeed: baseSeed, count: count, options: options)
        }
        let (failure, stats) = result
        print("""
            [\(name)] \(count) schedules, \(stats.steps) steps in \(elapsed): \
            \(stats.messagesSent) messages (\(stats.messagesDropped) dropped), \(stats.crashes) crashes, \
            \(stats.leadersElected) leaders, \(stats.snapshotsTaken) snapshots taken, \
            \(stats.snapshotsInstalled) installed, \(stats.requestsAcknowledged) requests acknowledged, \
            \(stats.readsChecked) reads checked
            """)
        if let failure {
            Issue.record("\(failure)")
        }
        // The schedules must actually exercise the machinery they claim to.
        #expect(stats.leadersElected >= count)
        #expect(stats.requestsAcknowledged >= count)
        #expect(stats.crashes > 0 && stats.snapshotsTaken > 0 && stats.snapshotsInstalled > 0 && stats.readsChecked > 0)
    }

    @Test("3 replicas: safety every step, progress after healing", arguments: [0, 1] as [UInt64])
    func threeReplicas(shard: UInt64) {
        var options = SimulationOptions()
        options.replicas = 3
        options.clients = 2
        Self.run("3 replicas, shard \(shard)", baseSeed: 0x3000 + shard, count: Self.schedules(600), options: options)
    }

    @Test("5 replicas: safety every step, progress after healing", arguments: [0, 1] as [UInt64])
    func fiveReplicas(shard: UInt64) {
        var options = SimulationOptions()
        options.replicas = 5
        options.clients = 3
        Self.run("5 replicas, shard \(shard)", baseSeed: 0x5000 + shard, count: Self.schedules(400), options: options)
    }

    /// Membership changes one replica at a time (dissertation §4.1) under the
    /// same faults: 3 founders and 2 spares that start outside the
    /// configuration, with an administrator adding and removing replicas.
    /// Safety is checked every step; after healing every member of the final
    /// configuration converges and agrees on it.
    @Test("membership changes: safety every step, progress after healing", arguments: [0, 1] as [UInt64])
    func membershipChanges(shard: UInt64) {
        var options = SimulationOptions()
        options.replicas = 3
        options.spareReplicas = 2
        options.clients = 2
        options.membershipChangePerMille = 200
        let count = Self.schedules(300)
        let clock = ContinuousClock()
        var result: (SimulationFailure?, SimulationStats) = (nil, SimulationStats())
        let elapsed = clock.measure {
            result = Simulation.runMany(baseSeed: 0x7000 + shard, count: count, options: options)
        }
        let (failure, stats) = result
        print("[membership, shard \(shard)] \(count) schedules in \(elapsed): \(stats.membershipChangesAppended) changes appended, "
            + "\(stats.membershipChangesCommitted) committed, \(stats.leadersElected) leaders, \(stats.crashes) crashes, "
            + "\(stats.snapshotsInstalled) snapshots installed, \(stats.requestsAcknowledged) requests acknowledged")
        if let failure { Issue.record("\(failure)") }
        #expect(stats.membershipChangesCommitted >= count, "the schedules must actually change the membership")
        #expect(stats.requestsAcknowledged >= count && stats.snapshotsInstalled > 0)
    }

    /// Replays one seed: PLEXUS_SEED from the environment, else a fixed seed.
    @Test("replaySeed: one schedule, traced")
    func replaySeed() {
        let environment = ProcessInfo.processInfo.environment
        let seed = environment["PLEXUS_SEED"].flatMap { UInt64($0) } ?? 0xC0FFEE
        var options = SimulationOptions()
        options.replicas = environment["PLEXUS_REPLICAS"].flatMap(Int.init) ?? 3
        options.clients = options.replicas == 5 ? 3 : 2
        options.tracing = true
        var simulation = Simulation(seed: seed, options: options)
        let failure = simulation.run()
        if environment["PLEXUS_SEED"] != nil {
            print(simulation.trace.joined(separator: "\n"))
        }
        #expect(failure == nil, "\(failure.map(String.init(describing:)) ?? "")")
        #expect(simulation.stats.requestsAcknowledged > 0)
    }

    /// The same seed gives the same run: the simulator and cores are deterministic.
    @Test("a seed replays identically")
    func determinism() {
        var options = SimulationOptions()
        options.tracing = true
        var first = Simulation(seed: 42, options: options)
        var second = Simulation(seed: 42, options: options)
        _ = first.run()
        _ = second.run()
        #expect(first.trace == second.trace)
        #expect(first.committed == second.committed)
        #expect(!first.trace.isEmpty)
    }
}
