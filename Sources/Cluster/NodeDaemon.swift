#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Logging
import Transport
import Wire

/// The name every launcher, node and control client uses in its hello on
/// control connections (job processes use their job's own name).
public let controlJob = "plexus-control"

/// `plexus node`: a daemon per machine that starts, watches and stops job
/// processes on behalf of launchers.
///
/// Each launcher connection is a session. Processes it starts belong to it:
/// when the session ends (the job finished, the launcher died, or the link
/// broke) every process still alive is killed with its whole process group,
/// so no job process outlives its job. Processes are started through the
/// `plexus _exec` trampoline (`trampoline` is the path of the plexus
/// executable), which asks the kernel to kill the process if the daemon
/// itself dies (PR_SET_PDEATHSIG), then changes directory and execs.
public final class NodeDaemon: @unchecked Sendable {
    public var address: SocketAddress { listener.address }
    /// The address other nodes and launchers use to reach this node.
    public let advertised: String
    private var listener: Listener!
    private let trampoline: String
    private let log: Logger
    private let members = Locked<Set<String>>([])
    private let sessions = Locked<[ObjectIdentifier: Session]>([:])
    private let nameService = Locked<[String]>([])

    /// The name service of this node's cluster, told to every launcher that
    /// asks, so `plexus run --nodes` finds it without `--names`.
    public var names: [String] {
        get { nameService.value }
        set { nameService.withLock { $0 = newValue } }
    }

    private let guardian: GroupGuard?
    /// One cgroup per job process, where this node may make them.
    private let cgroups: ProcessCgroups?

    public init(listen: SocketAddress, trampoline: String, logger: Logger) throws(TransportError) {
        self.trampoline = trampoline
        self.log = logger
        do { guardian = try GroupGuard(trampoline: trampoline) } catch {
            logger.warning("no process-group guard (\(error)): if this node is SIGKILLed, what its job processes started may survive")
            guardian = nil
        }
        switch ProcessCgroups.make() {
        case .success(let c):
            cgroups = c
            // If this daemon dies, its guard removes the directory.
            guardian?.add(cgroup: c.root)
        case .failure(let why):
            logger.notice("no per-process cgroups (\(why)): a job process that leaves its process group (setsid) can outlive its job")
            cgroups = nil
        }
        let box = Locked<NodeDaemon?>(nil)
        let identity = Hello(job: controlJob, sender: 0, role: "node")
        let l = try Listener(
            address: listen, identity: identity,
            admit: { $0.refusal(expectedJob: controlJob) },
            onConnection: { c in box.value?.serve(c) })
        listener = l
        advertised = l.address.description
        members.withLock { _ = $0.insert(l.address.description) }
        box.withLock { $0 = self }
    }

    /// Joins the cluster that `other` belongs to; returns the members it knows.
    @discardableResult
    public func join(_ other: SocketAddress) throws(TransportError) -> [String] {
        let c = try Connection.dial(other, hello: Hello(job: controlJob, sender: 0, role: "node"))
        defer { c.shutdown() }
        try c.send(ControlMessage.nodeJoin(address: advertised).frame())
        guard let f = try c.receive(), case .nodeMembers(let ms)? = try? ControlMessage(frame: f) else {
            throw .protocolViolation("\(other) did not answer the join with its members")
        }
        members.withLock { $0.formUnion(ms) }
        log.info("joined cluster via \(other)", metadata: ["members": "\(ms.sorted())"])
        return ms
    }

    public var knownMembers: [String] { members.value.sorted() }

    /// Stops accepting and kills every process of every session.
    public func stop() {
        listener.close()
        for s in sessions.withLock({ Array($0.values) }) { s.end(reason: "node stopping") }
        guardian?.close()
        cgroups?.removeAll()
    }

    private func serve(_ c: Connection) {
        let session = Session(connection: c, trampoline: trampoline, guardian: guardian, cgroups: cgroups, log: log)
        let key = ObjectIdentifier(session)
        sessions.withLock { $0[key] = session }
        // Spawning happens on this reader thread, which lives exactly as long
        // as the session: the parent-death signal of a child fires when the
        // thread that started it exits, which is when its session has ended.
        c.startReader(
            name: "plexus-node-session",
            onFrame: { [weak self] f in
                guard let self else { return }
                guard let msg = try? ControlMessage(frame: f) else {
                    self.log.warning("malformed control frame from \(c.remote); closing the session")
                    c.shutdown()
                    return
                }
                switch msg {
                case .nodeJoin(let a):
                    self.members.withLock { _ = $0.insert(a) }
                    try? c.send(ControlMessage.nodeMembers(self.knownMembers).frame())
                case .nodeInfoRequest:
                    try? c.send(ControlMessage.nodeInfo(names: self.names).frame())
                case .spawn(let req): session.spawn(req)
                case .killJob(let grace, let except): session.killAll(graceMillis: grace, except: Set(except))
                case .input(let rank, let bytes, let end):
                    if !session.input(rank: rank, bytes: bytes, end: end) {
                        self.log.warning("\(c.remote) sent more standard input for rank \(rank) than the window allows; closing the session")
                        c.shutdown()
                    }
                default:
                    self.log.warning("unexpected \(f.kind) from \(c.remote)")
                }
            },
            onClose: { [weak self] reason in
                session.end(reason: reason)
                self?.sessions.withLock { $0[key] = nil }
            })
    }
}

/// The processes one launcher connection started on this node.
final class Session: @unchecked Sendable {
    let connection: Connection
    let trampoline: String
    let guardian: GroupGuard?
    let cgroups: ProcessCgroups?
    let log: Logger
    private let children = Locked<[Int: ChildState]>([:])
    /// The standard input of each live process that reads it.
    private let feeders = Locked<[Int: InputFeeder]>([:])
    private let ended = AtomicFlag()

    struct ChildState: Sendable {
        var pid: pid_t
        var cgroup: String?
        var reaped = false
    }

    init(connection: Connection, trampoline: String, guardian: GroupGuard?, cgroups: ProcessCgroups?, log: Logger) {
        self.connection = connection
        self.trampoline = trampoline
        self.guardian = guardian
        self.cgroups = cgroups
        self.log = log
    }

    func spawn(_ req: SpawnRequest) {
        // The job's environment, plus this node's account variables (see `JobEnvironment`).
        var env = JobEnvironment.nodeBase(ProcessInfo.processInfo.environment)
        env.merge(req.environment) { _, new in new }
        let program: String
        do {
            program = try resolveProgram(req.program, path: env["PATH"], directory: req.workingDirectory)
        } catch {
            try? connection.send(ControlMessage.spawnFailed(rank: req.rank, reason: error.description).frame())
            return
        }
        let cgroup = cgroups?.create(label: "\(req.job)-rank\(req.rank)")
        let argv = [trampoline, "_exec", "--cwd", req.workingDirectory] + (cgroup.map { ["--cgroup", $0] } ?? [])
            + ["--", program] + req.arguments
        let child: Child
        do {
            child = try spawnChild(argv: argv, environment: env, standardInput: req.standardInput)
        } catch {
            if let cgroup { ProcessCgroups.kill(cgroup) }
            try? connection.send(ControlMessage.spawnFailed(rank: req.rank, reason: error.description).frame())
            return
        }
        children.withLock { $0[req.rank] = ChildState(pid: child.pid, cgroup: cgroup) }
        if child.stdin >= 0 {
            let rank = req.rank
            let feeder = InputFeeder(fd: child.stdin, rank: rank) { [connection] n in
                try? connection.send(ControlMessage.inputCredit(rank: rank, bytes: n).frame())
            }
            feeders.withLock { $0[rank] = feeder }
            if ended.isSet { feeder.stop() }
        }
        guardian?.add(child.pid, cgroup: cgroup)
        log.debug("started rank \(req.rank) of \(req.job) as pid \(child.pid)")
        try? connection.send(ControlMessage.spawned(rank: req.rank, osPID: child.pid).frame())
        if ended.isSet {
            kill(-child.pid, SIGKILL)
            if let cgroup { ProcessCgroups.signalKill(cgroup) }
        }
        let t = Thread { [self] in watch(rank: req.rank, child: child, cgroup: cgroup) }
        t.name = "plexus-watch \(req.rank)"
        t.start()
    }

    /// Forwards the child's output until its pipes close, then reports its exit.
    /// If the child has exited but something it started still holds the pipes,
    /// forwarding stops shortly after and the group is killed.
    private func watch(rank: Int, child: Child, cgroup: String?) {
        var fds = [pollfd(fd: child.stdout, events: Int16(POLLIN), revents: 0),
                   pollfd(fd: child.stderr, events: Int16(POLLIN), revents: 0)]
        var open = 2
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        var status: ExitStatus?
        var drainDeadline: Date?
        while open > 0 {
            let n = poll(&fds, 2, 50)
            if n > 0 {
                for i in 0..<2 where fds[i].fd >= 0 && fds[i].revents != 0 {
                    let r = buffer.withUnsafeMutableBytes { read(fds[i].fd, $0.baseAddress, $0.count) }
                    if r > 0 {
                        try? connection.send(ControlMessage.output(rank: rank, stream: UInt8(i + 1), bytes: Array(buffer[0..<r])).frame())
                    } else if r == 0 || (errno != EINTR && errno != EAGAIN) {
                        close(fds[i].fd)
                        fds[i].fd = -1
                        open -= 1
                    }
                }
            }
            if status == nil {
                var st: Int32 = 0
                if waitpid(child.pid, &st, WNOHANG) == child.pid {
                    status = exitStatus(fromWait: st)
                    drainDeadline = Date().addingTimeInterval(0.2)
                }
            } else if let d = drainDeadline, Date() > d {
                break
            }
        }
        for p in fds where p.fd >= 0 { close(p.fd) }
        feeders.withLock { $0.removeValue(forKey: rank) }?.stop()
        if status == nil {
            var st: Int32 = 0
            while waitpid(child.pid, &st, 0) < 0 && errno == EINTR {}
            status = exitStatus(fromWait: st)
        }
        // Whatever the process left behind in its group goes with it, and
        // with a cgroup also what left the group; the exit is reported once
        // they are gone.
        kill(-child.pid, SIGKILL)
        if let cgroup, !ProcessCgroups.kill(cgroup) {
            log.warning("processes started by rank \(rank) (pid \(child.pid)) were still in \(cgroup) 2 s after SIGKILL")
        }
        guardian?.remove(child.pid, cgroup: cgroup)
        children.withLock { $0[rank]?.reaped = true }
        try? connection.send(ControlMessage.exited(rank: rank, osPID: child.pid, status: status!).frame())
    }

    /// SIGTERM to every live process group now, SIGKILL after the grace
    /// period, except the ranks in `except` (they finalized and are left to
    /// exit; the session's end still kills them). A rank writing a crash
    /// report is left to finish it first (see `CrashReports`).
    func killAll(graceMillis: Int, except: Set<Int> = []) {
        let reporting = Set(children.value.filter { rank, c in
            !c.reaped && !except.contains(rank) && !CrashReports.reporters(of: c.pid).isEmpty
        }.keys)
        signalAll(SIGTERM, except: except.union(reporting))
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(graceMillis)) { [self] in
            signalAll(SIGKILL, except: except.union(reporting))
        }
        for rank in reporting {
            guard let pid = children.value[rank]?.pid else { continue }
            let deadline = Date().addingTimeInterval(Double(CrashReports.allowanceMillis) / 1000)
            let t = Thread { [self] in
                if !CrashReports.waitForReport(of: pid, until: deadline) {
                    log.warning("rank \(rank) (pid \(pid)) did not finish its crash report within \(CrashReports.allowanceMillis) ms; stopping it")
                }
                // Normally it has died of its crash by now (and is skipped).
                signalAll(SIGTERM, only: rank)
                DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(graceMillis)) { [self] in
                    signalAll(SIGKILL, only: rank)
                }
            }
            t.name = "plexus-crash-report \(rank)"
            t.start()
        }
    }

    /// Standard input for `rank`'s process; false if the launcher exceeded
    /// the window. Input for a process that does not read it (or no longer
    /// exists) is credited back at once.
    func input(rank: Int, bytes: [UInt8], end: Bool) -> Bool {
        guard let feeder = feeders.value[rank] else {
            if !bytes.isEmpty { try? connection.send(ControlMessage.inputCredit(rank: rank, bytes: bytes.count).frame()) }
            return true
        }
        return feeder.put(bytes, end: end)
    }

    func end(reason: String) {
        if ended.set() { return }
        for f in feeders.withLock({ m in defer { m = [:] }; return Array(m.values) }) { f.stop() }
        signalAll(SIGKILL)
        connection.shutdown()
    }

    private func signalAll(_ sig: Int32, except: Set<Int> = [], only: Int? = nil) {
        for (rank, c) in children.value where !c.reaped && !except.contains(rank) && (only == nil || only == rank) {
            kill(-c.pid, sig)
            if sig == SIGKILL, let cgroup = c.cgroup { ProcessCgroups.signalKill(cgroup) }
        }
    }
}
