/// Counters of one page, or summed over the process.
public struct PageStatistics: Sendable, Equatable {
    public var readFaults = 0
    public var writeFaults = 0
    public var pagesReceived = 0
    public var pagesSent = 0
    public var invalidationsSent = 0
    public var invalidationsReceived = 0
    /// Read grants thrown away because their invalidation overtook them
    /// (`sc`; the read is asked for again). Their pages count in
    /// `pagesReceived` too: they did travel.
    public var staleGrantsDiscarded = 0
    /// Requests for this page made ahead of a fault on an earlier page
    /// (look-ahead; not counted in `readFaults` or `writeFaults`).
    public var readsAhead = 0
    public var writesAhead = 0
    /// Requests (or local upgrades) for this page made by a prefetch hint
    /// (`MemoryEngine.prefetch`; not counted in the faults either).
    public var prefetches = 0
    /// Diffs of this page sent to its home, and applied here as its home
    /// (multiple-writer protocols: `hlrc`).
    public var diffsSent = 0
    public var diffsApplied = 0
    /// Diffs encoded from a twin (`hlrc` at each release, `lrc` lazily when
    /// asked for or when the page changes hands).
    public var diffsCreated = 0
    public init() {}
}

/// One counter increment, reported by a core as a `.record` effect so the
/// engine can also feed traces and metrics from the same events.
public enum MemoryStatistic: Sendable, Equatable {
    case readFault(page: Int)
    case writeFault(page: Int)
    case pageReceived(page: Int)
    case pageSent(page: Int)
    case invalidationSent(page: Int)
    case invalidationReceived(page: Int)
    case staleGrantDiscarded(page: Int)
    case readAhead(page: Int)
    case writeAhead(page: Int)
    case prefetch(page: Int)
    case diffSent(page: Int)
    case diffApplied(page: Int)
    case diffCreated(page: Int)
    /// A garbage collection of twins, diffs and write notices ended (lrc).
    case garbageCollected
    /// A message left for a peer: its encoded size, page contents included.
    case messageSent(bytes: Int)
    case messageReceived(bytes: Int)
}

/// Per-process and per-page statistics of a coherence core. Time blocked in
/// faults is measured by the engine, which owns the clock.
public struct MemoryStatistics: Sendable, Equatable {
    /// Sums over all pages.
    public var total = PageStatistics()
    /// Only pages that saw an event have an entry.
    public var pages: [Int: PageStatistics] = [:]
    public var messagesSent = 0
    public var messagesReceived = 0
    public var bytesSent = 0
    public var bytesReceived = 0
    /// Garbage collections completed (lrc), and the most bytes of twins and
    /// stored diffs the engine reported at a synchronisation.
    public var garbageCollections = 0
    public var retainedBytesPeak = 0

    public init() {}

    public mutating func apply(_ statistic: MemoryStatistic) {
        switch statistic {
        case let .readFault(page): bump(page, \.readFaults)
        case let .writeFault(page): bump(page, \.writeFaults)
        case let .pageReceived(page): bump(page, \.pagesReceived)
        case let .pageSent(page): bump(page, \.pagesSent)
        case let .invalidationSent(page): bump(page, \.invalidationsSent)
        case let .invalidationReceived(page): bump(page, \.invalidationsReceived)
        case let .staleGrantDiscarded(page): bump(page, \.staleGrantsDiscarded)
        case let .readAhead(page): bump(page, \.readsAhead)
        case let .writeAhead(page): bump(page, \.writesAhead)
        case let .prefetch(page): bump(page, \.prefetches)
        case let .diffSent(page): bump(page, \.diffsSent)
        case let .diffApplied(page): bump(page, \.diffsApplied)
        case let .diffCreated(page): bump(page, \.diffsCreated)
        case .garbageCollected: garbageCollections += 1
        case let .messageSent(bytes):
            messagesSent += 1
            bytesSent += bytes
        case let .messageReceived(bytes):
            messagesReceived += 1
            bytesReceived += bytes
        }
    }

    private mutating func bump(_ page: Int, _ counter: WritableKeyPath<PageStatistics, Int>) {
        total[keyPath: counter] += 1
        pages[page, default: PageStatistics()][keyPath: counter] += 1
    }
}
