#if canImport(Glibc)
import Glibc
#endif
import Cluster
import Deadlock
import Foundation
import Memory
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
    /// `send` refused: the receiver has this many messages from this rank
    /// that it has not received yet, the most one rank may leave waiting.
    case receiverFull(rank: Int, unreceived: Int)
    /// A rank outside 0..<size.
    case badRank(Int, size: Int)
    case transport(TransportError)
    /// The runtime was already finalized.
    case finalized
    /// Shared memory could not be set up or allocated.
    case memory(MemoryError)
    /// The job runs without shared memory (`--shared-memory 0`).
    case noSharedMemory
    /// Ranks called a collective operation with different arguments.
    case collectiveMismatch(String)
    /// A lock was used wrongly (released without being held, ...).
    case lockMisuse(String)
    /// A shared-memory operation (a prefetch hint) named bytes outside the
    /// shared memory allocated so far; `allocated` lists what is.
    case notShared(address: UInt, bytes: Int, allocated: [ClosedRange<UInt>])
    /// This process's `acquire` closed a cycle of processes each waiting for
    /// a lock the next one holds, and it was chosen as the victim (policy
    /// abort of `plexus run --deadlock`): it does not hold the lock.
    case deadlock(DeadlockReport)

    public var description: String {
        switch self {
        case .notLaunched(let v):
            return "\(v) is not set: start this program with `plexus run -n N PROGRAM` (it is one process of a job)"
        case .join(let why): return "cannot join the job: \(why)"
        case .peerGone(let r, let why): return "rank \(r) is gone: \(why)"
        case let .receiverFull(r, n):
            return "rank \(r) has \(n) unreceived messages from this rank, the most one rank may leave waiting: "
                + "it must call receive() before more can be sent (send less at a time, or have rank \(r) receive more often)"
        case .badRank(let r, let size): return "rank \(r) does not exist: ranks are 0..<\(size)"
        case .transport(let e): return e.description
        case .finalized: return "the Plexus runtime was finalized; call Plexus.join() again only in a new process"
        case .memory(let e): return e.description
        case .noSharedMemory: return "this job has no shared memory: run it without --shared-memory 0"
        case .collectiveMismatch(let why): return "ranks disagree on a collective call: \(why); every rank must make the same collective calls in the same order"
        case .lockMisuse(let why): return why
        case .deadlock(let report): return report.description
        case let .notShared(address, bytes, allocated):
            let ranges = allocated.map { "0x\(String($0.lowerBound, radix: 16))-0x\(String($0.upperBound, radix: 16))" }
            let what = bytes < 0 ? "a length of \(bytes) bytes at 0x\(String(address, radix: 16)) is negative (or, from C, above the largest signed size)"
                : "\(bytes) bytes at 0x\(String(address, radix: 16)) are not inside shared memory allocated so far"
            return "\(what); allocated: \(ranges.isEmpty ? "nothing yet" : ranges.joined(separator: ", ")). "
                + "Pass a pointer from a shared allocation and a length that stays inside it"
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
    /// True when the PIDs were issued by the name service (`plexus run --names`):
    /// unique cluster-wide and never reused, listed by `plexus ps`. False when
    /// they are job-scoped: unique only within this job.
    public var pidsAreGlobal: Bool { ProcessInfo.processInfo.environment["PLEXUS_NAMES"].map { !$0.isEmpty } ?? false }

    let transport: TCPTransport
    private let launcher: Connection
    private let rankOf: [ProcessID: Int]
    /// User messages received and not yet taken by `receive`. Never full:
    /// each sender may leave at most `maxUnreceived` (plus one unacknowledged
    /// batch) here, so the reader thread, which also carries memory, lock and
    /// barrier traffic, never waits for the application.
    private let inbox: Mailbox<(Int, [UInt8])>
    /// The most user messages one rank may have sent another that it has not
    /// received yet; a send past it fails with `.receiverFull`.
    public static let maxUnreceived = 16_384
    /// Receives acknowledged in batches of this many.
    static let ackBatch = 256
    /// Per destination rank: messages sent, not yet acknowledged as received.
    private let unacknowledged: Locked<[Int]>
    /// Per source rank: messages received, not yet acknowledged.
    private let receivedSinceAck: Locked<[Int]>
    private let collectives: Dissemination
    private let collectiveEpoch = Locked<UInt64>(0)
    /// The shared-memory engine, nil when the job runs with `--shared-memory 0`.
    public let memory: MemoryEngine?
    let heap: Heap?
    let locks: LockService
    /// This process's deadlock detector, nil under `--deadlock off`.
    let deadlocks: DeadlockAgent?
    /// The deadlock detector's counters (probes started, forwarded,
    /// dropped, confirms, deadlocks declared); nil under `--deadlock off`.
    public var deadlockStatistics: DeadlockStatistics? { deadlocks?.statistics }
    let pageStats = PageStatsCollector()
    let synchronizationWaits = SynchronizationWaits()
    let serving: ServingScheduler
    let binding: CPUBinding
    /// The CPU this process's application thread is bound to ("CPU 1"), or
    /// "none (why)"; see `CPUBindingMode`.
    public var cpuBinding: String { binding.report }
    /// How this process's serving threads (transport readers, fault thread)
    /// are scheduled: "realtime (…)", "partly raised (…)", "normal", or
    /// "normal (why)"; see `ServingPriority`.
    public var servingScheduling: String { serving.report }
    /// Every sender's way to other ranks; knows the ranks lost without a
    /// goodbye, and the first of them: the one every error names (later
    /// losses are usually consequences of the first).
    let peers: PeerTable
    /// Ranks that said goodbye in `finalize`: their disconnection is orderly.
    private let departed = Locked<Set<Int>>([])
    let isFinalized = AtomicFlag()
    private let handlers = Locked<[UInt16: @Sendable (Int, Frame) -> Void]>([:])
    /// Each thread's current wait and since when (uptime nanoseconds).
    private let waits = Locked<[UInt64: (WaitTarget, UInt64)]>([:])

    /// Joins the job this process was started in by `plexus run`, using the
    /// PLEXUS_* environment variables, and connects to every other rank.
    /// For tests, PLEXUS_FAULT_INJECTION (`LinkFaultPlan`, e.g.
    /// "seed=7,drop=0.001,duplicate=0.001,delay=2,jitter=3,reset=0.0005")
    /// injects faults into the links to the other ranks; a value that does
    /// not parse refuses the join, saying the syntax.
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
        inbox = Mailbox(capacity: (Self.maxUnreceived + Self.ackBatch) * max(1, size - 1) + 1, spin: .replyImminent)
        unacknowledged = Locked([Int](repeating: 0, count: size))
        receivedSinceAck = Locked([Int](repeating: 0, count: size))
        let serving = try ServingScheduler(ServingPriority.fromEnvironment(ProcessInfo.processInfo.environment))
        self.serving = serving
        let binding = try CPUBinding(environment: ProcessInfo.processInfo.environment)
        self.binding = binding
        let linkFaults = try Self.linkFaultPlan(rank: rank)
        let deadlockSettings = try DeadlockSettings.fromEnvironment(ProcessInfo.processInfo.environment)
        let box = FrameGate()
        let peers = PeerTable()
        self.peers = peers
        locks = LockService(rank: rank, size: size)
        collectives = Dissemination(rank: rank, size: size, send: { [peers] r, message throws(PlexusError) in
            var w = ByteWriter()
            w.u8(0)   // sync kind 0: a collective's round (2: goodbye, 3-6: locks, 7: messages received)
            w.raw(message)
            try peers.send(Frame(.sync, payload: w.bytes), to: r)
        })
        // The engine exists before any peer can reach us: a peer may fault on
        // a page we manage as soon as the mesh is up.
        if let mc = try SharedMemoryConfiguration.fromEnvironment(ProcessInfo.processInfo.environment) {
            do {
                let region = try SharedRegion(base: mc.base, size: mc.size, pageSize: mc.pageSize)
                let observers = MemoryEngine.Observers()
                observers.pages.append(pageStats)
                memory = try MemoryEngine(
                    configuration: CoherenceConfiguration(rank: rank, rankCount: size, pageCount: region.pageCount, pageSize: mc.pageSize,
                                                          lookAhead: mc.lookAhead, collectionBound: mc.collectionBound),
                    protocolName: mc.protocolName, region: region, link: peers, observers: observers)
                heap = Heap(size: mc.size, ranks: size, rank: rank, pageSize: mc.pageSize)
            } catch { throw .memory(error) }
        } else {
            memory = nil
            heap = nil
        }
        do {
            transport = try TCPTransport(
                job: job, localID: pid, bind: SocketAddress(host: host, port: 0), connectTimeoutMillis: 20_000,
                linkFaults: linkFaults, readerStart: { serving.applyToCurrentThread(.reader) },
                handler: TransportHandler(
                    onFrame: { from, f in box.deliver(from, f) },
                    onPeerLost: { from, why in box.lost(from, why) }))
            launcher = try Connection.dial(launcherAddress, hello: Hello(job: job, sender: pid, role: "process"))
            try launcher.send(ControlMessage.register(rank: rank, pid: pid, address: transport.address.description).frame())
            var answer = try launcher.receive()
            // A status or report request may come first; it is answered by
            // the reader started below, once this process has joined.
            while let f = answer, f.kind == .statusRequest || f.kind == .reportRequest { answer = try launcher.receive() }
            guard let f = answer, case .directory(let entries)? = try? ControlMessage(frame: f),
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
            peers.set(transport: transport, pids: pids)
            let names = ProcessInfo.processInfo.environment["PLEXUS_NAMES"] ?? ""
            let recorder = names.isEmpty ? nil : DeadlockRecorder(spec: names, job: job, rank: rank)
            let agent = deadlockSettings.policy == .off ? nil : Self.deadlockAgent(deadlockSettings, rank: rank, pid: pid, node: host,
                                                                                 pids: pids, peers: peers, recorder: recorder)
            deadlocks = agent
            locks.attach(send: { [peers] frame, r throws(PlexusError) in try peers.send(frame, to: r) }, memory: memory,
                         deadlocks: agent, pids: pids)
            agent?.start(holds: { [locks] id in locks.holds(id) },
                         abort: { [locks] sequence, cycle in locks.abortWait(sequence: sequence, cycle: cycle) })
            if let m = memory, let h = heap {
                // Each rank's arena starts on that rank: per-process data is
                // written where it is allocated without a message.
                let ps = m.region.pageSize
                for r in 0..<size {
                    let start = h.collectiveLimit + r * h.arenaSize
                    m.place(pages: (start / ps)..<((start + h.arenaSize) / ps), home: r)
                }
                // Faults outside allocations fail at the access.
                h.restrictFaults(of: m)
                // The fault thread runs while the application thread waits
                // for a page: on the same CPU, it takes that CPU's idle time.
                m.start(threadStart: {
                    serving.applyToCurrentThread(.faultThread)
                    binding.applyToCurrentThread()
                })
            }
            box.open(self)
            // The launcher asks what this process waits for (the stuck-job
            // report) and, when it stops a failing job, for its statistics.
            launcher.startReader(
                name: "plexus-launcher",
                onFrame: { [weak self] f in self?.onLauncherFrame(f) },
                onClose: { _ in })
            transport.updateDirectory(dir)
            try transport.connect(to: pids)
            // Bound last: the reader threads started above stay free.
            binding.applyToCurrentThread()
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
        let full = unacknowledged.withLock { u -> Int? in
            if u[rank] >= Self.maxUnreceived { return u[rank] }
            u[rank] += 1
            return nil
        }
        if let full { throw .receiverFull(rank: rank, unreceived: full) }
        do throws(PlexusError) { try peers.send(Frame(.user, payload: bytes), to: rank) } catch {
            unacknowledged.withLock { $0[rank] -= 1 }
            throw error
        }
    }

    /// Receives the next message from any rank: (sender rank, bytes).
    public func receive() throws(PlexusError) -> (from: Int, bytes: [UInt8]) {
        guard let m = inbox.take() else { throw closedError() }
        let ack = receivedSinceAck.withLock { r -> Bool in
            r[m.0] += 1
            guard r[m.0] >= Self.ackBatch else { return false }
            r[m.0] = 0
            return true
        }
        if ack {
            // The sender may send that many more (sync kind 7: received).
            var w = ByteWriter()
            w.u8(7); w.u32(UInt32(Self.ackBatch))
            if m.0 == self.rank { onReceived(from: m.0, Self.ackBatch) } else { try? peers.send(Frame(.sync, payload: w.bytes), to: m.0) }
        }
        return m
    }

    // MARK: Barrier and collectives

    /// Waits until every rank has called `barrier()` the same number of times.
    /// By dissemination (`Dissemination`): ⌈log2 size⌉ rounds of one message
    /// per rank, so with 2 ranks it costs one one-way message. Reusable any
    /// number of times. With shared memory, the protocol does its part on
    /// arrival and departure (nothing for sc; write notices for
    /// release-consistency protocols).
    public func barrier() throws(PlexusError) {
        let epoch = collectiveEpoch.withLock { e -> UInt64 in e += 1; return e }
        let token = waitBegan(.barrier(epoch))
        defer { waitEnded(.barrier(epoch), token) }
        let mine = try memory?.synchronizing { c, t in c.onBarrierArrive(barrier: 0, ticket: t) } ?? []
        let all = try gather(epoch: epoch, mine)
        _ = try memory?.synchronizing { c, t in c.onBarrierDepart(barrier: 0, contributions: all, ticket: t) }
    }

    /// Every rank contributes bytes; every rank gets all contributions, by rank.
    /// A collective: every rank must call it in the same order.
    public func allGather(_ bytes: [UInt8]) throws(PlexusError) -> [[UInt8]] {
        let epoch = collectiveEpoch.withLock { e -> UInt64 in e += 1; return e }
        let token = waitBegan(.barrier(epoch))
        defer { waitEnded(.barrier(epoch), token) }
        return try gather(epoch: epoch, bytes)
    }

    private func gather(epoch: UInt64, _ mine: [UInt8]) throws(PlexusError) -> [[UInt8]] {
        try collectives.run(epoch: epoch, mine, failed: closedError)
    }

    private func closedError() -> PlexusError {
        if let (r, why) = peers.firstLost { return .peerGone(rank: r, reason: why) }
        return .finalized
    }

    private func sendSync(_ payload: [UInt8], to r: Int) throws(PlexusError) {
        try peers.send(Frame(.sync, payload: payload), to: r)
    }

    func waitBegan(_ t: WaitTarget) -> UInt64 {
        let thread = UInt64(UInt(pthread_self()))
        let now = DispatchTime.now().uptimeNanoseconds
        waits.withLock { $0[thread] = (t, now) }
        for o in memory?.observers.waits ?? [] { o.waitBegan(t, thread: thread) }
        return thread
    }

    func waitEnded(_ t: WaitTarget, _ thread: UInt64) {
        let began = waits.withLock { $0.removeValue(forKey: thread)?.1 }
        if case .barrier = t, let began { synchronizationWaits.barrierEnded(began: began) }
        for o in memory?.observers.waits ?? [] { o.waitEnded(t, thread: thread) }
    }

    /// What this process waits for now: its threads' waits in barriers,
    /// collectives and locks, and the pages its threads faulted on.
    func currentStatus() -> ProcessStatus {
        let now = DispatchTime.now().uptimeNanoseconds
        var list: [ProcessStatus.Wait] = waits.value.values.map { t, since in
            let target: ProcessStatus.Target
            switch t {
            case .barrier(let e): target = .barrier(e)
            case .lock(let l): target = .lock(l)
            case .page(let p): target = .page(p)
            }
            return ProcessStatus.Wait(target: target, millis: (now &- since) / 1_000_000)
        }
        for (page, nanos) in memory?.waitingPages ?? [] {
            list.append(ProcessStatus.Wait(target: .page(page), millis: nanos / 1_000_000))
        }
        let lockState = locks.snapshot()
        return ProcessStatus(rank: rank, waits: list, heldLocks: lockState.held,
                             managedLocks: lockState.managed.map { (lock: $0.id, holder: $0.holder) })
    }

    private func onLauncherFrame(_ f: Frame) {
        switch try? ControlMessage(frame: f) {
        case .statusRequest?:
            try? launcher.send(ControlMessage.status(currentStatus()).frame())
        case .reportRequest?:
            if memory != nil && ProcessInfo.processInfo.environment["PLEXUS_STATS"] == "1" { report(json: statisticsJSON()) }
        default:
            break
        }
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
        // Statistics cost time to assemble: only when the launcher wants them
        // (--stats, --summary, the demo).
        if memory != nil && ProcessInfo.processInfo.environment["PLEXUS_STATS"] == "1" { report(json: statisticsJSON()) }
        // Peers may still ask us for pages until everyone has passed the
        // barrier above and reported; a second barrier makes sure they have.
        try barrier()
        isFinalized.set()
        deadlocks?.stop()
        // Every rank got here: this process's exit is now expected, and it
        // is left to exit if another rank fails from now on.
        try? launcher.send(ControlMessage.finalized(rank: rank).frame())
        memory?.stop()
        // Goodbye travels behind everything else we sent each peer (FIFO per
        // connection), so a peer never mistakes our close for a crash.
        for r in 0..<size where r != rank { try? sendSync([2], to: r) }
        transport.close()
        launcher.shutdown()
        inbox.close(reason: "finalized")
    }

    fileprivate func onFrame(from: ProcessID, _ f: Frame) {
        guard let r = rankOf[from] else { return }
        switch f.kind {
        case .user:
            inbox.put((r, f.payload))
        case .memory:
            memory?.onMessage(from: r, f.payload)
        case .sync:
            onSync(from: r, f.payload)
        case .deadlock:
            do throws(WireError) { try deadlocks?.receive(f.payload, size: size) } catch {
                writeStderr("plexus[\(rank)]: dropped a malformed deadlock-detection message from rank \(r): \(error)")
            }
        default:
            handlers.value[f.kind.rawValue]?(r, f)
        }
    }

    fileprivate func onPeerLost(_ from: ProcessID, _ transportReason: String) {
        guard let r = rankOf[from], !isFinalized.isSet, !departed.value.contains(r) else { return }
        let why = PeerTable.describeLoss(transportReason)
        guard peers.lost(r, why) else { return }
        // Tell the launcher first: if this process now fails because of it,
        // the job's report names the rank that was lost, not this one.
        try? launcher.send(ControlMessage.peerLost(rank: rank, lost: r, reason: why).frame())
        // Every wait that could depend on that rank would wait forever: wake
        // them with an error naming the first rank lost.
        let (first, firstWhy) = peers.firstLost ?? (r, why)
        inbox.close(reason: "rank \(first) is gone: \(firstWhy)")
        collectives.fail(firstWhy)
        locks.peerLost()
        memory?.peerLost(first, reason: firstWhy)
    }
}

extension Plexus {
    /// Synchronisation frames: collectives, goodbyes and locks. Malformed
    /// ones are dropped (a peer of this job that sends them has a bug).
    private func onSync(from r: Int, _ payload: [UInt8]) {
        var rd = ByteReader(payload)
        do throws(WireError) {
            switch try rd.u8("sync kind") {
            case 0:
                try collectives.receive(from: r, Array(payload.dropFirst()))
            case 2:
                departed.withLock { _ = $0.insert(r) }
            case 7:
                let n = Int(try rd.u32("messages received"))
                try rd.expectEnd("receive acknowledgement")
                onReceived(from: r, n)
            default:
                try locks.onMessage(from: r, payload)
            }
        } catch {
            writeStderr("plexus[\(rank)]: dropped a malformed sync message from rank \(r): \(error)")
        }
    }
}

extension Plexus {
    /// The detector of a process with these settings; its messages travel
    /// as `.deadlock` frames to the rank with the global PID they name.
    fileprivate static func deadlockAgent(_ settings: DeadlockSettings, rank: Int, pid: ProcessID, node: String,
                                          pids: [ProcessID], peers: PeerTable, recorder: DeadlockRecorder?) -> DeadlockAgent {
        let rankOf = Dictionary(uniqueKeysWithValues: pids.enumerated().map { ($1, $0) })
        return DeadlockAgent(
            settings: settings, rank: rank, pid: pid, node: node,
            send: { to, bytes in
                guard let r = rankOf[to] else { return }
                try? peers.send(Frame(.deadlock, payload: bytes), to: r)
            },
            describe: { cycle, policy in
                let ranks = DeadlockReport.ranks(of: cycle, pids: pids)
                let text = "deadlock found among \(cycle.hops.count) processes: \(DeadlockReport.text(of: cycle, ranks: ranks))"
                switch policy {
                case .report:
                    return text + ". Every process on it stays blocked (--deadlock report): stop the job, and make every process acquire locks in one order"
                default:
                    return text + ". Rank \(ranks[0]) (global PID \(cycle.victim), the highest on the cycle) is the victim: its acquire fails (--deadlock abort)"
                }
            },
            recorder: recorder, pids: pids)
    }
}

extension MemoryEngine {
    /// `synchronize`, failing as every other wait of the runtime does: a
    /// lost peer is `PlexusError.peerGone`, naming the rank.
    func synchronizing(_ hook: (inout any CoherenceProtocol, SyncTicket) -> [MemoryEffect]) throws(PlexusError) -> [UInt8] {
        do { return try synchronize(hook) } catch {
            if case .peerGone(let r, let why) = error { throw .peerGone(rank: r, reason: why) }
            throw .memory(error)
        }
    }
}

extension Plexus {
    /// Rank `r` received `n` more of our messages.
    fileprivate func onReceived(from r: Int, _ n: Int) {
        unacknowledged.withLock { $0[r] = max(0, $0[r] - n) }
    }
}

/// Maps ranks to global PIDs for every sender of the runtime (messages,
/// collectives, locks, the memory engine), and knows which ranks are lost:
/// a send to one fails naming the rank and why, never by dialling its old
/// address ("connection refused").
final class PeerTable: MemoryLink, @unchecked Sendable {
    private var transport: TCPTransport?
    private var pids: [ProcessID] = []
    private let lostRanks = Locked<(all: [Int: String], first: (rank: Int, reason: String)?)>(([:], nil))

    /// Called once, before any message can flow.
    func set(transport: TCPTransport, pids: [ProcessID]) {
        self.transport = transport
        self.pids = pids
    }

    /// Records a lost rank; false if it was known already.
    func lost(_ rank: Int, _ why: String) -> Bool {
        lostRanks.withLock { l in
            guard l.all[rank] == nil else { return false }
            l.all[rank] = why
            if l.first == nil { l.first = (rank, why) }
            return true
        }
    }

    /// The first rank lost and why: the likely cause of every later failure.
    var firstLost: (rank: Int, reason: String)? { lostRanks.value.first }

    /// A user-facing reason for a connection that ended without a goodbye.
    static func describeLoss(_ transportReason: String) -> String {
        if transportReason.hasPrefix(LinkFault.reasonPrefix) {
            return "its link broke: " + transportReason.dropFirst(LinkFault.reasonPrefix.count)
        }
        return transportReason == "closed by peer"
            ? "it ended without calling finalize (it exited, crashed or was killed)"
            : "its connection broke without a goodbye (\(transportReason))"
    }

    func send(_ frame: Frame, to rank: Int) throws(PlexusError) {
        let t = try transport(to: rank)
        do throws(TransportError) { try t.send(frame, to: pids[rank]) } catch { throw failure(error, sendingTo: rank) }
    }

    func sendMemory(_ bytes: [UInt8], to rank: Int) throws {
        try send(Frame(.memory, payload: bytes), to: rank)
    }

    func sendMemoryIfRoom(_ bytes: [UInt8], to rank: Int) throws -> Bool {
        let t = try transport(to: rank)
        do throws(TransportError) { return try t.sendIfRoom(Frame(.memory, payload: bytes), to: pids[rank]) } catch {
            throw failure(error, sendingTo: rank)
        }
    }

    /// The transport, if `rank` can still be sent to.
    private func transport(to rank: Int) throws(PlexusError) -> any Transport {
        if let why = lostRanks.value.all[rank] { throw .peerGone(rank: rank, reason: why) }
        guard let t = transport else { throw .finalized }
        return t
    }

    private func failure(_ error: TransportError, sendingTo rank: Int) -> PlexusError {
        if case .peerLost(_, let reason) = error {
            return .peerGone(rank: rank, reason: lostRanks.value.all[rank] ?? Self.describeLoss(reason))
        }
        return .transport(error)
    }
}

func writeStderr(_ s: String) {
    let line = s + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
}

/// Holds frames that arrive before this process has finished joining. A
/// peer with a lower PID can finish its own join, and fault on a page this
/// process manages, as soon as it has dialled us, which may be before we
/// have read the job's directory; such a frame must wait, not be dropped.
/// Frames are released in arrival order, before any later frame.
final class FrameGate: @unchecked Sendable {
    private let lock = NSLock()
    private var target: Plexus?
    private var early: [(ProcessID, Frame?, String)] = []
    static let maxEarly = 65_536

    func deliver(_ from: ProcessID, _ frame: Frame) {
        lock.lock()
        if let t = target {
            lock.unlock()
            t.onFrame(from: from, frame)
            return
        }
        if early.count < Self.maxEarly {
            early.append((from, frame, ""))
        } else {
            writeStderr("plexus: dropped a frame from process \(from) that arrived before this process joined (more than \(Self.maxEarly) waiting)")
        }
        lock.unlock()
    }

    func lost(_ from: ProcessID, _ why: String) {
        lock.lock()
        if let t = target {
            lock.unlock()
            t.onPeerLost(from, why)
            return
        }
        early.append((from, nil, why))
        lock.unlock()
    }

    /// Delivers what waited, in order, then lets frames through directly.
    func open(_ p: Plexus) {
        lock.lock()
        defer { lock.unlock() }
        for (from, frame, why) in early {
            if let frame { p.onFrame(from: from, frame) } else { p.onPeerLost(from, why) }
        }
        early.removeAll()
        target = p
    }
}

extension Plexus {
    /// Fault injection on the links between ranks, for tests: the plan in
    /// PLEXUS_FAULT_INJECTION (see `LinkFaultPlan`), nil when unset; a value
    /// that does not parse refuses the join, saying the syntax. Rank 0 says
    /// on standard error that faults are injected, so that a run with the
    /// variable left set is not taken for a broken network.
    fileprivate static func linkFaultPlan(rank: Int) throws(PlexusError) -> LinkFaultPlan? {
        let plan: LinkFaultPlan?
        do { plan = try LinkFaultPlan.fromEnvironment(ProcessInfo.processInfo.environment) } catch {
            throw .join(error.description)
        }
        if let plan, rank == 0 {
            writeStderr("plexus[0]: \(LinkFaultPlan.environmentVariable) is set: the links between ranks inject faults (\(plan)); for tests only")
        }
        return plan
    }
}
