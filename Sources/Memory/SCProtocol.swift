/// `sc`: sequential consistency by write-invalidate, after Ivy's fixed
/// distributed manager algorithm (K. Li and P. Hudak, "Memory Coherence in
/// Shared Virtual Memory Systems", ACM TOCS 7(4), 1989, section 3.2 and the
/// probable-owner idea of section 3.4).
///
/// Every page has at any time either one writer or any number of readers.
/// The page's manager, `page % rankCount`, serialises the requests for it.
///
/// Terminology (paper -> here):
/// - `info[p].owner` at the manager -> `ManagedPage.owner`
/// - `ptable[p].access` -> `NodePage.access` (mirrors the application view)
/// - `ptable[p].copy_set` at the owner -> `NodePage.copyset`
/// - `ptable[p].prob_owner` -> `NodePage.probableOwner`
/// - `info[p].lock` at the manager (held from a write request to its
///   confirmation) -> `ManagedPage.inFlight` plus the FIFO `ManagedPage.queue`
/// - read/write fault handler -> `onReadFault` / `onWriteFault`;
///   read/write server -> the `.forward` case of `onMessage`;
///   confirmation message -> `.confirm`
///
/// One transaction, for a write fault at requester R:
///   R -> manager `.request`; manager -> owner `.forward` (queued while a
///   write for the page is in flight); owner -> R `.writeGrant` (ownership,
///   copyset, contents unless R holds a valid copy) and drops its own
///   access; R -> each copyset member `.invalidate`, member -> R
///   `.invalidateAck`; once all acks are in, R gets read-write access, wakes
///   its faulting threads and sends `.confirm` to the manager, which records R
///   as owner and releases the requests queued behind it.
/// A read is shorter: R -> manager `.request`; manager -> owner `.forward`;
/// owner -> R `.readGrant` (contents), adding R to its copyset. The manager
/// is done with a read once it has forwarded it: ownership does not move,
/// so there is nothing to confirm.
///
/// Why it is correct under concurrency: the manager lets one write per page
/// run at a time, from forward to confirm, so it always forwards to the true
/// owner, and an owner never hands ownership on twice. An owner serves a
/// read in one step (downgrade, copy, send). The one race a read leaves
/// open is an invalidation that overtakes the grant it cancels: the owner
/// grants R a copy, then (the manager having forwarded a write right after
/// the read) hands ownership and a copyset containing R to W, and W's
/// `.invalidate` may reach R before the owner's `.readGrant`, since they
/// travel on different pairs. R can tell: an invalidation that finds R
/// waiting for a read grant can only be for that grant (a copy is
/// invalidated once, and R has one request per page), so R acknowledges at
/// once and discards the grant when it comes, asking again. FIFO is needed
/// only per pair (an owner's invalidation must not overtake its own grant;
/// W's confirm must reach the manager before W's next request).
///
/// Initial state (a choice): every page is owned by its manager, holds
/// zeros (the memfd is zero-filled) and has an empty copyset. The owner's
/// application view starts inaccessible like everyone else's; its first
/// access faults once and is granted locally without messages. That spreads
/// first-touch service across ranks (no rank 0 hotspot) and needs no initial
/// strided mprotect, which would split the region into one mapping per page.
///
/// Deviations from the paper, and why:
/// - Only writes are confirmed, and the manager forwards only after the
///   previous write's confirmation. The paper's manager holds a per-page
///   lock until the confirmation of reads too; we make the wait explicit as
///   a bounded FIFO (at most one outstanding request per rank and page, so
///   at most `rankCount - 1` waiting) and skip it for reads, which saves a
///   message per read miss and lets reads of one page proceed together. The
///   price is the overtaking invalidation above, which R detects.
/// - Because of that serialisation the manager always knows the true owner,
///   so forwarding chains have length one. `probableOwner` is still kept, as
///   in the paper's dynamic variant, and a `.forward` that reaches a
///   non-owner is relayed along it; this never happens while all ranks run
///   this code, but keeps a stale hint from losing a request.
/// - A write grant to a requester that is in the owner's copyset carries no
///   contents: its copy is valid, since any write since it was made would
///   have invalidated it. This saves a page transfer on every read-then-write.
/// - An owner upgrades from read to write itself: with an empty copyset
///   without messages (as the paper's owner does), else by invalidating its
///   copyset and waiting for the acks, without asking its manager (2
///   messages instead of 5; half of a stencil's faults are such upgrades).
///   This is safe without the manager's serialisation because ownership
///   does not move: every copy in the copyset was granted by this owner, on
///   the same FIFO channel its invalidation takes, so no invalidation can
///   overtake the grant it cancels; and the `.forward`s the manager sends
///   meanwhile (reads, then at most one write, after which it waits for a
///   confirmation; at most one per requester) are held until the upgrade
///   ends and then served in order, as if they had arrived just after. A
///   local upgrade sends no confirmation: the manager had no transaction
///   for it.
/// - The requester, not the owner, invalidates the copyset (as in the paper's
///   fixed manager algorithm), and waits for every acknowledgement before it
///   takes write access: sequential consistency needs no stale reader left
///   once the write is visible.
/// - A fault on a page with a request in flight waits for that request; a
///   write fault behind a read request re-faults when the read completes and
///   then asks for write access.
/// - Look-ahead (`CoherenceConfiguration.lookAhead`, off at 0): a read fault
///   that asks another rank also asks for the following pages this rank
///   faulted on before and has lost (or, continuing a sequential stream,
///   pages of a collective allocation), with the same probable owner; an owner's local
///   upgrade also upgrades the following pages it wrote before and shares
///   with exactly the same readers. Each extra page is exactly the
///   transaction its own fault would have started, with no thread waiting
///   for it, so the protocol's correctness argument is unchanged; what it
///   buys is that the messages of a run travel together (the engine sends
///   one batch per peer and step, and the receiver answers a batch in one
///   step), so a stencil's boundary row costs one exchange instead of one
///   per page.
/// - Prefetch hints (`onPrefetch`): the application names pages it will
///   read or write soon, and each gets the transaction its fault would
///   start, with no thread waiting (as look-ahead's extra pages), at most
///   `prefetchLimit` at a time. Under sequential consistency a
///   read issued early is a read whose value is dropped, and write access
///   taken early is a write of nothing: no outcome changes, only when the
///   messages travel.
/// - A barrier arrival waits until every transaction this rank started with
///   no thread waiting for it (look-ahead's and hints') has ended, so none
///   outlives the epoch it was started in, and none is still in flight when
///   a process leaves the job behind its last barrier (its owner would
///   answer a process that is gone). They end without the application:
///   every step of a transaction runs on the engines' serving threads.
public struct SCProtocol: CoherenceProtocol {
    public static let name = "sc"
    public static let model = MemoryModel.sequential

    public private(set) var configuration: CoherenceConfiguration
    public private(set) var statistics = MemoryStatistics()

    /// Per-page state of this rank as a node (requester, owner, copy holder).
    struct NodePage: Sendable {
        var access = PageAccess.none
        var isOwner: Bool
        var probableOwner: Int
        /// Ranks other than the owner that hold a read copy (owner only).
        var copyset = RankSet()
        /// The request this rank has at the page's manager, if any.
        var request: Request?
        /// Acks still missing before a write grant completes.
        var acksOutstanding = 0
        /// The write in progress is this owner's own upgrade (no manager
        /// transaction, so no confirmation at the end).
        var upgradingLocally = false
        /// `.forward`s that arrived during a local upgrade, served after it
        /// in order (at most one per other rank).
        var heldForwards: [(requester: Int, isWrite: Bool)] = []
        /// An invalidation found this rank waiting for a read grant: the
        /// grant on its way is stale and is discarded when it comes.
        var grantIsStale = false
        /// This rank's application has faulted on the page at some time
        /// (look-ahead fetches such pages again; a page fetched ahead but
        /// never faulted on does not count, so one stream that ran past what
        /// the application reads does not repeat every iteration).
        var faultedBefore = false
        /// This rank has had write access to the page at some time.
        var wroteBefore = false
        /// Inside a collective allocation every rank has placed
        /// (`onAllocated`): a sequential first read may fetch it ahead.
        var allocated = false
        /// The request in flight was started by a prefetch hint.
        var prefetched = false
        /// The request in flight was started with no thread waiting for it
        /// (look-ahead or a hint); barrier arrivals wait for these.
        var unwaited = false
    }

    enum Request: Sendable, Equatable {
        case read, write
        var isWrite: Bool { self == .write }
    }

    /// Manager state of a page this rank manages.
    struct ManagedPage: Sendable {
        var owner: Int
        /// The write being served (forwarded, not yet confirmed).
        var inFlight: Int?
        /// Requests waiting for `inFlight` to finish, oldest first.
        var queue: [(requester: Int, isWrite: Bool)] = []
    }

    private var pages: [NodePage]
    /// Indexed by `page / rankCount` for the pages with `page % rankCount == rank`.
    private var managed: [ManagedPage]
    /// Effects produced by the input being handled.
    private var effects: [MemoryEffect] = []
    /// Messages to this very rank (manager, owner and requester can coincide);
    /// handled before the input returns, in order, without the network.
    private var loopback: [MemoryMessage] = []
    /// The pages that sequential read streams will fault on next, most
    /// recent last (at most `maxStreams`): a read miss on one of them
    /// continues its stream, and look-ahead may then fetch pages of a
    /// collective allocation never faulted on.
    private var streams: [Int] = []
    static let maxStreams = 4
    /// Requests started by prefetch hints and not yet done. A hint asks for
    /// at most `prefetchLimit` minus this; the rest of its pages are left to
    /// their faults. The bound keeps a hint over a whole array from flooding
    /// the managers and the sockets.
    public private(set) var prefetchesInFlight = 0
    public static let maxPrefetchesInFlight = 64
    /// The bound on `prefetchesInFlight` (tests lower it to reach it).
    public var prefetchLimit = SCProtocol.maxPrefetchesInFlight {
        didSet { precondition(prefetchLimit >= 0, "negative prefetch limit \(prefetchLimit)") }
    }
    /// Requests in flight with `unwaited` set.
    private var unwaitedInFlight = 0
    /// Barrier arrivals waiting for them to end (one per thread in a barrier).
    private var arrivalsWaiting: [SyncTicket] = []
    /// Longest manager queue seen so far, for tests and reports.
    public private(set) var maxQueueDepth = 0

    public init(configuration: CoherenceConfiguration) {
        self.configuration = configuration
        let rank = configuration.rank, size = configuration.rankCount
        pages = (0..<configuration.pageCount).map { page in
            NodePage(isOwner: page % size == rank, probableOwner: page % size)
        }
        managed = stride(from: rank, to: configuration.pageCount, by: size).map { ManagedPage(owner: $0 % size) }
    }

    private var rank: Int { configuration.rank }

    /// The rank that manages `page`.
    public func manager(ofPage page: Int) -> Int { page % configuration.rankCount }

    /// Requests a manager may hold waiting for one page.
    public var queueBound: Int { configuration.rankCount - 1 }

    public func access(ofPage page: Int) -> PageAccess { pages[page].access }

    public func isOwner(ofPage page: Int) -> Bool { pages[page].isOwner }

    /// Requests waiting at this rank, as manager, for `page` (not counting the one in flight).
    public func queueDepth(ofPage page: Int) -> Int {
        precondition(manager(ofPage: page) == rank, "rank \(rank) does not manage page \(page)")
        return managed[page / configuration.rankCount].queue.count
    }

    public var isQuiescent: Bool {
        pages.allSatisfy { $0.request == nil && $0.acksOutstanding == 0 && !$0.upgradingLocally && $0.heldForwards.isEmpty && !$0.grantIsStale && !$0.prefetched && !$0.unwaited }
            && managed.allSatisfy { $0.inFlight == nil && $0.queue.isEmpty }
            && prefetchesInFlight == 0 && unwaitedInFlight == 0 && arrivalsWaiting.isEmpty
    }

    // MARK: Inputs

    /// Makes `home` the initial owner of pristine pages (see
    /// `CoherenceProtocol.onPlacement`). Owner-computes programs then write
    /// their own part of an array without a single message; the default
    /// (owner = manager = page % size) interleaves pages across ranks.
    public mutating func onPlacement(pages range: Range<Int>, home: Int) -> [MemoryEffect] {
        precondition((0..<configuration.rankCount).contains(home), "home \(home) outside 0..<\(configuration.rankCount)")
        for page in range {
            checkPage(page)
            let state = pages[page]
            precondition(state.access == .none && state.request == nil && state.copyset.isEmpty && state.acksOutstanding == 0,
                         "placement of page \(page), which is in use")
            pages[page].isOwner = home == rank
            pages[page].probableOwner = home
            if manager(ofPage: page) == rank {
                let index = managedIndex(page)
                precondition(managed[index].inFlight == nil && managed[index].queue.isEmpty, "placement of page \(page) with requests in flight")
                managed[index].owner = home
            }
        }
        return []
    }

    public mutating func onAllocated(pages range: Range<Int>) {
        for page in range {
            checkPage(page)
            pages[page].allocated = true
        }
    }

    public mutating func setLookAhead(_ pages: Int) {
        precondition(pages >= 0, "negative look-ahead \(pages)")
        configuration.lookAhead = pages
    }

    public mutating func onReadFault(page: Int) -> [MemoryEffect] {
        checkPage(page)
        record(.readFault(page: page))
        pages[page].faultedBefore = true
        if pages[page].access >= .read {
            // Raced with a grant that arrived after the fault was taken.
            effects.append(.completeFaults(page: page))
        } else if pages[page].request != nil {
            // The grant for the request in flight completes this fault too.
        } else if pages[page].isOwner {
            setAccess(page, .read)
            effects.append(.completeFaults(page: page))
        } else {
            let sequential = continuesStream(at: page)
            sendRequest(page, .read)
            // The requests leave in page order, the faulting page's first,
            // also where this rank is the manager (its forward is a
            // loopback message), so the owner serves them in that order.
            runLoopback()
            startStream(at: readAhead(after: page, sequential: sequential))
        }
        return takeEffects()
    }

    public mutating func onWriteFault(page: Int) -> [MemoryEffect] {
        checkPage(page)
        record(.writeFault(page: page))
        pages[page].faultedBefore = true
        let state = pages[page]
        if state.access == .readWrite {
            effects.append(.completeFaults(page: page))
        } else if state.request != nil {
            // A write request completes this fault; behind a read request the
            // woken thread faults again and asks for write access then.
        } else if state.isOwner && state.copyset.isEmpty {
            setAccess(page, .readWrite)
            effects.append(.completeFaults(page: page))
        } else if state.isOwner {
            upgradeLocally(page, invalidating: state.copyset)
            writeAhead(after: page, copyset: state.copyset)
        } else {
            sendRequest(page, .write)
        }
        return takeEffects()
    }

    public mutating func onPrefetch(pages range: Range<Int>, forWriting: Bool) -> [MemoryEffect] {
        for page in range {
            checkPage(page)
            let state = pages[page]
            // Pages with a transaction in progress, or with the access
            // already, need nothing; the owner's cases cost no message.
            guard state.request == nil, state.acksOutstanding == 0,
                  state.access < (forWriting ? .readWrite : .read) else { continue }
            let local = state.isOwner && (!forWriting || state.copyset.isEmpty)
            // At the bound, pages that need no message are still served.
            if !local && prefetchesInFlight >= prefetchLimit { continue }
            record(.prefetch(page: page))
            if local {
                setAccess(page, forWriting ? .readWrite : .read)
                continue
            }
            pages[page].prefetched = true
            prefetchesInFlight += 1
            startUnwaited(page)
            if state.isOwner {
                upgradeLocally(page, invalidating: state.copyset)
            } else {
                sendRequest(page, forWriting ? .write : .read)
            }
            runLoopback()
        }
        return takeEffects()
    }

    /// The transaction about to start for `page` has no thread waiting
    /// for it (look-ahead, a hint).
    private mutating func startUnwaited(_ page: Int) {
        precondition(!pages[page].unwaited, "page \(page) already has a transaction nobody waits for")
        pages[page].unwaited = true
        unwaitedInFlight += 1
    }

    /// The request in flight for `page` is done: if a prefetch started it,
    /// it no longer counts against the bound; once the last transaction
    /// nobody waited for is done, the barrier arrivals waiting proceed.
    private mutating func requestDone(_ page: Int) {
        pages[page].request = nil
        if pages[page].prefetched {
            pages[page].prefetched = false
            prefetchesInFlight -= 1
        }
        if pages[page].unwaited {
            pages[page].unwaited = false
            unwaitedInFlight -= 1
            if unwaitedInFlight == 0 {
                for ticket in arrivalsWaiting { effects.append(.syncReady(ticket, payload: [])) }
                arrivalsWaiting = []
            }
        }
    }

    /// A barrier arrival proceeds once no transaction this rank started
    /// without a waiting thread is in flight (see the opening comment);
    /// other synchronisation needs nothing under sequential consistency.
    public mutating func onBarrierArrive(barrier: Int, ticket: SyncTicket) -> [MemoryEffect] {
        if unwaitedInFlight == 0 { return [.syncReady(ticket, payload: [])] }
        arrivalsWaiting.append(ticket)
        return []
    }

    public mutating func onMessage(_ message: MemoryMessage, from peer: Int) -> [MemoryEffect] {
        precondition((0..<configuration.rankCount).contains(peer) && peer != rank, "message from invalid peer \(peer)")
        checkPage(message.page)
        record(.messageReceived(bytes: message.encodedCount))
        handle(message, from: peer)
        return takeEffects()
    }

    // MARK: Manager

    private mutating func onRequest(page: Int, requester: Int, isWrite: Bool) {
        let index = managedIndex(page)
        if managed[index].inFlight == nil {
            startTransaction(page: page, requester: requester, isWrite: isWrite)
            return
        }
        // Each rank has at most one request per page outstanding; a second
        // one, or an overflow, is a protocol bug, not load.
        precondition(managed[index].inFlight != requester && !managed[index].queue.contains { $0.requester == requester },
                     "rank \(requester) has two requests for page \(page) at its manager")
        managed[index].queue.append((requester, isWrite))
        precondition(managed[index].queue.count <= queueBound, "manager queue of page \(page) exceeds \(queueBound)")
        maxQueueDepth = max(maxQueueDepth, managed[index].queue.count)
    }

    /// Forwards a request to the owner. A write stays in flight until its
    /// confirmation; a read is done once forwarded.
    private mutating func startTransaction(page: Int, requester: Int, isWrite: Bool) {
        let index = managedIndex(page)
        if isWrite { managed[index].inFlight = requester }
        send(.forward(page: page, requester: requester, isWrite: isWrite), to: managed[index].owner)
    }

    private mutating func onConfirm(page: Int, requester: Int) {
        let index = managedIndex(page)
        guard managed[index].inFlight == requester else {
            preconditionFailure("confirm of page \(page) from rank \(requester) matches no write in flight")
        }
        managed[index].owner = requester
        managed[index].inFlight = nil
        // Reads behind the write go out together, up to the next write.
        while managed[index].inFlight == nil, !managed[index].queue.isEmpty {
            let next = managed[index].queue.removeFirst()
            startTransaction(page: page, requester: next.requester, isWrite: next.isWrite)
        }
    }

    // MARK: Owner

    private mutating func onForward(page: Int, requester: Int, isWrite: Bool) {
        guard pages[page].isOwner else {
            // Stale hint (see the opening comment): pass it on.
            send(.forward(page: page, requester: requester, isWrite: isWrite), to: pages[page].probableOwner)
            return
        }
        if pages[page].acksOutstanding > 0 {
            // Only an owner's own upgrade runs outside the manager's
            // serialisation; the manager's requests wait for it.
            precondition(pages[page].upgradingLocally && pages[page].heldForwards.count < configuration.rankCount - 1,
                         "owner of page \(page) asked to serve while still invalidating")
            pages[page].heldForwards.append((requester, isWrite))
            return
        }
        if !isWrite {
            precondition(requester != rank, "owner of page \(page) asked itself for a read copy")
            // Downgrade before copying so no write slips into the copy.
            if pages[page].access == .readWrite { setAccess(page, .read) }
            pages[page].copyset.insert(requester)
            sendPage(page, .readGrant(page: page, contents: []), to: requester)
        } else if requester == rank {
            // The owner itself wants to write: invalidate the copies.
            let copyset = pages[page].copyset
            pages[page].copyset = RankSet()
            beginWrite(page, invalidating: copyset)
        } else {
            let copyset = pages[page].copyset
            pages[page].isOwner = false
            pages[page].probableOwner = requester
            pages[page].copyset = RankSet()
            if pages[page].access != .none { setAccess(page, .none) }
            let others = copyset.removing(requester)
            if copyset.contains(requester) {
                send(.writeGrant(page: page, copyset: others, contents: nil), to: requester)
            } else {
                sendPage(page, .writeGrant(page: page, copyset: others, contents: []), to: requester)
            }
        }
    }

    // MARK: Look-ahead

    /// After a read fault that needs another rank: the following pages
    /// (at most `lookAhead`) that this rank's application faulted on before
    /// and that it has lost, and whose probable owner is the same, are
    /// requested at once too, as if the application had faulted on them.
    /// Iterative programs read the same runs again after their writers
    /// invalidated them (a stencil's boundary row); the requests travel in
    /// one batch to one owner, which answers them in one step. A page never
    /// faulted on is not fetched, so a neighbour's next row, which it is
    /// writing, stays with it; unless the fault continues a sequential
    /// stream (it is on the page right after the last run this rank asked
    /// for) and the page is inside a collective allocation: a first scan of
    /// an array another rank filled. Such a stream may run past what the
    /// application reads, once: pages fetched ahead and never faulted on
    /// make no history. Returns the first page after the run requested.
    private mutating func readAhead(after page: Int, sequential: Bool) -> Int {
        let owner = pages[page].probableOwner
        let window = aheadWindow(after: page)
        for q in window {
            let s = pages[q]
            guard s.faultedBefore || (sequential && s.allocated), !s.isOwner, s.access == .none, s.request == nil,
                  s.probableOwner == owner else { return q }
            record(.readAhead(page: q))
            startUnwaited(q)
            sendRequest(q, .read)
            runLoopback()
        }
        return window.upperBound
    }

    /// The pages look-ahead may serve after a fault on `page`.
    private func aheadWindow(after page: Int) -> Range<Int> {
        page + 1..<min(page + 1 + configuration.lookAhead, configuration.pageCount)
    }

    /// A read miss on `page` continues a stream if `page` is where one
    /// expected the next miss.
    private mutating func continuesStream(at page: Int) -> Bool {
        guard let i = streams.firstIndex(of: page) else { return false }
        streams.remove(at: i)
        return true
    }

    /// The next read miss of this stream is expected at `next`.
    private mutating func startStream(at next: Int) {
        streams.removeAll { $0 == next }
        streams.append(next)
        if streams.count > Self.maxStreams { streams.removeFirst() }
    }

    /// After a write fault that upgrades this owner past its readers: the
    /// following pages (at most `lookAhead`) that it owns read-only, wrote
    /// before, and shares with exactly the same readers are upgraded at
    /// once too, as if faulted on; each reader gets their invalidations in
    /// one batch and acknowledges them in one.
    private mutating func writeAhead(after page: Int, copyset: RankSet) {
        for q in aheadWindow(after: page) {
            let s = pages[q]
            guard s.wroteBefore, s.isOwner, s.access == .read, s.copyset == copyset, s.request == nil,
                  s.acksOutstanding == 0, s.heldForwards.isEmpty else { return }
            record(.writeAhead(page: q))
            startUnwaited(q)
            upgradeLocally(q, invalidating: copyset)
        }
    }

    /// An owner with readers takes write access by invalidating them,
    /// without its manager (see the opening comment).
    private mutating func upgradeLocally(_ page: Int, invalidating copyset: RankSet) {
        pages[page].request = .write
        pages[page].upgradingLocally = true
        pages[page].copyset = RankSet()
        beginWrite(page, invalidating: copyset)
    }

    // MARK: Requester

    private mutating func sendRequest(_ page: Int, _ request: Request) {
        pages[page].request = request
        send(.request(page: page, isWrite: request.isWrite), to: manager(ofPage: page))
    }

    private mutating func onReadGrant(page: Int, contents: [UInt8], from owner: Int) {
        precondition(pages[page].request == .read, "read grant for page \(page) that rank \(rank) did not request")
        if pages[page].grantIsStale {
            // Its invalidation came first (see the opening comment) and has
            // been acknowledged: the writer may have written since. Ask again.
            pages[page].grantIsStale = false
            // The page did travel: it counts as received, like its bytes.
            record(.pageReceived(page: page))
            record(.staleGrantDiscarded(page: page))
            sendRequest(page, .read)
            return
        }
        install(page, contents)
        pages[page].probableOwner = owner
        requestDone(page)
        setAccess(page, .read)
        effects.append(.completeFaults(page: page))
    }

    private mutating func onWriteGrant(page: Int, copyset: RankSet, contents: [UInt8]?) {
        precondition(pages[page].request == .write, "write grant for page \(page) that rank \(rank) did not request")
        if let contents {
            install(page, contents)
        } else {
            precondition(pages[page].access >= .read, "write grant without contents for page \(page), but rank \(rank) holds no copy")
        }
        pages[page].isOwner = true
        pages[page].probableOwner = rank
        beginWrite(page, invalidating: copyset)
    }

    /// This rank owns `page` and holds valid contents; once every member of
    /// `copyset` acknowledged its invalidation, the write may proceed.
    private mutating func beginWrite(_ page: Int, invalidating copyset: RankSet) {
        let members = copyset.removing(rank)
        pages[page].acksOutstanding = members.count
        if members.isEmpty {
            finishWrite(page)
            return
        }
        for member in members {
            record(.invalidationSent(page: page))
            send(.invalidate(page: page), to: member)
        }
    }

    private mutating func onInvalidateAck(page: Int) {
        precondition(pages[page].acksOutstanding > 0, "unexpected invalidation ack for page \(page)")
        pages[page].acksOutstanding -= 1
        if pages[page].acksOutstanding == 0 { finishWrite(page) }
    }

    private mutating func finishWrite(_ page: Int) {
        requestDone(page)
        setAccess(page, .readWrite)
        effects.append(.completeFaults(page: page))
        if pages[page].upgradingLocally {
            pages[page].upgradingLocally = false
            let held = pages[page].heldForwards
            pages[page].heldForwards = []
            for f in held { onForward(page: page, requester: f.requester, isWrite: f.isWrite) }
        } else {
            send(.confirm(page: page), to: manager(ofPage: page))
        }
    }

    // MARK: Copy holder

    private mutating func onInvalidate(page: Int, from newOwner: Int) {
        precondition(!pages[page].isOwner, "owner of page \(page) asked to invalidate its copy")
        record(.invalidationReceived(page: page))
        if pages[page].request == .read && pages[page].access == .none {
            // The copy it cancels is the grant still on its way here.
            precondition(!pages[page].grantIsStale, "two invalidations of page \(page) for one read grant")
            pages[page].grantIsStale = true
        }
        if pages[page].access != .none { setAccess(page, .none) }
        pages[page].probableOwner = newOwner
        send(.invalidateAck(page: page), to: newOwner)
    }

    // MARK: Plumbing

    private mutating func handle(_ message: MemoryMessage, from peer: Int) {
        switch message {
        case let .request(page, isWrite):
            precondition(manager(ofPage: page) == rank, "request for page \(page) sent to rank \(rank), not its manager")
            onRequest(page: page, requester: peer, isWrite: isWrite)
        case let .forward(page, requester, isWrite):
            onForward(page: page, requester: requester, isWrite: isWrite)
        case let .readGrant(page, contents):
            onReadGrant(page: page, contents: contents, from: peer)
        case let .writeGrant(page, copyset, contents):
            onWriteGrant(page: page, copyset: copyset, contents: contents)
        case let .invalidate(page):
            onInvalidate(page: page, from: peer)
        case let .invalidateAck(page):
            onInvalidateAck(page: page)
        case let .confirm(page):
            precondition(manager(ofPage: page) == rank, "confirm for page \(page) sent to rank \(rank), not its manager")
            onConfirm(page: page, requester: peer)
        case .diff, .diffAck, .fetch, .pageData, .diffRequest, .diffReply, .collected:
            preconditionFailure("sc received another protocol's message \(message) from rank \(peer): every rank must run the same protocol")
        }
    }

    private mutating func send(_ message: MemoryMessage, to peer: Int) {
        if peer == rank {
            loopback.append(message)
            return
        }
        record(.messageSent(bytes: message.encodedCount))
        effects.append(.send(to: peer, message))
    }

    private mutating func sendPage(_ page: Int, _ message: MemoryMessage, to peer: Int) {
        precondition(peer != rank, "page \(page) sent to its own rank")
        record(.pageSent(page: page))
        record(.messageSent(bytes: message.encodedCount + configuration.pageSize))
        effects.append(.sendWithPage(to: peer, page: page, message))
    }

    private mutating func install(_ page: Int, _ contents: [UInt8]) {
        precondition(contents.count == configuration.pageSize, "page \(page) arrived with \(contents.count) bytes, not \(configuration.pageSize)")
        record(.pageReceived(page: page))
        effects.append(.installPage(page: page, contents: contents))
    }

    private mutating func setAccess(_ page: Int, _ access: PageAccess) {
        pages[page].access = access
        if access == .readWrite { pages[page].wroteBefore = true }
        effects.append(.setProtection(pages: page..<page + 1, access))
    }

    private mutating func record(_ statistic: MemoryStatistic) {
        statistics.apply(statistic)
        effects.append(.record(statistic))
    }

    private func managedIndex(_ page: Int) -> Int {
        precondition(manager(ofPage: page) == rank, "rank \(rank) does not manage page \(page)")
        return page / configuration.rankCount
    }

    private func checkPage(_ page: Int) {
        precondition((0..<configuration.pageCount).contains(page), "page \(page) outside 0..<\(configuration.pageCount)")
    }

    private mutating func runLoopback() {
        while !loopback.isEmpty {
            let message = loopback.removeFirst()
            handle(message, from: rank)
        }
    }

    /// Runs the loopback messages the input produced, then hands out the effects.
    private mutating func takeEffects() -> [MemoryEffect] {
        runLoopback()
        defer { effects = [] }
        return effects
    }
}
