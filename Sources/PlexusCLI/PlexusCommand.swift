#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Cluster
import Foundation
import Logging
import NameService
import Transport

struct PlexusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plexus",
        abstract: "Run parallel programs on a cluster of Linux machines as if it were one computer.",
        discussion: """
            Start here:
              plexus demo                     two processes on this machine share
                                              memory: false sharing, side by side
              plexus run -n 4 PROGRAM [ARGS]  4 processes of PROGRAM as one job
              plexus node --listen IP:PORT    on each machine of a cluster, then
              plexus run -n 8 --nodes IP:PORT,IP:PORT PROGRAM

            Each process learns its rank and the job size from PLEXUS_RANK and PLEXUS_SIZE
            (or Plexus.join() in Swift, plexus_init() in C).
            """,
        version: plexusVersion,
        subcommands: [Run.self, Node.self, Demo.self, Bench.self, Compare.self, ClusterCommand.self, NamesCommand.self, ProcessList.self, DeadlocksCommand.self,
                      CompileC.self, CompileCXX.self,
                      LincheckCommand.self, Exec.self, Guard.self, DemoRing.self, DemoFalseSharing.self, DemoDeadlock.self])
}

/// The version `plexus --version` prints.
let plexusVersion = "0.9.0"

/// Options every subcommand shares.
struct CommonOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = ProcessInfo.processInfo.environment["PLEXUS_LOG"] ?? "warning"

    func makeLogger(_ label: String) throws -> Logger {
        guard let level = Logger.Level(rawValue: logLevel) else {
            throw ValidationError("unknown log level '\(logLevel)'; use one of: trace, debug, info, notice, warning, error, critical")
        }
        bootstrapLogging
        var l = Logger(label: label)
        l.logLevel = level
        return l
    }
}

private let bootstrapLogging: Void = LoggingSystem.bootstrap(StreamLogHandler.standardError)

/// The path of this executable, used as the trampoline that starts job processes.
func selfExecutable() -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    let n = readlink("/proc/self/exe", &buf, buf.count - 1)
    guard n > 0 else { return CommandLine.arguments[0] }
    return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// Runs `body` when SIGINT or SIGTERM arrives (instead of dying).
func onTerminationSignals(_ body: @escaping @Sendable (Int32) -> Void) -> [DispatchSourceSignal] {
    [SIGINT, SIGTERM].map { sig in
        signal(sig, SIG_IGN)
        let s = DispatchSource.makeSignalSource(signal: sig, queue: .global())
        s.setEventHandler { body(sig) }
        s.resume()
        return s
    }
}

struct Run: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run N processes of a program as one job.",
        discussion: """
            With no --nodes, the job runs on an embedded node on this machine (loopback).
            Output lines are prefixed with the rank that wrote them. The job ends when
            every process has exited; if one fails (non-zero status, crash, killed), the
            others are stopped and plexus exits with its status (128+N for signal N).
            Ctrl-C stops the job.

            PIDs: every process gets a global PID from the cluster's name service, unique
            cluster-wide and never reused, and appears in `plexus ps`. The service is the
            one given by --names (or $PLEXUS_NAMES), else the one the first node of --nodes
            reports (`plexus node --names`, or a node hosting a replica). Each process
            holds a lease that plexus run keeps alive: if plexus run or the process's node
            dies, the process is marked lost within --lease-ttl-ms. Without a name service
            (the embedded local node), PIDs are job-scoped: unique within this job only.

            Every frame between ranks is numbered and checked: a lost or repeated frame
            ends the job naming it. For tests, $PLEXUS_FAULT_INJECTION injects faults into
            the links between ranks, e.g. seed=7,drop=0.001,duplicate=0.001,reset=0.0005,delay=2,jitter=3.

            Deadlocks among the job's locks are found while the job runs (distributed edge
            chasing, no central view): by default the blocked acquire of one process of the
            cycle fails with an error naming every process, node and lock on it (--deadlock).

            Environment and input, the same on --nodes as on this machine: every process
            gets PATH, LD_LIBRARY_PATH, OMP_* and PLEXUS_* from here, HOME, USER, LOGNAME
            and SHELL from its node, and the variables -x/--env name; nothing else.
            Standard input goes to rank 0 (--stdin RANK, all or none).

            Examples:
              plexus run -n 4 ./my-program --size 1000
              plexus run -n 8 --nodes 10.0.0.1:7400,10.0.0.2:7400 ./my-program
              plexus run -n 4 --names 10.0.0.1:7401,10.0.0.2:7401,10.0.0.3:7401 ./my-program
              plexus run -n 4 -x OMP_NUM_THREADS --env MODE=fast ./my-program < input.txt
            """)

    // Optional and taking any next word, so that a missing -n, `-n -1` and an
    // unknown option are each reported as what they are (`validate`).
    @Option(name: .customShort("n"), parsing: .unconditional, help: ArgumentHelp("Number of processes (required).", valueName: "n"))
    var processCount: String?
    var processes: Int { Int(processCount ?? "") ?? 0 }

    @Option(name: .long, help: "Comma-separated node daemons (IP:PORT) to place ranks on, round-robin.")
    var nodes: String?

    @Option(name: .long, help: "Milliseconds a process gets between SIGTERM and SIGKILL when the job is stopped.")
    var grace: Int = 1000

    @Option(name: .long, help: ArgumentHelp(
        "The name service that issues global PIDs: replicas' IP:PORT,... or etcd://HOST:PORT,...[/PREFIX]. Default: $PLEXUS_NAMES, else what the first --nodes node reports.",
        valueName: "SPEC"))
    var names: String?

    @OptionGroup var lease: LeaseOptions

    @Option(name: .long, help: ArgumentHelp(
        "After this many seconds in which a rank waits for the same barrier, lock or page, print what every rank waits for (barrier N and the ranks not arrived, lock L and its holder, page P and the rank asked); 0 turns it off.",
        valueName: "seconds"))
    var stallReport: Double = 30

    @Option(name: .long, help: ArgumentHelp(
        "End the job after this many seconds: every process is stopped, what each waited for is printed, and plexus exits with status 124.",
        valueName: "seconds"))
    var timeout: Double?

    @OptionGroup var memory: MemoryOptions

    @OptionGroup(title: "Deadlock detection") var deadlock: DeadlockOptions

    @OptionGroup(title: "Environment and standard input") var input: JobInputOptions

    @OptionGroup var common: CommonOptions

    @Argument(parsing: .captureForPassthrough, help: "The program and its arguments.")
    var command: [String] = []

    /// The program and its arguments, without a leading `--`.
    var programAndArguments: [String] { command.first == "--" ? Array(command.dropFirst()) : command }

    func validate() throws {
        if command.first == "--help" || command.first == "-h" { throw CleanExit.helpRequest(Run.self) }
        if let first = command.first, first.hasPrefix("-"), first != "--" {
            throw ValidationError("unknown option '\(first)' for `plexus run` (`plexus run --help` lists them; a program whose name starts with '-' is given as ./\(first))")
        }
        guard let given = processCount else {
            throw ValidationError("-n is required: the number of processes, e.g. `plexus run -n 4 ./my-program`")
        }
        guard let n = Int(given) else { throw ValidationError("-n '\(given)' is not a number of processes: give a whole number >= 1") }
        guard n >= 1 else { throw ValidationError("-n must be a positive number of processes (got \(n))") }
        guard processes <= 4096 else { throw ValidationError("-n \(processes) is more than the 4096 processes a job may have") }
        guard let first = programAndArguments.first, !first.isEmpty else {
            throw ValidationError("no program given: try `plexus run -n \(processes) ./my-program`")
        }
        guard grace >= 0 else { throw ValidationError("--grace must be >= 0") }
        guard stallReport >= 0, stallReport.isFinite else {
            throw ValidationError("--stall-report \(stallReport) must be a number of seconds >= 0 (0 turns the report off)")
        }
        if let timeout, !(timeout > 0 && timeout.isFinite) {
            throw ValidationError("--timeout \(timeout) must be a number of seconds > 0")
        }
    }

    func run() throws {
        let logger = try common.makeLogger("plexus.run")
        var nodeAddresses: [SocketAddress] = []
        for part in (nodes ?? "").split(separator: ",") {
            do { nodeAddresses.append(try SocketAddress(parsing: String(part))) } catch {
                throw ValidationError("--nodes: \(error)")
            }
        }
        var args = programAndArguments
        let program = args.removeFirst()
        var spec = JobSpec(processes: processes, nodes: nodeAddresses, program: program, arguments: args,
                           environment: try memory.environment().merging(deadlock.environment) { $1 }, graceMillis: grace)
        if let list = names ?? ProcessInfo.processInfo.environment["PLEXUS_NAMES"], !list.isEmpty {
            spec.names = list.split(separator: ",").map(String.init)
        }
        spec.leaseTTLMillis = lease.leaseTtlMs
        spec.stallReportSeconds = stallReport
        spec.timeoutSeconds = timeout
        try input.apply(to: &spec)
        var started = RunMetadata.now()
        started.processes = processes
        let result = try runJob(spec, logger: logger)
        try memory.writeStatistics(result, started: started)
        if result.status != 0 { throw ExitCode(result.status) }
    }
}

/// Runs a job to the end with Ctrl-C/SIGTERM wired to stopping it; the
/// job's output and the launcher's notes go to `output`.
func runJob(_ spec: JobSpec, output: OutputSink = PrefixedOutput(), logger: Logger) throws -> JobResult {
    let launcher = Launcher(spec: spec, output: output, logger: logger, trampoline: selfExecutable())
    let sources = onTerminationSignals { launcher.interrupt(signal: $0) }
    defer { for s in sources { s.cancel() } }
    do { return try launcher.run() } catch {
        writeAll(2, "plexus: \(error)\n")
        throw ExitCode(error.isUsage ? 2 : 1)
    }
}

extension LaunchError {
    var isUsage: Bool {
        if case .badSize = self { return true }
        if case .program = self { return true }
        if case .standardInput = self { return true }
        return false
    }
}

/// `--lease-ttl-ms` of `plexus run` (each job process's lease) and `plexus node`
/// (the node's registration).
struct LeaseOptions: ParsableArguments {
    @Option(name: .long, help: "Lease TTL in the name service, in milliseconds: how soon after this program dies its names go and its processes are marked lost.")
    var leaseTtlMs: UInt64 = 5000

    func validate() throws {
        guard (100...600_000).contains(leaseTtlMs) else {
            throw ValidationError("--lease-ttl-ms must be between 100 and 600000 (got \(leaseTtlMs))")
        }
    }
}

struct Node: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the node daemon that starts, watches and stops job processes on this machine.",
        discussion: """
            Run one per machine. It prints the address it listens on, then serves launchers
            until SIGTERM or Ctrl-C, which stops every process it started.

            With --replica-id it also hosts a replica of the name service (global PIDs,
            process table, names). Run 3 or 5 replicas; a majority must be up to serve.

            A node that knows the name service (--names, or the --replicas it is part of)
            registers itself as /nodes/IP:PORT under a lease it keeps alive: if the node
            dies, the name goes within --lease-ttl-ms, visibly to `plexus ns watch /nodes`.
            It also tells launchers (`plexus run --nodes`) which name service to use.

            Examples:
              plexus node --listen 10.0.0.1:7400 --join 10.0.0.2:7400
              plexus node --listen 10.0.0.1:7400 --replica-id 1 \\
                  --data-dir /var/lib/plexus/r1 \\
                  --replicas 1=10.0.0.1:7401,2=10.0.0.2:7401,3=10.0.0.3:7401
            """)

    @Option(name: .long, help: "Address to listen on (IP:PORT; port 0 picks a free one).")
    var listen: String

    @Option(name: .long, help: "Address of a node already in the cluster.")
    var join: String?

    @Option(name: .long, help: ArgumentHelp(
        "The cluster's name service: replicas' IP:PORT,... or etcd://HOST:PORT,...[/PREFIX]. Default: the --replicas of the replica this node hosts, else $PLEXUS_NAMES.",
        valueName: "SPEC"))
    var names: String?

    @OptionGroup var lease: LeaseOptions

    @Flag(name: .long, help: "Do not register this node under /nodes (e.g. a host that only runs a replica).")
    var noRegister = false

    @OptionGroup(title: "Name-service replica") var replica: ReplicaOptions

    @OptionGroup var common: CommonOptions

    func run() throws {
        let logger = try common.makeLogger("plexus.node")
        let address: SocketAddress
        do { address = try SocketAddress(parsing: listen) } catch { throw ValidationError("--listen: \(error)") }
        let daemon: NodeDaemon
        do { daemon = try NodeDaemon(listen: address, trampoline: selfExecutable(), logger: logger) } catch {
            writeAll(2, "plexus node: \(error)\n")
            throw ExitCode(1)
        }
        if let join {
            do {
                try daemon.join(try SocketAddress(parsing: join))
            } catch {
                writeAll(2, "plexus node: cannot join \(join): \(error)\n")
                daemon.stop()
                throw ExitCode(1)
            }
        }
        let names: NameReplica?
        do { names = try replica.start(logger: logger) } catch let error as ValidationError { throw error } catch {
            writeAll(2, "plexus node: cannot start the name-service replica: \(error)\n")
            daemon.stop()
            throw ExitCode(1)
        }
        writeAll(1, "plexus node listening on \(daemon.address)\n")
        if let replica = names {
            let c = replica.configuration
            let role = c.joinExisting && replica.recovery.state.entries.isEmpty && replica.recovery.state.snapshot == nil
                ? "(joining: waits for `plexus cluster add --id \(c.id.rawValue) --address \(c.replicas[c.id]!)`; data in \(c.dataDirectory))"
                : "(\(c.replicas.count) replicas, data in \(c.dataDirectory))"
            writeAll(1, "name-service replica \(c.id.rawValue) serving on \(c.replicas[c.id]!) \(role)\n")
        }
        let service = self.names ?? names.map { $0.configuration.replicas.values.map(\.description).sorted().joined(separator: ",") }
            ?? ProcessInfo.processInfo.environment["PLEXUS_NAMES"] ?? ""
        daemon.names = service.split(separator: ",").map(String.init)
        var registration: NodeRegistration?
        if !daemon.names.isEmpty && !noRegister {
            do {
                registration = try NodeRegistration(names: service, address: daemon.advertised, ttlMillis: lease.leaseTtlMs, logger: logger)
            } catch {
                writeAll(2, "plexus node: --names: \(error)\n")
                names?.stop()
                daemon.stop()
                throw ExitCode(1)
            }
        }
        let done = DispatchSemaphore(value: 0)
        let sources = onTerminationSignals { _ in done.signal() }
        done.wait()
        for s in sources { s.cancel() }
        registration?.stop()
        names?.stop()
        daemon.stop()
    }
}

/// `plexus _guard`: kills the job process groups a node daemon started once
/// the daemon is gone (see `GroupGuard`).
struct Guard: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_guard", shouldDisplay: false)
    func run() throws { runProcessGroupGuard() }
}

/// `plexus _exec --cwd DIR [--cgroup PATH] -- PROGRAM ARGS`: the trampoline
/// every job process starts through. It moves itself into the process's
/// cgroup (when the node has them), makes the kernel kill the process if the
/// node daemon dies, enters the working directory, then becomes PROGRAM
/// (same pid) with no descriptor but standard input, output and error.
struct Exec: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_exec", shouldDisplay: false)

    @Option var cwd: String
    @Option var cgroup: String?
    @Argument(parsing: .captureForPassthrough) var command: [String] = []

    func run() throws {
        // Without it, the process group still guards the job's processes.
        if let cgroup { _ = enterProcessCgroup(cgroup) }
        let parent = getppid()
        _ = cfaultSetParentDeathSignal()
        // The parent may have died before the request took effect.
        if getppid() != parent { _exit(137) }
        if chdir(cwd) != 0 {
            writeAll(2, "plexus: cannot enter directory \(cwd): \(String(cString: strerror(errno)))\n")
            _exit(127)
        }
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard let program = argv.first else { _exit(127) }
        let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        closeInheritedDescriptorsOnExec()
        execv(program, cArgs)
        writeAll(2, "plexus: cannot execute \(program): \(String(cString: strerror(errno)))\n")
        _exit(127)
    }
}
