import Memory
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Seeded schedules of the whole protocol (see `CoherenceSimulation`) over
/// every registered protocol. To replay one failing schedule with its trace:
///   PLEXUS_SIM_SEED=<seed> PLEXUS_SIM_RANKS=<n> PLEXUS_SIM_PAGES=<p> swift test --filter replay
@Suite struct SimulationTests {
    static let schedulesPerShape = 300

    @Test(arguments: ProtocolRegistry.names, [2, 3, 4])
    func randomSchedulesKeepTheMemoryModel(protocolName: String, rankCount: Int) throws {
        var reads = 0, writes = 0, messages = 0
        for pageCount in 1...3 {
            for index in 0..<Self.schedulesPerShape {
                let seed = UInt64(rankCount) << 48 | UInt64(pageCount) << 40 | UInt64(index)
                let parameters = CoherenceSimulation.Parameters(protocolName: protocolName, rankCount: rankCount,
                                                                pageCount: pageCount, operations: 40)
                guard let simulation = try Self.run(seed: seed, parameters, "\(protocolName), \(rankCount) ranks, \(pageCount) pages") else { return }
                reads += simulation.completedReads
                writes += simulation.completedWrites
                messages += simulation.messagesDelivered
            }
        }
        // The schedules must actually exercise the protocol, not pass vacuously.
        #expect(reads > 1000 && writes > 1000)
        #expect(messages > 10 * Self.schedulesPerShape)
    }

    /// Store buffering, racy: each rank writes one page, then reads the
    /// other's, without synchronisation. Under sequential consistency one
    /// read at least sees the other's write; under release consistency
    /// both may read 0, and a protocol that never shows it is not really
    /// relaxing anything (the pages' home is a third rank, so neither
    /// write reaches it before a release).
    @Test(arguments: ProtocolRegistry.names)
    func storeBufferingShowsRelaxedOutcomesOnlyUnderReleaseConsistency(protocolName: String) throws {
        var parameters = CoherenceSimulation.Parameters(protocolName: protocolName, rankCount: 3, pageCount: 2, operations: 0)
        parameters.threadsPerRank = 1
        parameters.homes = [2, 2]
        parameters.scripts = [[.write(0), .read(1)], [.write(1), .read(0)], []]
        var relaxed = 0
        for seed in 0..<200 as Range<UInt64> {
            guard let simulation = try Self.run(seed: seed, parameters, "\(protocolName), store buffering") else { return }
            if simulation.reads.allSatisfy({ $0.value == 0 }) && simulation.reads.count == 2 { relaxed += 1 }
        }
        let model = try ProtocolRegistry.make(protocolName, configuration: CoherenceConfiguration(rank: 0, rankCount: 1, pageCount: 1, pageSize: 8))
        if type(of: model).model == .sequential {
            #expect(relaxed == 0)
        } else {
            #expect(relaxed > 0, "\(protocolName) never let both reads miss the other's write")
        }
    }

    /// sc with look-ahead: faults also start requests for pages nobody
    /// waits for, which must keep the model as the faults themselves do.
    @Test(arguments: [2, 3, 4])
    func lookAheadSchedulesKeepTheMemoryModel(rankCount: Int) throws {
        var ahead = (reads: 0, writes: 0), operations = 0
        for pageCount in 2...4 {
            for index in 0..<150 {
                let seed = 0x1a << 56 | UInt64(rankCount) << 48 | UInt64(pageCount) << 40 | UInt64(index)
                var parameters = CoherenceSimulation.Parameters(protocolName: "sc", rankCount: rankCount, pageCount: pageCount, operations: 60)
                parameters.lookAhead = 2
                guard let simulation = try Self.run(seed: seed, parameters, "sc, look-ahead 2, \(rankCount) ranks, \(pageCount) pages") else { return }
                for s in simulation.coreStatistics {
                    ahead.reads += s.total.readsAhead
                    ahead.writes += s.total.writesAhead
                }
                operations += simulation.completedReads + simulation.completedWrites
            }
        }
        // Look-ahead must actually have run, both kinds, not only been allowed.
        #expect(ahead.reads > 100 && ahead.writes > 10, "reads ahead \(ahead.reads), writes ahead \(ahead.writes)")
        #expect(operations == 3 * 150 * 60)
    }

    /// Every protocol with prefetch hints, with and without look-ahead (sc
    /// alone has look-ahead; others ignore it): hints start
    /// transactions nobody waits for, at any moment, for pages in any
    /// state (held, in flight, owned), which must keep the model and leave
    /// every core quiescent (`isQuiescent` counts hints still in flight, so
    /// a hint whose end is never accounted for fails here).
    @Test(arguments: ProtocolRegistry.names, [2, 3, 4])
    func prefetchSchedulesKeepTheMemoryModel(protocolName: String, rankCount: Int) throws {
        for lookAhead in [0, 2] { try prefetchSchedules(protocolName: protocolName, rankCount: rankCount, lookAhead: lookAhead) }
    }

    func prefetchSchedules(protocolName: String, rankCount: Int, lookAhead: Int) throws {
        var prefetched = 0, operations = 0
        for pageCount in 1...3 {
            for index in 0..<150 {
                let seed = 0x9f << 56 | UInt64(rankCount) << 48 | UInt64(pageCount) << 40 | UInt64(lookAhead) << 32 | UInt64(index)
                var parameters = CoherenceSimulation.Parameters(protocolName: protocolName, rankCount: rankCount, pageCount: pageCount, operations: 40)
                parameters.lookAhead = lookAhead
                parameters.prefetches = 12
                // Every other schedule at a bound of one hint in flight, so
                // that hints also meet it.
                if index % 2 == 1 { parameters.prefetchLimit = 1 }
                guard let simulation = try Self.run(seed: seed, parameters,
                                                    "\(protocolName), prefetch, look-ahead \(lookAhead), \(rankCount) ranks, \(pageCount) pages") else { return }
                prefetched += simulation.coreStatistics.reduce(0) { $0 + $1.total.prefetches }
                operations += simulation.completedReads + simulation.completedWrites
            }
        }
        // Hints must actually have started work, not only been given, where
        // the protocol takes them at once (the default `onPrefetch` ignores a
        // hint; lrc's has work only for a page with notices not applied yet,
        // which these mostly unsynchronised schedules rarely make, so
        // LRCProtocolTests covers its hints).
        var probe = try ProtocolRegistry.make(protocolName, configuration: CoherenceConfiguration(rank: 1, rankCount: 2, pageCount: 1, pageSize: 8))
        if !probe.onPrefetch(pages: 0..<1, forWriting: false).isEmpty { #expect(prefetched > 500, "\(prefetched) pages prefetched") }
        #expect(operations == 3 * 150 * 40)
    }

    /// Runs one schedule and returns it; on a violation, runs it again with
    /// the trace on, records the failure with the trace, and returns nil.
    static func run(seed: UInt64, _ parameters: CoherenceSimulation.Parameters, _ label: String) throws -> CoherenceSimulation? {
        var simulation = try CoherenceSimulation(seed: seed, parameters: parameters)
        do {
            try simulation.run()
            return simulation
        } catch {
            var traced = try CoherenceSimulation(seed: seed, parameters: parameters, keepTrace: true)
            do {
                try traced.run()
                Issue.record("\(label): \(error) (not reproduced with tracing)")
            } catch {
                Issue.record("\(label): \(error)")
            }
            return nil
        }
    }

    @Test func replay() throws {
        guard let seedText = getenv("PLEXUS_SIM_SEED").map({ String(cString: $0) }), let seed = UInt64(seedText) else {
            return // Only on demand; see the suite's comment.
        }
        let env = { (name: String, fallback: Int) in getenv(name).flatMap { Int(String(cString: $0)) } ?? fallback }
        let parameters = CoherenceSimulation.Parameters(
            protocolName: getenv("PLEXUS_SIM_PROTOCOL").map { String(cString: $0) } ?? "sc",
            rankCount: env("PLEXUS_SIM_RANKS", 2), pageCount: env("PLEXUS_SIM_PAGES", 1), operations: env("PLEXUS_SIM_OPERATIONS", 40))
        var simulation = try CoherenceSimulation(seed: seed, parameters: parameters, keepTrace: true)
        do {
            try simulation.run()
            print(simulation.trace.joined(separator: "\n"))
        } catch {
            Issue.record("\(error)")
        }
    }

    @Test func aSeedReplaysIdentically() throws {
        let parameters = CoherenceSimulation.Parameters(protocolName: "sc", rankCount: 3, pageCount: 2, operations: 60)
        var first = try CoherenceSimulation(seed: 42, parameters: parameters, keepTrace: true)
        var second = try CoherenceSimulation(seed: 42, parameters: parameters, keepTrace: true)
        try first.run()
        try second.run()
        #expect(first.trace == second.trace)
        #expect(first.trace.count > 60)
    }
}
