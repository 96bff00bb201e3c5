#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Deadlock
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
///
/// Every grant of a lock carries a fencing token, larger than any earlier
/// grant's of the same lock (`token`). A process blocked in `acquire` takes
/// part in deadlock detection (`plexus run --deadlock`): when its wait closes
/// a cycle of processes each waiting for a lock the next one holds, one of
/// them (the highest global PID on the cycle) is the victim, and under the
/// default policy its `acquire` throws `PlexusError.deadlock` naming the
/// cycle, without the lock.
public struct DistributedLock: Sendable {
    public let id: Int
    let runtime: Plexus

    public func acquire() throws(PlexusError) {
        let began = SynchronizationWaits.now()
        defer { runtime.synchronizationWaits.lockCallEnded(began: began) }
        _ = try runtime.locks.acquire(id, tryOnly: false, runtime: runtime)
    }

    /// The fencing token of this process's current hold of the lock, nil
    /// when it does not hold it. Tokens of one lock strictly increase from
    /// grant to grant, job-wide: a resource outside the job that remembers
    /// the highest token it has seen can refuse a stale holder's writes.
    public var token: UInt64? { runtime.locks.token(id) }

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
/// Messages (`.sync` frames: kind u8, lock id u64, flag bool, token u64,
/// rank u32, payload blob): 3 request(id, try), 4 grant(id, token, payload),
/// 5 release(id, payload), 6 denied(id), 8 acquired(id, token),
/// 9 holder(id, rank, token), 10 withdraw(id), 11 withdrawn(id). A grant
/// carries what the last releaser's protocol attached to its release, and a
/// token one above the lock's previous grant.
///
/// ## Deadlock detection
/// With a detector (`DeadlockAgent`, policy abort or report), a request
/// that waits reports a wait on `.lock(id)` for the lock's holder, a stable
/// edge in the detector's sense:
/// - the holder tells the manager `acquired` once its acquisition completed
///   (its own wait ended first), and only then does the manager name it to
///   the queued waiters (`holder`, and to each later request while it holds);
/// - a probe or confirm that arrives along an edge "waits for lock L" is
///   dropped unless this process holds L: a waiter's edge to a holder that
///   has since released (the manager's update still on its way) is never
///   followed. The receiving process is blocked in the wait its hop records
///   from the probe's visit to the confirm's, and only the blocked thread
///   holds locks then (below), so it holds L throughout: the edge existed
///   when the probe returned.
/// A process reports a wait only while the blocked thread is the only
/// thread of the process holding or acquiring Plexus locks (another could
/// release a lock the detector takes as held for good); a wait reported
/// ends when another thread starts acquiring. So deadlocks among processes
/// whose locks are used by one thread at a time are found; those involving
/// several lock-using threads of one process are not.
///
/// The victim's request is withdrawn: `withdraw` takes it out of the queue
/// (or, if the grant crossed it, hands the lock on with the payload it
/// came with), and `withdrawn` tells the victim, behind any such grant, that
/// it can forget the request; its `acquire` then throws `.deadlock`.
final class LockService: @unchecked Sendable {
    let rank: Int
    let size: Int
    private var sendFrame: (@Sendable (Frame, Int) throws(PlexusError) -> Void)?
    private var memory: MemoryEngine?
    private var agent: DeadlockAgent?
    private var pids: [UInt64] = []

    // Manager role.
    private struct Managed {
        var holder: Int?
        /// The token of the latest grant; the first grant's is 1.
        var token: UInt64 = 0
        /// The holder said its acquisition completed (`acquired`).
        var confirmed = false
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
        var grantToken: UInt64 = 0
        var denied = false
        /// The detector's wait for this request, while reported.
        var waitSequence: UInt64?
        /// Policy abort made this request's wait the victim of this cycle.
        var victimOf: DeadlockCycle?
        var withdrawn = false
    }
    private var local: [Int: Local] = [:]
    /// Threads of this process holding or acquiring locks, with how many.
    private var engaged: [UInt: Int] = [:]
    /// The wait reported to the detector, if any (at most one: see above).
    private var reported: (id: Int, sequence: UInt64)?
    private let cond = NSCondition()
    /// Counts grants, denials and failures as they arrive, readable without
    /// `cond` so that an acquirer can poll for its answer before sleeping.
    private let answers = Atomic<UInt64>(0)
    private let spin = SpinWait.replyImminent

    init(rank: Int, size: Int) {
        self.rank = rank
        self.size = size
    }

    func attach(send: @escaping @Sendable (Frame, Int) throws(PlexusError) -> Void, memory: MemoryEngine?,
                deadlocks: DeadlockAgent?, pids: [UInt64]) {
        sendFrame = send
        self.memory = memory
        agent = deadlocks
        self.pids = pids
    }

    private func manager(of id: Int) -> Int { id % size }

    // MARK: Client

    func acquire(_ id: Int, tryOnly: Bool, runtime: Plexus) throws(PlexusError) -> Bool {
        let me = UInt(pthread_self())
        cond.lock()
        engage(me)
        while true {
            // Once a peer is lost every acquire fails naming the first one
            // (the peer table is the one record of losses; `peerLost` only
            // wakes the waiters).
            if let f = runtime.peers.firstLost {
                disengage(me)
                cond.unlock()
                throw .peerGone(rank: f.rank, reason: f.reason)
            }
            guard local[id]?.busy == true else { break }
            if local[id]?.holderThread == me {
                disengage(me)
                cond.unlock()
                throw .lockMisuse("lock \(id) is already held by this thread: Plexus locks are not recursive")
            }
            if tryOnly { disengage(me); cond.unlock(); return false }
            cond.wait()
        }
        local[id] = Local(busy: true)
        if !tryOnly, let agent, engaged.count == 1 {
            // Waiting for nobody until the manager names the holder.
            let sequence = agent.waitStarted(.lock(UInt64(id)), waitingFor: [])
            local[id]!.waitSequence = sequence
            reported = (id, sequence)
        }
        cond.unlock()

        let token = runtime.waitBegan(.lock(id))
        defer { runtime.waitEnded(.lock(id), token) }
        let answered = answers.load(ordering: .acquiring)
        do throws(PlexusError) {
            try deliver(kind: 3, id: id, flag: tryOnly, to: manager(of: id))
        } catch {
            // The request never left: nothing is owed to anyone, and the
            // threads of this process waiting for the lock may try.
            abandon(id, thread: me)
            throw error
        }
        // The grant is one round trip away: poll for it before sleeping.
        _ = spin.poll { answers.load(ordering: .acquiring) != answered }
        cond.lock()
        while local[id]?.grant == nil && local[id]?.denied != true && local[id]?.victimOf == nil && runtime.peers.firstLost == nil { cond.wait() }
        if let grant = local[id]?.grant {
            // The wait ends before the manager hears the acquisition completed.
            endReportedWait(id)
            local[id]!.holderThread = me
            let granted = local[id]!.grantToken
            cond.unlock()
            do throws(PlexusError) {
                _ = try memory?.synchronizing { c, t in c.onAcquire(lock: id, grant: grant, ticket: t) }
            } catch {
                abandon(id, thread: me)
                throw error
            }
            if agent != nil { try? deliver(kind: 8, id: id, token: granted, to: manager(of: id)) }
            return true
        }
        if local[id]?.denied == true {
            endReportedWait(id)
            local[id] = nil
            disengage(me)
            cond.broadcast()
            cond.unlock()
            return false
        }
        if let cycle = local[id]?.victimOf {
            cond.unlock()
            // Out of the manager's queue; a grant that crossed the withdrawal
            // arrives before the answer and is handed on by the manager.
            try? deliver(kind: 10, id: id, to: manager(of: id))
            cond.lock()
            while local[id]?.withdrawn != true && runtime.peers.firstLost == nil { cond.wait() }
            endReportedWait(id)
            local[id] = nil
            disengage(me)
            let held = local.filter { $0.value.holderThread != nil }.map(\.key).sorted()
            cond.broadcast()
            cond.unlock()
            throw .deadlock(DeadlockReport(cycle: cycle, pids: pids, lock: id, held: held))
        }
        let f = runtime.peers.firstLost!
        endReportedWait(id)
        local[id] = nil
        disengage(me)
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
        defer { abandon(id, thread: me) }
        let payload = try memory?.synchronizing { c, t in c.onRelease(lock: id, ticket: t) } ?? []
        try deliver(kind: 5, id: id, payload: payload, to: manager(of: id))
    }

    /// The token of this process's hold of lock `id`, nil if it holds none.
    func token(_ id: Int) -> UInt64? {
        cond.lock()
        defer { cond.unlock() }
        guard let l = local[id], l.holderThread != nil else { return nil }
        return l.grantToken
    }

    /// Whether this process holds lock `id` (its acquisition completed).
    func holds(_ id: Int) -> Bool {
        cond.lock()
        defer { cond.unlock() }
        return local[id]?.holderThread != nil
    }

    /// Policy abort chose wait `sequence` as a deadlock's victim: its
    /// acquire withdraws the request and throws.
    func abortWait(sequence: UInt64, cycle: DeadlockCycle) {
        cond.lock()
        if let r = reported, r.sequence == sequence, let l = local[r.id], l.grant == nil {
            local[r.id]!.victimOf = cycle
            cond.broadcast()
        }
        cond.unlock()
    }

    /// Forgets this process's state for lock `id` and wakes its waiting threads.
    private func abandon(_ id: Int, thread: UInt) {
        cond.lock()
        endReportedWait(id)
        local[id] = nil
        disengage(thread)
        cond.broadcast()
        cond.unlock()
    }

    /// Under `cond`: `thread` starts holding or acquiring a lock. A wait
    /// reported for another thread stops being one the detector may follow.
    private func engage(_ thread: UInt) {
        engaged[thread, default: 0] += 1
        if let r = reported, engaged.count > 1 { endReportedWait(r.id) }
    }

    /// Under `cond`.
    private func disengage(_ thread: UInt) {
        guard let n = engaged[thread] else { return }
        engaged[thread] = n > 1 ? n - 1 : nil
    }

    /// Under `cond`: lock `id`'s request no longer has a reported wait.
    private func endReportedWait(_ id: Int) {
        guard let sequence = local[id]?.waitSequence else { return }
        local[id]!.waitSequence = nil
        agent?.waitEnded(sequence)
        if reported?.sequence == sequence { reported = nil }
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

    // MARK: Messages

    /// Sends a lock message, or handles it here when this rank is the target.
    private func deliver(kind: UInt8, id: Int, flag: Bool = false, token: UInt64 = 0, holder: Int = 0,
                         payload: [UInt8] = [], to target: Int) throws(PlexusError) {
        var w = ByteWriter()
        w.u8(kind); w.u64(UInt64(id)); w.bool(flag); w.u64(token); w.u32(UInt32(holder)); w.blob(payload)
        if target == rank {
            do { try onMessage(from: rank, w.bytes) } catch { preconditionFailure("own lock message rejected: \(error)") }
            return
        }
        guard let send = sendFrame else { throw .finalized }
        try send(Frame(.sync, payload: w.bytes), target)
    }

    private struct Outgoing {
        var kind: UInt8
        var to: Int
        var token: UInt64 = 0
        var holder: Int = 0
        var payload: [UInt8] = []
    }

    func onMessage(from r: Int, _ payload: [UInt8]) throws(WireError) {
        var rd = ByteReader(payload)
        let kind = try rd.u8("lock message kind")
        let raw = try rd.u64("lock id")
        guard raw < UInt64(Int.max) else { throw .malformed("lock id \(raw)") }
        let id = Int(raw)
        let flag = try rd.bool("try flag")
        let token = try rd.u64("lock token")
        let holderRaw = try rd.u32("lock holder")
        let body = try rd.blob("lock payload", limit: Frame.defaultMaxPayload)
        try rd.expectEnd("lock message")
        switch kind {
        case 3, 5, 8, 10:
            guard manager(of: id) == rank else { throw .malformed("lock \(id) is managed by rank \(manager(of: id)), not \(rank)") }
            managerLock.lock()
            var m = managed[id] ?? Managed()
            var out: [Outgoing] = []
            switch kind {
            case 3:
                if m.holder == nil {
                    m.holder = r
                    m.token += 1
                    m.confirmed = false
                    out.append(Outgoing(kind: 4, to: r, token: m.token, payload: m.payload))
                } else if flag {
                    out.append(Outgoing(kind: 6, to: r))
                } else if !m.queue.contains(r) && m.holder != r && m.queue.count < size {
                    m.queue.append(r)
                    if m.confirmed, let h = m.holder { out.append(Outgoing(kind: 9, to: r, token: m.token, holder: h)) }
                } else {
                    managerLock.unlock()
                    throw .malformed("rank \(r) asked for lock \(id) twice")
                }
            case 5:
                guard m.holder == r else {
                    managerLock.unlock()
                    throw .malformed("rank \(r) released lock \(id) held by \(m.holder.map(String.init) ?? "nobody")")
                }
                m.payload = body
                handOff(&m, &out)
            case 8:
                // The holder's acquisition completed: name it to the waiters.
                if m.holder == r && m.token == token && !m.confirmed {
                    m.confirmed = true
                    for w in m.queue { out.append(Outgoing(kind: 9, to: w, token: m.token, holder: r)) }
                }
            default:
                if let i = m.queue.firstIndex(of: r) {
                    m.queue.remove(at: i)
                } else if m.holder == r {
                    // The grant crossed the withdrawal: the victim drops it,
                    // and the lock goes on with the payload it came with.
                    handOff(&m, &out)
                }
                out.append(Outgoing(kind: 11, to: r))
            }
            managed[id] = m
            // Sent under the manager lock so grants for one lock leave in order.
            for o in out { try? deliver(kind: o.kind, id: id, token: o.token, holder: o.holder, payload: o.payload, to: o.to) }
            managerLock.unlock()
        case 4, 6:
            cond.lock()
            if kind == 4 {
                local[id, default: Local(busy: true)].grant = body
                local[id, default: Local(busy: true)].grantToken = token
            } else {
                local[id, default: Local(busy: true)].denied = true
            }
            answers.add(1, ordering: .releasing)
            cond.broadcast()
            cond.unlock()
        case 9:
            guard Int(holderRaw) < size, Int(holderRaw) != rank else { throw .malformed("lock \(id) held by rank \(holderRaw) of \(size)") }
            cond.lock()
            if let l = local[id], l.grant == nil, l.holderThread == nil, let sequence = l.waitSequence {
                agent?.waitChanged(sequence, waitingFor: [pids[Int(holderRaw)]])
            }
            cond.unlock()
        case 11:
            cond.lock()
            if local[id] != nil { local[id]!.withdrawn = true }
            cond.broadcast()
            cond.unlock()
        default:
            throw .malformed("unknown sync kind \(kind)")
        }
    }

    /// Manager: the holder of `m` let go; the next in the queue gets it.
    private func handOff(_ m: inout Managed, _ out: inout [Outgoing]) {
        m.confirmed = false
        m.holder = m.queue.isEmpty ? nil : m.queue.removeFirst()
        if let next = m.holder {
            m.token += 1
            out.append(Outgoing(kind: 4, to: next, token: m.token, payload: m.payload))
        }
    }

    /// A peer was lost (the peer table has it): wakes every acquirer, which
    /// then fails naming the first rank lost.
    func peerLost() {
        cond.lock()
        answers.add(1, ordering: .releasing)
        cond.broadcast()
        cond.unlock()
    }
}
