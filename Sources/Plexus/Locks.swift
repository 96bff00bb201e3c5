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

    public func acquire() throws(PlexusError) {
        let began = SynchronizationWaits.now()
        defer { runtime.synchronizationWaits.lockCallEnded(began: began) }
        _ = try runtime.locks.acquire(id, tryOnly: false, runtime: runtime)
    }

    /// Takes the lock if nobody holds it; never waits for another holder.
    public func tryAcquire() throws(PlexusError) -> Bool {
        let began = SynchronizationWaits.now()
        defer { runtime.synchronizationWaits.lockCallEnded(began: began) }
        return try runtime.locks.acquire(id, tryOnly: true, runtime: runtime)
    }

    /// Throws `.lockMisuse` if this thread does not hold the lock.
    public func release() throws(PlexusError) {
        let began = SynchronizationWaits.now()
        defer { runtime.synchronizationWaits.lockCallEnded(began: began) }
        try runtime.locks.release(id, runtime: runtime)
    }

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
    private var sendFrame: (@Sendable (Frame, Int) throws(PlexusError) -> Void)?
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
    /// The first peer lost: from then on every acquire fails naming it.
    private var failure: (rank: Int, reason: String)?
    private let cond = NSCondition()
    /// Counts grants, denials and failures as they arrive, readable without
    /// `cond` so that an acquirer can poll for its answer before sleeping.
    private let answers = Atomic<UInt64>(0)
    private let spin = SpinWait.replyImminent

    init(rank: Int, size: Int) {
        self.rank = rank
        self.size = size
    }

    func attach(send: @escaping @Sendable (Frame, Int) throws(PlexusError) -> Void, memory: MemoryEngine?) {
        sendFrame = send
        self.memory = memory
    }

    private func manager(of id: Int) -> Int { id % size }

    func acquire(_ id: Int, tryOnly: Bool, runtime: Plexus) throws(PlexusError) -> Bool {
        let me = UInt(pthread_self())
        cond.lock()
        while true {
            if let f = failure {
                cond.unlock()
                throw .peerGone(rank: f.rank, reason: f.reason)
            }
            guard local[id]?.busy == true else { break }
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
        defer { runtime.waitEnded(.lock(id), token) }
        let answered = answers.load(ordering: .acquiring)
        do throws(PlexusError) {
            try deliver(kind: 3, id: id, flag: tryOnly, payload: [], to: manager(of: id))
        } catch {
            // The request never left: nothing is owed to anyone, and the
            // threads of this process waiting for the lock may try.
            abandon(id)
            throw error
        }
        // The grant is one round trip away: poll for it before sleeping.
        _ = spin.poll { answers.load(ordering: .acquiring) != answered }
        cond.lock()
        while local[id]?.grant == nil && local[id]?.denied != true && failure == nil { cond.wait() }
        if let grant = local[id]?.grant {
            local[id]!.holderThread = me
            cond.unlock()
            do throws(PlexusError) {
                _ = try memory?.synchronizing { c, t in c.onAcquire(lock: id, grant: grant, ticket: t) }
            } catch {
                abandon(id)
                throw error
            }
            return true
        }
        if local[id]?.denied == true {
            local[id] = nil
            cond.broadcast()
            cond.unlock()
            return false
        }
        let f = failure!
        local[id] = nil
        cond.broadcast()
        cond.unlock()
        throw .peerGone(rank: f.rank, reason: f.reason)
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
        // Whatever fails below, this process no longer holds the lock: its
        // other threads must not wait for a release that cannot come.
        defer { abandon(id) }
        let payload = try memory?.synchronizing { c, t in c.onRelease(lock: id, ticket: t) } ?? []
        try deliver(kind: 5, id: id, flag: false, payload: payload, to: manager(of: id))
    }

    /// Forgets this process's state for lock `id` and wakes its waiting threads.
    private func abandon(_ id: Int) {
        cond.lock()
        local[id] = nil
        cond.broadcast()
        cond.unlock()
    }

    /// What this process's side of the locks looks like now, for the
    /// stuck-job report: the locks it holds, and for the locks it manages,
    /// who holds each and who queues for it.
    func snapshot() -> (held: [Int], managed: [(id: Int, holder: Int, queue: [Int])]) {
        cond.lock()
        let held = local.filter { $0.value.holderThread != nil }.map(\.key).sorted()
        cond.unlock()
        managerLock.lock()
        let managed = self.managed.compactMap { id, m in m.holder.map { (id: id, holder: $0, queue: m.queue) } }.sorted { $0.id < $1.id }
        managerLock.unlock()
        return (held, managed)
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
        try send(Frame(.sync, payload: w.bytes), target)
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
        if failure == nil { failure = (r, why) }
        answers.add(1, ordering: .releasing)
        cond.broadcast()
        cond.unlock()
    }
}
