/// What a coherence core asks its engine to do. A handler returns a list of
/// effects that the engine performs IN ORDER: a protection change listed
/// before a page copy must have taken effect (mprotect returned) before the
/// copy is made, so no application write can slip into a page being sent.
public enum MemoryEffect: Sendable, Equatable {
    /// Send `message` to the peer with this rank (never the core's own rank).
    case send(to: Int, MemoryMessage)
    /// Copy `page` out of the system view into `message` (a grant whose
    /// contents are empty: `message.attaching(contents:)`) and send it.
    case sendWithPage(to: Int, page: Int, MemoryMessage)
    /// Write `contents` into `page` through the system view.
    case installPage(page: Int, contents: [UInt8])
    /// Copy `page` from the system view into the engine's twin of it
    /// (replacing any): the page as it was before this interval's writes.
    case makeTwin(page: Int)
    /// Encode `page` (system view) against its twin as a `PageDiff`, attach
    /// it to `message` (a `.diff` whose diff is empty: `attaching(diff:)`),
    /// send it, and drop the twin. A page without a twin sends an empty diff.
    case sendDiff(to: Int, page: Int, MemoryMessage)
    /// Encode `page` (system view) against its twin as a `PageDiff`, keep it
    /// under `key` and drop the twin (lrc's lazy diffs). A page without a
    /// twin stores an empty diff.
    case storeDiff(page: Int, key: DiffKey)
    /// Fill the diffs of `message` (a `.diffReply` whose diffs are empty)
    /// from those stored under their keys, and send it. Every key must be
    /// stored.
    case sendStoredDiffs(to: Int, MemoryMessage)
    /// Forget every stored diff of an interval up to `throughInterval` (a
    /// garbage collection every rank agreed on).
    case dropStoredDiffs(throughInterval: Int)
    /// Write the runs of `diff` (already checked against the page size by
    /// the message decoder) into `page` through the system view.
    case applyDiff(page: Int, diff: [UInt8])
    /// Set the application-view protection of a run of pages (one mprotect).
    case setProtection(pages: Range<Int>, PageAccess)
    /// Wake every thread waiting on a fault of `page`; a thread whose access
    /// is still not allowed faults again, which is harmless.
    case completeFaults(page: Int)
    /// The core has done its part of the synchronisation operation with this
    /// ticket; `payload` travels with the lock grant or barrier (empty if none).
    case syncReady(SyncTicket, payload: [UInt8])
    /// A statistic the core has already counted in its own `statistics`.
    case record(MemoryStatistic)
}
