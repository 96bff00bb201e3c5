import ArgumentParser
import Cluster
import Deadlock
import Foundation
import Memory
import Plexus
import Workloads

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a demonstration job on an embedded local cluster.",
        discussion: """
            false-sharing (the default): two processes on this machine share one address
            space. Each increments its own counter. With both counters on one page, every
            write by one process takes the page away from the other, so the page travels
            back and forth over TCP although the processes never share a value; with a
            page each, both run at local speed after one fault. The table shows time and
            page transfers for both layouts, then where the transfers happened.

            It runs once per coherence protocol (--protocols, default every registered one)
            and ends with the protocols side by side: under sc (one writer per page) the
            shared page moves on almost every write; under lrc and hlrc (multiple writers,
            twins and diffs) each process writes its own words of its own copy, and only
            the changed words move, at the barrier.

            ring: four processes pass a token around a ring of ranks over TCP.

            deadlock: two processes take two locks in opposite order (rank 0 lock 1 then
            lock 2, rank 1 lock 2 then lock 1), a lock-order inversion. Each waits for the
            other; their detectors find the cycle by passing probes along the wait-for edges,
            the process with the highest global PID on it is the victim and its acquire
            fails with the cycle (shown as text and as Graphviz DOT; --svg FILE also draws it
            as SVG); it lets go of its lock and the other finishes.
            """)

    @Argument(help: "Which demonstration: false-sharing, ring or deadlock.")
    var which: String = "false-sharing"

    @Option(name: .long, help: "Increments per process (false-sharing; default 20000000, enough for the two loops to overlap however late one starts) or laps (ring; default 5).")
    var iterations: Int?

    @Option(name: .long, help: ArgumentHelp("Coherence protocols to run the false-sharing demo under, in order.",
                                            valueName: ProtocolRegistry.names.joined(separator: ",")))
    var protocols: String = ProtocolRegistry.names.joined(separator: ",")

    @Option(name: .long, help: ArgumentHelp("deadlock: also write the cycle's wait-for graph as SVG to this file.", valueName: "file"))
    var svg: String?

    @OptionGroup var common: CommonOptions

    var protocolList: [String] { protocols.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }

    func validate() throws {
        guard ["false-sharing", "ring", "deadlock"].contains(which) else {
            throw ValidationError("unknown demo '\(which)': choose false-sharing, ring or deadlock")
        }
        if let i = iterations, i < 1 { throw ValidationError("--iterations must be at least 1") }
        guard !protocolList.isEmpty else { throw ValidationError("--protocols is empty: name at least one of \(ProtocolRegistry.names.joined(separator: ", "))") }
        for p in protocolList where !ProtocolRegistry.names.contains(p) {
            throw ValidationError("unknown protocol '\(p)' in --protocols: choose from \(ProtocolRegistry.names.joined(separator: ", "))")
        }
        if let svg {
            guard which == "deadlock" else { throw ValidationError("--svg draws the deadlock demo's cycle: use it with plexus demo deadlock") }
            try OutputFile.validate(svg, option: "--svg")
        }
    }

    func run() throws {
        let logger = try common.makeLogger("plexus.demo")
        if which == "ring" {
            let spec = JobSpec(processes: 4, nodes: [], program: selfExecutable(),
                               arguments: ["_demo-ring", "--laps", "\(iterations ?? 5)"],
                               environment: ["PLEXUS_SHARED_MEMORY": "0"])
            let result = try runJob(spec, logger: logger)
            if result.status != 0 { throw ExitCode(result.status) }
            writeAll(1, String(format: "demo finished in %.2f s\n", result.seconds))
            return
        }
        if which == "deadlock" {
            let spec = JobSpec(processes: 2, nodes: [], program: selfExecutable(),
                               arguments: ["_demo-deadlock"] + (svg.map { ["--svg", URL(fileURLWithPath: $0).path] } ?? []),
                               environment: DeadlockSettings(policy: .abort).environment.merging(["PLEXUS_SHARED_MEMORY": "0"]) { $1 })
            let result = try runJob(spec, logger: logger)
            if result.status != 0 { throw ExitCode(result.status) }
            if let svg { writeAll(1, "the cycle's wait-for graph is drawn in \(svg)\n") }
            writeAll(1, String(format: "demo finished in %.2f s\n", result.seconds))
            return
        }
        var rows: [(protocol: String, results: [FalseSharing.Result])] = []
        var seconds = 0.0
        for (i, p) in protocolList.enumerated() {
            writeAll(1, "\n== protocol \(p) (\(i + 1) of \(protocolList.count)) ==\n")
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("plexus-demo-\(getpid())-\(p).json")
            defer { try? FileManager.default.removeItem(at: file) }
            let spec = JobSpec(processes: 2, nodes: [], program: selfExecutable(),
                               arguments: ["_demo-false-sharing", "--iterations", "\(iterations ?? 20_000_000)", "--results", file.path],
                               environment: ["PLEXUS_SHARED_MEMORY": "\(64 << 20)", "PLEXUS_PROTOCOL": p, "PLEXUS_STATS": "1"])
            let result = try runJob(spec, logger: logger)
            if result.status != 0 { throw ExitCode(result.status) }
            seconds += result.seconds
            // The fault sites and the verdict, once: the first protocol shows
            // where the false sharing is; the others how much of it is left.
            writeAll(1, i == 0 ? MemoryOptions.summary(MemoryOptions.reports(of: result)) : "")
            guard let data = try? Data(contentsOf: file), let decoded = try? JSONDecoder().decode([FalseSharing.Result].self, from: data) else {
                throw ValidationError("the demo job under \(p) ended without writing its results to \(file.path)")
            }
            rows.append((p, decoded))
        }
        if rows.count > 1 { writeAll(1, "\n" + FalseSharing.comparison(rows)) }
        writeAll(1, String(format: "demo finished in %.2f s\n", seconds))
    }
}

/// The false-sharing demo's job process.
struct DemoFalseSharing: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_demo-false-sharing", shouldDisplay: false)

    @Option var iterations: Int
    /// Rank 0 writes the results here (JSON) for the demo to compare protocols.
    @Option var results: String?

    func run() throws {
        let px = try Plexus.join()
        let results = try FalseSharing.run(px, iterations: iterations)
        if px.rank == 0 {
            print(FalseSharing.table(results, iterations: iterations, ranks: px.size), terminator: "")
            if let path = self.results { try JSONEncoder().encode(results).write(to: URL(fileURLWithPath: path)) }
        }
        for r in results where r.counters.contains(where: { $0 != iterations }) {
            throw ValidationError("lost updates in layout '\(r.layout)': \(r.counters)")
        }
        try px.finalize()
    }
}

/// The demo's job process: one rank of the token ring.
struct DemoRing: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_demo-ring", shouldDisplay: false)

    @Option var laps: Int = 5

    func run() throws {
        let px = try Plexus.join()
        let next = (px.rank + 1) % px.size
        var token = 0
        var lapMicros: [Double] = []
        for _ in 0..<laps {
            let t0 = Date()
            if px.rank == 0 { try px.send(withUnsafeBytes(of: token) { Array($0) }, to: next) }
            let (_, bytes) = try px.receive()
            token = bytes.withUnsafeBytes { $0.loadUnaligned(as: Int.self) } + px.rank
            if px.rank != 0 { try px.send(withUnsafeBytes(of: token) { Array($0) }, to: next) }
            lapMicros.append(Date().timeIntervalSince(t0) * 1e6)
        }
        try px.barrier()
        if px.rank == 0 {
            let expected = laps * px.size * (px.size - 1) / 2
            let median = lapMicros.sorted()[lapMicros.count / 2]
            print("token went \(laps) times around \(px.size) processes: value \(token), expected \(expected)")
            print(String(format: "median lap %.0f µs (%d hops, %.0f µs per hop)", median, px.size, median / Double(px.size)))
            if token != expected { throw ExitCode(1) }
        }
        try px.finalize()
    }
}

/// The deadlock demo's job process: a lock-order inversion between ranks 0 and 1.
struct DemoDeadlock: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_demo-deadlock", shouldDisplay: false)

    /// The victim writes the cycle's SVG drawing here.
    @Option var svg: String?

    func run() throws {
        let px = try Plexus.join()
        let first = px.lock(px.rank == 0 ? 1 : 2), second = px.lock(px.rank == 0 ? 2 : 1)
        var outcome = "took no part"
        if px.rank < 2 { try first.acquire() }
        // Both hold their first lock before either asks for its second: the
        // two acquires below close a cycle whatever the timing.
        try px.barrier()
        if px.rank < 2 {
            outcome = try Self.takeSecond(second, holding: first, pid: px.pid, svg: svg)
            try first.release()
        }
        let outcomes = try px.allGather(Array(outcome.utf8)).map { String(decoding: $0, as: UTF8.self) }
        if px.rank == 0 {
            for (r, o) in outcomes.enumerated() { print("rank \(r) \(o)") }
            let victims = outcomes.filter { $0.hasPrefix("was the victim") }.count
            if victims != 1 { throw ValidationError("expected exactly one victim, got \(victims)") }
        }
        try px.finalize()
    }

    /// Acquires `second` while holding `first`: what happened, for the summary.
    static func takeSecond(_ second: DistributedLock, holding first: DistributedLock, pid: UInt64, svg: String?) throws -> String {
        do {
            try second.acquire()
            let token = second.token ?? 0
            try second.release()
            return "finished: it got lock \(second.id) (fencing token \(token)) once the victim let go of it, and released both"
        } catch {
            guard case .deadlock(let report) = error else { throw error }
            print("deadlock detected: \(report.cycleText)")
            print("as Graphviz DOT:")
            print(report.cycle.dot(), terminator: "")
            if let svg { try OutputFile.write(Data(report.cycle.svg(ranks: report.ranks).utf8), to: svg, option: "--svg") }
            // Before the summary rank 0 prints once every rank has reported.
            fflush(nil)
            return "was the victim (global PID \(pid), the highest on the cycle): its acquire of lock \(report.lock) failed; "
                + "it released lock \(first.id) so the other could go on"
        }
    }
}
