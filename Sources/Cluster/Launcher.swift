#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import NameService
import NamesCore
import Transport
import Wire

/// What to run: N processes of one program, on given nodes or on an embedded
/// local node.
public struct JobSpec: Sendable {
    public var processes: Int
    /// Node daemons to use; empty means an embedded node on loopback.
    public var nodes: [SocketAddress]
    public var program: String
    public var arguments: [String]
    /// Extra environment for every process (settings for the runtime);
    /// it wins over `inherited`.
    public var environment: [String: String]
    /// The caller's variables every process gets (see `JobEnvironment`):
    /// by default those of `JobEnvironment.defaultNames`.
    public var inherited: [String: String] = JobEnvironment.defaults(from: ProcessInfo.processInfo.environment)
    /// Which ranks read the launcher's standard input (the rest read /dev/null).
    public var standardInput: StandardInputTarget = .none
    public var workingDirectory: String
    /// How long processes get between SIGTERM and SIGKILL when a job is stopped.
    public var graceMillis: Int
    /// The name service: replicas' IP:PORT, or an `etcd://` spec split at
    /// commas (see `NameServiceSpec`). When set, every process gets a global
    /// PID from the service and is entered in its process table; when empty,
    /// PIDs are job-scoped (a random base plus the rank).
    public var names: [String] = []
    /// TTL of each process's lease in the name service: how soon after its
    /// launcher or node dies a process is marked `lost`.
    public var leaseTTLMillis: UInt64 = 5000
    /// After this many seconds in which some rank waits for the same thing
    /// (a barrier, a lock, a page), print what every rank waits for; 0 turns
    /// the report off.
    public var stallReportSeconds: Double = 30
    /// End the job after this many seconds (status 124); nil: no limit.
    public var timeoutSeconds: Double?
    /// Ask every process for its statistics report when the job is stopped
    /// (set when `PLEXUS_STATS` is "1" in `environment`).
    var wantsReports: Bool { environment["PLEXUS_STATS"] == "1" }

    public init(processes: Int, nodes: [SocketAddress], program: String, arguments: [String],
                environment: [String: String] = [:], workingDirectory: String = FileManager.default.currentDirectoryPath,
                graceMillis: Int = 1000) {
        self.processes = processes
        self.nodes = nodes
        self.program = program
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.graceMillis = graceMillis
    }
}

/// How a job ended.
public struct JobResult: Sendable {
    /// The status `plexus run` exits with: 0, the failing rank's exit status,
    /// 128 + its signal, 1 for a rank that exited without calling finalize,
    /// 124 when --timeout ran out, or 130/143 when interrupted.
    public var status: Int32
    /// One line per problem, naming the rank, its node and what happened.
    public var failures: [String]
    /// JSON reports the processes sent before exiting, by rank.
    public var reports: [Int: [UInt8]]
    public var seconds: Double
}

/// Errors that stop a job before it starts. Each says what to do.
public enum LaunchError: Error, Sendable, CustomStringConvertible {
    case badSize(Int)
    case program(SpawnError)
    case node(String, TransportError)
    case rendezvous(TransportError)
    case names(String)
    case standardInput(rank: Int, size: Int)

    public var description: String {
        switch self {
        case .badSize(let n): return "-n must be at least 1 (got \(n))"
        case .program(let e): return e.description
        case .node(let a, let e): return "cannot use node \(a): \(e)"
        case .rendezvous(let e): return "cannot open the job's rendezvous endpoint: \(e)"
        case .names(let why): return "cannot get global PIDs from the name service: \(why)"
        case .standardInput(let r, let size):
            return "--stdin \(r) is not a rank of a job of \(size) process\(size == 1 ? "" : "es"): use 0...\(size - 1), all or none"
        }
    }
}

/// Where a job's output goes: `plexus run` prints lines prefixed by rank.
public protocol OutputSink: Sendable {
    func line(rank: Int, stream: UInt8, _ text: String)
    func note(_ text: String)
}

/// Prints "[rank] line" to the launcher's stdout/stderr, and notes to stderr.
public struct PrefixedOutput: OutputSink {
    public init() {}
    public func line(rank: Int, stream: UInt8, _ text: String) {
        writeAll(stream == 2 ? 2 : 1, "[\(rank)] \(text)\n")
    }
    public func note(_ text: String) { writeAll(2, "plexus: \(text)\n") }
}

/// `plexus run`: starts a job, relays its output, watches every process and
/// stops the whole job as soon as one process fails or the user interrupts.
///
/// All decisions are made on one thread (the event loop in `run`): node
/// readers, the rendezvous endpoint and signal handlers only post events.
public final class Launcher: @unchecked Sendable {
    public let spec: JobSpec
    public let job: String
    private let output: OutputSink
    private let log: Logger
    private let trampoline: String
    private let events = Mailbox<Event>(capacity: 65_536)

    enum Event: Sendable {
        case control(node: Int, ControlMessage)
        case nodeLost(node: Int, String)
        case registered(rank: Int, pid: ProcessID, address: String, Connection)
        case report(rank: Int, [UInt8])
        /// A registered process's connection to the launcher ended.
        case processClosed(rank: Int)
        case peerLost(rank: Int, lost: Int)
        /// The process called finalize.
        case finalized(rank: Int)
        case status(ProcessStatus)
        case interrupt(Int32)
    }

    public init(spec: JobSpec, output: OutputSink = PrefixedOutput(), logger: Logger, trampoline: String) {
        self.spec = spec
        self.output = output
        self.log = logger
        self.trampoline = trampoline
        var rng = SystemRandomNumberGenerator()
        job = "job-" + String(rng.next() as UInt32, radix: 16)
    }

    /// Stops the job as if the user pressed Ctrl-C (`signal` decides the exit status).
    public func interrupt(signal: Int32) { events.put(.interrupt(signal)) }

    /// Runs the job to the end. Throws only for problems found before any
    /// process started; everything later is in the result.
    public func run() throws(LaunchError) -> JobResult {
        let started = Date()
        let n = spec.processes
        guard n >= 1 else { throw .badSize(n) }
        if case .rank(let r) = spec.standardInput, r >= n { throw .standardInput(rank: r, size: n) }
        // Check the program here as well as on the nodes, so that the common
        // local mistake is reported before anything starts.
        if spec.nodes.isEmpty {
            do {
                _ = try resolveProgram(spec.program, path: ProcessInfo.processInfo.environment["PATH"],
                                       directory: spec.workingDirectory)
            } catch { throw .program(error) }
        }

        // Nodes: the given daemons, or one embedded on loopback.
        var embedded: NodeDaemon?
        var nodeAddresses = spec.nodes
        if nodeAddresses.isEmpty {
            do {
                let d = try NodeDaemon(listen: SocketAddress(host: "127.0.0.1", port: 0), trampoline: trampoline, logger: log)
                embedded = d
                nodeAddresses = [d.address]
            } catch { throw .node("embedded", error) }
        }
        defer { embedded?.stop() }
        var nodes: [Connection] = []
        var names = spec.names
        for (i, a) in nodeAddresses.enumerated() {
            do throws(TransportError) {
                let c = try Connection.dial(a, hello: Hello(job: controlJob, sender: 0, role: "launcher"))
                nodes.append(c)
                if names.isEmpty && embedded == nil {
                    // The node says which name service its cluster uses.
                    try c.send(ControlMessage.nodeInfoRequest.frame())
                    guard let f = try c.receive(timeoutMillis: 3000), case .nodeInfo(let ns)? = try? ControlMessage(frame: f) else {
                        throw TransportError.protocolViolation("\(a) did not answer with its node information")
                    }
                    names = ns
                }
                c.startReader(
                    name: "plexus-launcher-node \(i)",
                    onFrame: { [events] f in
                        if let m = try? ControlMessage(frame: f) { events.put(.control(node: i, m)) }
                        else { events.put(.nodeLost(node: i, "sent a malformed frame")) }
                    },
                    onClose: { [events] reason in events.put(.nodeLost(node: i, reason)) })
            } catch {
                for c in nodes { c.shutdown() }
                throw .node(a.description, error)
            }
        }
        defer { for c in nodes { c.shutdown() } }

        // Rendezvous: processes register their transport address here and get
        // the job's directory once all have.
        let rendezvousHost = embedded != nil ? "127.0.0.1" : "0.0.0.0"
        let rendezvous: Listener
        do {
            rendezvous = try Listener(
                address: SocketAddress(host: rendezvousHost, port: 0),
                identity: Hello(job: job, sender: 0, role: "launcher"),
                admit: { [job] in $0.refusal(expectedJob: job) },
                onConnection: { [events] c in
                    let registeredRank = Locked<Int?>(nil)
                    c.startReader(
                        name: "plexus-launcher-process",
                        onFrame: { f in
                            switch try? ControlMessage(frame: f) {
                            case .register(let rank, let pid, let address)?:
                                registeredRank.withLock { $0 = rank }
                                events.put(.registered(rank: rank, pid: pid, address: address, c))
                            case .processReport(let rank, let json)?:
                                events.put(.report(rank: rank, json))
                            case .peerLost(let rank, let lost, _)?:
                                events.put(.peerLost(rank: rank, lost: lost))
                            case .finalized(let rank)?:
                                events.put(.finalized(rank: rank))
                            case .status(let st)?:
                                events.put(.status(st))
                            default: break
                            }
                        },
                        onClose: { _ in
                            if let rank = registeredRank.value { events.put(.processClosed(rank: rank)) }
                        })
                })
        } catch { throw .rendezvous(error) }
        defer { rendezvous.close() }
        let launcherHost = embedded != nil ? "127.0.0.1" : localAddress(towards: nodeAddresses[0])

        // Global PIDs come from the name service when one is configured;
        // otherwise they are job-scoped (a random base plus the rank).
        var rng = SystemRandomNumberGenerator()
        let pidBase = ProcessID(rng.next() as UInt32 | 1) << 16
        var globalPIDs = (0..<n).map { pidBase + ProcessID($0) }
        let registry: ProcessRegistry?
        if names.isEmpty {
            registry = nil
        } else {
            let r: ProcessRegistry
            do { r = try ProcessRegistry(names: names.joined(separator: ","), ttlMillis: spec.leaseTTLMillis, logger: log) } catch {
                throw .names("\(error)")
            }
            do {
                for rank in 0..<n {
                    globalPIDs[rank] = try r.allocate(node: nodeAddresses[rank % nodes.count].description)
                }
            } catch {
                r.abandon()
                throw .names("\(error)")
            }
            registry = r
        }
        defer { registry?.finish() }
        var placement: [Int] = []
        // The host each rank runs on, and its index among the ranks on that
        // host (several node daemons may share one): processes bind to
        // CPUs by it (PLEXUS_BIND).
        let hostOf = (0..<n).map { rank in
            let node = rank % nodes.count
            return nodeAddresses[node].host == "0.0.0.0" ? launcherHost : nodeAddresses[node].host
        }
        var onHost: [String: Int] = [:]
        let localIndex = (0..<n).map { rank in
            defer { onHost[hostOf[rank], default: 0] += 1 }
            return onHost[hostOf[rank], default: 0]
        }
        let readers = Set(spec.standardInput.ranks(size: n))
        for rank in 0..<n {
            let node = rank % nodes.count
            placement.append(node)
            var env = spec.inherited.merging(spec.environment) { $1 }
            env["PLEXUS_RANK"] = "\(rank)"
            env["PLEXUS_SIZE"] = "\(n)"
            env["PLEXUS_JOB"] = job
            env["PLEXUS_PID"] = "\(globalPIDs[rank])"
            if !names.isEmpty { env["PLEXUS_NAMES"] = names.joined(separator: ",") }
            env["PLEXUS_LAUNCHER"] = "\(launcherHost):\(rendezvous.address.port)"
            env["PLEXUS_NODE"] = hostOf[rank]
            env["PLEXUS_LOCAL_RANK"] = "\(localIndex[rank])"
            env["PLEXUS_LOCAL_SIZE"] = "\(onHost[hostOf[rank]]!)"
            // A short backtrace of a crashing rank, unless the user chose.
            env["SWIFT_BACKTRACE"] = CrashReports.setting(job: spec.environment, launcher: ProcessInfo.processInfo.environment)
            let req = SpawnRequest(job: job, rank: rank, size: n, pid: globalPIDs[rank], program: spec.program,
                                   arguments: spec.arguments, environment: env, workingDirectory: spec.workingDirectory,
                                   standardInput: readers.contains(rank))
            do { try nodes[node].send(ControlMessage.spawn(req).frame()) } catch {
                events.put(.nodeLost(node: node, error.description))
            }
        }
        // Standard input goes out on the nodes' connections after the spawn
        // requests, so each node has started the process before its input.
        let forwarder = readers.isEmpty ? nil
            : InputForwarder(source: 0, targets: Dictionary(uniqueKeysWithValues: readers.map { ($0, nodes[placement[$0]]) }))
        forwarder?.start()
        defer { forwarder?.stop() }

        // The event loop.
        var exited: [Int: ExitStatus] = [:]
        var osPIDs: [Int: Int32] = [:]
        var registered: [Int: (ProcessID, String, Connection)] = [:]
        var reports: [Int: [UInt8]] = [:]
        var closed = Set<Int>()
        var failures: [String] = []
        var status: Int32 = 0
        var stopping = false
        var stopDeadline = Date.distantFuture
        var partial: [Int: [UInt8]] = [:]
        var lostNodes = Set<Int>()
        // Failed ranks in the order their exits arrived, and which rank each
        // reporter lost: a crash makes its peers fail too, often sooner, so
        // the report is decided once every exit is in.
        var rankFailures: [(rank: Int, status: ExitStatus)] = []
        var lostBy: [Int: Int] = [:]
        var lostOf: [Int: Int] = [:]
        var stoppedByRank = false
        // Ranks that called finalize: their exit is expected, and they are
        // left to exit when another rank fails. A registered rank that exits
        // without it (even with status 0) fails the job: its peers can no
        // longer reach it. Its exit is judged once its control connection
        // has ended too, so that a finalize sent just before is not missed.
        var finalized = Set<Int>()
        var exitedUnjudged = Set<Int>()
        var unfinalized = Set<Int>()
        // Ranks the launcher signalled (so a SIGTERM/SIGKILL exit is its doing).
        var killedByLauncher = Set<Int>()
        /// When the last kill went out: the nodes send SIGTERM, and SIGKILL
        /// only after the grace period.
        var killSentAt: Date?
        // Stopping asks for statistics first (bounded), then kills.
        var killAt: Date?
        var awaitingReports = Set<Int>()
        var killedAll = false
        // The stuck-job report and the time limit.
        var timedOut = false
        let timeoutAt = spec.timeoutSeconds.map { started.addingTimeInterval($0) }
        let stallSeconds = spec.stallReportSeconds
        let pollInterval = max(0.2, min(stallSeconds / 3, 2))
        var nextPoll = stallSeconds > 0 ? started.addingTimeInterval(pollInterval) : Date.distantFuture
        var statuses: [Int: (ProcessStatus, Date)] = [:]
        var lastStall: [String] = []
        /// An answer older than this is not current: that rank does not answer.
        let staleAfter = 2 * pollInterval + 0.5

        func whereIs(_ rank: Int) -> String {
            let pid = osPIDs[rank].map { "pid \($0) " } ?? ""
            return "rank \(rank) (\(pid)on node \(nodeAddresses[placement[rank]]))"
        }
        func sendKill(sparing spare: Set<Int>) {
            for (i, c) in nodes.enumerated() where !lostNodes.contains(i) {
                try? c.send(ControlMessage.killJob(graceMillis: spec.graceMillis, except: spare.sorted()).frame())
            }
            for r in 0..<n where exited[r] == nil && !spare.contains(r) { killedByLauncher.insert(r) }
            killSentAt = Date()
            killedAll = spare.isEmpty
            // Spared ranks are waited for without a limit (Ctrl-C or
            // --timeout stops them too).
            // Nodes leave a rank writing a crash report time to finish it.
            stopDeadline = spare.isEmpty ? Date().addingTimeInterval(Double(spec.graceMillis + CrashReports.allowanceMillis) / 1000 + 3) : .distantFuture
        }
        /// The ranks left to exit by themselves when the job is stopped.
        func spared() -> Set<Int> { finalized.filter { exited[$0] == nil } }
        /// `rank` sent its statistics or can no longer: once the last rank
        /// the stop waits for is done, the kill goes out.
        func noLongerAwaited(_ rank: Int) {
            if awaitingReports.remove(rank) != nil, awaitingReports.isEmpty, killAt != nil {
                killAt = nil
                sendKill(sparing: spared())
            }
        }
        func stop(_ why: String?, status s: Int32, all: Bool = false) {
            if let why { failures.append(why); output.note(why) }
            if stopping {
                // A second reason (Ctrl-C, --timeout) while finalized ranks
                // were left to exit: now they go too.
                if all && !killedAll { killAt = nil; sendKill(sparing: []) }
                return
            }
            stopping = true
            status = s
            let live = (0..<n).filter { exited[$0] == nil }
            let spare = all ? [] : spared()
            if !live.isEmpty {
                let stopped = live.filter { !spare.contains($0) }
                var note = "stopping the job: \(live.count) process(es) still running"
                if !spare.isEmpty { note += "; \(spare.sorted().map { "rank \($0)" }.joined(separator: ", ")) called finalize and \(spare.count == 1 ? "is" : "are") left to exit" }
                output.note(note)
                // Statistics first, from the processes about to be stopped
                // that can still answer (bounded: 1 s).
                awaitingReports = spec.wantsReports ? Set(stopped.filter { registered[$0] != nil && reports[$0] == nil && !closed.contains($0) }) : []
                if registered.count < n { awaitingReports = [] }   // nobody has the directory (and reads for it) yet
                for r in awaitingReports { try? registered[r]?.2.send(ControlMessage.reportRequest.frame()) }
                if awaitingReports.isEmpty { sendKill(sparing: spare) } else { killAt = Date().addingTimeInterval(1) }
            }
            if killAt != nil && spare.isEmpty { stopDeadline = Date().addingTimeInterval(Double(spec.graceMillis) / 1000 + 4) }
        }
        func flushLines(_ key: Int, final: Bool) {
            guard var buf = partial[key] else { return }
            while let nl = buf.firstIndex(of: 10) {
                output.line(rank: key >> 2, stream: UInt8(key & 3), String(decoding: buf[..<nl], as: UTF8.self))
                buf.removeSubrange(...nl)
            }
            if final && !buf.isEmpty {
                output.line(rank: key >> 2, stream: UInt8(key & 3), String(decoding: buf, as: UTF8.self))
                buf.removeAll()
            }
            partial[key] = buf
        }
        /// A rank's exit with status 0 is judged once its connection ended.
        func judgeExit(_ rank: Int) {
            guard exitedUnjudged.contains(rank), closed.contains(rank) || registered[rank] == nil else { return }
            exitedUnjudged.remove(rank)
            guard registered[rank] != nil, !finalized.contains(rank) else { return }
            unfinalized.insert(rank)
            rankFailures.append((rank, .exited(0)))
            if !stopping {
                stoppedByRank = true
                stop(nil, status: 1)
            }
        }
        /// What every rank waits for, and a signature of it without the
        /// durations (the same stall is reported once); nil when no rank
        /// has waited `stallSeconds` yet (unless `force`).
        func stallLines(force: Bool) -> (lines: [String], signature: [String])? {
            let live = (0..<n).filter { exited[$0] == nil }
            let current = Date().addingTimeInterval(-staleAfter)
            let fresh = statuses.filter { exited[$0.key] == nil && $0.value.1 >= current }
            let longest = fresh.values.flatMap { $0.0.waits.map(\.millis) }.max() ?? 0
            guard force || Double(longest) / 1000 >= stallSeconds else { return nil }
            guard !fresh.isEmpty else { return nil }
            var lines: [String] = []
            let signature = (0..<n).map { r in
                exited[r] != nil ? "\(r) exited" : fresh[r].map { "\(r) " + $0.0.waits.map { "\($0.target)" }.sorted().joined(separator: ",") } ?? "\(r) silent"
            }
            let waitingAt: [UInt64: Set<Int>] = fresh.values.reduce(into: [:]) { acc, s in
                for w in s.0.waits { if case .barrier(let e) = w.target { acc[e, default: []].insert(s.0.rank) } }
            }
            var holder: [Int: Int] = [:]
            for (_, (st, _)) in statuses {
                for m in st.managedLocks { holder[m.lock] = m.holder }
            }
            for (_, (st, _)) in fresh { for l in st.heldLocks { holder[l] = st.rank } }
            for r in 0..<n {
                if let st = exited[r] {
                    lines.append("rank \(r): has \(finalized.contains(r) ? "called finalize and " : "")\(st)")
                    continue
                }
                guard let (st, _) = fresh[r] else {
                    lines.append("rank \(r): \(registered[r] == nil ? "has not joined the job (not in Plexus.join)" : "did not answer (stopped, or its threads cannot run)")")
                    continue
                }
                var parts: [String] = []
                for w in st.waits {
                    let secs = String(format: "%.1f s", Double(w.millis) / 1000)
                    switch w.target {
                    case .barrier(let e):
                        let missing = live.filter { !(waitingAt[e]?.contains($0) ?? false) } + (0..<n).filter { exited[$0] != nil }
                        parts.append("waits at barrier #\(e) for \(secs); not arrived: \(missing.isEmpty ? "none" : missing.sorted().map { "rank \($0)" }.joined(separator: ", "))")
                    case .lock(let l):
                        let h = holder[l].map { h in "held by rank \(h)\(exited[h] != nil ? " (which has \(finalized.contains(h) ? "finalized and " : "")exited)" : "")" } ?? "holder unknown"
                        parts.append("waits for lock \(l) for \(secs), \(h)")
                    case .page(let p):
                        parts.append("waits for page \(p) for \(secs), requested from rank \(p % n) (its manager)")
                    }
                }
                if !st.heldLocks.isEmpty { parts.append("holds lock\(st.heldLocks.count == 1 ? "" : "s") \(st.heldLocks.map(String.init).joined(separator: ", "))") }
                lines.append("rank \(r): " + (parts.isEmpty ? "is not waiting in Plexus (computing, or blocked outside Plexus)" : parts.joined(separator: "; ")))
            }
            return (lines, signature)
        }
        func printStall(_ lines: [String], header: String) {
            output.note(header)
            for l in lines { output.note("  " + l) }
        }

        while exited.count < n {
            var deadline = stopping ? stopDeadline : Date().addingTimeInterval(3600)
            if let k = killAt { deadline = min(deadline, k) }
            if !killedAll, !timedOut, let t = timeoutAt { deadline = min(deadline, t) }
            if !stopping { deadline = min(deadline, nextPoll) }
            let ev = events.take(timeout: min(3600, max(0, deadline.timeIntervalSinceNow)))
            let now = Date()
            if let k = killAt, now >= k {
                killAt = nil
                sendKill(sparing: killedAll ? [] : spared())
            }
            if !killedAll, !timedOut, let t = timeoutAt, now >= t {
                timedOut = true
                if !stopping, let stall = stallLines(force: true) { printStall(stall.lines, header: "what each rank waited for when the time ran out:") }
                stop("the job did not finish within --timeout \(spec.timeoutSeconds.map { String(format: "%g", $0) } ?? "") s; stopping it", status: 124, all: true)
            }
            if !stopping, now >= nextPoll {
                if let stall = stallLines(force: false), stall.signature != lastStall {
                    lastStall = stall.signature
                    printStall(stall.lines, header: "the job has made no progress for \(String(format: "%g", stallSeconds)) s (--stall-report); what each rank waits for:")
                }
                // Only once every process has its directory: until then a
                // process reads its connection for the directory alone.
                for (r, v) in registered where registered.count == n && exited[r] == nil && !closed.contains(r) {
                    try? v.2.send(ControlMessage.statusRequest.frame())
                }
                nextPoll = now.addingTimeInterval(pollInterval)
            }
            guard let ev else {
                if stopping, now >= stopDeadline {
                    let missing = (0..<n).filter { exited[$0] == nil }
                    output.note("gave up waiting for \(missing.map(whereIs).joined(separator: ", ")) to report its exit")
                    failures.append("no exit report from ranks \(missing)")
                    break
                }
                continue
            }
            switch ev {
            case .control(_, .output(let rank, let stream, let bytes)):
                let key = rank << 2 | Int(stream & 3)
                partial[key, default: []].append(contentsOf: bytes)
                if partial[key]!.count > 1 << 20 { flushLines(key, final: true) } else { flushLines(key, final: false) }
            case .control(_, .spawned(let rank, let pid)):
                osPIDs[rank] = pid
                registry?.started(pid: globalPIDs[rank])
            case .control(_, .inputCredit(let rank, let bytes)):
                forwarder?.credited(rank: rank, bytes: bytes)
            case .control(_, .spawnFailed(let rank, let reason)):
                forwarder?.gone(rank: rank)
                exited[rank] = .exited(127)
                stop("\(whereIs(rank)) could not start: \(reason)", status: 127)
            case .control(_, .exited(let rank, let pid, let st)):
                forwarder?.gone(rank: rank)
                osPIDs[rank] = pid
                exited[rank] = st
                statuses[rank] = nil
                registry?.exited(pid: globalPIDs[rank], status: st.shellStatus)
                flushLines(rank << 2 | 1, final: true)
                flushLines(rank << 2 | 2, final: true)
                if st == .signaled(SIGKILL), let sent = killSentAt, Date().timeIntervalSince(sent) * 1000 < Double(spec.graceMillis) {
                    // Killed before the launcher's SIGKILL could be due: by
                    // someone else (it may have been dead, unreaped, when the
                    // stop began).
                    killedByLauncher.remove(rank)
                }
                if st.succeeded {
                    exitedUnjudged.insert(rank)
                    judgeExit(rank)
                } else if !stopping {
                    rankFailures.append((rank, st))
                    stoppedByRank = true
                    stop(nil, status: st.shellStatus)
                } else if lostBy[rank] != nil || !killedByLauncher.contains(rank)
                            || !(st == .signaled(SIGTERM) || st == .signaled(SIGKILL)) {
                    // Not the job's own SIGTERM/SIGKILL: a failure of its own.
                    rankFailures.append((rank, st))
                }
            case .control(let node, let other):
                log.warning("unexpected control message from node \(node): \(other.kind)")
            case .nodeLost(let node, let reason):
                if lostNodes.insert(node).inserted {
                    let ranks = (0..<n).filter { placement[$0] == node && exited[$0] == nil }
                    for r in ranks {
                        forwarder?.gone(rank: r)
                        exited[r] = .signaled(SIGKILL)
                        registry?.lost(pid: globalPIDs[r])
                    }
                    if !ranks.isEmpty || !stopping {
                        stop("lost node \(nodeAddresses[node]) (\(reason)); its ranks \(ranks) are gone", status: 1, all: true)
                    }
                }
            case .registered(let rank, let pid, let address, let c):
                guard rank < n else { continue }
                registered[rank] = (pid, address, c)
                registry?.reachable(pid: pid, node: nodeAddresses[placement[rank]].description, address: address)
                if registered.count == n {
                    let dir = registered.map { DirectoryEntry(rank: $0.key, pid: $0.value.0, address: $0.value.1) }
                        .sorted { $0.rank < $1.rank }
                    for (_, v) in registered { try? v.2.send(ControlMessage.directory(dir).frame()) }
                }
            case .report(let rank, let json):
                reports[rank] = json
                noLongerAwaited(rank)
            case .processClosed(let rank):
                closed.insert(rank)
                statuses[rank] = nil
                noLongerAwaited(rank)
                judgeExit(rank)
            case .peerLost(let rank, let lost):
                if lostBy[lost] == nil { lostBy[lost] = rank }
                if lostOf[rank] == nil { lostOf[rank] = lost }
            case .finalized(let rank):
                if rank < n { finalized.insert(rank) }
            case .status(let st):
                if st.rank < n, exited[st.rank] == nil { statuses[st.rank] = (st, Date()) }
            case .interrupt(let sig):
                stop("interrupted by \(signalName(sig))", status: 128 + sig, all: true)
            }
        }
        // A process's report travels on its own connection, which can be
        // read after its node has reported the exit: wait briefly until each
        // registered process's connection has ended (it does when the process
        // does), so that no report is lost.
        let drainDeadline = Date().addingTimeInterval(2)
        while registered.keys.contains(where: { !closed.contains($0) }),
              let ev = events.take(timeout: max(0, drainDeadline.timeIntervalSinceNow)) {
            switch ev {
            case .report(let rank, let json): reports[rank] = json
            case .processClosed(let rank): closed.insert(rank)
            case .finalized(let rank): if rank < n { finalized.insert(rank) }
            default: break
            }
        }
        // Exits with status 0 not judged yet: the connection did not end in
        // time, so judge on what arrived.
        for r in exitedUnjudged.sorted() {
            closed.insert(r)
            judgeExit(r)
        }
        if stoppedByRank, !rankFailures.isEmpty {
            // The first cause, in this order: a rank that crashed (a signal
            // the launcher never sends); a rank that exited without calling
            // finalize; a rank others lost that lost nobody itself; a rank
            // that lost nobody; the first failure to arrive. Exit order alone
            // misleads: a crashing rank's backtrace takes longer than its
            // peers' "rank is gone" exits.
            let crashSignals: Set<Int32> = [SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGTRAP, SIGSYS]
            func crashed(_ st: ExitStatus) -> Bool {
                if case .signaled(let sig) = st { return crashSignals.contains(sig) }
                return false
            }
            let primary = rankFailures.first { crashed($0.status) }
                ?? rankFailures.first { unfinalized.contains($0.rank) }
                ?? rankFailures.first { lostBy[$0.rank] != nil && lostOf[$0.rank] == nil }
                ?? rankFailures.first { lostOf[$0.rank] == nil }
                ?? rankFailures[0]
            func stoppedAfterLoss(_ f: (rank: Int, status: ExitStatus)) -> Bool {
                killedByLauncher.contains(f.rank) && lostBy[f.rank] != nil && (f.status == .signaled(SIGTERM) || f.status == .signaled(SIGKILL))
            }
            func fate(_ f: (rank: Int, status: ExitStatus)) -> String {
                if stoppedAfterLoss(f) {
                    return "\(whereIs(f.rank)): rank \(lostBy[f.rank]!) lost its connection to it while it was still running "
                        + "(a broken link, or it closed its sockets), then the launcher stopped it (\(signalName(f.status.shellStatus - 128)))"
                }
                if unfinalized.contains(f.rank) {
                    return "\(whereIs(f.rank)) exited with status 0 without calling finalize: its peers could no longer reach it. "
                        + "Every rank that joined must call finalize() before it exits"
                }
                return "\(whereIs(f.rank)) \(f.status)"
            }
            let line = fate(primary) + (lostOf[primary.rank].map { " after losing rank \($0)" } ?? "")
            failures.insert(line, at: 0)
            output.note(line)
            for f in rankFailures where f.rank != primary.rank {
                let why = lostOf[f.rank].map { " after losing rank \($0)" } ?? ""
                let other = "\(fate(f))\(why)"
                failures.append(other)
                output.note(other)
            }
            // A rank the launcher stopped did not choose its status: the
            // job's is then that of the first failure of a rank's own.
            if unfinalized.contains(primary.rank) {
                status = 1
            } else if stoppedAfterLoss(primary) {
                status = rankFailures.first { !stoppedAfterLoss($0) && !unfinalized.contains($0.rank) }?.status.shellStatus ?? 1
            } else {
                status = primary.status.shellStatus
            }
        }
        if status != 0 {
            // Every other rank's fate, so that nothing is left unexplained.
            let described = Set(rankFailures.map(\.rank))
            for r in 0..<n where !described.contains(r) {
                guard let st = exited[r] else { continue }
                let line: String
                if killedByLauncher.contains(r) && (st == .signaled(SIGTERM) || st == .signaled(SIGKILL)) {
                    line = "\(whereIs(r)) was stopped by the launcher (\(signalName(st.shellStatus - 128)))"
                } else if finalized.contains(r) {
                    line = "\(whereIs(r)) called finalize and \(st)"
                } else {
                    line = "\(whereIs(r)) \(st)"
                }
                output.note(line)
            }
        }
        for (_, v) in registered { v.2.shutdown() }
        registry?.finish()
        return JobResult(status: status, failures: failures, reports: reports, seconds: Date().timeIntervalSince(started))
    }
}

/// Keeps the name service's process table in step with a job: each process
/// gets a global PID, is marked running once it started, reachable once it
/// registered its address, exited with its status or lost.
///
/// All the job's processes are bound to one lease, which the launcher keeps
/// alive while it supervises the job: one keep-alive per TTL/3 whatever the
/// job's size. If the launcher dies, the lease ends and the service marks
/// every process of the job that had not ended `lost`. A process the launcher
/// sees end is marked exited or lost directly, at once.
///
/// Updates run on one serial queue so that a slow or unavailable service
/// never stalls the launcher's event loop; a failed update is logged, not fatal.
final class ProcessRegistry: Sendable {
    let client: any NameServiceBackend
    let keeper: LeaseKeeper
    let ttlMillis: UInt64
    /// The job's lease, granted with the first PID.
    private let lease = Locked<LeaseID?>(nil)
    private let queue = DispatchQueue(label: "plexus-launcher-names")

    /// `names`: a name-service spec (see `NameServiceSpec`).
    init(names: String, ttlMillis: UInt64, logger: Logger) throws(NameServiceError) {
        client = try makeNameServiceBackend(names, timeoutMillis: 3000)
        keeper = LeaseKeeper(client: try makeNameServiceBackend(names, timeoutMillis: Int(ttlMillis)),
                             logger: logger, name: "plexus-launcher-leases")
        self.ttlMillis = ttlMillis
    }

    /// Held while the job's lease is looked up or granted, so that callers
    /// on several threads share one lease instead of each granting one.
    private let granting = NSLock()

    /// A fresh global PID for a process about to start on `node`, bound to the job's lease.
    func allocate(node: String) throws(NameServiceError) -> UInt64 {
        return try client.allocatePID(node: node, address: "", parent: nil, lease: try jobLease()).rawValue
    }

    /// The job's lease, granted (and kept alive) on first use.
    private func jobLease() throws(NameServiceError) -> LeaseID {
        granting.lock()
        defer { granting.unlock() }
        if let held = lease.value { return held }
        let granted = try client.grantLease(ttlMillis: ttlMillis)
        lease.withLock { $0 = granted }
        keeper.hold(granted, ttlMillis: ttlMillis)
        return granted
    }

    /// The process started: it is running, whether or not it uses the runtime.
    func started(pid: UInt64) {
        queue.async { [client] in
            do { _ = try client.setProcessState(GlobalPID(pid), to: .running) } catch {
                writeAll(2, "plexus: could not mark pid \(pid) running in the name service: \(error)\n")
            }
        }
    }

    /// The process registered the address its peers reach it at.
    func reachable(pid: UInt64, node: String, address: String) {
        queue.async { [client] in
            do { _ = try client.rebindProcess(GlobalPID(pid), node: node, address: address) } catch {
                writeAll(2, "plexus: could not record the address of pid \(pid) in the name service: \(error)\n")
            }
        }
    }

    func exited(pid: UInt64, status: Int32) {
        queue.async { [client] in
            do { try client.reportExit(pid: pid, status: status) } catch {
                writeAll(2, "plexus: could not record the exit of pid \(pid) in the name service: \(error)\n")
            }
        }
    }

    /// The process is gone without an exit status (its node was lost).
    func lost(pid: UInt64) {
        queue.async { [client] in
            do throws(NameServiceError) {
                _ = try client.setProcessState(GlobalPID(pid), to: .lost)
            } catch {
                if case .rejected(.invalidTransition) = error { return } // it had ended already
                writeAll(2, "plexus: could not mark pid \(pid) lost in the name service (it will be when the job's "
                         + "lease is ended or expires): \(error)\n")
            }
        }
    }

    /// The job never started: end the lease now, which marks every process
    /// allocated so far lost.
    func abandon() {
        finish()
    }

    /// Waits for queued updates, so `plexus ps` right after the job shows its
    /// end, then ends the job's lease: a process whose end the launcher did
    /// not see is marked lost now, not after the TTL.
    func finish() {
        queue.sync {}
        keeper.stop()
        guard let jobLease = lease.withLock({ let l = $0; $0 = nil; return l }) else { return }
        do { try client.revokeLease(jobLease) } catch {
            writeAll(2, "plexus: could not end the job's lease \(jobLease) (it ends by itself within \(ttlMillis) ms): \(error)\n")
        }
    }
}

/// The local IP address a connection to `node` would leave from: the address
/// processes on that node can reach the launcher at.
func localAddress(towards node: SocketAddress) -> String {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { return "127.0.0.1" }
    defer { close(fd) }
    var sa = sockaddr_in()
    sa.sin_family = sa_family_t(AF_INET)
    sa.sin_port = node.port.bigEndian
    inet_pton(AF_INET, node.host, &sa.sin_addr)
    let r = withUnsafePointer(to: &sa) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard r == 0 else { return "127.0.0.1" }
    var local = sockaddr_in()
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &local) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    var buf = [CChar](repeating: 0, count: 32)
    inet_ntop(AF_INET, &local.sin_addr, &buf, 32)
    return String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Writes a whole string to a file descriptor (1 or 2), unbuffered, so lines
/// from the event loop and from notes never interleave mid-line.
public func writeAll(_ fd: Int32, _ text: String) {
    var bytes = Array(text.utf8)
    var done = 0
    while done < bytes.count {
        let n = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { return }
        done += n
    }
}
