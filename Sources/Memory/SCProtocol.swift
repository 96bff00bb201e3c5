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
/// - `info[p].lock` at the manager (held from request to confirmation) ->
///   `ManagedPage.inFlight` plus the FIFO `ManagedPage.queue`
/// - read/write fault handler -> `onReadFault` / `onWriteFault`;
///   read/write server -> the `.forward` case of `onMessage`;
///   confirmation message -> `.confirm`
///
/// One transaction, for a write fault at requester R (reads are the same
/// without copyset and invalidations):
///   R -> manager `.request`; manager -> owner `.forward` (queued while
///   another request for the page is in flight); owner -> R `.writeGrant`
///   (ownership, copyset, contents unless R holds a valid copy) and drops its
///   own access; R -> each copyset member `.invalidate`, member -> R
///   `.invalidateAck`; once all acks are in, R gets read-write access, wakes
///   its faulting threads and sends `.confirm` to the manager, which records R
///   as owner and releases the next queued request.
///
/// Why it is correct under concurrency: the manager lets one transaction per
/// page run at a time, from forward to confirm, so an owner never serves two
/// requests for a page at once, and a copy holder has installed its copy
/// (its confirm came back) before any later writer can try to invalidate it,
/// whatever the order of messages between different pairs of ranks. FIFO is
/// needed only per pair (R's confirm must reach the manager before R's next
/// request for the same page).
///
/// Initial state (a choice): every page is owned by its manager, holds
/// zeros (the memfd is zero-filled) and has an empty copyset. The owner's
/// application view starts inaccessible like everyone else's; its first
/// access faults once and is granted locally without messages. That spreads
/// first-touch service across ranks (no rank 0 hotspot) and needs no initial
/// strided mprotect, which would split the region into one mapping per page.
///
/// Deviations from the paper, and why:
/// - Ownership changes are confirmed for reads and writes alike, and the
///   manager forwards only after the previous confirmation. The paper's
///   manager also holds a per-page lock until the confirmation; we make the
///   wait explicit as a bounded FIFO (at most one outstanding request per
///   rank and page, so at most `rankCount - 1` waiting).
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
///   overtake the grant it cancels; and a `.forward` the manager sends
///   meanwhile (at most one per page, since it waits for a confirmation) is
///   held until the upgrade ends and then served, as if it had arrived just
///   after. A local upgrade sends no confirmation: the manager had no
///   transaction for it.
/// - The requester, not the owner, invalidates the copyset (as in the paper's
///   fixed manager algorithm), and waits for every acknowledgement before it
///   takes write access: sequential consistency needs no stale reader left
///   once the write is visible.
/// - A fault on a page with a request in flight waits for that request; a
///   write fault behind a read request re-faults when the read completes and
///   then asks for write access.
public struct SCProtocol: CoherenceProtocol {
    public static let name = "sc"
    public static let model = MemoryModel.sequential

    public let configuration: CoherenceConfiguration
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
        /// A `.forward` that arrived during a local upgrade, served after it.
        var heldForward: (requester: Int, isWrite: Bool)?
    }

    enum Request: Sendable, Equatable {
        case read, write
        var isWrite: Bool { self == .write }
    }

    /// Manager state of a page this rank manages.
    struct ManagedPage: Sendable {
        var owner: Int
        /// The request being served (forwarded, not yet confirmed).
        var inFlight: (requester: Int, isWrite: Bool)?
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
        pages.allSatisfy { $0.request == nil && $0.acksOutstanding == 0 && !$0.upgradingLocally && $0.heldForward == nil }
            && managed.allSatisfy { $0.inFlight == nil && $0.queue.isEmpty }
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

    public mutating func onReadFault(page: Int) -> [MemoryEffect] {
        checkPage(page)
        record(.readFault(page: page))
        if pages[page].access >= .read {
            // Raced with a grant that arrived after the fault was taken.
            effects.append(.completeFaults(page: page))
        } else if pages[page].request != nil {
            // The grant for the request in flight completes this fault too.
        } else if pages[page].isOwner {
            setAccess(page, .read)
            effects.append(.completeFaults(page: page))
        } else {
            sendRequest(page, .read)
        }
        return takeEffects()
    }

    public mutating func onWriteFault(page: Int) -> [MemoryEffect] {
        checkPage(page)
        record(.writeFault(page: page))
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
            pages[page].request = .write
            pages[page].upgradingLocally = true
            pages[page].copyset = RankSet()
            beginWrite(page, invalidating: state.copyset)
        } else {
            sendRequest(page, .write)
        }
        return takeEffects()
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
        precondition(managed[index].inFlight?.requester != requester && !managed[index].queue.contains { $0.requester == requester },
                     "rank \(requester) has two requests for page \(page) at its manager")
        managed[index].queue.append((requester, isWrite))
        precondition(managed[index].queue.count <= queueBound, "manager queue of page \(page) exceeds \(queueBound)")
        maxQueueDepth = max(maxQueueDepth, managed[index].queue.count)
    }

    private mutating func startTransaction(page: Int, requester: Int, isWrite: Bool) {
        let index = managedIndex(page)
        managed[index].inFlight = (requester, isWrite)
        send(.forward(page: page, requester: requester, isWrite: isWrite), to: managed[index].owner)
    }

    private mutating func onConfirm(page: Int, requester: Int, isWrite: Bool) {
        let index = managedIndex(page)
        guard let inFlight = managed[index].inFlight, inFlight.requester == requester, inFlight.isWrite == isWrite else {
            preconditionFailure("confirm of page \(page) from rank \(requester) matches no request in flight")
        }
        if isWrite { managed[index].owner = requester }
        managed[index].inFlight = nil
        if !managed[index].queue.isEmpty {
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
            // serialisation; the manager's one transaction waits for it.
            precondition(pages[page].upgradingLocally && pages[page].heldForward == nil,
                         "owner of page \(page) asked to serve while still invalidating")
            pages[page].heldForward = (requester, isWrite)
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

    // MARK: Requester

    private mutating func sendRequest(_ page: Int, _ request: Request) {
        pages[page].request = request
        send(.request(page: page, isWrite: request.isWrite), to: manager(ofPage: page))
    }

    private mutating func onReadGrant(page: Int, contents: [UInt8], from owner: Int) {
        precondition(pages[page].request == .read, "read grant for page \(page) that rank \(rank) did not request")
        install(page, contents)
        pages[page].probableOwner = owner
        pages[page].request = nil
        setAccess(page, .read)
        effects.append(.completeFaults(page: page))
        send(.confirm(page: page, isWrite: false), to: manager(ofPage: page))
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
        pages[page].request = nil
        setAccess(page, .readWrite)
        effects.append(.completeFaults(page: page))
        if pages[page].upgradingLocally {
            pages[page].upgradingLocally = false
            if let held = pages[page].heldForward {
                pages[page].heldForward = nil
                onForward(page: page, requester: held.requester, isWrite: held.isWrite)
            }
        } else {
            send(.confirm(page: page, isWrite: true), to: manager(ofPage: page))
        }
    }

    // MARK: Copy holder

    private mutating func onInvalidate(page: Int, from newOwner: Int) {
        precondition(!pages[page].isOwner, "owner of page \(page) asked to invalidate its copy")
        record(.invalidationReceived(page: page))
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
        case let .confirm(page, isWrite):
            precondition(manager(ofPage: page) == rank, "confirm for page \(page) sent to rank \(rank), not its manager")
            onConfirm(page: page, requester: peer, isWrite: isWrite)
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

    /// Runs the loopback messages the input produced, then hands out the effects.
    private mutating func takeEffects() -> [MemoryEffect] {
        while !loopback.isEmpty {
            let message = loopback.removeFirst()
            handle(message, from: rank)
        }
        defer { effects = [] }
        return effects
    }
}
