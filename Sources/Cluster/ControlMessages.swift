import Transport
import Wire

/// Messages between a launcher, node daemons and job processes. Each has one
/// frame kind; payloads are bounded, and decoding rejects anything malformed.
public enum ControlMessage: Equatable, Sendable {
    /// launcher → node: start one process of a job.
    case spawn(SpawnRequest)
    /// node → launcher: the process started with this OS pid.
    case spawned(rank: Int, osPID: Int32)
    /// node → launcher: the process could not be started, and why.
    case spawnFailed(rank: Int, reason: String)
    /// node → launcher: bytes a process wrote (stream 1 = stdout, 2 = stderr).
    case output(rank: Int, stream: UInt8, bytes: [UInt8])
    /// node → launcher: a process ended.
    case exited(rank: Int, osPID: Int32, status: ExitStatus)
    /// launcher → node: stop every process of the job (SIGTERM, then SIGKILL after the grace period).
    case killJob(graceMillis: Int)
    /// process → launcher: I am rank R, global PID P, reachable at ADDRESS.
    case register(rank: Int, pid: ProcessID, address: String)
    /// launcher → process: where every process of the job is.
    case directory([DirectoryEntry])
    /// node → node: a node joining the cluster announces its address.
    case nodeJoin(address: String)
    /// node → node: the members the receiving node knows.
    case nodeMembers([String])
    /// process → launcher: a JSON report (statistics) to collect at the end of the job.
    case processReport(rank: Int, json: [UInt8])
    /// process → launcher: this process lost its connection to rank `lost`
    /// (which had not said goodbye): the likely first cause of a failure.
    case peerLost(rank: Int, lost: Int, reason: String)
    /// launcher → node: what do I need to know about you before starting a job?
    case nodeInfoRequest
    /// node → launcher: the name service this node's cluster uses (its
    /// replicas' IP:PORT, or an `etcd://` spec), empty if none.
    case nodeInfo(names: [String])

    static let maxText = 64 * 1024
    static let maxArgs = 4096
    static let maxReport = 8 << 20

    public var kind: MessageKind {
        switch self {
        case .spawn: .spawn
        case .spawned: .spawned
        case .spawnFailed: .spawnFailed
        case .output: .output
        case .exited: .exited
        case .killJob: .killJob
        case .register: .register
        case .directory: .directory
        case .nodeJoin: .nodeJoin
        case .nodeMembers: .nodeMembers
        case .processReport: .processReport
        case .peerLost: .peerLost
        case .nodeInfoRequest: .nodeInfoRequest
        case .nodeInfo: .nodeInfo
        }
    }

    public func frame() -> Frame {
        var w = ByteWriter()
        switch self {
        case .spawn(let s): s.encode(&w)
        case .spawned(let rank, let pid): w.u32(UInt32(rank)); w.u32(UInt32(bitPattern: pid))
        case .spawnFailed(let rank, let reason): w.u32(UInt32(rank)); w.string(reason)
        case .output(let rank, let stream, let bytes): w.u32(UInt32(rank)); w.u8(stream); w.blob(bytes)
        case .exited(let rank, let pid, let status):
            w.u32(UInt32(rank)); w.u32(UInt32(bitPattern: pid)); status.encode(&w)
        case .killJob(let grace): w.u32(UInt32(grace))
        case .register(let rank, let pid, let address): w.u32(UInt32(rank)); w.u64(pid); w.string(address)
        case .directory(let entries):
            w.u32(UInt32(entries.count))
            for e in entries { w.u32(UInt32(e.rank)); w.u64(e.pid); w.string(e.address) }
        case .nodeJoin(let a): w.string(a)
        case .nodeMembers(let ms): w.u32(UInt32(ms.count)); for m in ms { w.string(m) }
        case .processReport(let rank, let json): w.u32(UInt32(rank)); w.blob(json)
        case .peerLost(let rank, let lost, let reason): w.u32(UInt32(rank)); w.u32(UInt32(lost)); w.string(reason)
        case .nodeInfoRequest: break
        case .nodeInfo(let names): w.u32(UInt32(names.count)); for n in names { w.string(n) }
        }
        return Frame(kind, payload: w.bytes)
    }

    public init(frame: Frame) throws(WireError) {
        var r = ByteReader(frame.payload)
        func rank() throws(WireError) -> Int {
            let v = try r.u32("rank")
            guard v < 1 << 20 else { throw .malformed("rank \(v) is out of range") }
            return Int(v)
        }
        /// A counted list of strings, both bounds checked before reading on.
        func strings(_ what: String, count limit: Int, length: Int) throws(WireError) -> [String] {
            let n = Int(try r.u32("\(what) count"))
            guard n <= limit else { throw .oversized(what: "\(what) list", length: n, limit: limit) }
            var out: [String] = []
            for _ in 0..<n { out.append(try r.string(what, limit: length)) }
            return out
        }
        switch frame.kind {
        case .spawn: self = .spawn(try SpawnRequest.decode(&r))
        case .spawned: self = .spawned(rank: try rank(), osPID: Int32(bitPattern: try r.u32()))
        case .spawnFailed: self = .spawnFailed(rank: try rank(), reason: try r.string("reason", limit: Self.maxText))
        case .output:
            self = .output(rank: try rank(), stream: try r.u8(), bytes: try r.blob("output", limit: Frame.defaultMaxPayload))
        case .exited:
            self = .exited(rank: try rank(), osPID: Int32(bitPattern: try r.u32()), status: try ExitStatus.decode(&r))
        case .killJob: self = .killJob(graceMillis: Int(try r.u32()))
        case .register: self = .register(rank: try rank(), pid: try r.u64(), address: try r.string("address", limit: 256))
        case .directory:
            let n = Int(try r.u32("entry count"))
            guard n <= 1 << 16 else { throw .oversized(what: "directory", length: n, limit: 1 << 16) }
            var es: [DirectoryEntry] = []
            for _ in 0..<n { es.append(DirectoryEntry(rank: try rank(), pid: try r.u64(), address: try r.string("address", limit: 256))) }
            self = .directory(es)
        case .nodeJoin: self = .nodeJoin(address: try r.string("address", limit: 256))
        case .nodeMembers:
            self = .nodeMembers(try strings("member", count: 4096, length: 256))
        case .processReport: self = .processReport(rank: try rank(), json: try r.blob("report", limit: Self.maxReport))
        case .peerLost: self = .peerLost(rank: try rank(), lost: try rank(), reason: try r.string("reason", limit: Self.maxText))
        case .nodeInfoRequest: self = .nodeInfoRequest
        case .nodeInfo:
            self = .nodeInfo(names: try strings("name-service address", count: 64, length: 1024))
        default: throw .malformed("\(frame.kind) is not a control message")
        }
        try r.expectEnd("\(frame.kind)")
    }
}

public struct DirectoryEntry: Equatable, Sendable {
    public var rank: Int
    public var pid: ProcessID
    public var address: String
    public init(rank: Int, pid: ProcessID, address: String) {
        self.rank = rank
        self.pid = pid
        self.address = address
    }
}

public struct SpawnRequest: Equatable, Sendable {
    public var job: String
    public var rank: Int
    public var size: Int
    public var pid: ProcessID
    public var program: String
    public var arguments: [String]
    public var environment: [String: String]
    public var workingDirectory: String

    public init(job: String, rank: Int, size: Int, pid: ProcessID, program: String, arguments: [String],
                environment: [String: String], workingDirectory: String) {
        self.job = job
        self.rank = rank
        self.size = size
        self.pid = pid
        self.program = program
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
    }

    func encode(_ w: inout ByteWriter) {
        w.string(job); w.u32(UInt32(rank)); w.u32(UInt32(size)); w.u64(pid)
        w.string(program)
        w.u32(UInt32(arguments.count)); for a in arguments { w.string(a) }
        w.u32(UInt32(environment.count))
        for (k, v) in environment.sorted(by: { $0.key < $1.key }) { w.string(k); w.string(v) }
        w.string(workingDirectory)
    }

    static func decode(_ r: inout ByteReader) throws(WireError) -> SpawnRequest {
        let job = try r.string("job", limit: Hello.maxJobName)
        let rank = Int(try r.u32("rank")), size = Int(try r.u32("size"))
        guard size >= 1, size <= 1 << 16, rank < size else { throw .malformed("rank \(rank) of size \(size)") }
        let pid = try r.u64("pid")
        let program = try r.string("program", limit: 4096)
        let argc = Int(try r.u32("argument count"))
        guard argc <= ControlMessage.maxArgs else { throw .oversized(what: "argument list", length: argc, limit: ControlMessage.maxArgs) }
        var args: [String] = []
        for _ in 0..<argc { args.append(try r.string("argument", limit: ControlMessage.maxText)) }
        let envc = Int(try r.u32("environment count"))
        guard envc <= ControlMessage.maxArgs else { throw .oversized(what: "environment", length: envc, limit: ControlMessage.maxArgs) }
        var env: [String: String] = [:]
        for _ in 0..<envc { env[try r.string("name", limit: 1024)] = try r.string("value", limit: ControlMessage.maxText) }
        let cwd = try r.string("working directory", limit: 4096)
        return SpawnRequest(job: job, rank: rank, size: size, pid: pid, program: program, arguments: args,
                            environment: env, workingDirectory: cwd)
    }
}

/// How a process ended.
public enum ExitStatus: Equatable, Sendable, CustomStringConvertible {
    case exited(Int32)
    case signaled(Int32)

    public var succeeded: Bool { self == .exited(0) }
    /// The status a shell would report: the code, or 128 + the signal.
    public var shellStatus: Int32 {
        switch self {
        case .exited(let c): c
        case .signaled(let s): 128 + s
        }
    }

    public var description: String {
        switch self {
        case .exited(let c): "exited with status \(c)"
        case .signaled(let s): "was killed by signal \(s) (\(signalName(s)))"
        }
    }

    func encode(_ w: inout ByteWriter) {
        switch self {
        case .exited(let c): w.u8(0); w.u32(UInt32(bitPattern: c))
        case .signaled(let s): w.u8(1); w.u32(UInt32(bitPattern: s))
        }
    }

    static func decode(_ r: inout ByteReader) throws(WireError) -> ExitStatus {
        let tag = try r.u8("status tag")
        let v = Int32(bitPattern: try r.u32("status"))
        switch tag {
        case 0: return .exited(v)
        case 1: return .signaled(v)
        default: throw .malformed("exit status tag \(tag)")
        }
    }
}

public func signalName(_ s: Int32) -> String {
    let names: [Int32: String] = [1: "SIGHUP", 2: "SIGINT", 3: "SIGQUIT", 4: "SIGILL", 5: "SIGTRAP", 6: "SIGABRT",
                                  7: "SIGBUS", 8: "SIGFPE", 9: "SIGKILL", 10: "SIGUSR1", 11: "SIGSEGV", 12: "SIGUSR2",
                                  13: "SIGPIPE", 14: "SIGALRM", 15: "SIGTERM"]
    return names[s] ?? "signal \(s)"
}
