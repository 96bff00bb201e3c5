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
    /// launcher → node: stop every process of the job (SIGTERM, then SIGKILL
    /// after the grace period) except the ranks in `except` (ranks that
    /// called finalize: they are left to exit by themselves).
    case killJob(graceMillis: Int, except: [Int] = [])
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
    /// process → launcher: this process called finalize; its exit is expected
    /// (a registered process that exits without it failed the job).
    case finalized(rank: Int)
    /// launcher → process: what do you wait for now? (answered by `status`)
    case statusRequest
    /// process → launcher: what this process waits for now.
    case status(ProcessStatus)
    /// launcher → process: the job is being stopped; send your statistics
    /// (`processReport`) now, as finalize would have.
    case reportRequest
    /// launcher → node: the next bytes of a process's standard input; with
    /// `end`, its end (the process reads end-of-file once it has read them).
    /// The launcher keeps at most `inputWindow` bytes unacknowledged per
    /// process, so a node buffers no more than that for a slow reader.
    case input(rank: Int, bytes: [UInt8], end: Bool)
    /// node → launcher: the process took (or, if it has closed its standard
    /// input or ended, dropped) this many more bytes of its input: send more.
    case inputCredit(rank: Int, bytes: Int)

    /// Unacknowledged standard-input bytes per process (see `input`).
    public static let inputWindow = 1 << 20
    /// The largest `input` chunk.
    public static let maxInputChunk = 64 * 1024
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
        case .finalized: .finalized
        case .statusRequest: .statusRequest
        case .status: .status
        case .reportRequest: .reportRequest
        case .input: .input
        case .inputCredit: .inputCredit
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
        case .killJob(let grace, let except): w.u32(UInt32(grace)); w.u32(UInt32(except.count)); for r in except { w.u32(UInt32(r)) }
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
        case .finalized(let rank): w.u32(UInt32(rank))
        case .statusRequest, .reportRequest: break
        case .status(let st): st.encode(&w)
        case .input(let rank, let bytes, let end): w.u32(UInt32(rank)); w.u8(end ? 1 : 0); w.blob(bytes)
        case .inputCredit(let rank, let bytes): w.u32(UInt32(rank)); w.u32(UInt32(bytes))
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
        case .killJob:
            let grace = Int(try r.u32())
            let n = Int(try r.u32("rank count"))
            guard n <= 1 << 16 else { throw .oversized(what: "rank list", length: n, limit: 1 << 16) }
            var except: [Int] = []
            for _ in 0..<n { except.append(try rank()) }
            self = .killJob(graceMillis: grace, except: except)
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
        case .finalized: self = .finalized(rank: try rank())
        case .statusRequest: self = .statusRequest
        case .reportRequest: self = .reportRequest
        case .status: self = .status(try ProcessStatus.decode(&r))
        case .input:
            let rank = try rank()
            let end = try r.u8("end flag")
            guard end <= 1 else { throw .malformed("input end flag \(end)") }
            self = .input(rank: rank, bytes: try r.blob("input", limit: Self.maxInputChunk), end: end == 1)
        case .inputCredit:
            let rank = try rank()
            let n = Int(try r.u32("credit"))
            guard n <= Self.inputWindow else { throw .oversized(what: "input credit", length: n, limit: Self.inputWindow) }
            self = .inputCredit(rank: rank, bytes: n)
        default: throw .malformed("\(frame.kind) is not a control message")
        }
        try r.expectEnd("\(frame.kind)")
    }
}

/// What one process waits for now, for the stuck-job report of `plexus
/// run --stall-report`: its waits with how long each has lasted, the locks
/// it holds, and, for the locks it manages, who holds them.
public struct ProcessStatus: Equatable, Sendable {
    public enum Target: Equatable, Sendable, Hashable {
        /// A collective (barrier or allGather), by its number.
        case barrier(UInt64)
        case lock(Int)
        /// A page of the shared region a thread faulted on.
        case page(Int)
    }
    public struct Wait: Equatable, Sendable {
        public var target: Target
        public var millis: UInt64
        public init(target: Target, millis: UInt64) {
            self.target = target
            self.millis = millis
        }
    }
    public var rank: Int
    public var waits: [Wait]
    public var heldLocks: [Int]
    /// Locks this process manages that someone holds: (lock, holder rank).
    public var managedLocks: [(lock: Int, holder: Int)]

    public init(rank: Int, waits: [Wait], heldLocks: [Int], managedLocks: [(lock: Int, holder: Int)]) {
        self.rank = rank
        self.waits = waits
        self.heldLocks = heldLocks
        self.managedLocks = managedLocks
    }

    public static func == (a: ProcessStatus, b: ProcessStatus) -> Bool {
        a.rank == b.rank && a.waits == b.waits && a.heldLocks == b.heldLocks
            && a.managedLocks.map(\.lock) == b.managedLocks.map(\.lock) && a.managedLocks.map(\.holder) == b.managedLocks.map(\.holder)
    }

    static let maxEntries = 4096

    func encode(_ w: inout ByteWriter) {
        w.u32(UInt32(rank))
        let waits = self.waits.prefix(Self.maxEntries)
        w.u32(UInt32(waits.count))
        for x in waits {
            switch x.target {
            case .barrier(let e): w.u8(0); w.u64(e)
            case .lock(let l): w.u8(1); w.u64(UInt64(l))
            case .page(let p): w.u8(2); w.u64(UInt64(p))
            }
            w.u64(x.millis)
        }
        let held = heldLocks.prefix(Self.maxEntries)
        w.u32(UInt32(held.count))
        for l in held { w.u64(UInt64(l)) }
        let managed = managedLocks.prefix(Self.maxEntries)
        w.u32(UInt32(managed.count))
        for m in managed { w.u64(UInt64(m.lock)); w.u32(UInt32(m.holder)) }
    }

    static func decode(_ r: inout ByteReader) throws(WireError) -> ProcessStatus {
        func count(_ what: String) throws(WireError) -> Int {
            let n = Int(try r.u32("\(what) count"))
            guard n <= maxEntries else { throw .oversized(what: what, length: n, limit: maxEntries) }
            return n
        }
        func id(_ what: String) throws(WireError) -> Int {
            let v = try r.u64(what)
            guard v < UInt64(Int.max) else { throw .malformed("\(what) \(v)") }
            return Int(v)
        }
        let rank = Int(try r.u32("rank"))
        guard rank < 1 << 20 else { throw .malformed("rank \(rank) is out of range") }
        var waits: [Wait] = []
        for _ in 0..<(try count("wait")) {
            let tag = try r.u8("wait kind")
            let target: Target
            switch tag {
            case 0: target = .barrier(try r.u64("barrier"))
            case 1: target = .lock(try id("lock"))
            case 2: target = .page(try id("page"))
            default: throw .malformed("wait kind \(tag)")
            }
            waits.append(Wait(target: target, millis: try r.u64("millis")))
        }
        var held: [Int] = []
        for _ in 0..<(try count("held lock")) { held.append(try id("lock")) }
        var managed: [(lock: Int, holder: Int)] = []
        for _ in 0..<(try count("managed lock")) {
            let l = try id("lock")
            let h = Int(try r.u32("holder"))
            guard h < 1 << 20 else { throw .malformed("holder \(h) is out of range") }
            managed.append((l, h))
        }
        return ProcessStatus(rank: rank, waits: waits, heldLocks: held, managedLocks: managed)
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
    /// Whether the process reads its standard input from `input` messages
    /// (else from /dev/null).
    public var standardInput: Bool

    public init(job: String, rank: Int, size: Int, pid: ProcessID, program: String, arguments: [String],
                environment: [String: String], workingDirectory: String, standardInput: Bool = false) {
        self.job = job
        self.rank = rank
        self.size = size
        self.pid = pid
        self.program = program
        self.arguments = arguments
        self.environment = environment
        self.workingDirectory = workingDirectory
        self.standardInput = standardInput
    }

    func encode(_ w: inout ByteWriter) {
        w.string(job); w.u32(UInt32(rank)); w.u32(UInt32(size)); w.u64(pid)
        w.string(program)
        w.u32(UInt32(arguments.count)); for a in arguments { w.string(a) }
        w.u32(UInt32(environment.count))
        for (k, v) in environment.sorted(by: { $0.key < $1.key }) { w.string(k); w.string(v) }
        w.string(workingDirectory)
        w.u8(standardInput ? 1 : 0)
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
        let stdin = try r.u8("standard input flag")
        guard stdin <= 1 else { throw .malformed("standard input flag \(stdin)") }
        return SpawnRequest(job: job, rank: rank, size: size, pid: pid, program: program, arguments: args,
                            environment: env, workingDirectory: cwd, standardInput: stdin == 1)
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
