import CFault
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How the engine sends protocol messages: FIFO per pair of ranks. The
/// umbrella layer maps ranks to global PIDs and frames the bytes.
public protocol MemoryLink: Sendable {
    func sendMemory(_ bytes: [UInt8], to rank: Int) throws
    /// Sends only if that cannot block (the socket has room); false: nothing
    /// was sent. The engine's threads that also read (a reader answering its
    /// peer) write this way, and leave the rest to a thread that may block.
    func sendMemoryIfRoom(_ bytes: [UInt8], to rank: Int) throws -> Bool
}

extension MemoryLink {
    /// Links without a notion of room send, and may block.
    public func sendMemoryIfRoom(_ bytes: [UInt8], to rank: Int) throws -> Bool {
        try sendMemory(bytes, to: rank)
        return true
    }
}

/// Everything that happens to pages, for statistics, traces and reports.
/// Called with the engine's lock held: implementations must be quick and
/// must not call back into the engine.
public protocol PageEventObserver: AnyObject, Sendable {
    func pageEvent(_ event: MemoryStatistic)
    /// A fault was served after `nanoseconds` of waiting (the first fault
    /// taken on its page since the page was last completed).
    func faultServed(_ fault: Fault, nanoseconds: UInt64)
}

/// What a process waits for, for the deadlock detector and traces. Every
/// blocking wait of the memory layer (page faults, locks, barriers) is
/// reported here when it begins and ends.
public enum WaitTarget: Sendable, Hashable, CustomStringConvertible {
    case page(Int)
    case lock(Int)
    case barrier(UInt64)

    public var description: String {
        switch self {
        case .page(let p): "page \(p)"
        case .lock(let l): "lock \(l)"
        case .barrier(let e): "barrier #\(e)"
        }
    }
}

public protocol WaitObserver: AnyObject, Sendable {
    func waitBegan(_ target: WaitTarget, thread: UInt64)
    func waitEnded(_ target: WaitTarget, thread: UInt64)
}

/// Drives one coherence core: feeds it faults (from CFault's doorbell, on the
/// engine's fault thread) and peer messages (on the transport's reader
/// threads, directly: no hand-off, since every hand-off costs a wake-up),
/// and performs the effects it returns, in order, under one lock.
///
/// Local effects (installs, protections, wake-ups) are performed under the
/// lock. Messages are encoded under the lock, in the core's order, into an
/// outbox, and written after it is released (`flush`): a loopback send costs
/// 10-25 µs of system call, and a thread that waited for the engine lock
/// that long (a fault behind the previous fault's messages) then also paid a
/// futex wake-up. Whoever finds messages in the outbox writes them
/// unless another thread is writing already, in which case that thread takes
/// them too. One writer at a time, taking the outbox in order, keeps every
/// pair's FIFO order. A message waiting in the outbox is, to the protocols,
/// the same as one still in a socket buffer. Sends block only while a socket
/// buffer is full, which the protocols' bounded number of requests in flight
/// keeps from happening.
///
/// The engine's own threads never touch the application view (only the
/// system view), so they can never fault on the region themselves.
public final class MemoryEngine: @unchecked Sendable {
    public let region: SharedRegion
    public let configuration: CoherenceConfiguration
    public let protocolName: String
    private let channel: FaultChannel
    private let link: MemoryLink
    private let lock = NSLock()
    /// Encoded messages in the core's order, appended under `lock`. Its
    /// length is bounded by the protocols' messages in flight (every input
    /// produces a bounded number, and every appender writes or leaves it to
    /// the thread writing). `outboxLimit` is a safety net above that: an
    /// appender cannot wait for room (it holds the engine lock, which the
    /// peer's answers need), so passing it stops the process with a report.
    private let outbox = Mutex<[(to: Int, bytes: [UInt8])]>([])
    static let outboxLimit = 1 << 18
    /// Held by the one thread writing the outbox's messages.
    private let writing = NSLock()
    /// Set when a write found a socket without room: the writer thread,
    /// the only one that blocks on a full socket, takes the outbox over.
    private let handOff = NSCondition()
    private var handOffWanted = false
    private var writerThread: Thread?
    private var core: any CoherenceProtocol
    private var faultStarted: [Int: (UInt64, Fault)] = [:]
    /// Twins of pages (`MemoryEffect.makeTwin`), at most one per page.
    private var twins: [Int: [UInt8]] = [:]
    /// Diffs a core stored (`MemoryEffect.storeDiff`) until it drops them.
    private var storedDiffs: [DiffKey: [UInt8]] = [:]
    /// Bytes in `twins` and `storedDiffs`.
    private var retainedBytes = 0
    /// Bytes of diffs in messages sent: a core counts a diff-carrying
    /// message without them (only the engine sees the diffs).
    private var diffBytesSent = 0
    private var ready: [UInt64: [UInt8]] = [:]
    private let readyChanged = NSCondition()
    private var nextTicket: UInt64 = 0
    private let stopping = AtomicFlag()
    private var faultThread: Thread?
    private var blockedNanos: UInt64 = 0
    /// The first peer lost (rank, why): from then on no wait that needs a
    /// message can be trusted to end (see `peerLost`). Its own lock, taken
    /// last (under `lock` or `readyChanged`), so any thread may read it.
    private let lostPeer = Mutex<(rank: Int, reason: String)?>(nil)
    public let observers: Observers

    /// Observers registered before `start()`.
    public final class Observers: @unchecked Sendable {
        public var pages: [PageEventObserver] = []
        public var waits: [WaitObserver] = []
        public init() {}
    }

    public init(configuration: CoherenceConfiguration, protocolName: String, region: SharedRegion,
                link: MemoryLink, observers: Observers = Observers()) throws(MemoryError) {
        self.configuration = configuration
        self.protocolName = protocolName
        self.region = region
        self.link = link
        self.observers = observers
        core = try ProtocolRegistry.make(protocolName, configuration: configuration)
        channel = try FaultChannel(region: region)
        if let ns = ProcessInfo.processInfo.environment["PLEXUS_HANDLER_SPIN_NS"].flatMap({ UInt64($0) }) {
            cfault_set_spin_nanoseconds(ns)
        }
    }

    /// Sets the initial owner (home) of pristine pages; see
    /// `CoherenceProtocol.onPlacement`. The caller guarantees every rank makes
    /// the same call before any rank touches the pages.
    public func place(pages: Range<Int>, home: Int) {
        guard !pages.isEmpty else { return }
        step { core.onPlacement(pages: pages, home: home) }
    }

    /// Tells the core that `pages` belong to a collective allocation every
    /// rank has placed (`CoherenceProtocol.onAllocated`); call it after the
    /// allocation's barrier.
    public func allocated(pages: Range<Int>) {
        guard !pages.isEmpty else { return }
        step {
            core.onAllocated(pages: pages)
            return []
        }
    }

    /// Restricts the fault path to allocated memory: a fault on a page
    /// outside `pages` fails at the access, with a message naming the
    /// address and `allocations` (see `FaultChannel.serveOnly`). Call it
    /// before handing out memory in the new ranges; ranges only grow.
    public func serveFaultsOnly(on pages: [Range<Int>], allocations: String) {
        channel.serveOnly(pages, allocations: allocations)
    }

    /// Warns once on stderr when `pages` pages of allocations could need
    /// more mappings than vm.max_map_count allows (see `MappingLimit`).
    /// Cheap below half the limit (no /proc read).
    public func checkMappingLimit(allocatedPages pages: Int) {
        guard !mappingWarningGiven.isSet, let limit = Self.mappingLimit, pages > limit / 2,
              let text = MappingLimit.warning(pages: pages, pageSize: region.pageSize, regionPages: region.pageCount),
              !mappingWarningGiven.set() else { return }
        note(text)
    }

    private let mappingWarningGiven = AtomicFlag()
    private static let mappingLimit = MappingLimit.limit

    /// How many pages past a fault the core may serve ahead from now on
    /// (`CoherenceConfiguration.lookAhead`); a decision of this rank alone.
    public func setLookAhead(_ pages: Int) {
        step {
            core.setLookAhead(pages)
            return []
        }
    }

    /// Prefetch hints (see `CoherenceProtocol.onPrefetch`): the calling
    /// thread will soon read, or write, each hint's pages. Returns at once;
    /// the transactions they start run on the engine's threads, and a
    /// thread that faults on one of the pages before its transaction ends
    /// waits for it. All hints of a call are one step, so their messages
    /// for each peer leave in one batch. Ignored once the engine is stopping.
    public func prefetch(_ hints: [PrefetchHint]) {
        guard !hints.isEmpty, !stopping.isSet else { return }
        for h in hints {
            precondition(h.pages.lowerBound >= 0 && h.pages.upperBound <= configuration.pageCount,
                         "prefetch of pages \(h.pages) outside 0..<\(configuration.pageCount)")
        }
        step {
            var effects: [MemoryEffect] = []
            for h in hints where !h.pages.isEmpty { effects += core.onPrefetch(pages: h.pages, forWriting: h.forWriting) }
            return effects
        }
    }

    /// Performs the core's start effects and starts the fault thread, which
    /// runs `threadStart` first (to set its scheduling, for example); returns
    /// once `threadStart` has run, so what it set holds when the caller goes on.
    public func start(threadStart: (@Sendable () -> Void)? = nil) {
        step { core.start() }
        let started = DispatchSemaphore(value: 0)
        let t = Thread { [self] in
            threadStart?()
            started.signal()
            faultLoop()
        }
        t.name = "plexus-faults"
        t.qualityOfService = .userInteractive
        faultThread = t
        t.start()
        started.wait()
        let w = Thread { [self] in writerLoop() }
        w.name = "plexus-writer"
        writerThread = w
        w.start()
    }

    /// Stops taking faults. Call once no application thread uses the region.
    public func stop() {
        if stopping.set() { return }
        _ = try? channel.uninstall()
        // Whatever another thread is still writing goes out before we return,
        // so the caller's goodbye follows every message (FIFO per pair).
        writing.lock()
        writeOutbox(blocking: true)
        writing.unlock()
        handOff.lock()
        handOff.broadcast()
        handOff.unlock()
    }

    // MARK: Inputs

    /// A frame of protocol messages (one, or a batch) from the peer with
    /// rank `peer` (a transport thread). A batch is handled in one step, so
    /// its effects are coalesced (see `perform`).
    public func onMessage(from peer: Int, _ bytes: [UInt8]) {
        let messages: [MemoryMessage]
        do {
            messages = try MemoryMessage.decodeAll(bytes, limits: configuration.messageLimits)
        } catch {
            note("dropped a malformed memory message from rank \(peer): \(error)")
            return
        }
        let (effects, waiterHere) = step {
            if messages.count == 1 { return core.onMessage(messages[0], from: peer) }
            var all: [MemoryEffect] = []
            for m in messages { all += core.onMessage(m, from: peer) }
            return all
        }
        if !waiterHere, effects.contains(where: { if case .completeFaults = $0 { return true } else { return false } }) {
            takeFaultsBriefly()
        }
    }

    /// After this thread has woken a faulting thread, that thread usually
    /// faults again within microseconds (a scan touches the next page). This
    /// thread is awake already: catching that fault here saves the fault
    /// thread's wake-up (about 7 µs here, a third of a round trip; see
    /// MEASUREMENTS.md). The window is short and bounded, so an idle
    /// process does not burn a core.
    ///
    /// It is skipped when the faulting thread was spinning on this thread's
    /// CPU: then it is not running but waiting for this CPU, and a poll here
    /// would only delay the fault it is about to take (by the whole window
    /// when this thread is real-time; see `ServingPriority` in Plexus). An
    /// in-run A/B of `plexus bench` measured the read miss 4-16 % faster with
    /// the skip (Papers/ivy-remote-fault.md, record of a078faf).
    private func takeFaultsBriefly() {
        guard Self.faultSpinNanos > 0 else { return }
        let deadline = DispatchTime.now().uptimeNanoseconds + Self.faultSpinNanos
        while DispatchTime.now().uptimeNanoseconds < deadline {
            if let f = channel.nextFault() {
                serve(f)
                return
            }
        }
    }

    /// PLEXUS_FAULT_SPIN_NS overrides the window, for experiments.
    static let faultSpinNanos: UInt64 = ProcessInfo.processInfo.environment["PLEXUS_FAULT_SPIN_NS"].flatMap { UInt64($0) } ?? 20_000

    private func serve(_ f: Fault) {
        step {
            if faultStarted[f.page] == nil { faultStarted[f.page] = (DispatchTime.now().uptimeNanoseconds, f) }
            return f.isWrite ? core.onWriteFault(page: f.page) : core.onReadFault(page: f.page)
        }
        // A fault served locally has completed by now; one that waits for a
        // message cannot be trusted to end once a peer is gone.
        lock.lock()
        let waiting = faultStarted[f.page] != nil
        lock.unlock()
        if waiting, let lost = lostPeer.withLock({ $0 }) { failWaitingFaults(pages: [f.page], lost: lost) }
    }

    /// A peer is gone without saying goodbye (it exited, crashed, or its
    /// connection broke). It may have owned or managed any page, so no
    /// request in flight can be trusted to be answered: every wait of the
    /// engine fails. A thread waiting in `synchronize` gets
    /// `MemoryError.peerGone`. A thread waiting for a page sleeps in the
    /// signal handler and cannot be handed an error: the process reports
    /// which page waited for what and exits with status 1 (the job is
    /// failing anyway, and a silent hang is the alternative). Later faults
    /// that need a message fail the same way; faults served locally go on.
    public func peerLost(_ rank: Int, reason: String) {
        let lost = lostPeer.withLock { l in
            if l == nil { l = (rank, reason) }
            return l!
        }
        lock.lock()
        let pending = faultStarted.keys.sorted()
        lock.unlock()
        readyChanged.lock()
        readyChanged.broadcast()
        readyChanged.unlock()
        if !pending.isEmpty { failWaitingFaults(pages: pending, lost: lost) }
    }

    /// The pages application threads wait for now, with how long each has
    /// waited (for the stuck-job report).
    public var waitingPages: [(page: Int, nanoseconds: UInt64)] {
        lock.lock()
        defer { lock.unlock() }
        let now = DispatchTime.now().uptimeNanoseconds
        return faultStarted.map { ($0.key, now &- $0.value.0) }.sorted { $0.page < $1.page }
    }

    private func failWaitingFaults(pages: [Int], lost: (rank: Int, reason: String)) {
        let list = pages.prefix(8).map { p in "page \(p) (address 0x\(String(region.applicationBase + UInt(p * region.pageSize), radix: 16)))" }
        let more = pages.count > 8 ? " and \(pages.count - 8) more" : ""
        terminateProcess("plexus[\(configuration.rank)]: rank \(lost.rank) is gone (\(lost.reason)), so this process's access to "
            + list.joined(separator: ", ") + more + " can never be served: exiting with status 1. "
            + "Every rank must call finalize() before it exits; see the report of rank \(lost.rank) for why it ended.")
    }

    private func faultLoop() {
        var p = pollfd(fd: channel.doorbell, events: Int16(POLLIN), revents: 0)
        while !stopping.isSet {
            let n = poll(&p, 1, 200)
            if n <= 0 { continue }
            channel.drainDoorbell()
            while let f = channel.nextFault() { serve(f) }
        }
    }

    /// Runs a synchronisation hook of the core and waits until the core says
    /// its part is done; returns the payload the core attached.
    /// Throws `.peerGone` if a peer is lost before the core is done.
    public func synchronize(_ hook: (inout any CoherenceProtocol, SyncTicket) -> [MemoryEffect]) throws(MemoryError) -> [UInt8] {
        var ticket = SyncTicket(0)
        step {
            nextTicket += 1
            ticket = SyncTicket(nextTicket)
            core.observeRetainedMemory(bytes: retainedBytes)
            return hook(&core, ticket)
        }
        readyChanged.lock()
        defer { readyChanged.unlock() }
        // Only `readyChanged` and `lostPeer` are taken here: `perform` takes
        // `readyChanged` under `lock` (for `.syncReady`), so taking `lock`
        // now would invert the order.
        while ready[ticket.id] == nil {
            if let lost = lostPeer.withLock({ $0 }) { throw .peerGone(rank: lost.rank, reason: lost.reason) }
            readyChanged.wait()
        }
        return ready.removeValue(forKey: ticket.id)!
    }

    // MARK: Effects

    /// Runs `body` (which asks the core for effects) and performs the effects
    /// under the lock, then writes the messages they queued. Every input goes
    /// through here, so no message is left in the outbox without a writer.
    /// Returns the effects, and whether a thread whose fault they completed
    /// was spinning on this thread's CPU (so it is waiting for this CPU).
    @discardableResult
    private func step(_ body: () -> [MemoryEffect]) -> (effects: [MemoryEffect], waiterOnThisCPU: Bool) {
        lock.lock()
        let effects = body()
        let cpu = perform(effects)
        lock.unlock()
        flush()
        return (effects, cpu.map { $0 == cfault_current_cpu() } ?? false)
    }

    /// Performs effects, in the order `PlannedOperation.plan` gives them
    /// (the listed order, with protections merged into runs and messages
    /// and wake-ups deferred behind them); returns the CPU on which a thread
    /// whose fault was completed was last seen spinning, if any. Caller
    /// holds `lock`. With fewer than two protection changes there is
    /// nothing to merge, and the listed order is performed as it is: a
    /// single page's fault, grant or invalidation pays nothing for planning.
    private func perform(_ effects: [MemoryEffect]) -> Int32? {
        var spinningOn: Int32? = nil
        var protections = 0
        for e in effects { if case .setProtection = e { protections += 1 } }
        if protections < 2 {
            for e in effects { perform(e, &spinningOn) }
            return spinningOn
        }
        for operation in PlannedOperation.plan(effects) {
            switch operation {
            case .protect(let pages, let access, _): protect(pages, access)
            case .complete(let i), .perform(let i): perform(effects[i], &spinningOn)
            }
        }
        return spinningOn
    }

    /// Performs one effect; notes in `spinningOn` the CPU of the first
    /// completed waiter found spinning. Caller holds `lock`.
    private func perform(_ effect: MemoryEffect, _ spinningOn: inout Int32?) {
        switch effect {
        case .send(let to, let message):
            send(message.encoded(), to: to)
        case .sendWithPage(let to, let page, let message):
            send(message.encoded(attaching: UnsafeRawBufferPointer(region.systemPage(page))), to: to)
        case .installPage(let page, let contents):
            let dst = region.systemPage(page)
            contents.withUnsafeBytes { dst.copyMemory(from: $0) }
        case .makeTwin(let page):
            let twin = Array(UnsafeRawBufferPointer(region.systemPage(page)))
            retainedBytes += twin.count - (twins.updateValue(twin, forKey: page)?.count ?? 0)
        case .sendDiff(let to, let page, let message):
            let encoded = message.attaching(diff: takeDiff(page)).encoded()
            diffBytesSent += encoded.count - message.encodedCount
            send(encoded, to: to)
        case .storeDiff(let page, let key):
            let diff = takeDiff(page)
            retainedBytes += diff.count - (storedDiffs.updateValue(diff, forKey: key)?.count ?? 0)
        case .sendStoredDiffs(let to, let message):
            let encoded = message.attachingStoredDiffs { key in
                guard let diff = storedDiffs[key] else {
                    fatalError("plexus[\(configuration.rank)]: the '\(protocolName)' protocol sent a diff it never stored (\(key))")
                }
                return diff
            }.encoded()
            diffBytesSent += encoded.count - message.encodedCount
            send(encoded, to: to)
        case .dropStoredDiffs(let last):
            storedDiffs = storedDiffs.filter { key, diff in
                guard key.interval <= last else { return true }
                retainedBytes -= diff.count
                return false
            }
        case .applyDiff(let page, let diff):
            do { try PageDiff.apply(diff, to: region.systemPage(page)) } catch {
                // The decoder checked it against the page size already.
                fatalError("plexus[\(configuration.rank)]: a checked diff for page \(page) failed to apply: \(error)")
            }
        case .setProtection(let pages, let access):
            protect(pages, access)
        case .completeFaults(let page):
            if let cpu = channel.complete(page: page), spinningOn == nil { spinningOn = cpu }
            if let (t0, fault) = faultStarted.removeValue(forKey: page) {
                let dt = DispatchTime.now().uptimeNanoseconds &- t0
                blockedNanos &+= dt
                for o in observers.pages { o.faultServed(fault, nanoseconds: dt) }
            }
        case .syncReady(let ticket, let payload):
            readyChanged.lock()
            ready[ticket.id] = payload
            readyChanged.broadcast()
            readyChanged.unlock()
        case .record(let stat):
            for o in observers.pages { o.pageEvent(stat) }
        }
    }

    /// The diff of `page` (system view) against its twin, dropping the twin;
    /// an empty diff for a page without one. Caller holds `lock`.
    private func takeDiff(_ page: Int) -> [UInt8] {
        let current = UnsafeRawBufferPointer(region.systemPage(page))
        guard let twin = twins.removeValue(forKey: page) else { return PageDiff.encode(twin: current, current: current) }
        retainedBytes -= twin.count
        return twin.withUnsafeBytes { PageDiff.encode(twin: $0, current: current) }
    }

    private func protect(_ pages: Range<Int>, _ access: PageAccess) {
        do { try region.setProtection(pages: pages, access) } catch {
            // Out of mappings (vm.max_map_count) or memory: the
            // process cannot continue coherently.
            fatalError("plexus: \(error)")
        }
    }

    /// Queues a message. Caller holds `lock`, so the outbox is in the core's order.
    private func send(_ bytes: [UInt8], to rank: Int) {
        let queued = outbox.withLock { q -> Int in
            q.append((rank, bytes))
            return q.count
        }
        if queued > Self.outboxLimit {
            fatalError("plexus[\(configuration.rank)]: \(queued) memory-protocol messages are waiting to be written, more than the protocols can have in flight (\(Self.outboxLimit)); a peer has stopped reading or the '\(protocolName)' protocol has a bug")
        }
    }

    /// Writes the outbox unless another thread is writing it. Called by
    /// `step` after releasing `lock`. If the writer finished just as we
    /// queued, the re-check after its unlock catches our messages: either it
    /// sees them, or our `try` came after its unlock and succeeds.
    ///
    /// These writes never block: a message for a socket without room stops
    /// them, and the writer thread goes on from it. (A reader blocked writing
    /// to its peer while the peer's reader is blocked writing back would
    /// never read again: both processes would hang, as they did when both
    /// sent large diff replies at once.)
    private func flush() {
        while writing.try() {
            let complete = writeOutbox(blocking: false)
            writing.unlock()
            if !complete {
                handOff.lock()
                handOffWanted = true
                handOff.signal()
                handOff.unlock()
                return
            }
            if outbox.withLock({ $0.isEmpty }) { return }
        }
    }

    /// The writer thread: writes what a non-blocking write left, waiting for
    /// room as long as it takes, until the outbox is empty.
    private func writerLoop() {
        while true {
            handOff.lock()
            while !handOffWanted && !stopping.isSet { handOff.wait() }
            handOffWanted = false
            handOff.unlock()
            if stopping.isSet { return }
            repeat {
                writing.lock()
                writeOutbox(blocking: true)
                writing.unlock()
            } while !outbox.withLock({ $0.isEmpty }) && !stopping.isSet
        }
    }

    /// Writes queued messages in order until the outbox is empty. Caller
    /// holds `writing`. Without `blocking`, stops at the first message whose
    /// socket has no room, puts it and every later one back at the front of
    /// the outbox, and returns false.
    @discardableResult
    private func writeOutbox(blocking: Bool) -> Bool {
        while true {
            let batch = outbox.withLock { q -> [(to: Int, bytes: [UInt8])] in
                defer { q.removeAll(keepingCapacity: true) }
                return q
            }
            if batch.isEmpty { return true }
            // Consecutive messages for one peer go as one batch (FIFO per
            // pair is kept: a batch is handled in its order).
            var i = 0
            while i < batch.count {
                let to = batch[i].to
                var j = i + 1, bytes = batch[i].bytes.count
                while j < batch.count, batch[j].to == to, j - i < MemoryMessage.maxBatchCount, bytes + batch[j].bytes.count <= Self.batchBytes {
                    bytes += batch[j].bytes.count
                    j += 1
                }
                let frame = j == i + 1 ? batch[i].bytes : MemoryMessage.batch(batch[i..<j].map(\.bytes))
                do {
                    if blocking {
                        try link.sendMemory(frame, to: to)
                    } else if try !link.sendMemoryIfRoom(frame, to: to) {
                        let rest = batch[i...]
                        outbox.withLock { $0.insert(contentsOf: rest, at: 0) }
                        return false
                    }
                } catch {
                    // The peer is gone: `peerLost` fails every wait that
                    // depends on it, once. Say so here only once per rank.
                    if lostPeer.withLock({ $0 == nil }) && unreachableNoted.withLock({ $0.insert(to).inserted }) {
                        note("cannot send to rank \(to): \(error)")
                    }
                }
                i = j
            }
        }
    }

    private let unreachableNoted = Mutex<Set<Int>>([])

    /// Bytes of messages joined into one batch at most (far below a frame's limit).
    static let batchBytes = 1 << 20

    private func note(_ s: String) {
        let line = "plexus[\(configuration.rank)]: \(s)\n"
        _ = line.withCString { write(2, $0, strlen($0)) }
    }

    // MARK: Observations

    /// The core's counters plus the time application threads spent blocked.
    public var statistics: (MemoryStatistics, blockedNanos: UInt64) {
        lock.lock()
        defer { lock.unlock() }
        var s = core.statistics
        s.bytesSent += diffBytesSent
        return (s, blockedNanos)
    }

    /// This process's fault handler: faults it took on the region, faults that
    /// joined one already waiting for the same page, and waits that outlasted
    /// the handler's spin and slept (each sleep costs a wake-up).
    public var handlerCounters: (faults: Int, joined: Int, slept: Int) {
        let s = FaultChannel.statistics
        return (Int(s.faults), Int(s.coalesced), Int(s.sleeps))
    }

    public func access(ofPage page: Int) -> PageAccess {
        lock.lock()
        defer { lock.unlock() }
        return core.access(ofPage: page)
    }
}

/// Pages an application thread will soon read, or with `forWriting` write.
public struct PrefetchHint: Sendable, Equatable {
    public var pages: Range<Int>
    public var forWriting: Bool
    public init(pages: Range<Int>, forWriting: Bool) {
        self.pages = pages
        self.forWriting = forWriting
    }
}

/// A shareable atomic flag (the memory layer sits below Transport).
final class AtomicFlag: Sendable {
    private let a = Atomic<Bool>(false)
    var isSet: Bool { a.load(ordering: .acquiring) }
    @discardableResult
    func set() -> Bool { a.exchange(true, ordering: .acquiringAndReleasing) }
}

/// Ends this process with status 1 after writing `message` to standard
/// error. Called from the engine's threads while an application thread may
/// be asleep in the fault handler: `exit` flushes the application's output;
/// should that flush block (the sleeping thread held a stdio lock), a
/// watchdog ends the process without it after 2 s. Only the first caller
/// proceeds; any other waits for the end.
func terminateProcess(_ message: String) -> Never {
    if terminating.exchange(true, ordering: .acquiringAndReleasing) {
        while true { pause() }
    }
    let line = message + "\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    let watchdog = Thread {
        var t = timespec(tv_sec: 2, tv_nsec: 0)
        var rest = timespec()
        while nanosleep(&t, &rest) != 0 && errno == EINTR { t = rest }
        _exit(1)
    }
    watchdog.start()
    exit(1)
}

private let terminating = Atomic<Bool>(false)
