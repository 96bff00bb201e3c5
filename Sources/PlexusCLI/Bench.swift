import ArgumentParser
import Cluster
import Foundation
import Logging
import Plexus
import Workloads

/// `plexus bench`: benchmarks, each next to the floors it cannot beat,
/// measured in the same run (MEASUREMENTS.md says why only ratios compare
/// across runs). Benchmarks are not tests: they report, and exit non-zero
/// only when a run breaks. Without a subcommand it runs `bench memory`.
struct Bench: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure the shared memory (the default) or the name service against their floors.",
        discussion: """
            plexus bench [memory] [OPTIONS]   remote faults, locks, barriers and Jacobi
            plexus bench names [OPTIONS]      PID allocation, Raft replicas vs etcd
            plexus bench deadlock [OPTIONS]   deadlock detection latency, detector cost

            Each writes its rows as JSON with --json FILE; every row carries what produced
            it (date, commit, build, kernel, CPUs, and for the memory rows protocol, page
            size, look-ahead, binding and process count). Results kept in the repository
            go in Papers/data/, named YYYY-MM-DD-SHORTCOMMIT-bench.json (-names.json, -deadlock.json);
            each run prints the name for its own figures.
            """,
        subcommands: [BenchMemory.self, NamesBench.self, DeadlockBench.self, BenchWorker.self, FloorPeer.self, DeadlockBenchWorker.self],
        defaultSubcommand: BenchMemory.self)
}

/// `plexus bench memory` (also plain `plexus bench`).
struct BenchMemory: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "memory",
        abstract: "Measure remote faults, locks, barriers and Jacobi against their floors.",
        discussion: """
            Runs a 2-process job on this machine (the job's program is plexus itself) and
            prints one row per operation: median, p99, two floors, the ratio to each and
            the target.

            floor: a 16 B request -> 4 KiB reply round trip over a plain TCP connection
            between the job's two processes (blocking reads, TCP_NODELAY), measured in
            blocks between the row's samples (after every 50), so that floor and row see
            the same stretch of a noisy machine. A blocking read sleeps and is woken, and
            the job's serving threads run at raised priority: this floor includes wake-ups
            a runtime may avoid (the plexus message row can come out below 1).

            limit: what the operation physically needs on this machine, from floors
            measured before and after the jobs between two plain processes that the
            bench starts itself (`plexus bench _floor-peer`, no runtime in them):
              round trip: a 16 B request answered over TCP on loopback (TCP_NODELAY),
                both sides spinning on non-blocking recv (no sleep, no wake-up); with a
                4 KiB reply (a page) and with a 16 B one (a lock or barrier message);
              fault: a read of a PROT_NONE page raises SIGSEGV and the handler makes the
                page accessible with one mprotect, while another thread of the process
                runs (so mprotect pays the TLB shootdown any multi-threaded process pays).
            A remote read miss needs at least fault + page round trip; a write fault
            that invalidates a reader, fault + round trip; a lock acquired from the
            process that manages it, one round trip (request, grant; the release needs
            no reply); a barrier of 2 processes, one round trip (one message each way).
            The targets are on median/limit (ratio/limit): read miss <= 2, lock <= 2,
            barrier <= 1.5. The floors are rows of their own at the end of the table.

            The floor of the Jacobi row is the same loop run by one process on private
            memory; its speedup is floor/median (target >= 1.2). The Jacobi row is the
            example as it ships, with prefetch hints (each rank names its boundary rows
            after every barrier); the row after it is the same without hints, where every
            transfer waits in a fault. The two alternate in each run.
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

            --json writes a JSON array, one object per row, each with a "run" object: date,
            commit, build, kernel, cpus, protocol, pageSize, lookAhead, binding, processes.
            Results kept in the repository go in Papers/data/YYYY-MM-DD-SHORTCOMMIT-bench.json;
            the bench prints that name at the end.

            Examples:
              plexus bench
              plexus bench --samples 5000 --json bench.json
              plexus bench --skip-jacobi --protocol sc
            """)

    @Option(name: .long, help: "Samples per latency row (pages per round for the page rows).")
    var samples: Int = 2000

    @Option(name: .long, help: "TCP round trips measured for the floor of each latency row, in blocks between its samples; as many of each kind for the limit, before and after the jobs.")
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

    @Option(name: .long, help: ArgumentHelp(
        "Also write the rows as a JSON array to this file, each row with the metadata of the run (see Papers/data/ for results kept in the repository).",
        valueName: "file"))
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
        if let json { try OutputFile.validate(json, option: "--json") }
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
        var started = RunMetadata.now()
        started.processes = 2
        var args = ["--w-samples", "\(samples)", "--w-floor-samples", "\(floorSamples)", "--w-rounds", "\(rounds)",
                    "--w-jacobi-size", "\(jacobiSize)", "--w-jacobi-iterations", "\(jacobiIterations)",
                    "--w-jacobi-runs", "\(jacobiRuns)"]
        if skipJacobi { args.append("--w-skip-jacobi") }
        // The limits' floors, before and after the jobs: pooled, they cover
        // the stretch of the machine the jobs ran in.
        var floors = try FloorPeers.measure(samples: (floorSamples + 1) / 2, bind: memory.bind)
        var records: [StampedRow<BenchmarkRow>] = []
        func add(_ job: WorkerOutput, pageSize: Int) {
            for row in job.rows {
                var run = started
                run.protocol = memory.protocol
                run.pageSize = pageSize
                run.lookAhead = row.lookAhead ?? memory.lookAhead
                run.binding = job.binding
                records.append(StampedRow(row: row, run: run))
            }
        }
        add(try runWorker(args, pageSize: memory.pageSize, logger: logger, statistics: started), pageSize: memory.pageSize)
        if let unit = rowPageSize {
            add(try runWorker(args + ["--w-jacobi-only"], pageSize: unit, logger: logger, statistics: nil), pageSize: unit)
        }
        floors.pool(try FloorPeers.measure(samples: floorSamples / 2, bind: memory.bind))
        let limits = floors.medians
        for i in records.indices { records[i].row.apply(limits) }
        for row in floors.rows() {
            var run = started
            run.binding = floors.binding
            run.processes = row.name.hasPrefix("fault") ? 1 : 2
            records.append(StampedRow(row: row, run: run))
        }
        writeAll(1, Self.table(records.map(\.row), floors: limits))
        if let json { try OutputFile.write(records, to: json, option: "--json") }
        writeAll(2, "plexus bench: to keep these figures in the repository, write them to \(started.suggestedPath(kind: "bench"))\n")
    }

    /// Runs one 2-process job of `_bench-worker` with coherence unit
    /// `pageSize` and returns what rank 0 wrote; writes --stats and
    /// --summary for it when given the run's metadata as `statistics`.
    private func runWorker(_ args: [String], pageSize: Int, logger: Logger, statistics: RunMetadata?) throws -> WorkerOutput {
        let out = NSTemporaryDirectory() + "/plexus-bench-\(getpid())-\(pageSize).json"
        defer { try? FileManager.default.removeItem(atPath: out) }
        var environment = try memory.environment()
        environment["PLEXUS_PAGE_SIZE"] = "\(pageSize)"
        let spec = JobSpec(processes: 2, nodes: [], program: selfExecutable(),
                           arguments: ["bench", "_bench-worker", "--w-out", out] + args, environment: environment)
        writeAll(2, "plexus bench: 2 processes, protocol \(memory.protocol), page size \(pageSize)\n")
        let result = try runJob(spec, logger: logger)
        if let statistics { try memory.writeStatistics(result, started: statistics) }
        if result.status != 0 {
            for f in result.failures { writeAll(2, "plexus bench: \(f)\n") }
            throw ExitCode(result.status)
        }
        do { return try JSONDecoder().decode(WorkerOutput.self, from: Data(contentsOf: URL(fileURLWithPath: out))) } catch {
            writeAll(2, "plexus bench: the benchmark job wrote no results: \(error)\n")
            throw ExitCode(1)
        }
    }

    /// The Jacobi rows' target speedup.
    static let jacobiTarget = 1.2

    static func table(_ rows: [BenchmarkRow], floors: PhysicalFloors) -> String {
        func num(_ v: Double) -> String { v.isNaN ? "-" : v >= 100 ? String(format: "%.0f", v) : String(format: "%.1f", v) }
        func fixed(_ v: Double?) -> String { v.map { $0.isNaN ? "-" : String(format: "%.2f", $0) } ?? "-" }
        let header = ["operation", "unit", "median", "p99", "floor", "ratio", "limit", "ratio/limit", "target", "met",
                      "msgs/op", "pages/op", "engine us/op", "n"]
        let leftAligned: Set<Int> = [0, 1, 8]
        var lines: [[String]] = [header]
        for r in rows {
            let ratio = r.speedup.map { String(format: "%.2f (speedup %.2fx)", r.ratio, $0) } ?? fixed(r.ratio)
            let met = r.meetsTarget.map { $0 ? "yes" : "NO" } ?? "-"
            lines.append([r.name, r.unit, num(r.median), num(r.p99), num(r.floor), ratio, r.limit.map(num) ?? "-", fixed(r.limitRatio),
                          r.target ?? "-", met,
                          r.messagesPerOp.map { String(format: "%.1f", $0) } ?? "-",
                          r.pagesPerOp.map { String(format: "%.2f", $0) } ?? "-",
                          r.engineMicrosPerOp.map { String(format: "%.1f", $0) } ?? "-", "\(r.samples)"])
        }
        let widths = header.indices.map { c in lines.map { $0[c].count }.max() ?? 0 }
        var s = ""
        for l in lines {
            s += l.enumerated().map { c, v in
                leftAligned.contains(c) ? v.padding(toLength: widths[c], withPad: " ", startingAt: 0)
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
        func us(_ v: Double) -> String { String(format: "%.1f us", v) }
        s += "floor: TCP 16 B -> 4 KiB round trip between the two job processes (blocking reads), measured between\n"
        s += "       each row's samples; for jacobi, one process running the same loop on private memory (target on speedup).\n"
        s += "limit: what the operation physically needs here, from the last three rows (two plain processes started\n"
        s += "       by the bench, no runtime; measured before and after the jobs): busy-poll round trip 16 B -> 4 KiB\n"
        s += "       \(us(floors.pageRoundTrip)), 16 B -> 16 B \(us(floors.roundTrip)); fault served by one mprotect \(us(floors.fault)).\n"
        s += "       read miss = fault + 4 KiB round trip (\(us(floors.fault + floors.pageRoundTrip))); write fault = fault + 16 B round trip\n"
        s += "       (the invalidation and its acknowledgement); message row = 4 KiB round trip; lock = one 16 B round trip\n"
        s += "       (request to the managing process and its grant: no fault, no page, and the release needs no reply);\n"
        s += "       barrier of 2 processes = one 16 B round trip (one message each way). Targets are on ratio/limit.\n"
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

    // Names of their own, so that they never meet `bench memory`'s.
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
                                       target: ">= \(BenchMemory.jacobiTarget)")
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
        // What --bind gave each process, as each reports it.
        let bindings = try px.allGather(Array(px.cpuBinding.utf8))
        if px.rank == 0 {
            let binding = bindings.enumerated().map { "rank \($0.offset): \(String(decoding: $0.element, as: UTF8.self))" }
                .joined(separator: "; ")
            let data = try JSONEncoder().encode(WorkerOutput(rows: rows, binding: binding))
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
        rows.append(BenchmarkRow(name: "plexus message round trip", unit: "us", samples: messages, floor: f.median, limitOf: .pageRoundTrip))

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
        func pageRow(_ name: String, _ values: [Double], phase k: Int, limitOf: PhysicalLimit, target: String? = nil) -> BenchmarkRow {
            var r = BenchmarkRow(name: name, unit: "us", samples: values, floor: f.median, limitOf: limitOf, target: target)
            r.lookAhead = 0
            r.messagesPerOp = Double(pages.traffic[k].messages) / Double(max(1, values.count))
            r.pagesPerOp = Double(pages.traffic[k].pages) / Double(max(1, values.count))
            r.engineMicrosPerOp = pages.engineMicros[k] / Double(max(1, values.count))
            return r
        }
        let read = pageRow("remote read miss", pages.readMiss, phase: 0, limitOf: .faultAndPageRoundTrip, target: "<= 2")
        let first = pageRow("first read miss of a page", pages.firstReadMiss, phase: 3, limitOf: .faultAndPageRoundTrip)
        let w1 = pageRow("write fault, invalidate 1 reader", pages.writeLocalManager, phase: 1, limitOf: .faultAndRoundTrip)
        let w2 = pageRow("same, remote page manager", pages.writeRemoteManager, phase: 2, limitOf: .faultAndRoundTrip)
        rows += [read, first, w1, w2]

        progress("lock row: \(samples) acquire+release of a lock managed by the other process, floor between every \(block)")
        f = floor(over: samples)
        let locks = try Microbenchmarks.lock(px, samples: samples, block: block, between: f.measureBlock)
        rows.append(BenchmarkRow(name: "remote lock acquire+release", unit: "us", samples: locks, floor: f.median, limitOf: .roundTrip,
                                 target: "<= 2"))

        progress("barrier row: \(samples) barriers, floor between every \(block)")
        f = floor(over: samples)
        let barriers = try Microbenchmarks.barrier(px, samples: samples, block: block, between: f.measureBlock)
        rows.append(BenchmarkRow(name: "barrier, 2 processes", unit: "us", samples: barriers, floor: f.median, limitOf: .roundTrip,
                                 target: "<= 1.5"))
        return rows
    }
}

/// What a `_bench-worker` job hands back to `plexus bench` (rank 0 writes it).
struct WorkerOutput: Codable {
    var rows: [BenchmarkRow]
    /// What `--bind` gave each process ("rank 0: CPU 0; rank 1: CPU 1").
    var binding: String
}
