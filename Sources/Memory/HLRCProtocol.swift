/// `hlrc`: home-based lazy release consistency (Y. Zhou, L. Iftode and
/// K. Li, "Performance Evaluation of Two Home-Based Lazy Release
/// Consistency Protocols for Shared Virtual Memory Systems", OSDI 1996,
/// section 2), with multiple writers per page.
///
/// Every page has a home, whose copy is the master. A rank writes a page
/// it is not the home of on a local copy: on the first write in an
/// interval it keeps a twin (the page before the write) and takes write
/// access. At a release (lock release, barrier arrival) it ends the
/// interval: it sends the diff of every page it wrote to the page's home,
/// which applies it and acknowledges, and completes the release only once
/// every diff is acknowledged, so a home holds an interval's writes before
/// anyone can acquire after it. The pages written in the interval become
/// write notices, carried as the synchronisation payload (lock grants,
/// barrier departures). An acquirer invalidates every page named by a
/// notice it had not seen (its copy may be stale); its next access fetches
/// the whole page from the home. A home writes its own pages in place (no
/// twin, no diff) but still reports them in notices: its page loses write
/// access when it serves a copy, so its next write faults and is noticed;
/// a page nobody fetched stays writable at its home across intervals.
///
/// Terminology (paper -> here):
/// - interval index / vector timestamp -> `interval`, `timestamp`
/// - write notices -> `notices[page][writer]` (the last interval of each
///   writer known to have written the page, since the last barrier)
/// - diff flush at release -> `endInterval()`, `.sendDiff`
/// - page fetch from home -> `.fetch` / `.pageData`
///
/// The race of a release's diff and a later fetch at the home: a fetch
/// carries the notices' vector for the page (the intervals the requester
/// knows were written), and the home answers only once it has applied the
/// diffs of those intervals, holding the fetch until then; its reply
/// carries what it had applied, and a reply that turns out older than the
/// requester's notices (the requester learned of a write while the fetch
/// was in flight) is dropped and the fetch repeated. Acknowledged diffs make
/// the home's wait rare, but not impossible: a fetch sent before an acquire
/// may be answered before the releaser's diff arrived.
///
/// Choices and deviations:
/// - Placement: `onPlacement` gives a page its home (Plexus's allocations
///   place pages by their `distribution`, `.block` by default, and each
///   rank's arena on itself). A page never placed has home
///   `page % rankCount`: first touch would need a protocol round to agree
///   on the toucher, which this version does not have.
/// - Intervals: a rank starts a new interval only at a release in which it
///   wrote something; an acquire does not start one (notices are per page,
///   so a coarser interval only names more pages, never fewer).
/// - Notices are kept per page (one interval per writer), not per
///   interval: what they occupy is bounded by pages × ranks, and a barrier
///   drops all of them, since every rank has seen them when it departs.
///   A payload carries the releaser's whole set, so an acquirer learns the
///   notices of every release that happened before (transitively).
/// - A page being invalidated that this rank has written in the current
///   interval (another writer wrote other words of it) is flushed to its
///   home first; the home applies the diff before any later fetch of this
///   rank (FIFO per pair), so no write of this rank is lost.
/// - Look-ahead (a read miss right after the previous page's also fetches
///   the next pages of the allocation) and prefetch hints start fetches
///   with no thread waiting; their replies follow the same stale rule.
/// - A payload takes 4 + 4 × ranks bytes per page named. It nears the
///   transport's 16 MiB frame limit only when that many pages are written
///   between two barriers (every page of a 1 GiB region with 16 ranks);
///   a compact encoding (one entry per writer) would be the fix.
public struct HLRCProtocol: CoherenceProtocol {
    public static let name = "hlrc"
    public static let model = MemoryModel.release

    public let configuration: CoherenceConfiguration
    public private(set) var statistics = MemoryStatistics()

    struct Page: Equatable {
        var home: Int
        /// Mirrors the application view.
        var access: PageAccess = .none
        /// A fetch of the page from its home is in flight.
        var fetching = false
        /// A fault waiting on the fetch wants to write.
        var fetchForWrite = false
        /// Invalidated while the fetch was in flight: its reply may be older
        /// than a notice, so it is dropped and the fetch repeated.
        var stale = false
        /// Written in the current interval (named in the next notices).
        var written = false
    }

    private var pages: [Page]
    private var rank: Int { configuration.rank }
    /// This rank's intervals with writes so far.
    public private(set) var interval = 0
    /// The last interval of each rank whose notices this rank has seen.
    public private(set) var timestamp: [Int]
    /// Per page written since the last barrier: the last interval of each
    /// writer known to have written it.
    public private(set) var notices: [Int: [Int]] = [:]
    /// Pages with `written` set, in the order of their first write.
    private var writtenPages: [Int] = []
    /// As a home: per page that received diffs, the last interval of each
    /// writer applied.
    private var applied: [Int: [Int]] = [:]
    /// As a home: fetches waiting for diffs (at most one per requester and page).
    private var heldFetches: [Int: [(requester: Int, version: [Int])]] = [:]
    /// Diffs sent to each home, and acknowledgements received from it.
    private var diffsSent: [Int]
    private var diffsAcknowledged: [Int]
    /// Releases and barrier arrivals waiting for their diffs' acknowledgements:
    /// each waits for the diffs sent to each home when it began.
    private var waitingSyncs: [(ticket: SyncTicket, payload: [UInt8], sent: [Int])] = []
    /// More synchronisations in flight at once than threads could ask for is a bug.
    static let maxWaitingSyncs = 4096

    /// Pages fetched past a sequential read miss (`CoherenceConfiguration.lookAhead`).
    private var lookAhead: Int
    /// Pages of collective allocations every rank has placed: only these
    /// may be fetched before anyone touched them (`onAllocated`).
    private var allocated: [Bool]
    /// The last page a read miss fetched (itself or ahead): a miss on the
    /// page after it continues a sequential scan.
    private var lastReadFetched: Int?

    private var effects: [MemoryEffect] = []

    public init(configuration: CoherenceConfiguration) {
        self.configuration = configuration
        let n = configuration.rankCount
        pages = (0..<configuration.pageCount).map { Page(home: $0 % n) }
        lookAhead = configuration.lookAhead
        allocated = Array(repeating: false, count: configuration.pageCount)
        timestamp = Array(repeating: 0, count: n)
        diffsSent = Array(repeating: 0, count: n)
        diffsAcknowledged = Array(repeating: 0, count: n)
    }

    public func access(ofPage page: Int) -> PageAccess { pages[page].access }

    public func home(ofPage page: Int) -> Int { pages[page].home }

    public var isQuiescent: Bool {
        pages.allSatisfy { !$0.fetching } && heldFetches.isEmpty && waitingSyncs.isEmpty && diffsSent == diffsAcknowledged
    }

    // MARK: Inputs

    public mutating func onPlacement(pages range: Range<Int>, home: Int) -> [MemoryEffect] {
        precondition((0..<configuration.rankCount).contains(home), "home \(home) outside 0..<\(configuration.rankCount)")
        for p in range {
            checkPage(p)
            precondition(pages[p].access == .none && !pages[p].fetching && !pages[p].written, "page \(p) placed after it was touched")
            pages[p].home = home
        }
        return []
    }

    public mutating func onReadFault(page: Int) -> [MemoryEffect] {
        checkPage(page)
        if pages[page].access >= .read { return [.completeFaults(page: page)] }
        if pages[page].fetching { return [] }
        record(.readFault(page: page))
        if pages[page].home == rank {
            setAccess(page, .read)
            effects.append(.completeFaults(page: page))
        } else {
            fetch(page, forWrite: false)
            var last = page
            if lastReadFetched == page - 1 {
                // A sequential scan: fetch the next pages with it (their
                // replies travel together if they share a home).
                var next = page + 1
                while next < min(configuration.pageCount, page + 1 + lookAhead), allocated[next] {
                    if pages[next].home != rank && pages[next].access == .none && !pages[next].fetching {
                        record(.readAhead(page: next))
                        fetch(next, forWrite: false)
                    }
                    last = next
                    next += 1
                }
            }
            lastReadFetched = last
        }
        return takeEffects()
    }

    public mutating func setLookAhead(_ pages: Int) {
        precondition(pages >= 0, "negative look-ahead \(pages)")
        lookAhead = pages
    }

    public mutating func onAllocated(pages range: Range<Int>) {
        for p in range {
            checkPage(p)
            allocated[p] = true
        }
    }

    public mutating func onWriteFault(page: Int) -> [MemoryEffect] {
        checkPage(page)
        if pages[page].access == .readWrite { return [.completeFaults(page: page)] }
        if pages[page].fetching {
            pages[page].fetchForWrite = true
            return []
        }
        record(.writeFault(page: page))
        if pages[page].home == rank {
            markWritten(page)
            setAccess(page, .readWrite)
            effects.append(.completeFaults(page: page))
        } else if pages[page].access == .read {
            startWriting(page)
            effects.append(.completeFaults(page: page))
        } else {
            fetch(page, forWrite: true)
        }
        return takeEffects()
    }

    /// Fetches the hinted pages this rank has no copy of, with no thread
    /// waiting (a later fault waits for the fetch like any fault). A hint
    /// to write fetches for reading: the write fault that follows twins the
    /// copy locally. At most one fetch per page is in flight, so the hints
    /// need no bound of their own.
    public mutating func onPrefetch(pages range: Range<Int>, forWriting: Bool) -> [MemoryEffect] {
        for p in range {
            checkPage(p)
            guard pages[p].home != rank, pages[p].access == .none, !pages[p].fetching else { continue }
            record(.prefetch(page: p))
            fetch(p, forWrite: false)
        }
        return takeEffects()
    }

    public mutating func onMessage(_ message: MemoryMessage, from peer: Int) -> [MemoryEffect] {
        precondition((0..<configuration.rankCount).contains(peer) && peer != rank, "message from invalid peer \(peer)")
        checkPage(message.page)
        record(.messageReceived(bytes: message.encodedCount))
        switch message {
        case let .fetch(page, version):
            precondition(pages[page].home == rank, "fetch of page \(page) sent to rank \(rank), not its home \(pages[page].home)")
            if hasApplied(version, page: page) {
                serve(page, to: peer)
            } else {
                precondition(!(heldFetches[page] ?? []).contains { $0.requester == peer }, "rank \(peer) fetched page \(page) twice")
                heldFetches[page, default: []].append((peer, version))
            }
        case let .pageData(page, version, contents):
            onPageData(page: page, version: version, contents: contents)
        case let .diff(page, writerInterval, diff):
            precondition(pages[page].home == rank, "diff of page \(page) sent to rank \(rank), not its home \(pages[page].home)")
            record(.diffApplied(page: page))
            effects.append(.applyDiff(page: page, diff: diff))
            var v = applied[page] ?? Array(repeating: 0, count: configuration.rankCount)
            v[peer] = max(v[peer], writerInterval)
            applied[page] = v
            send(.diffAck(page: page), to: peer)
            if let held = heldFetches[page] {
                var still: [(requester: Int, version: [Int])] = []
                for f in held {
                    if hasApplied(f.version, page: page) { serve(page, to: f.requester) } else { still.append(f) }
                }
                heldFetches[page] = still.isEmpty ? nil : still
            }
        case .diffAck:
            precondition(diffsAcknowledged[peer] < diffsSent[peer], "unexpected diff acknowledgement from rank \(peer)")
            diffsAcknowledged[peer] += 1
            completeSyncs()
        case .request, .forward, .readGrant, .writeGrant, .invalidate, .invalidateAck, .confirm,
             .diffRequest, .diffReply, .collected:
            preconditionFailure("hlrc received another protocol's message \(message) from rank \(peer): every rank must run the same protocol")
        }
        return takeEffects()
    }

    public mutating func onRelease(lock: Int, ticket: SyncTicket) -> [MemoryEffect] {
        endInterval()
        waitForDiffs(ticket, payload: encodedNotices())
        return takeEffects()
    }

    public mutating func onBarrierArrive(barrier: Int, ticket: SyncTicket) -> [MemoryEffect] {
        endInterval()
        waitForDiffs(ticket, payload: encodedNotices())
        return takeEffects()
    }

    public mutating func onAcquire(lock: Int, grant: [UInt8], ticket: SyncTicket) -> [MemoryEffect] {
        learn(grant)
        effects.append(.syncReady(ticket, payload: []))
        return takeEffects()
    }

    public mutating func onBarrierDepart(barrier: Int, contributions: [[UInt8]], ticket: SyncTicket) -> [MemoryEffect] {
        // What the participants had seen when they arrived.
        var arrived = Array(repeating: 0, count: configuration.rankCount)
        for c in contributions {
            if let t = learn(c) { for w in t.indices { arrived[w] = max(arrived[w], t[w]) } }
        }
        // Every rank has now seen every notice up to the arrivals, and every
        // home has applied their diffs (each arrival waited for its acks).
        notices = notices.compactMapValues { v in
            let newer = v.indices.map { w in v[w] > arrived[w] ? v[w] : 0 }
            return newer.allSatisfy { $0 == 0 } ? nil : newer
        }
        effects.append(.syncReady(ticket, payload: []))
        return takeEffects()
    }

    // MARK: Intervals and notices

    /// Ends the interval if anything was written in it: notices for the
    /// written pages, diffs of the written non-home copies to their homes,
    /// and write access dropped so the next interval's writes fault.
    private mutating func endInterval() {
        guard !writtenPages.isEmpty else { return }
        interval += 1
        timestamp[rank] = interval
        for p in writtenPages {
            pages[p].written = false
            var v = notices[p] ?? Array(repeating: 0, count: configuration.rankCount)
            v[rank] = interval
            notices[p] = v
            // A home keeps writing its page in place (see `serve`); a copy
            // flushed at an acquire is no longer writable.
            guard pages[p].home != rank, pages[p].access == .readWrite else { continue }
            // Downgrade first, so no write slips in between diff and protection.
            setAccess(p, .read)
            sendDiff(p, interval: interval)
        }
        writtenPages = []
    }

    /// Acts on a payload's notices: invalidates each page some other rank
    /// wrote in an interval this rank had not seen. A payload that does not
    /// decode (it never should) invalidates every copy, which is always safe.
    /// Returns the payload's timestamp.
    @discardableResult
    private mutating func learn(_ payload: [UInt8]) -> [Int]? {
        guard !payload.isEmpty else { return nil }
        guard let (theirTimestamp, theirNotices) = Self.decodeNotices(payload, configuration) else {
            for p in pages.indices where pages[p].home != rank { invalidate(p) }
            return nil
        }
        for (p, v) in theirNotices {
            var mine = notices[p] ?? Array(repeating: 0, count: configuration.rankCount)
            var isNew = false
            // A notice of an interval this rank has seen is kept already, or
            // was dropped at a barrier (its diffs are home): not kept again,
            // so a payload from before a barrier does not bring it back.
            for w in v.indices where w != rank && v[w] > timestamp[w] {
                isNew = true
                mine[w] = max(mine[w], v[w])
            }
            guard isNew else { continue }
            notices[p] = mine
            if pages[p].home != rank { invalidate(p) }
        }
        for w in timestamp.indices where w != rank { timestamp[w] = max(timestamp[w], theirTimestamp[w]) }
        return theirTimestamp
    }

    private mutating func invalidate(_ page: Int) {
        if pages[page].fetching {
            pages[page].stale = true
            return
        }
        switch pages[page].access {
        case .none:
            break
        case .read:
            setAccess(page, .none)
        case .readWrite:
            // Our writes of this interval go home before the copy is dropped.
            setAccess(page, .none)
            sendDiff(page, interval: interval + 1)
        }
    }

    /// Completes every waiting synchronisation whose diffs are all acknowledged.
    private mutating func completeSyncs() {
        var still: [(ticket: SyncTicket, payload: [UInt8], sent: [Int])] = []
        for s in waitingSyncs {
            if s.sent.indices.allSatisfy({ diffsAcknowledged[$0] >= s.sent[$0] }) {
                effects.append(.syncReady(s.ticket, payload: s.payload))
            } else {
                still.append(s)
            }
        }
        waitingSyncs = still
    }

    private mutating func waitForDiffs(_ ticket: SyncTicket, payload: [UInt8]) {
        precondition(waitingSyncs.count < Self.maxWaitingSyncs, "more than \(Self.maxWaitingSyncs) synchronisations wait for diffs at once")
        waitingSyncs.append((ticket, payload, diffsSent))
        completeSyncs()
    }

    // MARK: Pages

    private mutating func fetch(_ page: Int, forWrite: Bool) {
        pages[page].fetching = true
        pages[page].fetchForWrite = forWrite
        pages[page].stale = false
        send(.fetch(page: page, version: notices[page] ?? Array(repeating: 0, count: configuration.rankCount)), to: pages[page].home)
    }

    private mutating func onPageData(page: Int, version: [Int], contents: [UInt8]) {
        precondition(pages[page].fetching, "page \(page) arrived unasked")
        precondition(contents.count == configuration.pageSize, "page \(page) arrived with \(contents.count) bytes, not \(configuration.pageSize)")
        record(.pageReceived(page: page))
        let home = pages[page].home
        let known = notices[page] ?? []
        let current = known.indices.allSatisfy { w in w == home || version[w] >= known[w] }
        if pages[page].stale || !current {
            record(.staleGrantDiscarded(page: page))
            fetch(page, forWrite: pages[page].fetchForWrite)
            return
        }
        pages[page].fetching = false
        effects.append(.installPage(page: page, contents: contents))
        if pages[page].fetchForWrite {
            startWriting(page)
        } else {
            setAccess(page, .read)
        }
        effects.append(.completeFaults(page: page))
    }

    /// A valid non-home copy becomes writable, with a twin of it first.
    private mutating func startWriting(_ page: Int) {
        effects.append(.makeTwin(page: page))
        markWritten(page)
        setAccess(page, .readWrite)
    }

    private mutating func markWritten(_ page: Int) {
        if !pages[page].written {
            pages[page].written = true
            writtenPages.append(page)
        }
    }

    /// True if the home has applied every writer's diffs up to `version`.
    private func hasApplied(_ version: [Int], page: Int) -> Bool {
        let have = applied[page]
        return version.indices.allSatisfy { w in w == rank || version[w] <= (have?[w] ?? 0) }
    }

    private mutating func serve(_ page: Int, to peer: Int) {
        // From now on the requester holds a copy: the home's next write to
        // the page must fault, to be named in a notice. Until someone
        // fetches it, a home writes its page across intervals without
        // faults: nobody holds a copy that such a write could make stale
        // (every copy was fetched before the home's last write fault,
        // which named the page in that interval's notices).
        if pages[page].access == .readWrite { setAccess(page, .read) }
        var version = applied[page] ?? Array(repeating: 0, count: configuration.rankCount)
        version[rank] = interval
        let message = MemoryMessage.pageData(page: page, version: version, contents: [])
        record(.pageSent(page: page))
        record(.messageSent(bytes: message.encodedCount + configuration.pageSize))
        effects.append(.sendWithPage(to: peer, page: page, message))
    }

    private mutating func sendDiff(_ page: Int, interval: Int) {
        let home = pages[page].home
        diffsSent[home] += 1
        record(.diffCreated(page: page))
        record(.diffSent(page: page))
        let message = MemoryMessage.diff(page: page, interval: interval, diff: [])
        // The diff's size is known only to the engine; counted without it.
        record(.messageSent(bytes: message.encodedCount))
        effects.append(.sendDiff(to: home, page: page, message))
    }

    private mutating func send(_ message: MemoryMessage, to peer: Int) {
        precondition(peer != rank, "\(message) sent to its own rank")
        record(.messageSent(bytes: message.encodedCount))
        effects.append(.send(to: peer, message))
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

    private mutating func takeEffects() -> [MemoryEffect] {
        defer { effects = [] }
        return effects
    }

    // MARK: Payload

    /// This rank's timestamp and notices (`WriteNotices`).
    public func encodedNotices() -> [UInt8] {
        WriteNotices.encode(timestamp: timestamp, notices: notices, flag: nil)
    }

    /// The payload's timestamp and notices, or nil if it is malformed.
    public static func decodeNotices(_ bytes: [UInt8], _ configuration: CoherenceConfiguration) -> ([Int], [(Int, [Int])])? {
        WriteNotices.decode(bytes, configuration, hasFlag: false).map { ($0.timestamp, $0.notices) }
    }
}
