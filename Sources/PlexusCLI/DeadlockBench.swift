#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Cluster
import Deadlock
import Foundation
import Logging
import Plexus
import Workloads

/// `plexus bench deadlock`: how long the distributed deadlock detector takes
/// to break a lock cycle of k processes, against the model threshold +
/// 2k one-way messages (measured in the same job), and what it costs lock
/// throughput when there is no deadlock (--deadlock abort against off).
struct DeadlockBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deadlock",
        abstract: "Measure deadlock detection latency against its model, and the detector's cost to lock throughput.",
        discussion: """
            Detection: for each cycle length k (--cycles), a k-process job on this machine
            (--deadlock abort, --threshold-ms) runs --rounds rounds of one lock cycle: rank i
            takes lock i, a barrier, then rank i asks for lock i+1 (mod k), which rank i+1
            holds. The sample is the time from the moment the last member asked (blocked)
            to the moment the victim's acquire failed with the cycle (CLOCK_MONOTONIC,
            one machine). Its model is threshold + 2k one-way messages: the victim probes
            once its wait is threshold old, the probe goes round the k edges, and the
            confirmation pass goes round again. The one-way message is half the median
            of a Plexus send/receive round trip between ranks 0 and 1 of the same job,
            measured before and after the rounds (its row is the floor). Target: median
            /model <= 1.5; and a 2-cycle within threshold + 2 round trips (ratio <= 1).

            Cost: 2-process jobs, alternately with --deadlock abort and --deadlock off,
            --repeats each, measure acquire+release throughput (operations per second,
            in blocks of --ops) of a lock managed by the other process and of one managed
            by the acquiring process (uncontended: rank 0 alone), and of one lock both
            ranks take with --think-us of local work between acquires (lightly
            contended). The floor of each abort row is the same row under off; the
            overhead is 1 - abort/off, target < 2 %. Nothing deadlocks here, so the
            detector only sees waits start and end, and each acquisition confirmed to
            its manager (the message that keeps the detector's edges stable).

            --json writes a JSON array, one object per row, each with a "run" object
            (date, commit, build, kernel, cpus, processes). Results kept in the
            repository go in Papers/data/YYYY-MM-DD-SHORTCOMMIT-deadlock.json.

            Examples:
              plexus bench deadlock
              plexus bench deadlock --threshold-ms 50 --cycles 2,4,8 --json deadlock.json
            """)

    @Option(name: .long, help: ArgumentHelp("How long a wait lasts before its process probes (plexus run --deadlock-threshold-ms).", valueName: "ms"))
    var thresholdMs: Int = 100

    @Option(name: .long, help: "Cycle lengths (processes per job), comma-separated.")
    var cycles: String = "2,3,4,6,8"

    @Option(name: .long, help: "Deadlocks per cycle length (after one warm-up round).")
    var rounds: Int = 9

    @Option(name: .long, help: "Send/receive round trips of the one-way message floor, per job (half before the rounds, half after).")
    var pings: Int = 400

    @Option(name: .long, help: "Acquire+release operations per throughput block.")
    var ops: Int = 2000

    @Option(name: .long, help: "Throughput blocks per row and job.")
    var blocks: Int = 5

    @Option(name: .long, help: "Jobs per policy (abort, off), alternating.")
    var repeats: Int = 3

    @Option(name: .long, help: ArgumentHelp("Local work between two acquires of the lightly contended row.", valueName: "us"))
    var thinkUs: Int = 100

    @Option(name: .long, help: ArgumentHelp(
        "Also write the rows as a JSON array to this file, each row with the metadata of the run (\"run\").",
        valueName: "file"))
    var json: String?

    @OptionGroup var common: CommonOptions

    var cycleLengths: [Int] { NamesBench.counts(cycles) ?? [] }

    func validate() throws {
        guard (1...10_000).contains(thresholdMs) else { throw ValidationError("--threshold-ms must be in 1...10000 (got \(thresholdMs))") }
        guard let k = NamesBench.counts(cycles), !k.isEmpty, k.allSatisfy({ (2...64).contains($0) }) else {
            throw ValidationError("--cycles takes cycle lengths from 2 to 64, e.g. 2,3,4,6,8")
        }
        guard rounds >= 1 else { throw ValidationError("--rounds must be at least 1") }
        guard pings >= 2 else { throw ValidationError("--pings must be at least 2") }
        guard ops >= 10, blocks >= 1, repeats >= 1 else { throw ValidationError("--ops must be at least 10, --blocks and --repeats at least 1") }
        guard (0...100_000).contains(thinkUs) else { throw ValidationError("--think-us must be in 0...100000") }
        if let json { try OutputFile.validate(json, option: "--json") }
    }

    struct Row: Codable {
        var name: String
        var unit: String
        var median: Double
        var p99: Double
        /// The model (detection rows), the same row under --deadlock off
        /// (throughput rows), nil for the floor rows themselves.
        var floor: Double?
        var floorName: String?
        var ratio: Double?
        var target: String?
        var met: Bool?
        /// Throughput rows: 1 - abort/off, in percent.
        var overheadPercent: Double?
        var samples: [Double]
    }

    func run() throws {
        let logger = try common.makeLogger("plexus.bench")
        let started = RunMetadata.now()
        var records: [StampedRow<Row>] = []
        func add(_ row: Row, processes: Int) {
            var run = started
            run.processes = processes
            records.append(StampedRow(row: row, run: run))
        }
        let threshold = Double(thresholdMs) * 1000
        var floorRows: [(Row, Int)] = []
        for k in cycleLengths {
            writeAll(2, "plexus bench deadlock: a lock cycle of \(k) processes, \(rounds) rounds, threshold \(thresholdMs) ms\n")
            let out: CycleOutput = try runWorker(["cycle", "--rounds", "\(rounds)", "--pings", "\(pings)"], processes: k,
                                                 policy: .abort, logger: logger)
            let oneWay = Summary(out.roundTripMicros).median / 2
            let latencies = Summary(out.latencyMicros)
            let model = threshold + Double(2 * k) * oneWay
            let ratio = latencies.median / model
            add(Row(name: "detect a \(k)-cycle (last block -> victim's error)", unit: "ms", median: latencies.median / 1000,
                    p99: latencies.p99 / 1000, floor: model / 1000, floorName: "threshold + \(2 * k) one-way messages",
                    ratio: ratio, target: "<= 1.5", met: ratio <= 1.5, overheadPercent: nil,
                    samples: out.latencyMicros.map { $0 / 1000 }), processes: k)
            if k == 2 {
                let bound = threshold + 2 * Summary(out.roundTripMicros).median
                add(Row(name: "same, against threshold + 2 round trips", unit: "ms", median: latencies.median / 1000,
                        p99: latencies.p99 / 1000, floor: bound / 1000, floorName: "threshold + 2 round trips",
                        ratio: latencies.median / bound, target: "<= 1", met: latencies.median <= bound, overheadPercent: nil,
                        samples: out.latencyMicros.map { $0 / 1000 }), processes: k)
            }
            let rtt = Summary(out.roundTripMicros.map { $0 / 2 })
            floorRows.append((Row(name: "one-way message (half a send/receive round trip), job of \(k)", unit: "us",
                                  median: rtt.median, p99: rtt.p99, floor: nil, floorName: nil, ratio: nil, target: nil, met: nil,
                                  overheadPercent: nil, samples: rtt.sorted), k))
        }
        var throughput: [DeadlockPolicy: [String: [Double]]] = [:]
        var names: [String] = []
        for r in 0..<repeats {
            for policy in (r % 2 == 0 ? [DeadlockPolicy.abort, .off] : [.off, .abort]) {
                writeAll(2, "plexus bench deadlock: lock throughput, --deadlock \(policy.rawValue) (\(r + 1) of \(repeats))\n")
                let out: LocksOutput = try runWorker(["locks", "--ops", "\(ops)", "--blocks", "\(blocks)", "--think-us", "\(thinkUs)"],
                                                     processes: 2, policy: policy, logger: logger)
                for (name, samples) in out.rows {
                    if !names.contains(name) { names.append(name) }
                    throughput[policy, default: [:]][name, default: []] += samples
                }
            }
        }
        for name in names {
            let on = Summary(throughput[.abort]?[name] ?? []), off = Summary(throughput[.off]?[name] ?? [])
            let ratio = on.median / off.median
            let overhead = (1 - ratio) * 100
            add(Row(name: "\(name), --deadlock abort", unit: "ops/s", median: on.median, p99: on.percentile(0.01),
                    floor: off.median, floorName: "same, --deadlock off", ratio: ratio, target: "overhead < 2 %",
                    met: overhead < 2, overheadPercent: overhead, samples: on.sorted), processes: 2)
            add(Row(name: "\(name), --deadlock off", unit: "ops/s", median: off.median, p99: off.percentile(0.01), floor: nil,
                    floorName: nil, ratio: nil, target: nil, met: nil, overheadPercent: nil, samples: off.sorted), processes: 2)
        }
        for (row, k) in floorRows { add(row, processes: k) }
        writeAll(1, Self.table(records.map(\.row)))
        if let json { try OutputFile.write(records, to: json, option: "--json") }
        writeAll(2, "plexus bench deadlock: to keep these figures in the repository, write them to \(started.suggestedPath(kind: "deadlock"))\n")
    }

    private func runWorker<T: Decodable>(_ args: [String], processes: Int, policy: DeadlockPolicy, logger: Logger) throws -> T {
        let out = NSTemporaryDirectory() + "/plexus-bench-deadlock-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).json"
        defer { try? FileManager.default.removeItem(atPath: out) }
        var environment = DeadlockSettings(policy: policy, thresholdMillis: thresholdMs).environment
        environment["PLEXUS_SHARED_MEMORY"] = "0"
        let spec = JobSpec(processes: processes, nodes: [], program: selfExecutable(),
                           arguments: ["bench", "_deadlock-worker", "--out", out] + args, environment: environment)
        let result = try runJob(spec, logger: logger)
        if result.status != 0 {
            for f in result.failures { writeAll(2, "plexus bench deadlock: \(f)\n") }
            throw ExitCode(result.status)
        }
        do { return try JSONDecoder().decode(T.self, from: Data(contentsOf: URL(fileURLWithPath: out))) } catch {
            writeAll(2, "plexus bench deadlock: the benchmark job wrote no results: \(error)\n")
            throw ExitCode(1)
        }
    }

    static func table(_ rows: [Row]) -> String {
        func num(_ v: Double) -> String { v.isNaN ? "-" : v >= 1000 ? String(format: "%.0f", v) : v >= 10 ? String(format: "%.1f", v) : String(format: "%.3f", v) }
        let header = ["row", "unit", "median", "p99", "floor", "floor is", "ratio", "overhead", "target", "met", "n"]
        let leftAligned: Set<Int> = [0, 1, 5, 8]
        var lines: [[String]] = [header]
        for r in rows {
            lines.append([r.name, r.unit, num(r.median), num(r.p99), r.floor.map(num) ?? "-", r.floorName ?? "-",
                          r.ratio.map { String(format: "%.3f", $0) } ?? "-",
                          r.overheadPercent.map { String(format: "%+.2f %%", $0) } ?? "-",
                          r.target ?? "-", r.met.map { $0 ? "yes" : "NO" } ?? "-", "\(r.samples.count)"])
        }
        let widths = header.indices.map { c in lines.map { $0[c].count }.max() ?? 0 }
        var s = ""
        for l in lines {
            s += l.enumerated().map { c, v in
                leftAligned.contains(c) ? v.padding(toLength: widths[c], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[c] - v.count) + v
            }.joined(separator: "  ") + "\n"
        }
        s += "throughput p99 column: the 1st percentile (the slow blocks). ratio: median / floor.\n"
        return s
    }
}

/// What a cycle job hands back (rank 0 writes it).
struct CycleOutput: Codable {
    /// Last block -> victim's error, one per counted round, microseconds.
    var latencyMicros: [Double]
    /// Send/receive round trips between ranks 0 and 1, microseconds.
    var roundTripMicros: [Double]
}

/// What a throughput job hands back: per row, operations per second of each block.
struct LocksOutput: Codable {
    var rows: [String: [Double]]
}

/// `plexus bench _deadlock-worker cycle|locks`: one process of a
/// `plexus bench deadlock` job.
struct DeadlockBenchWorker: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_deadlock-worker", shouldDisplay: false)

    @Argument var mode: String
    @Option var out: String
    @Option var rounds: Int = 9
    @Option var pings: Int = 400
    @Option var ops: Int = 2000
    @Option var blocks: Int = 5
    @Option var thinkUs: Int = 100

    func validate() throws {
        guard ["cycle", "locks"].contains(mode) else { throw ValidationError("_deadlock-worker takes cycle or locks") }
    }

    static func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    static func bytes(_ values: [UInt64]) -> [UInt8] { values.withUnsafeBytes { Array($0) } }
    static func values(_ bytes: [UInt8]) -> [UInt64] {
        bytes.withUnsafeBytes { raw in (0..<(bytes.count / 8)).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: UInt64.self) } }
    }

    func run() throws {
        let px = try Plexus.join()
        if mode == "cycle" { try cycle(px) } else { try locks(px) }
        try px.finalize()
    }

    /// Round trips between ranks 0 and 1 (the others only pass the barrier).
    func pingPong(_ px: Plexus, count: Int) throws -> [Double] {
        var samples: [Double] = []
        try px.barrier()
        let payload = [UInt8](repeating: 1, count: 64)
        for _ in 0..<count {
            if px.rank == 0 {
                let t0 = Self.now()
                try px.send(payload, to: 1)
                _ = try px.receive()
                samples.append(Double(Self.now() - t0) / 1000)
            } else if px.rank == 1 {
                _ = try px.receive()
                try px.send(payload, to: 0)
            }
        }
        try px.barrier()
        return samples
    }

    func cycle(_ px: Plexus) throws {
        let k = px.size
        var roundTrips = try pingPong(px, count: pings / 2)
        var latencies: [Double] = []
        // Round 0 warms up and is not counted.
        for round in 0...rounds {
            let base = 1 + round * k
            let first = px.lock(base + px.rank), second = px.lock(base + (px.rank + 1) % k)
            try first.acquire()
            try px.barrier()
            let blocked = Self.now()
            var failed: UInt64 = 0
            do {
                try second.acquire()
                try second.release()
            } catch {
                guard case .deadlock = error else { throw error }
                failed = Self.now()
            }
            try first.release()
            let all = try px.allGather(Self.bytes([blocked, failed])).map(Self.values)
            let victims = all.filter { $0[1] != 0 }
            guard victims.count == 1 else {
                throw ValidationError("round \(round) of a \(k)-cycle had \(victims.count) victims, expected 1")
            }
            let lastBlock = all.map { $0[0] }.max()!
            if round > 0 { latencies.append(Double(Int64(bitPattern: victims[0][1] &- lastBlock)) / 1000) }
        }
        roundTrips += try pingPong(px, count: pings - pings / 2)
        if px.rank == 0 {
            try JSONEncoder().encode(CycleOutput(latencyMicros: latencies, roundTripMicros: roundTrips)).write(to: URL(fileURLWithPath: out))
        }
    }

    /// Busy work of about `micros` microseconds.
    static func think(_ micros: Int) {
        guard micros > 0 else { return }
        let end = now() + UInt64(micros) * 1000
        while now() < end {}
    }

    func locks(_ px: Plexus) throws {
        guard px.size == 2 else { throw ValidationError("the throughput job needs 2 processes") }
        var rows: [String: [Double]] = [:]
        // Lock id i is managed by rank i mod 2.
        func alone(_ name: String, lock id: Int) throws {
            try px.barrier()
            if px.rank == 0 {
                let lock = px.lock(id)
                for _ in 0..<blocks {
                    let t0 = Self.now()
                    for _ in 0..<ops { try lock.acquire(); try lock.release() }
                    rows[name, default: []].append(Double(ops) / (Double(Self.now() - t0) / 1e9))
                }
            }
            try px.barrier()
        }
        try alone("uncontended lock, remote manager", lock: 1)
        try alone("uncontended lock, local manager", lock: 2)
        let shared = px.lock(4)
        for _ in 0..<blocks {
            try px.barrier()
            let t0 = Self.now()
            for _ in 0..<ops {
                try shared.acquire()
                try shared.release()
                Self.think(thinkUs)
            }
            let took = Self.now() - t0
            let all = try px.allGather(Self.bytes([took])).map(Self.values)
            let slowest = Double(all.map { $0[0] }.max()!) / 1e9
            rows["lightly contended lock, 2 processes, \(thinkUs) us between acquires", default: []].append(Double(2 * ops) / slowest)
        }
        if px.rank == 0 { try JSONEncoder().encode(LocksOutput(rows: rows)).write(to: URL(fileURLWithPath: out)) }
    }
}
