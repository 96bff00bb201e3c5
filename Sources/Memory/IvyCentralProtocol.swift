/// `ivy-central`: sequential consistency by write-invalidate, after Ivy's
/// centralized manager algorithm (K. Li and P. Hudak, "Memory Coherence in
/// Shared Virtual Memory Systems", ACM TOCS 7(4), 1989, section 3.1), in the
/// paper's first variant: the manager keeps each page's owner AND its copy
/// set, and holds a per-page lock from a request until the requester
/// confirms it. (The paper's improved variant moves the copy set to the
/// owner and drops the confirmations; `sc`, which also distributes the
/// manager role, is that design.)
///
/// Rank 0 is the one manager of every page. Every page has at any time
/// either one writer or any number of readers; the manager serialises every
/// request for a page, so a transaction never meets another on that page.
///
/// Terminology (paper -> here):
/// - `Info[p].owner` at the manager -> `ManagedPage.owner`
/// - `Info[p].copy_set` at the manager -> `ManagedPage.copyset` (ranks with
///   a read copy, never the owner)
/// - `Info[p].lock` (held from a request to its confirmation) ->
///   `ManagedPage.busy` plus the FIFO `ManagedPage.queue`
/// - `PTable[p].access` -> `NodePage.access` (mirrors the application view)
/// - read/write fault handler -> `onReadFault` / `onWriteFault`;
///   read/write server (the owner's part) -> the `.forward` case;
///   `Invalidate(p, copy_set)` -> the manager's `.invalidate`s and their
///   `.invalidateAck`s; confirmation message -> `.confirm`
///
/// A read miss at R, the page owned by O:
///   R -> manager `.request`; manager -> O `.forward`; O -> R `.readGrant`
///   (O keeps a read-only copy); R -> manager `.confirm`, which adds R to
///   the copy set and releases the page's lock. 4 messages; 2 when the
///   manager owns the page (it grants at once and needs no confirmation).
/// A write miss at W:
///   W -> manager `.request`; manager -> every copy holder but W
///   `.invalidate`, holder -> manager `.invalidateAck`; once all are in,
///   manager -> O `.forward`; O -> W `.writeGrant` with the contents
///   (O drops its access); W -> manager `.confirm`, which records W as
///   owner and releases the lock. 4 + 2 × copies messages; 2 + 2 × copies
///   when the manager owns the page or W does (then the manager's own
///   `.writeGrant` carries the contents, or none, and needs no confirmation).
///
/// Why it is correct under concurrency (FIFO per pair of ranks only): a
/// confirmation is needed exactly when the grant does not travel on the
/// manager's own channel to the requester. The race `sc` documents, an
/// invalidation overtaking the read grant it cancels, cannot happen here:
/// invalidations come only from the manager, a rank joins the copy set only
/// once its confirmation proves the grant arrived (or when the manager sent
/// the grant itself, on the channel its invalidation will take), and the
/// lock keeps the next write waiting until then. Likewise a `.forward` can
/// never reach a rank that is not yet, or no longer, the owner: the manager
/// learns of a new owner from its confirmation, or sent the ownership
/// itself ahead of any later `.forward` on the same channel. So `.forward`s
/// are never relayed or held, and no grant is ever stale.
///
/// Placement (a choice): every page starts owned by the manager, or by the
/// home `onPlacement` gives it (every rank makes the same call, so the
/// manager's table and the owners agree without messages); the page holds
/// zeros and has no copies. Owner-computes programs then write their own
/// part of an array without a message. Every rank's view starts
/// inaccessible; an owner's first access faults once and is granted locally.
///
/// Deviations from the paper, and why:
/// - No confirmation when the manager sends the grant itself (it owns the
///   page, or the writer already does): the manager's later messages to the
///   requester follow the grant on the same channel, which is all the lock
///   protects. Reads of a manager-owned page therefore run together.
/// - An owner that has served no read since it last had the page to itself
///   takes write access without messages (the paper's owner asks the
///   manager); the serialisation point is the owner itself, since the
///   manager's next `.forward` for the page reaches it afterwards and
///   downgrades it before copying. An owner with readers asks the manager,
///   which invalidates them and answers with a `.writeGrant` without
///   contents.
/// - A write grant always carries the page, even to a requester that holds
///   a read copy (as in the paper): the owner does not know the copy set.
/// - The manager waits for every invalidation acknowledgement before the
///   page moves (the paper leaves `Invalidate` synchronous): sequential
///   consistency needs no stale reader left once the write is visible.
/// - A fault on a page with a request in flight waits for that request; a
///   write fault behind a read request re-faults when the read completes
///   and then asks for write access.
/// - No look-ahead and no prefetch (the protocol's defaults ignore both).
public struct IvyCentralProtocol: CoherenceProtocol {
    public static let name = "ivy-central"
    public static let model = MemoryModel.sequential

    /// The rank that manages every page.
    public static let manager = 0

    public private(set) var configuration: CoherenceConfiguration
    public private(set) var statistics = MemoryStatistics()

    /// Per-page state of this rank as a node (requester, owner, copy holder).
    struct NodePage: Sendable {
        var access = PageAccess.none
        var isOwner: Bool
        /// Owner only: it has served a read since it last had the page to
        /// itself, so copies may exist and a write must go through the manager.
        var shared = false
        /// The request this rank has at the manager, if any.
        var request: Request?
    }

    enum Request: Sendable, Equatable {
        case read, write
        var isWrite: Bool { self == .write }
    }

    /// The manager's state of one page (rank 0 only).
    struct ManagedPage: Sendable {
        var owner: Int
        /// Ranks other than the owner holding a read copy.
        var copyset = RankSet()
        /// The transaction holding the page's lock, if any.
        var busy: Transaction?
        /// Requests waiting for the lock, oldest first.
        var queue: [(requester: Int, isWrite: Bool)] = []
    }

    enum Transaction: Sendable, Equatable {
        /// `writer`'s write, waiting for `acks` invalidation acknowledgements.
        case invalidating(writer: Int, acks: Int)
        /// Forwarded to the owner; waiting for the requester's confirmation.
        case confirming(requester: Int, isWrite: Bool)
    }

    private var pages: [NodePage]
    /// Indexed by page; empty except at the manager.
    private var managed: [ManagedPage]
    /// Effects produced by the input being handled.
    private var effects: [MemoryEffect] = []

    public init(configuration: CoherenceConfiguration) {
        self.configuration = configuration
        pages = Array(repeating: NodePage(isOwner: configuration.rank == Self.manager), count: configuration.pageCount)
        managed = configuration.rank == Self.manager
            ? Array(repeating: ManagedPage(owner: Self.manager), count: configuration.pageCount) : []
    }

    private var rank: Int { configuration.rank }
    private var isManager: Bool { rank == Self.manager }

    public func access(ofPage page: Int) -> PageAccess { pages[page].access }

    public func isOwner(ofPage page: Int) -> Bool { pages[page].isOwner }

    /// The manager's view of `page`: its owner and copy set (manager only).
    public func managerView(ofPage page: Int) -> (owner: Int, copyset: RankSet) {
        precondition(isManager, "rank \(rank) is not the manager")
        return (managed[page].owner, managed[page].copyset)
    }

    /// Requests waiting at the manager for `page` (manager only).
    public func queueDepth(ofPage page: Int) -> Int {
        precondition(isManager, "rank \(rank) is not the manager")
        return managed[page].queue.count
    }

    public var isQuiescent: Bool {
        pages.allSatisfy { $0.request == nil } && managed.allSatisfy { $0.busy == nil && $0.queue.isEmpty }
    }

    // MARK: Inputs

    /// Makes `home` the initial owner of pristine pages (see the opening comment).
    public mutating func onPlacement(pages range: Range<Int>, home: Int) -> [MemoryEffect] {
        precondition((0..<configuration.rankCount).contains(home), "home \(home) outside 0..<\(configuration.rankCount)")
        for page in range {
            checkPage(page)
            precondition(pages[page].access == .none && pages[page].request == nil && !pages[page].shared,
                         "placement of page \(page), which is in use")
            pages[page].isOwner = home == rank
            if isManager {
                precondition(managed[page].busy == nil && managed[page].copyset.isEmpty, "placement of page \(page), which is in use")
                managed[page].owner = home
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
        } else if state.isOwner && !state.shared {
            setAccess(page, .readWrite)
            effects.append(.completeFaults(page: page))
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
        if managed[page].busy == nil {
            precondition(managed[page].queue.isEmpty, "requests for page \(page) wait with its lock free")
            serve(page: page, requester: requester, isWrite: isWrite)
            return
        }
        // Each rank has at most one request per page outstanding; a second
        // one is a protocol bug, not load.
        precondition(!managed[page].queue.contains { $0.requester == requester }, "rank \(requester) has two requests for page \(page)")
        managed[page].queue.append((requester, isWrite))
    }

    /// Starts a request's transaction; it holds the lock until it ends,
    /// unless it ends at once.
    private mutating func serve(page: Int, requester: Int, isWrite: Bool) {
        let owner = managed[page].owner
        if !isWrite {
            // An owner never asks for a copy: it grants itself one.
            precondition(requester != owner, "the owner of page \(page) asked for a read copy")
            if owner == rank {
                // The grant leaves now, ahead of any later invalidation.
                managed[page].copyset.insert(requester)
                deliver(.forward(page: page, requester: requester, isWrite: false), to: owner)
            } else {
                managed[page].busy = .confirming(requester: requester, isWrite: false)
                send(.forward(page: page, requester: requester, isWrite: false), to: owner)
            }
            return
        }
        // A requester holding a copy keeps it: the page it is about to get is the same.
        let holders = managed[page].copyset.removing(requester)
        managed[page].copyset = RankSet()
        if holders.contains(rank) { dropCopy(page) }
        let others = holders.removing(rank)
        managed[page].busy = .invalidating(writer: requester, acks: others.count)
        for holder in others {
            record(.invalidationSent(page: page))
            send(.invalidate(page: page), to: holder)
        }
        if others.isEmpty { transfer(page) }
    }

    /// Every copy is gone: the writer gets the page.
    private mutating func transfer(_ page: Int) {
        guard case let .invalidating(writer, 0) = managed[page].busy else {
            preconditionFailure("transfer of page \(page) with invalidations outstanding: \(String(describing: managed[page].busy))")
        }
        let owner = managed[page].owner
        if owner == writer {
            // The owner's copy is current: ownership stays, access widens.
            managed[page].busy = nil
            deliver(.writeGrant(page: page, copyset: RankSet(), contents: nil), to: writer)
        } else if owner == rank {
            managed[page].owner = writer
            managed[page].busy = nil
            deliver(.forward(page: page, requester: writer, isWrite: true), to: owner)
        } else {
            managed[page].busy = .confirming(requester: writer, isWrite: true)
            send(.forward(page: page, requester: writer, isWrite: true), to: owner)
        }
    }

    private mutating func onInvalidateAck(page: Int, from holder: Int) {
        guard case let .invalidating(writer, acks) = managed[page].busy, acks > 0 else {
            preconditionFailure("invalidation ack for page \(page) from rank \(holder) with none outstanding")
        }
        managed[page].busy = .invalidating(writer: writer, acks: acks - 1)
        if acks == 1 {
            transfer(page)
            serveQueue(page)
        }
    }

    private mutating func onConfirm(page: Int, from requester: Int) {
        guard case let .confirming(expected, isWrite) = managed[page].busy, expected == requester else {
            preconditionFailure("confirm of page \(page) from rank \(requester) matches no transaction: \(String(describing: managed[page].busy))")
        }
        if isWrite {
            managed[page].owner = requester
        } else {
            managed[page].copyset.insert(requester)
        }
        managed[page].busy = nil
        serveQueue(page)
    }

    /// Starts the waiting requests while the lock is free (reads of a page
    /// the manager owns end at once, so several may go out together).
    private mutating func serveQueue(_ page: Int) {
        while managed[page].busy == nil, !managed[page].queue.isEmpty {
            let next = managed[page].queue.removeFirst()
            serve(page: page, requester: next.requester, isWrite: next.isWrite)
        }
    }

    // MARK: Owner

    private mutating func onForward(page: Int, requester: Int, isWrite: Bool) {
        precondition(pages[page].isOwner, "rank \(rank) asked to serve page \(page), which it does not own")
        precondition(requester != rank, "owner of page \(page) asked to serve itself")
        if isWrite {
            giveUp(page, to: requester)
        } else {
            serveRead(page, to: requester)
        }
    }

    private mutating func serveRead(_ page: Int, to requester: Int) {
        // Downgrade before copying so no write slips into the copy.
        if pages[page].access == .readWrite { setAccess(page, .read) }
        pages[page].shared = true
        sendPage(page, .readGrant(page: page, contents: []), to: requester)
    }

    private mutating func giveUp(_ page: Int, to requester: Int) {
        pages[page].isOwner = false
        pages[page].shared = false
        if pages[page].access != .none { setAccess(page, .none) }
        sendPage(page, .writeGrant(page: page, copyset: RankSet(), contents: []), to: requester)
    }

    // MARK: Requester and copy holder

    private mutating func sendRequest(_ page: Int, _ request: Request) {
        pages[page].request = request
        deliver(.request(page: page, isWrite: request.isWrite), to: Self.manager)
    }

    private mutating func onReadGrant(page: Int, contents: [UInt8], from granter: Int) {
        precondition(pages[page].request == .read && !pages[page].isOwner, "read grant for page \(page) that rank \(rank) did not request")
        install(page, contents)
        pages[page].request = nil
        setAccess(page, .read)
        effects.append(.completeFaults(page: page))
        confirmIfNeeded(page, grantedBy: granter)
    }

    private mutating func onWriteGrant(page: Int, copyset: RankSet, contents: [UInt8]?, from granter: Int) {
        precondition(pages[page].request == .write, "write grant for page \(page) that rank \(rank) did not request")
        precondition(copyset.isEmpty, "write grant for page \(page) with copies left to invalidate: the manager invalidates them")
        if let contents {
            precondition(!pages[page].isOwner, "owner of page \(page) sent its own contents")
            install(page, contents)
        } else {
            precondition(pages[page].isOwner, "write grant without contents for page \(page), but rank \(rank) does not own it")
        }
        pages[page].isOwner = true
        pages[page].shared = false
        pages[page].request = nil
        setAccess(page, .readWrite)
        effects.append(.completeFaults(page: page))
        confirmIfNeeded(page, grantedBy: granter)
    }

    /// A grant from another owner must be confirmed; the manager's own
    /// grants need not (see the opening comment).
    private mutating func confirmIfNeeded(_ page: Int, grantedBy granter: Int) {
        if granter != Self.manager { deliver(.confirm(page: page), to: Self.manager) }
    }

    private mutating func onInvalidate(page: Int) {
        record(.invalidationReceived(page: page))
        dropCopy(page)
        send(.invalidateAck(page: page), to: Self.manager)
    }

    private mutating func dropCopy(_ page: Int) {
        // A copy holder was added to the copy set only once its grant had
        // arrived, so it holds that copy (see the opening comment).
        precondition(!pages[page].isOwner && pages[page].access == .read, "rank \(rank) asked to drop page \(page), of which it holds no copy")
        setAccess(page, .none)
    }

    // MARK: Plumbing

    private mutating func handle(_ message: MemoryMessage, from peer: Int) {
        switch message {
        case let .request(page, isWrite):
            precondition(isManager, "request for page \(page) sent to rank \(rank), not the manager")
            onRequest(page: page, requester: peer, isWrite: isWrite)
        case let .forward(page, requester, isWrite):
            precondition(peer == Self.manager, "forward of page \(page) from rank \(peer), not the manager")
            onForward(page: page, requester: requester, isWrite: isWrite)
        case let .readGrant(page, contents):
            onReadGrant(page: page, contents: contents, from: peer)
        case let .writeGrant(page, copyset, contents):
            onWriteGrant(page: page, copyset: copyset, contents: contents, from: peer)
        case let .invalidate(page):
            precondition(peer == Self.manager, "invalidation of page \(page) from rank \(peer), not the manager")
            onInvalidate(page: page)
        case let .invalidateAck(page):
            precondition(isManager, "invalidation ack for page \(page) sent to rank \(rank), not the manager")
            onInvalidateAck(page: page, from: peer)
        case let .confirm(page):
            precondition(isManager, "confirm for page \(page) sent to rank \(rank), not the manager")
            onConfirm(page: page, from: peer)
        default:
            preconditionFailure("ivy-central received \(message) from rank \(peer): every rank must run the same protocol")
        }
    }

    /// A message to `peer`; to this very rank (rank 0 is the manager and a
    /// node) it is handled at once, without the network, so its effects
    /// keep their causal order with those of messages to other ranks. No
    /// chain of such calls comes back to the role it started from but for
    /// a write grant to a requester that has nothing left to do.
    private mutating func deliver(_ message: MemoryMessage, to peer: Int) {
        if peer == rank {
            handle(message, from: rank)
        } else {
            send(message, to: peer)
        }
    }

    private mutating func send(_ message: MemoryMessage, to peer: Int) {
        precondition(peer != rank, "\(message) sent to its own rank")
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

    private func checkPage(_ page: Int) {
        precondition((0..<configuration.pageCount).contains(page), "page \(page) outside 0..<\(configuration.pageCount)")
    }

    /// Hands out the effects the input produced.
    private mutating func takeEffects() -> [MemoryEffect] {
        defer { effects = [] }
        return effects
    }
}
