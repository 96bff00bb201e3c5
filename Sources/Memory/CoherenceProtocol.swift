/// Who this core is and what it manages; the same on every rank except `rank`.
public struct CoherenceConfiguration: Sendable, Equatable {
    /// This process's rank, 0..<rankCount. The engine maps ranks to global PIDs.
    public var rank: Int
    public var rankCount: Int
    public var pageCount: Int
    /// The coherence unit in bytes; page contents in messages have this size.
    public var pageSize: Int
    /// Pages past a faulting one that a protocol may also serve, in the same
    /// exchange, when its history says they will be needed (sc's
    /// look-ahead); 0 turns it off. A rank's own choice: ranks may differ.
    public var lookAhead: Int
    /// Bytes of twins and stored diffs past which a protocol that keeps them
    /// (lrc) collects them at the next barrier.
    public var collectionBound: Int

    /// 64 MiB: collections stay rare (each brings every page up to date)
    /// while a process's retained diffs stay far below its memory.
    public static let defaultCollectionBound = 64 << 20

    public init(rank: Int, rankCount: Int, pageCount: Int, pageSize: Int, lookAhead: Int = 0,
                collectionBound: Int = CoherenceConfiguration.defaultCollectionBound) {
        precondition(rankCount > 0 && (0..<rankCount).contains(rank), "rank \(rank) outside 0..<\(rankCount)")
        precondition(pageCount > 0 && pageSize > 0, "empty region")
        precondition(lookAhead >= 0, "negative look-ahead \(lookAhead)")
        precondition(collectionBound >= 0, "negative collection bound \(collectionBound)")
        self.collectionBound = collectionBound
        self.rank = rank
        self.rankCount = rankCount
        self.pageCount = pageCount
        self.pageSize = pageSize
        self.lookAhead = lookAhead
    }

    /// The limits a decoded message must respect for this job.
    public var messageLimits: MemoryMessage.Limits {
        MemoryMessage.Limits(rankCount: rankCount, pageCount: pageCount, pageSize: pageSize)
    }
}

/// The guarantee a protocol gives to programs; tests pick their checks by it.
public enum MemoryModel: Sendable, Equatable {
    /// Every read returns the last write in one global order (sc).
    case sequential
    /// Writes become visible to a process once it acquires a lock or passes a
    /// barrier after the writer released it (lrc, hlrc).
    case release
}

/// Names one synchronisation operation in flight, chosen by the engine.
public struct SyncTicket: Sendable, Hashable {
    public var id: UInt64
    public init(_ id: UInt64) { self.id = id }
}

/// A coherence protocol core: a value fed one input at a time, returning the
/// effects the engine must perform, in order (see `MemoryEffect`).
///
/// Inside a core there are no threads, sockets, clocks, logging or global
/// randomness; the same inputs always give the same effects. A core is not
/// thread-safe: its engine calls it from one thread (or actor) at a time.
///
/// Inputs:
/// - `onReadFault` / `onWriteFault`: an application thread touched a page
///   without sufficient access. The engine may report the same page more than
///   once (coalescing in CFault is best-effort, and woken threads re-fault);
///   a core treats a fault it is already serving as "wait for it" and
///   completes a fault whose access it already has.
/// - `onMessage`: a message from the peer with rank `peer`. The transport
///   must deliver messages between each pair of ranks in FIFO order; no
///   order is assumed between different pairs.
/// - Synchronisation hooks: called when this process acquires a lock (with
///   the payload the last releaser's core attached), releases one, arrives at
///   a barrier, or leaves it (with every participant's arrival payload). The
///   operation proceeds once the core emits `.syncReady` for its ticket.
///
/// Adding a protocol: one file with a conforming struct and one line in
/// `ProtocolRegistry.protocols`.
public protocol CoherenceProtocol: Sendable {
    /// The name `--protocol` selects it by.
    static var name: String { get }
    static var model: MemoryModel { get }

    init(configuration: CoherenceConfiguration)
    var configuration: CoherenceConfiguration { get }
    var statistics: MemoryStatistics { get }

    /// Effects to perform once before the application starts (e.g. initial
    /// protections). The region starts with every page inaccessible.
    mutating func start() -> [MemoryEffect]

    mutating func onReadFault(page: Int) -> [MemoryEffect]
    mutating func onWriteFault(page: Int) -> [MemoryEffect]
    mutating func onMessage(_ message: MemoryMessage, from peer: Int) -> [MemoryEffect]

    mutating func onAcquire(lock: Int, grant: [UInt8], ticket: SyncTicket) -> [MemoryEffect]
    mutating func onRelease(lock: Int, ticket: SyncTicket) -> [MemoryEffect]
    mutating func onBarrierArrive(barrier: Int, ticket: SyncTicket) -> [MemoryEffect]
    mutating func onBarrierDepart(barrier: Int, contributions: [[UInt8]], ticket: SyncTicket) -> [MemoryEffect]

    /// Placement: `pages`, never touched by anyone, get `home` as their
    /// initial owner (sc) or home (home-based protocols). Every rank makes
    /// the same call before any rank touches those pages (the engine applies
    /// the per-rank arenas before start, and collective allocations with a
    /// barrier after), so no message is needed.
    mutating func onPlacement(pages: Range<Int>, home: Int) -> [MemoryEffect]

    /// `pages` belong to a collective allocation that every rank has placed
    /// (the engine calls this after the allocation's barrier): the core may
    /// request them before anyone touched them (sc's look-ahead of a
    /// sequential first read). Pages outside every allocation never are:
    /// a later allocation's placement needs them untouched.
    mutating func onAllocated(pages: Range<Int>)

    /// Changes how many pages past a fault the core may serve ahead (see
    /// `CoherenceConfiguration.lookAhead`). Look-ahead is a rank's own
    /// decision, so ranks may differ and it may change at any time.
    mutating func setLookAhead(_ pages: Int)

    /// A prefetch hint from the application: it will soon read (or, with
    /// `forWriting`, write) `pages`. The core may start, with no thread
    /// waiting, the transactions faults on them would start, so that their
    /// latency overlaps the application's work; a fault taken before one
    /// ends waits for it like any fault behind a request in flight. A hint
    /// never changes what a program may observe (it is an early access
    /// whose value is dropped), so a core may ignore it or part of it.
    mutating func onPrefetch(pages: Range<Int>, forWriting: Bool) -> [MemoryEffect]

    /// What the engine keeps for this core now, in bytes: its twins and the
    /// diffs it stored (`MemoryEffect.storeDiff`). Told before every
    /// synchronisation hook; protocols that bound it (lrc) collect at a
    /// barrier once it passes `CoherenceConfiguration.collectionBound`.
    mutating func observeRetainedMemory(bytes: Int)

    /// The access the application view should have for `page` now (what the
    /// core's protection effects have set so far).
    func access(ofPage page: Int) -> PageAccess

    /// True when no request, transfer or invalidation is in progress here.
    var isQuiescent: Bool { get }
}

extension CoherenceProtocol {
    /// Protocols whose consistency needs nothing at synchronisation points
    /// (sc) complete every hook at once, with no payload.
    public mutating func onAcquire(lock: Int, grant: [UInt8], ticket: SyncTicket) -> [MemoryEffect] {
        [.syncReady(ticket, payload: [])]
    }

    public mutating func onRelease(lock: Int, ticket: SyncTicket) -> [MemoryEffect] {
        [.syncReady(ticket, payload: [])]
    }

    public mutating func onBarrierArrive(barrier: Int, ticket: SyncTicket) -> [MemoryEffect] {
        [.syncReady(ticket, payload: [])]
    }

    public mutating func onBarrierDepart(barrier: Int, contributions: [[UInt8]], ticket: SyncTicket) -> [MemoryEffect] {
        [.syncReady(ticket, payload: [])]
    }

    public mutating func start() -> [MemoryEffect] { [] }

    /// Protocols without prefetching ignore the hints.
    public mutating func onPrefetch(pages: Range<Int>, forWriting: Bool) -> [MemoryEffect] { [] }

    /// Protocols without look-ahead ignore it.
    public mutating func setLookAhead(_ pages: Int) {}

    public mutating func onAllocated(pages: Range<Int>) {}

    /// Protocols that keep no diffs ignore it.
    public mutating func observeRetainedMemory(bytes: Int) {}

    /// Protocols without a notion of home ignore placement.
    public mutating func onPlacement(pages: Range<Int>, home: Int) -> [MemoryEffect] { [] }
}
