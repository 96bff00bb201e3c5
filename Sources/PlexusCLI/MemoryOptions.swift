import ArgumentParser
import Cluster
import Foundation
import Memory
import Plexus

/// Shared-memory options of `plexus run` (and the demos and benchmarks).
struct MemoryOptions: ParsableArguments {
    @Option(name: .long, help: "Size of the job's shared region (e.g. 256M, 1G; 0 for none).")
    var sharedMemory: String = "1G"

    @Option(name: .long, help: ArgumentHelp("Coherence protocol.", valueName: ProtocolRegistry.names.joined(separator: "|")))
    var `protocol`: String = "sc"

    @Option(name: .long, help: "Coherence unit in bytes (a power of two, a multiple of the system page size).")
    var pageSize: Int = 4096

    @Option(name: .long, help: "Write every process's shared-memory statistics (per process and per page) to this JSON file.")
    var stats: String?

    @Option(name: .long, help: ArgumentHelp(
        "Pages past a fault that sc also serves in the same exchange: a read fault also fetches the next pages this process faulted on before and lost, from the same owner (in a sequential first scan of a collective allocation, any of its pages); an owner's write fault also invalidates the next pages it wrote before and shares with the same readers. 0 turns it off.",
        valueName: "pages"))
    var lookAhead: Int = SharedMemoryConfiguration.defaultLookAhead

    @Option(name: .long, help: ArgumentHelp(
        "lrc: the twins and diffs a process may keep (e.g. 64M) before the next barrier collects them: every process then brings every page it has write notices for up to date, and all drop their diffs. Collections and the most kept are in --stats (garbageCollections, retainedBytesPeak).",
        valueName: "size"))
    var collectionBound: String = "64M"

    @Flag(name: .long, help: "Print a short shared-memory summary at the end of the job.")
    var summary = false

    @Option(name: .long, help: ArgumentHelp(
        "How the threads that serve peers are scheduled: realtime runs the fault thread SCHED_FIFO and the message readers at nice -20 with a 100 us slice, so that a request preempts computation at once and a reader still goes to an idle CPU when there is one; auto raises them as far as permitted (root, CAP_SYS_NICE, ulimit -r 1 -e 40); normal never does.",
        valueName: ServingPriority.allCases.map(\.rawValue).joined(separator: "|")))
    var servingPriority: ServingPriority = .auto

    @Option(name: .long, help: ArgumentHelp(
        "Whether each process's application thread (and threads it starts) and its fault thread are bound to one CPU of the node: auto binds when the job's processes on a node fit the CPUs they may use, one CPU each in rank order (as MPI's bind-to-core), so that two computing processes never share a CPU while another idles; none leaves scheduling to the kernel, for processes that run several computing threads.",
        valueName: CPUBindingMode.allCases.map(\.rawValue).joined(separator: "|")))
    var bind: CPUBindingMode = .auto

    func validate() throws {
        try Self.checkLookAhead(lookAhead)
        guard parseSize(collectionBound) != nil else {
            throw ValidationError("--collection-bound '\(collectionBound)' is not a size: use bytes or a K/M/G suffix, e.g. 64M")
        }
        try Self.checkPageSize(pageSize)
        try Self.checkRegion(sharedMemory: sharedMemory, pageSize: pageSize)
        try Self.checkProtocol(`protocol`)
        if let stats { try OutputFile.validate(stats, option: "--stats") }
    }

    func environment() throws -> [String: String] {
        var env = Self.environment(sharedMemoryBytes: parseSize(sharedMemory) ?? 0, protocol: `protocol`, pageSize: pageSize,
                                   lookAhead: lookAhead, servingPriority: servingPriority, bind: bind, statistics: stats != nil || summary)
        env["PLEXUS_COLLECTION_BOUND"] = "\(parseSize(collectionBound) ?? CoherenceConfiguration.defaultCollectionBound)"
        return env
    }

    /// The job environment that gives its processes these settings; with
    /// `statistics`, every process sends its statistics report at the end.
    static func environment(sharedMemoryBytes: Int, protocol: String, pageSize: Int, lookAhead: Int,
                            servingPriority: ServingPriority, bind: CPUBindingMode, statistics: Bool) -> [String: String] {
        var env = ["PLEXUS_SHARED_MEMORY": "\(sharedMemoryBytes)", "PLEXUS_PROTOCOL": `protocol`, "PLEXUS_PAGE_SIZE": "\(pageSize)"]
        env["PLEXUS_SERVING_PRIORITY"] = servingPriority.rawValue
        env["PLEXUS_BIND"] = bind.rawValue
        env["PLEXUS_LOOK_AHEAD"] = "\(lookAhead)"
        if statistics { env["PLEXUS_STATS"] = "1" }
        return env
    }

    static func checkLookAhead(_ lookAhead: Int) throws {
        guard (0...SharedMemoryConfiguration.maxLookAhead).contains(lookAhead) else {
            throw ValidationError("--look-ahead \(lookAhead) must be a page count in 0...\(SharedMemoryConfiguration.maxLookAhead)")
        }
    }

    /// Refuses a --shared-memory that is not a size, or not a multiple of
    /// `pageSize`.
    static func checkRegion(sharedMemory: String, pageSize: Int) throws {
        guard let n = parseSize(sharedMemory) else {
            throw ValidationError("--shared-memory '\(sharedMemory)' is not a size: use bytes or a K/M/G suffix, e.g. 512M")
        }
        guard n == 0 || n % pageSize == 0 else {
            throw ValidationError("--shared-memory \(sharedMemory) is not a multiple of the page size \(pageSize)")
        }
    }

    /// Refuses a protocol that is not registered, naming those that are.
    static func checkProtocol(_ name: String) throws {
        guard ProtocolRegistry.names.contains(name) else {
            throw ValidationError("unknown protocol '\(name)': choose one of \(ProtocolRegistry.names.joined(separator: ", "))")
        }
    }

    static func checkPageSize(_ pageSize: Int) throws {
        guard pageSize > 0, pageSize & (pageSize - 1) == 0 else {
            throw ValidationError("--page-size \(pageSize) is not a power of two: use 4096, 8192, 16384, ...")
        }
        let system = Int(getpagesize())
        guard pageSize >= system else {
            throw ValidationError("--page-size \(pageSize) is smaller than this system's page (\(system) bytes): a coherence unit is whole system pages")
        }
    }

    /// Writes --stats and prints --summary from the processes' reports;
    /// `started` is the metadata of the run, taken when it started, with
    /// the job's process count.
    func writeStatistics(_ result: JobResult, started: RunMetadata) throws {
        let reports = Self.reports(of: result)
        if let path = stats {
            var run = started
            run.protocol = `protocol`
            run.pageSize = pageSize
            run.lookAhead = lookAhead
            run.binding = reports.map { "rank \($0["rank"] as? Int ?? -1): \($0["cpuBinding"] as? String ?? "unknown")" }
                .joined(separator: "; ")
            let data: Data
            do {
                let metadata = try JSONSerialization.jsonObject(with: JSONEncoder().encode(run))
                // Written for failed, interrupted and timed-out jobs too: "status"
                // is plexus run's exit status and "failures" says what went wrong;
                // "processes" holds every report that arrived (a rank stopped
                // before it could answer is missing).
                let doc: [String: Any] = ["protocol": `protocol`, "pageSize": pageSize, "lookAhead": lookAhead, "processes": reports,
                                          "seconds": result.seconds, "status": Int(result.status), "failures": result.failures,
                                          "run": metadata]
                data = try JSONSerialization.data(withJSONObject: doc, options: [.prettyPrinted, .sortedKeys])
            } catch {
                writeAll(2, "plexus: cannot encode the statistics for --stats: \(error)\n")
                throw ExitCode(1)
            }
            try OutputFile.write(data, to: path, option: "--stats")
        }
        if summary { writeAll(2, Self.summary(reports)) }
    }

    /// The processes' statistics documents, in rank order (a report that is
    /// not a JSON object is left out).
    static func reports(of result: JobResult) -> [[String: Any]] {
        result.reports.keys.sorted().compactMap { r in
            try? JSONSerialization.jsonObject(with: Data(result.reports[r]!)) as? [String: Any]
        }
    }

    static func summary(_ reports: [[String: Any]]) -> String {
        guard !reports.isEmpty else { return "plexus: no shared-memory statistics were reported\n" }
        var s = "shared memory: rank  read-faults  write-faults  pages-in  pages-out  inval-sent  blocked-ms  wait-p50  wait-p99\n"
        for r in reports {
            let t = r["totals"] as? [String: Any] ?? [:]
            func i(_ k: String) -> Int { t[k] as? Int ?? 0 }
            let waits = t["faultWaits"] as? [[String: Int]] ?? []
            s += String(format: "               %4d  %11d  %12d  %8d  %9d  %10d  %10.1f", r["rank"] as? Int ?? -1,
                        i("readFaults"), i("writeFaults"), i("pagesReceived"), i("pagesSent"), i("invalidationsSent"),
                        (t["blockedMicros"] as? Double ?? 0) / 1000)
            for q in [0.5, 0.99] {
                let w = FaultWaits.text(waits, q)
                s += "  " + String(repeating: " ", count: max(0, 8 - w.count)) + w
            }
            s += "\n"
        }
        let serving = reports.map { "rank \($0["rank"] as? Int ?? -1) \($0["servingThreads"] as? String ?? "unknown")" }
        s += "serving threads: " + serving.joined(separator: "; ") + "\n"
        let bound = reports.map { "rank \($0["rank"] as? Int ?? -1) \($0["cpuBinding"] as? String ?? "unknown")" }
        s += "application threads bound to: " + bound.joined(separator: "; ") + "\n"
        let ahead = reports.map { r -> (Int, Int, Int) in
            let t = r["totals"] as? [String: Any] ?? [:]
            return (r["rank"] as? Int ?? -1, t["readsAhead"] as? Int ?? 0, t["writesAhead"] as? Int ?? 0)
        }
        if ahead.contains(where: { $0.1 + $0.2 > 0 }) {
            s += "look-ahead (pages requested ahead of a fault, read/write): "
                + ahead.map { "rank \($0.0) \($0.1)/\($0.2)" }.joined(separator: "; ") + "\n"
        }
        s += FalseSharingReport.text(FalseSharingReport.pages(reports))
        return s
    }
}


extension ServingPriority: ExpressibleByArgument {}
extension CPUBindingMode: ExpressibleByArgument {}
