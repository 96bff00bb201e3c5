#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Memory
import Synchronization
import Transport
import Wire

/// A lock shared by every process of the job, identified by a number.
///
/// `acquire` blocks until this thread holds the lock cluster-wide; `release`
/// hands it on. A process holds a lock for one thread at a time: another
/// thread of the same process that acquires it waits its turn. The coherence
/// protocol does its part at both ends (nothing for sc; release-consistency
/// protocols make writes visible here).
public struct DistributedLock: Sendable {
    public let id: Int
    let runtime: Plexus

    public func acquire() throws(PlexusError) { _ = try runtime.locks.acquire(id, tryOnly: false, runtime: runtime) }

    /// Takes the lock if nobody holds it; never waits for another holder.
    public func tryAcquire() throws(PlexusError) -> Bool { try runtime.locks.acquire(id, tryOnly: true, runtime: runtime) }

    /// Throws `.lockMisuse` if this thread does not hold the lock.
    public func release() throws(PlexusError) { try runtime.locks.release(id, runtime: runtime) }

    /// Runs `body` holding the lock, and releases it even if `body` throws.
    public func withLock<R>(_ body: () throws -> R) throws -> R {
        try acquire()
        defer { try? release() }
        return try body()
    }
}

extension Plexus {
    /// The job-wide lock with this number (any non-negative number).
    public func lock(_ id: Int) -> DistributedLock {
        precondition(id >= 0, "lock ids are non-negative")
        return DistributedLock(id: id, runtime: self)
    }
}

/// Both roles of the lock protocol: the manager of the locks whose
/// `id % size == rank` (a FIFO queue of waiting ranks per lock, bounded by
/// the job size since a process has at most one request per lock out), and
/// the client side that serialises this process's threads.
///
/// Messages (`.sync` frames): 3 request(id, try), 4 grant(id, payload),
/// 5 release(id, payload), 6 denied(id). A grant carries what the last
/// releaser's protocol attached to its release.
final class LockService: @unchecked Sendable {
    let rank: Int
    let size: Int
    private var sendFrame: (@Sendable (Frame, Int) throws(TransportError) -> Void)?
    private var memory: MemoryEngine?

    // Manager role.
    private struct Managed {
        var holder: Int?
        var queue: [Int] = []
        var payload: [UInt8] = []
    }
    private var managed: [Int: Managed] = [:]
    private let managerLock = NSLock()

    // Client role.
    private struct Local {
        var busy = false
        var holderThread: UInt?
        var grant: [UInt8]?
        var denied = false
    }
    private var local: [Int: Local] = [:]
    private var failure: String?
    private let cond = NSCondition()
    /// Counts grants, denials and failures as they arrive, readable without
    /// `cond` so that an acquirer can poll for its answer before sleeping.
    private let answers = Atomic<UInt64>(0)
    private let spin = SpinWait.replyImminent

    init(rank: Int, size: Int) {
        self.rank = rank
        self.size = size
    }

    func attach(send: @escaping @Sendable (Frame, Int) throws(TransportError) -> Void, memory: MemoryEngine?) {
        sendFrame = send
        self.memory = memory
    }

    private func manager(of id: Int) -> Int { id % size }

    func acquire(_ id: Int, tryOnly: Bool, runtime: Plexus) throws(PlexusError) -> Bool {
        let me = UInt(pthread_self())
        cond.lock()
        while local[id]?.busy == true {
            if local[id]?.holderThread == me {
                cond.unlock()
                throw .lockMisuse("lock \(id) is already held by this thread: Plexus locks are not recursive")
            }
            if tryOnly { cond.unlock(); return false }
            cond.wait()
        }
        local[id] = Local(busy: true)
        cond.unlock()

        let token = runtime.waitBegan(.lock(id))
        let answered = answers.load(ordering: .acquiring)
        try deliver(kind: 3, id: id, flag: tryOnly, payload: [], to: manager(of: id))
        // The grant is one round trip away: poll for it before sleeping.
        _ = spin.poll { answers.load(ordering: .acquiring) != answered }
        cond.lock()
        while local[id]?.grant == nil && local[id]?.denied != true && failure == nil { cond.wait() }
        if let f = failure {
            local[id] = nil
            cond.unlock()
            runtime.waitEnded(.lock(id), token)
            throw .peerGone(rank: -1, reason: f)
        }
        if local[id]?.denied == true {
            local[id] = nil
            cond.broadcast()
            cond.unlock()
            runtime.waitEnded(.lock(id), token)
            return false
        }
        let grant = local[id]!.grant!
        local[id]!.holderThread = me
        cond.unlock()
        runtime.waitEnded(.lock(id), token)
        _ = memory?.synchronize { c, t in c.onAcquire(lock: id, grant: grant, ticket: t) }
        return true
    }

    func release(_ id: Int, runtime: Plexus) throws(PlexusError) {
        let me = UInt(pthread_self())
        cond.lock()
        guard let l = local[id], l.holderThread != nil else {
            cond.unlock()
            throw .lockMisuse("cannot release lock \(id): this process does not hold it (acquire it first)")
        }
        guard l.holderThread == me else {
            cond.unlock()
            throw .lockMisuse("cannot release lock \(id): another thread of this process holds it")
        }
        cond.unlock()
        let payload = memory?.synchronize { c, t in c.onRelease(lock: id, ticket: t) } ?? []
        try deliver(kind: 5, id: id, flag: false, payload: payload, to: manager(of: id))
        cond.lock()
        local[id] = nil
        cond.broadcast()
        cond.unlock()
    }

    /// Sends a lock message, or handles it here when this rank is the target.
    private func deliver(kind: UInt8, id: Int, flag: Bool, payload: [UInt8], to target: Int) throws(PlexusError) {
        var w = ByteWriter()
        w.u8(kind); w.u64(UInt64(id)); w.bool(flag); w.blob(payload)
        if target == rank {
            do { try onMessage(from: rank, w.bytes) } catch { preconditionFailure("own lock message rejected: \(error)") }
            return
        }
        guard let send = sendFrame else { throw .finalized }
        do { try send(Frame(.sync, payload: w.bytes), target) } catch { throw .transport(error) }
    }

    func onMessage(from r: Int, _ payload: [UInt8]) throws(WireError) {
        var rd = ByteReader(payload)
        let kind = try rd.u8("lock message kind")
        let raw = try rd.u64("lock id")
        guard raw < UInt64(Int.max) else { throw .malformed("lock id \(raw)") }
        let id = Int(raw)
        let flag = try rd.bool("try flag")
        let body = try rd.blob("lock payload", limit: Frame.defaultMaxPayload)
        try rd.expectEnd("lock message")
        switch kind {
        case 3, 5:
            guard manager(of: id) == rank else { throw .malformed("lock \(id) is managed by rank \(manager(of: id)), not \(rank)") }
            managerLock.lock()
            var m = managed[id] ?? Managed()
            var out: [(UInt8, Int, [UInt8])] = []
            if kind == 3 {
                if m.holder == nil {
                    m.holder = r
                    out.append((4, r, m.payload))
                } else if flag {
                    out.append((6, r, []))
                } else if !m.queue.contains(r) && m.holder != r && m.queue.count < size {
                    m.queue.append(r)
                } else {
                    managerLock.unlock()
                    throw .malformed("rank \(r) asked for lock \(id) twice")
                }
            } else {
                guard m.holder == r else {
                    managerLock.unlock()
                    throw .malformed("rank \(r) released lock \(id) held by \(m.holder.map(String.init) ?? "nobody")")
                }
                m.payload = body
                m.holder = m.queue.isEmpty ? nil : m.queue.removeFirst()
                if let next = m.holder { out.append((4, next, m.payload)) }
            }
            managed[id] = m
            // Sent under the manager lock so grants for one lock leave in order.
            for (k, to, p) in out { try? deliver(kind: k, id: id, flag: false, payload: p, to: to) }
            managerLock.unlock()
        case 4, 6:
            cond.lock()
            if kind == 4 { local[id, default: Local(busy: true)].grant = body } else { local[id, default: Local(busy: true)].denied = true }
            answers.add(1, ordering: .releasing)
            cond.broadcast()
            cond.unlock()
        default:
            throw .malformed("unknown sync kind \(kind)")
        }
    }

    func peerLost(_ r: Int, _ why: String) {
        cond.lock()
        failure = "rank \(r) is gone while locks were in use: \(why)"
        answers.add(1, ordering: .releasing)
        cond.broadcast()
        cond.unlock()
    }
}
