#if canImport(Glibc)
import Glibc
#endif
import Cluster
import Foundation
import Transport
import Wire

/// Errors a Plexus program can meet. Each says what to do.
public enum PlexusError: Error, Sendable, CustomStringConvertible {
    /// The program was not started by `plexus run`.
    case notLaunched(missing: String)
    /// Joining the job failed.
    case join(String)
    /// A peer is gone (it exited or crashed).
    case peerGone(rank: Int, reason: String)
    /// A rank outside 0..<size.
    case badRank(Int, size: Int)
    case transport(TransportError)
    /// The runtime was already finalized.
    case finalized

    public var description: String {
        switch self {
        case .notLaunched(let v):
            return "\(v) is not set: start this program with `plexus run -n N PROGRAM` (it is one process of a job)"
        case .join(let why): return "cannot join the job: \(why)"
        case .peerGone(let r, let why): return "rank \(r) is gone: \(why)"
        case .badRank(let r, let size): return "rank \(r) does not exist: ranks are 0..<\(size)"
        case .transport(let e): return e.description
        case .finalized: return "the Plexus runtime was finalized; call Plexus.join() again only in a new process"
        }
    }
}

/// One process's membership in a job: its rank, the job size, its global PID,
/// messages to and from other ranks, and barriers.
///
/// Thread safety: every method may be called from any thread. Messages and
/// synchronisation traffic are received on transport threads, so a rank busy
/// computing still answers its peers.
public final class Plexus: @unchecked Sendable {
    public let rank: Int
    public let size: Int
    /// This process's global PID: how every layer addresses it.
    public let pid: ProcessID
    public let job: String
    /// Global PIDs of all ranks, indexed by rank.
    public let pids: [ProcessID]

    let transport: TCPTransport
    private let launcher: Connection
    private let rankOf: [ProcessID: Int]
    private let inbox = Mailbox<(Int, [UInt8])>(capacity: 65_536)
    private let barrierArrivals = Mailbox<(Int, UInt64)>(capacity: 65_536)
    private let barrierReleases = Mailbox<UInt64>(capacity: 1024)
    private let barrierEpoch = Locked<UInt64>(0)
    private let lostPeers = Locked<[Int: String]>([:])
    /// Ranks that said goodbye in `finalize`: their disconnection is orderly.
    private let departed = Locked<Set<Int>>([])
    private let isFinalized = AtomicFlag()
    private let handlers = Locked<[UInt16: @Sendable (Int, Frame) -> Void]>([:])

    /// Joins the job this process was started in by `plexus run`, using the
    /// PLEXUS_* environment variables, and connects to every other rank.
    public static func join() throws(PlexusError) -> Plexus {
        let env = ProcessInfo.processInfo.environment
        func need(_ name: String) throws(PlexusError) -> String {
            guard let v = env[name], !v.isEmpty else { throw .notLaunched(missing: name) }
            return v
        }
        guard let rank = Int(try need("PLEXUS_RANK")), let size = Int(try need("PLEXUS_SIZE")),
              let pid = ProcessID(try need("PLEXUS_PID")), rank >= 0, rank < size
        else { throw .join("PLEXUS_RANK, PLEXUS_SIZE or PLEXUS_PID is malformed") }
        let job = try need("PLEXUS_JOB")
        let launcherAddress: SocketAddress
        do { launcherAddress = try SocketAddress(parsing: try need("PLEXUS_LAUNCHER")) } catch let e as PlexusError { throw e } catch {
            throw .join("PLEXUS_LAUNCHER: \(error)")
        }
        let host = env["PLEXUS_NODE"] ?? "127.0.0.1"
        return try Plexus(rank: rank, size: size, pid: pid, job: job, launcher: launcherAddress, host: host)
    }

    private init(rank: Int, size: Int, pid: ProcessID, job: String, launcher launcherAddress: SocketAddress, host: String) throws(PlexusError) {
        self.rank = rank
        self.size = size
        self.pid = pid
        self.job = job
        let box = Locked<Plexus?>(nil)
        do {
            transport = try TCPTransport(
                job: job, localID: pid, bind: SocketAddress(host: host, port: 0), connectTimeoutMillis: 20_000,
                handler: TransportHandler(
                    onFrame: { from, f in box.value?.onFrame(from: from, f) },
                    onPeerLost: { from, why in box.value?.onPeerLost(from, why) }))
            launcher = try Connection.dial(launcherAddress, hello: Hello(job: job, sender: pid, role: "process"))
            try launcher.send(ControlMessage.register(rank: rank, pid: pid, address: transport.address.description).frame())
            guard let f = try launcher.receive(), case .directory(let entries)? = try? ControlMessage(frame: f),
                  entries.count == size else {
                throw PlexusError.join("the launcher did not send the job's directory")
            }
            var dir: [ProcessID: SocketAddress] = [:]
            var pids = [ProcessID](repeating: 0, count: size)
            for e in entries {
                guard e.rank < size else { throw PlexusError.join("directory names rank \(e.rank) of \(size)") }
                dir[e.pid] = try SocketAddress(parsing: e.address)
                pids[e.rank] = e.pid
            }
            self.pids = pids
            rankOf = Dictionary(uniqueKeysWithValues: pids.enumerated().map { ($1, $0) })
            box.withLock { $0 = self }
            transport.updateDirectory(dir)
            try transport.connect(to: pids)
        } catch let e as PlexusError {
            throw e
        } catch let e as TransportError {
            throw .transport(e)
        } catch {
            throw .join("\(error)")
        }
    }

    // MARK: Messages

    /// Sends bytes to another rank. Messages from one rank arrive in order.
    public func send(_ bytes: [UInt8], to rank: Int) throws(PlexusError) {
        guard rank >= 0, rank < size else { throw .badRank(rank, size: size) }
        if let why = lostPeers.value[rank] { throw .peerGone(rank: rank, reason: why) }
        do { try transport.send(Frame(.user, payload: bytes), to: pids[rank]) } catch { throw .transport(error) }
    }

    /// Receives the next message from any rank: (sender rank, bytes).
    public func receive() throws(PlexusError) -> (from: Int, bytes: [UInt8]) {
        guard let m = inbox.take() else { throw .peerGone(rank: -1, reason: inbox.closeReason ?? "runtime closed") }
        return m
    }

    // MARK: Barrier

    /// Waits until every rank has called `barrier()` the same number of times.
    /// Rank 0 gathers arrivals and releases everyone: one message each way, so
    /// the cost is one round trip. Reusable any number of times.
    public func barrier() throws(PlexusError) {
        let epoch = barrierEpoch.withLock { e -> UInt64 in e += 1; return e }
        if rank == 0 {
            var arrived = Set<Int>()
            var early: [(Int, UInt64)] = []
            while arrived.count < size - 1 {
                guard let (r, e) = barrierArrivals.take() else { throw closedError() }
                if e == epoch { arrived.insert(r) } else { early.append((r, e)) }
            }
            for a in early { barrierArrivals.put(a) }
            for r in 1..<size { try sendSync(kind: 1, epoch: epoch, to: r) }
        } else {
            try sendSync(kind: 0, epoch: epoch, to: 0)
            while true {
                guard let e = barrierReleases.take() else { throw closedError() }
                if e == epoch { break }
            }
        }
    }

    private func closedError() -> PlexusError {
        let lost = lostPeers.value
        if let (r, why) = lost.first { return .peerGone(rank: r, reason: why) }
        return .finalized
    }

    private func sendSync(kind: UInt8, epoch: UInt64, to r: Int) throws(PlexusError) {
        var w = ByteWriter()
        w.u8(kind)
        w.u64(epoch)
        do { try transport.send(Frame(.sync, payload: w.bytes), to: pids[r]) } catch { throw .transport(error) }
    }

    // MARK: Extension points for the layers above (shared memory, ...)

    /// Routes frames of `kind` to `handler` (called on a transport thread).
    public func setHandler(for kind: MessageKind, _ handler: @escaping @Sendable (Int, Frame) -> Void) {
        handlers.withLock { $0[kind.rawValue] = handler }
    }

    /// Sends a frame of any kind to a rank.
    public func sendFrame(_ frame: Frame, to rank: Int) throws(TransportError) {
        try transport.send(frame, to: pids[rank])
    }

    /// Hands the launcher a JSON report (statistics) that `plexus run` collects.
    public func report(json: [UInt8]) {
        try? launcher.send(ControlMessage.processReport(rank: rank, json: json).frame())
    }

    /// Leaves the job: waits for every rank (so no rank exits while others
    /// still talk to it), then closes connections. Idempotent.
    public func finalize() throws(PlexusError) {
        if isFinalized.isSet { return }
        try barrier()
        isFinalized.set()
        // Goodbye travels behind everything else we sent each peer (FIFO per
        // connection), so a peer never mistakes our close for a crash.
        for r in 0..<size where r != rank { try? sendSync(kind: 2, epoch: 0, to: r) }
        transport.close()
        launcher.shutdown()
        inbox.close(reason: "finalized")
    }

    private func onFrame(from: ProcessID, _ f: Frame) {
        guard let r = rankOf[from] else { return }
        switch f.kind {
        case .user:
            inbox.put((r, f.payload))
        case .sync:
            var rd = ByteReader(f.payload)
            guard let k = try? rd.u8(), let e = try? rd.u64() else { return }
            switch k {
            case 0: barrierArrivals.put((r, e))
            case 1: barrierReleases.put(e)
            default: departed.withLock { _ = $0.insert(r) }
            }
        default:
            handlers.value[f.kind.rawValue]?(r, f)
        }
    }

    private func onPeerLost(_ from: ProcessID, _ why: String) {
        guard let r = rankOf[from], !isFinalized.isSet, !departed.value.contains(r) else { return }
        lostPeers.withLock { $0[r] = why }
        // Anyone blocked waiting on the job would wait forever: wake them with an error.
        inbox.close(reason: "rank \(r) is gone: \(why)")
        barrierArrivals.close(reason: why)
        barrierReleases.close(reason: why)
    }
}
