import ArgumentParser
import Cluster
import Foundation
import Logging
import Plexus
import Workloads

/// `plexus bench`: the costs of the shared-memory primitives, each next to
/// the floor it cannot beat, measured in the same run (MEASUREMENTS.md says
/// why only ratios compare across runs). Benchmarks are not tests: they
/// report, and exit non-zero only when a run breaks.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure remote faults, locks, barriers and Jacobi against their floors.",
        discussion: """
            Runs a 2-process job on this machine (the job's program is plexus itself) and
            prints one row per operation: median, p99, the floor measured in the same run,
            the ratio median/floor and the target for that ratio.

            The floor of a latency row is a 16 B request -> 4 KiB reply round trip over a
            plain TCP connection between the same two processes (blocking reads,
            TCP_NODELAY), measured in blocks between the row's samples (after every 50),
            so that floor and row see the same stretch of a noisy machine. The floor of
            the Jacobi row is the same loop run by one process on private memory; its
            speedup is floor/median. The Jacobi row is the example as it ships, with
            prefetch hints (each rank names its boundary rows after every barrier); the
            row after it is the same without hints, where every transfer waits in a
            fault. The two alternate in each run.
            Each Jacobi job also runs the same split with no shared memory at all (each
            process sweeps its rows of private grids, no halos, no barriers): the ceiling
            of what two processes gain on this machine, whose two vCPUs give about 1.5
            times one even to processes that share nothing; and once more with a barrier
            per iteration, as Jacobi has: the most any memory system could give it.

            The page rows run with look-ahead off (--look-ahead), so that each sample is
            one fault; the Jacobi rows use --look-ahead.
            Jacobi runs twice: in the same job at --page-size, then in a second job whose
            coherence unit is one grid row (--jacobi-page-size), where a boundary row moves
            as one page instead of several. --stats and --summary cover the first job.

            Examples:
              plexus bench
              plexus bench --samples 5000 --json bench.json
              plexus bench --skip-jacobi --protocol sc
            """,
        subcommands: [BenchWorker.self, NamesBench.self])

    @Option(name: .long, help: "Samples per latency row (pages per round for the page rows).")
    var samples: Int = 2000

    @Option(name: .long, help: "TCP round trips measured for the floor of each latency row, in blocks between its samples.")
    var floorSamples: Int = 2000

    @Option(name: .long, help: "Rounds of the page rows. Round 0 places the pages and takes each page's first read miss; later rounds give the remote read miss and write rows ((rounds-1) x samples each).")
    var rounds: Int = 2

    @Option(name: .long, help: "Jacobi grid size (n x n doubles).")
    var jacobiSize: Int = 2048

    @Option(name: .long, help: "Jacobi iterations per run.")
    var jacobiIterations: Int = 50

    @Option(name: .long, help: "Jacobi runs (each: one sequential run, the parallel one with and without prefetch hints, and the two ceilings).")
    var jacobiRuns: Int = 5

    @Option(name: .long, help: ArgumentHelp(
        "Coherence unit of the second Jacobi row, run as a job of its own (default: one grid row, rounded up to a power of two; 0 for no second row).",
        valueName: "bytes"))
    var jacobiPageSize: Int?

    @Flag(name: .long, help: "Leave out the Jacobi rows.")
    var skipJacobi = false

    @Option(name: .long, help: "Also write the rows as a JSON array to this file.")
    var json: String?

    @OptionGroup var memory: MemoryOptions

    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard samples >= 10 else { throw ValidationError("--samples must be at least 10 (got \(samples))") }
        guard floorSamples >= 10 else { throw ValidationError("--floor-samples must be at least 10 (got \(floorSamples))") }
        guard rounds >= 2 else { throw ValidationError("--rounds must be at least 2: the first round only places the pages") }
        guard jacobiSize >= 3 else { throw ValidationError("--jacobi-size must be at least 3") }
        guard jacobiIterations >= 1, jacobiRuns >= 1 else { throw ValidationError("--jacobi-iterations and --jacobi-runs must be at least 1") }
        let needed = samples * memory.pageSize + (skipJacobi ? 0 : jacobiBytes(unit: memory.pageSize)) + (1 << 20)
        if let size = parseSize(memory.sharedMemory), size / 2 < needed {
            throw ValidationError("--shared-memory \(memory.sharedMemory) is too small for these sizes: use at least \(2 * needed / (1 << 20) + 1)M")
        }
        if let unit = jacobiPageSize, unit != 0, unit < 4096 || unit & (unit - 1) != 0 {
            throw ValidationError("--jacobi-page-size \(unit) must be 0 or a power of two of at least 4096")
        }
        // The second Jacobi job's region has the same size in pages of `unit`
        // (given or the default row size).
        if let unit = rowPageSize, let size = parseSize(memory.sharedMemory) {
            let rowNeeded = jacobiBytes(unit: unit) + (1 << 20)
            if size % unit != 0 || size / 2 < rowNeeded {
                throw ValidationError("--shared-memory \(memory.sharedMemory) cannot hold the Jacobi grids in pages of \(unit) bytes: use a multiple of \(unit) of at least \(2 * rowNeeded / (1 << 20) + 1)M")
            }
        }
    }

    /// Bytes of the two Jacobi grids in the collective heap, each aligned to
    /// a coherence unit of `unit` bytes.
    func jacobiBytes(unit: Int) -> Int { 2 * jacobiSize * jacobiSize * MemoryLayout<Double>.stride + 2 * unit }

    /// The coherence unit of the second Jacobi job, or nil for none: by
    /// default the smallest power of two that holds one grid row.
    var rowPageSize: Int? {
        if skipJacobi { return nil }
        var unit = jacobiPageSize ?? memory.pageSize
        if jacobiPageSize == nil { while unit < jacobiSize * MemoryLayout<Double>.stride { unit *= 2 } }
        return unit == 0 || unit == memory.pageSize ? nil : unit
    }

    func run() throws {
        let logger = try common.makeLogger("plexus.bench")
        var args = ["--w-samples", "\(samples)", "--w-floor-samples", "\(floorSamples)", "--w-rounds", "\(rounds)",
                    "--w-jacobi-size", "\(jacobiSize)", "--w-jacobi-iterations", "\(jacobiIterations)",
                    "--w-jacobi-runs", "\(jacobiRuns)"]
        if skipJacobi { args.append("--w-skip-jacobi") }
        var rows = try runWorker(args, pageSize: memory.pageSize, logger: logger, statistics: true)
        if let unit = rowPageSize {
            rows += try runWorker(args + ["--w-jacobi-only"], pageSize: unit, logger: logger, statistics: false)
        }
        writeAll(1, Self.table(rows))
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            do { try encoder.encode(rows).write(to: URL(fileURLWithPath: json)) } catch {
                writeAll(2, "plexus bench: cannot write \(json): \(error.localizedDescription)\n")
                throw ExitCode(1)
            }
        }
    }

    /// Runs one 2-process job of `_bench-worker` with coherence unit
    /// `pageSize` and returns the rows rank 0 wrote.
    private func runWorker(_ args: [String], pageSize: Int, logger: Logger, statistics: Bool) throws -> [BenchmarkRow] {
        let out = NSTemporaryDirectory() + "/plexus-bench-\(getpid())-\(pageSize).json"
        defer { try? FileManager.default.removeItem(atPath: out) }
        var environment = try memory.environment()
        environment["PLEXUS_PAGE_SIZE"] = "\(pageSize)"
        let spec = JobSpec(processes: 2, nodes: [], program: selfExecutable(),
                           arguments: ["bench", "_bench-worker", "--w-out", out] + args, environment: environment)
        writeAll(2, "plexus bench: 2 processes, protocol \(memory.protocol), page size \(pageSize)\n")
        let result = try runJob(spec, logger: logger)
        if statistics { try memory.writeStatistics(result) }
        if result.status != 0 {
            for f in result.failures { writeAll(2, "plexus bench: \(f)\n") }
            throw ExitCode(result.status)
        }
        do { return try JSONDecoder().decode([BenchmarkRow].self, from: Data(contentsOf: URL(fileURLWithPath: out))) } catch {
            writeAll(2, "plexus bench: the benchmark job wrote no results: \(error)\n")
            throw ExitCode(1)
        }
    }

    /// The Jacobi rows' target speedup (issue 3).
    static let jacobiTarget = 1.2

    static func table(_ rows: [BenchmarkRow]) -> String {
        func num(_ v: Double) -> String { v.isNaN ? "-" : v >= 100 ? String(format: "%.0f", v) : String(format: "%.1f", v) }
        let header = ["operation", "unit", "median", "p99", "floor", "ratio", "target", "met", "msgs/op", "pages/op", "engine us/op", "n"]
        var lines: [[String]] = [header]
        for r in rows {
            let ratio = r.speedup.map { String(format: "%.2f (speedup %.2fx)", r.ratio, $0) } ?? String(format: "%.2f", r.ratio)
            let met = r.meetsTarget.map { $0 ? "yes" : "NO" } ?? "-"
            lines.append([r.name, r.unit, num(r.median), num(r.p99), num(r.floor), ratio, r.target ?? "-", met,
                          r.messagesPerOp.map { String(format: "%.1f", $0) } ?? "-",
                          r.pagesPerOp.map { String(format: "%.2f", $0) } ?? "-",
                          r.engineMicrosPerOp.map { String(format: "%.1f", $0) } ?? "-", "\(r.samples)"])
        }
        let widths = header.indices.map { c in lines.map { $0[c].count }.max() ?? 0 }
        var s = ""
        for l in lines {
            s += l.enumerated().map { c, v in
                c <= 1 || c == 6 ? v.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[c] - v.count) + v
            }.joined(separator: "  ") + "\n"
        }
        // A job in which even the no-DSM split with barriers fell below the
        // Jacobi target says so: no memory system could have met it there.
        var jacobi: String?
        for r in rows {
            if r.name.hasPrefix("jacobi ") { jacobi = r.name }
            if r.name.hasPrefix("same, with a barrier per iteration"), let sp = r.speedup, sp < Self.jacobiTarget, let j = jacobi {
                s += "note: in the job of '\(j)', the same split on private memory with a barrier per iteration reached only\n"
                s += "      \(String(format: "%.2f", sp))x: no memory system could have met the \(Self.jacobiTarget)x target in that job.\n"
            }
        }
        s += "floor: TCP 16 B -> 4 KiB round trip between the two processes, measured between each row's samples;\n"
        s += "       for jacobi, one process running the same loop on private memory (target is on speedup).\n"
        s += "ceiling: each process sweeps its rows of private grids at the same time, no halos, no barriers:\n"
        s += "       the most this machine gives two processes that share nothing (jacobi's speedup / this one's\n"
        s += "       is the shared-memory version's parallel efficiency). With a barrier per iteration: the same, also\n"
        s += "       waiting for the slower sweep every iteration, as jacobi does: the most any memory system could give it.\n"
        s += "remote read miss: a page this process held before; first read miss: the first time it holds the page\n"
        s += "       (the kernel also allocates the page and fills page-table entries, once per page and process).\n"
        s += "engine us/op: mean time from the engine taking a fault to waking the faulting thread.\n"
        return s
    }
}

/// The job process of `plexus bench` (`plexus bench _bench-worker ...`;
/// rank 0 measures and writes the rows).
struct BenchWorker: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_bench-worker", shouldDisplay: false)

    // Names of their own: the parent command `bench` parses its options too.
    @Option(name: .customLong("w-out")) var out: String
    @Option(name: .customLong("w-samples")) var samples: Int
    @Option(name: .customLong("w-floor-samples")) var floorSamples: Int
    @Option(name: .customLong("w-rounds")) var rounds: Int
    @Option(name: .customLong("w-jacobi-size")) var jacobiSize: Int
    @Option(name: .customLong("w-jacobi-iterations")) var jacobiIterations: Int
    @Option(name: .customLong("w-jacobi-runs")) var jacobiRuns: Int
    @Flag(name: .customLong("w-skip-jacobi")) var skipJacobi = false
    @Flag(name: .customLong("w-jacobi-only")) var jacobiOnly = false

    func run() throws {
        let px = try Plexus.join()
        guard px.size == 2 else { throw ValidationError("_bench-worker runs in a job of exactly 2 processes") }
        func progress(_ s: String) { if px.rank == 0 { writeAll(2, "bench: \(s)\n") } }
        var rows: [BenchmarkRow] = []
        progress("serving threads: \(px.servingScheduling) (--serving-priority); application thread bound to: \(px.cpuBinding) (--bind)")
        if !jacobiOnly { rows = try latencyRows(px, progress: progress) }
        if !skipJacobi {
            let n = jacobiSize
            let j = try Jacobi.benchmark(px, n: n, iterations: jacobiIterations, runs: jacobiRuns, progress: progress)
            if px.rank == 0 {
                guard j.maxDifference == 0 else {
                    writeAll(2, "bench: jacobi on shared memory differs from the sequential run by \(j.maxDifference)\n")
                    throw ExitCode(1)
                }
                let kib = (px.pageSize ?? 0) / 1024
                var row = BenchmarkRow(name: "jacobi \(n)x\(n), \(jacobiIterations) it, 2 proc, \(kib) KiB pages", unit: "ms",
                                       samples: j.parallel.map { $0 * 1000 }, floor: Summary(j.sequential.map { $0 * 1000 }).median,
                                       target: ">= \(Bench.jacobiTarget)")
                row.speedup = row.floor / row.median
                var plain = BenchmarkRow(name: "same, without prefetch hints", unit: "ms",
                                         samples: j.parallelWithoutPrefetch.map { $0 * 1000 }, floor: row.floor)
                plain.speedup = plain.floor / plain.median
                var ceiling = BenchmarkRow(name: "same split on private memory, no DSM (ceiling)", unit: "ms",
                                           samples: j.privateHalves.map { $0 * 1000 }, floor: row.floor)
                ceiling.speedup = ceiling.floor / ceiling.median
                var synchronized = BenchmarkRow(name: "same, with a barrier per iteration (no DSM)", unit: "ms",
                                                samples: j.privateWithBarriers.map { $0 * 1000 }, floor: row.floor)
                synchronized.speedup = synchronized.floor / synchronized.median
                rows += [row, plain, ceiling, synchronized]
            }
        }
        if px.rank == 0 {
            let data = try JSONEncoder().encode(rows)
            try data.write(to: URL(fileURLWithPath: out))
        }
        try px.finalize()
    }

    /// The latency rows (a collective: both ranks run it; rank 0 measures).
    /// Each row's floor is measured in blocks between its samples (every
    /// `block` operations; `InterleavedFloor`), `floorSamples` round trips
    /// in all; the page rows share one.
    private func latencyRows(_ px: Plexus, progress: (String) -> Void) throws -> [BenchmarkRow] {
        let tcp = try TCPFloor(px)
        let block = 50
        func floor(over operations: Int) -> InterleavedFloor {
            InterleavedFloor(tcp, total: floorSamples, blocks: (operations + block - 1) / block)
        }
        var rows: [BenchmarkRow] = []

        progress("message row: \(samples) Plexus.send/receive round trips, 16 B -> 4 KiB, floor between every \(block)")
        var f = floor(over: samples)
        let messages = try Microbenchmarks.messageRoundTrip(px, samples: samples, block: block, between: f.measureBlock)
        rows.append(BenchmarkRow(name: "plexus message round trip", unit: "us", samples: messages, floor: f.median))

        progress("page rows: \(rounds) rounds over \(samples) pages, floor between every \(block), look-ahead off")
        // Blocks per round: the two write lists and the reads, each cut in blocks.
        f = floor(over: rounds * 2 * samples)
        // Each sample is to cost one fault: the rows touch consecutive pages
        // (faulted on before, and in a stream), which look-ahead would serve
        // ahead of their faults.
        // Both ranks switch it (the pages' barriers order the switch).
        px.memory?.setLookAhead(0)
        let pages = try Microbenchmarks.pages(px, pages: samples, rounds: rounds, block: block, between: f.measureBlock)
        px.memory.map { $0.setLookAhead($0.configuration.lookAhead) }
        func pageRow(_ name: String, _ values: [Double], phase k: Int, target: String? = nil) -> BenchmarkRow {
            var r = BenchmarkRow(name: name, unit: "us", samples: values, floor: f.median, target: target)
            r.messagesPerOp = Double(pages.traffic[k].messages) / Double(max(1, values.count))
            r.pagesPerOp = Double(pages.traffic[k].pages) / Double(max(1, values.count))
            r.engineMicrosPerOp = pages.engineMicros[k] / Double(max(1, values.count))
            return r
        }
        let read = pageRow("remote read miss", pages.readMiss, phase: 0, target: "<= 1.5")
        let first = pageRow("first read miss of a page", pages.firstReadMiss, phase: 3)
        let w1 = pageRow("write fault, invalidate 1 reader", pages.writeLocalManager, phase: 1)
        let w2 = pageRow("same, remote page manager", pages.writeRemoteManager, phase: 2)
        rows += [read, first, w1, w2]

        progress("lock row: \(samples) acquire+release of a lock managed by the other process, floor between every \(block)")
        f = floor(over: samples)
        let locks = try Microbenchmarks.lock(px, samples: samples, block: block, between: f.measureBlock)
        rows.append(BenchmarkRow(name: "remote lock acquire+release", unit: "us", samples: locks, floor: f.median, target: "<= 3"))

        progress("barrier row: \(samples) barriers, floor between every \(block)")
        f = floor(over: samples)
        let barriers = try Microbenchmarks.barrier(px, samples: samples, block: block, between: f.measureBlock)
        rows.append(BenchmarkRow(name: "barrier, 2 processes", unit: "us", samples: barriers, floor: f.median, target: "<= 2"))
        return rows
    }
}
