/// `lrc`: lazy release consistency with multiple writers, homeless, after
/// TreadMarks (P. Keleher, A. L. Cox, S. Dwarkadas and W. Zwaenepoel,
/// "TreadMarks: Distributed Shared Memory on Standard Workstations and
/// Operating Systems", USENIX Winter 1994, sections 3 and 4).
///
/// A rank's execution is cut into intervals at its releases (lock
/// releases, barrier arrivals). The first write to a page in an interval
/// keeps a twin (the page before the write) and takes write access; when
/// the interval ends, the pages it wrote become write notices and lose
/// write access, so that the next interval's first write faults again. The
/// diff of an interval's writes (`PageDiff`: word-granular runs of changed
/// bytes against the twin) is made lazily: only when someone asks for it,
/// when the writer writes the page again in a later interval, or when the
/// page is invalidated. Nobody holds a master copy: a page's contents are
/// the zero page plus every writer's diffs.
///
/// Write notices travel with synchronisation: a lock grant carries the
/// releaser's notices, a barrier departure every participant's. An
/// acquirer invalidates each page named by a notice of an interval it had
/// not seen. On its next access it asks every rank with notices it has not
/// applied for its diffs of the page (`.diffRequest` for a range of that
/// writer's intervals), and applies all replies in an order consistent with
/// happened-before: each diff carries its interval's vector timestamp's
/// sum, which grows along happened-before, and diffs are applied by it.
///
/// Terminology (paper -> here):
/// - interval, vector timestamp -> `interval`, `timestamp`
/// - write notices -> `pending[page][writer]` (the last interval of each
///   writer known to have written the page, the ones to fetch), and
///   `recent` (those learned since the last barrier, the payload)
/// - diff request / diff reply -> `.diffRequest` / `.diffReply`
/// - garbage collection at barriers -> `startCollection`, `.collected`
///
/// Choices and deviations:
/// - Notices are kept per page (the last interval of each writer), not per
///   interval: a request names a range of the writer's intervals, and the
///   writer answers with its stored diffs of the page in that range. What
///   notices occupy is bounded by pages × ranks; a payload carries those
///   learned since the last barrier (every rank has the older ones).
/// - Diffs stay with their writer and are kept by the engine
///   (`.storeDiff`); the core keeps only their keys. A diff is applied
///   where it is fetched, never forwarded, so a page with writers in many
///   intervals costs one request per writer, not one per interval.
/// - Garbage collection (TreadMarks collects when memory runs low): at a
///   barrier where some rank's twins and stored diffs exceed
///   `CoherenceConfiguration.collectionBound` (the flag travels in the
///   arrival payloads, so every rank decides alike), every rank brings every
///   page it has unapplied notices for up to date, tells every other rank
///   (`.collected`), and once it has heard from all of them drops its stored
///   diffs and their notices; the barrier completes after that. A
///   collection needs every rank at the barrier; a barrier that some rank
///   has left (finalised) does not collect.
/// - An acquire does not start an interval: a write before the acquire and
///   one after it share an interval whose timestamp is taken at its end.
///   The earlier write is then ordered after the releaser's interval
///   although it was concurrent with it; that only matters for a racy
///   program, which may see either order.
/// - A page invalidated in the middle of an interval in which this rank
///   wrote it has its diff so far stored first (part 0), and a later write
///   in the same interval makes part 1; parts are applied in order.
/// - One process alone (`rankCount == 1`) needs no twins or notices: its
///   writes are never asked for.
/// - A prefetch hint fetches the diffs of the hinted pages ahead of their
///   faults; look-ahead is ignored (a miss fetches diffs, not pages, and
///   the pages after it have other writers).
public struct LRCProtocol: CoherenceProtocol {
    public static let name = "lrc"
    public static let model = MemoryModel.release

    public let configuration: CoherenceConfiguration
    public private(set) var statistics = MemoryStatistics()

    struct Page {
        /// Mirrors the application view.
        var access: PageAccess = .none
        /// The interval whose writes the twin holds: a closed interval whose
        /// diff is not made yet, or `interval + 1` (the open one); nil: no twin.
        var twin: Int?
        /// Written in the open interval (named in the next notices).
        var written = false
        /// Diff requests are in flight; `replies` counts those not answered.
        var fetching = false
        var fetchForWrite = false
        var replies = 0
        /// This round's targets: per writer, the interval asked up to.
        var asked: [(writer: Int, upTo: Int)] = []
        var received: [(writer: Int, diff: IntervalDiff)] = []
        /// This rank's stored diffs of the page: interval and number of parts.
        var stored: [(interval: Int, parts: Int)] = []
    }

    private var pages: [Page]
    private var rank: Int { configuration.rank }
    private var rankCount: Int { configuration.rankCount }
    /// This rank's closed intervals with writes so far.
    public private(set) var interval = 0
    /// The last interval of each rank whose notices this rank has seen.
    public private(set) var timestamp: [Int]
    /// Per own closed interval, the sum of its vector timestamp.
    private var order: [Int: UInt64] = [:]
    /// Per page: the last interval of each writer known to have written it.
    private var pending: [Int: [Int]] = [:]
    /// Per page: the last interval of each writer whose diffs are applied here.
    private var applied: [Int: [Int]] = [:]
    /// Notices learned since the last barrier (the payload of a release).
    private var recent: [Int: [Int]] = [:]
    /// Pages with `written` set, in the order of their first write.
    private var writtenPages: [Int] = []
    /// Bytes the engine keeps for this core (`observeRetainedMemory`).
    private var retained = 0

    /// A collection in progress: the barrier departure it holds back, the
    /// pages still being brought up to date, and whether `.collected` went out.
    private var collection: (ticket: SyncTicket, epoch: Int, validating: Set<Int>, announced: Bool)?
    private var epoch = 0
    /// `.collected` messages per epoch (a peer may finish before this rank starts).
    private var collectedFrom: [Int: Int] = [:]

    private var effects: [MemoryEffect] = []

    public init(configuration: CoherenceConfiguration) {
        self.configuration = configuration
        pages = Array(repeating: Page(), count: configuration.pageCount)
        timestamp = Array(repeating: 0, count: configuration.rankCount)
    }

    public func access(ofPage page: Int) -> PageAccess { pages[page].access }

    public var isQuiescent: Bool {
        collection == nil && pages.allSatisfy { !$0.fetching }
    }

    public mutating func observeRetainedMemory(bytes: Int) {
        retained = bytes
        statistics.retainedBytesPeak = max(statistics.retainedBytesPeak, bytes)
    }

    // MARK: Faults

    public mutating func onReadFault(page: Int) -> [MemoryEffect] {
        checkPage(page)
        if pages[page].access >= .read { return [.completeFaults(page: page)] }
        if pages[page].fetching { return [] }
        record(.readFault(page: page))
        if needsDiffs(page) {
            fetch(page, forWrite: false)
        } else {
            setAccess(page, .read)
            effects.append(.completeFaults(page: page))
        }
        return takeEffects()
    }

    public mutating func onWriteFault(page: Int) -> [MemoryEffect] {
        checkPage(page)
        if pages[page].access == .readWrite { return [.completeFaults(page: page)] }
        if pages[page].fetching {
            pages[page].fetchForWrite = true
            return []
        }
        record(.writeFault(page: page))
        if needsDiffs(page) {
            fetch(page, forWrite: true)
        } else {
            startWriting(page)
            effects.append(.completeFaults(page: page))
        }
        return takeEffects()
    }

    /// Fetches the diffs of hinted pages that have notices not applied
    /// here, with no thread waiting (a later fault waits for the fetch like
    /// any fault). Pages with nothing to apply need no messages: their
    /// first access is granted locally. At most one fetch per page is in
    /// flight, so hints need no bound of their own.
    public mutating func onPrefetch(pages range: Range<Int>, forWriting: Bool) -> [MemoryEffect] {
        for p in range {
            checkPage(p)
            guard !pages[p].fetching, needsDiffs(p) else { continue }
            record(.prefetch(page: p))
            fetch(p, forWrite: false)
        }
        return takeEffects()
    }

    // MARK: Messages

    public mutating func onMessage(_ message: MemoryMessage, from peer: Int) -> [MemoryEffect] {
        precondition((0..<rankCount).contains(peer) && peer != rank, "message from invalid peer \(peer)")
        checkPage(message.page)
        record(.messageReceived(bytes: message.encodedCount))
        switch message {
        case let .diffRequest(page, after, upTo):
            serveDiffs(page, after: after, upTo: upTo, to: peer)
        case let .diffReply(page, diffs):
            guard let i = pages[page].asked.firstIndex(where: { $0.writer == peer }), pages[page].fetching else {
                preconditionFailure("rank \(peer) sent diffs of page \(page) that rank \(rank) did not ask it for")
            }
            precondition(pages[page].replies > 0, "rank \(peer) answered twice for page \(page)")
            let upTo = pages[page].asked[i].upTo
            for d in diffs {
                precondition(d.interval <= upTo, "rank \(peer) sent its interval \(d.interval) of page \(page), asked up to \(upTo)")
                pages[page].received.append((peer, d))
            }
            pages[page].replies -= 1
            if pages[page].replies == 0 { finishFetch(page) }
        case let .collected(_, e):
            precondition(e > epoch || (e == epoch && collection != nil), "rank \(peer) finished collection \(e), not in progress here (epoch \(epoch))")
            collectedFrom[e, default: 0] += 1
            precondition(collectedFrom.count <= 2, "collections \(collectedFrom.keys.sorted()) overlap")
            finishCollection()
        case .request, .forward, .readGrant, .writeGrant, .invalidate, .invalidateAck, .confirm,
             .diff, .diffAck, .fetch, .pageData:
            preconditionFailure("lrc received another protocol's message \(message) from rank \(peer): every rank must run the same protocol")
        }
        return takeEffects()
    }

    /// Answers with this rank's diffs of `page` from its intervals
    /// `after + 1 ... upTo`, making the one its twin holds if it is among them.
    private mutating func serveDiffs(_ page: Int, after: Int, upTo: Int, to peer: Int) {
        precondition(upTo <= interval, "rank \(peer) asked for interval \(upTo) of page \(page); rank \(rank) has closed \(interval)")
        if let t = pages[page].twin, t <= interval, t > after, t <= upTo { storeDiff(page, interval: t) }
        var diffs: [IntervalDiff] = []
        for s in pages[page].stored where s.interval > after && s.interval <= upTo {
            guard let o = order[s.interval] else {
                preconditionFailure("page \(page): interval \(s.interval) of rank \(rank) has diffs but no timestamp")
            }
            for part in 0..<s.parts {
                diffs.append(IntervalDiff(interval: s.interval, part: part, order: o))
                record(.diffSent(page: page))
            }
        }
        let message = MemoryMessage.diffReply(page: page, diffs: diffs)
        // The diffs' sizes are known only to the engine; counted without them.
        record(.messageSent(bytes: message.encodedCount))
        effects.append(.sendStoredDiffs(to: peer, message))
    }

    // MARK: Synchronisation

    public mutating func onRelease(lock: Int, ticket: SyncTicket) -> [MemoryEffect] {
        endInterval()
        effects.append(.syncReady(ticket, payload: encodedNotices(wantsCollection: false)))
        return takeEffects()
    }

    public mutating func onBarrierArrive(barrier: Int, ticket: SyncTicket) -> [MemoryEffect] {
        endInterval()
        let wants = rankCount > 1 && retained > configuration.collectionBound
        effects.append(.syncReady(ticket, payload: encodedNotices(wantsCollection: wants)))
        return takeEffects()
    }

    public mutating func onAcquire(lock: Int, grant: [UInt8], ticket: SyncTicket) -> [MemoryEffect] {
        _ = learn(grant)
        effects.append(.syncReady(ticket, payload: []))
        return takeEffects()
    }

    public mutating func onBarrierDepart(barrier: Int, contributions: [[UInt8]], ticket: SyncTicket) -> [MemoryEffect] {
        var arrived = Array(repeating: 0, count: rankCount)
        var collect = false
        for c in contributions {
            guard let (t, wants) = learn(c) else { continue }
            for w in t.indices { arrived[w] = max(arrived[w], t[w]) }
            collect = collect || wants
        }
        // Every rank has now seen every notice up to the arrivals.
        recent = recent.compactMapValues { v in
            let newer = v.indices.map { w in v[w] > arrived[w] ? v[w] : 0 }
            return newer.allSatisfy { $0 == 0 } ? nil : newer
        }
        if collect && contributions.count == rankCount {
            startCollection(ticket)
        } else {
            effects.append(.syncReady(ticket, payload: []))
        }
        return takeEffects()
    }

    // MARK: Intervals and notices

    /// Ends the interval if anything was written in it: its timestamp's
    /// sum is kept for its diffs, its pages become notices and lose write
    /// access (their twins now hold a closed interval).
    private mutating func endInterval() {
        guard !writtenPages.isEmpty else { return }
        interval += 1
        timestamp[rank] = interval
        order[interval] = timestamp.reduce(0) { $0 + UInt64($1) }
        for p in writtenPages {
            pages[p].written = false
            var v = recent[p] ?? zeros
            v[rank] = interval
            recent[p] = v
            if pages[p].access == .readWrite { setAccess(p, .read) }
        }
        writtenPages = []
    }

    /// Acts on a payload: records its notices of intervals this rank had
    /// not seen and invalidates their pages. Returns the payload's timestamp
    /// and collection flag, or nil for an empty payload. A payload that does
    /// not decode (it never should) stops the process: without its notices
    /// this rank could read stale data unnoticed.
    private mutating func learn(_ payload: [UInt8]) -> ([Int], Bool)? {
        guard !payload.isEmpty else { return nil }
        guard let (theirTimestamp, theirNotices, wants) = Self.decodeNotices(payload, configuration) else {
            preconditionFailure("rank \(rank) received write notices that do not decode (\(payload.count) bytes)")
        }
        for (p, v) in theirNotices {
            var isNew = false
            var have = pending[p] ?? zeros
            var fresh = recent[p] ?? zeros
            for w in v.indices where w != rank && v[w] > timestamp[w] {
                isNew = true
                have[w] = max(have[w], v[w])
                fresh[w] = max(fresh[w], v[w])
            }
            guard isNew else { continue }
            pending[p] = have
            recent[p] = fresh
            invalidate(p)
        }
        for w in timestamp.indices where w != rank { timestamp[w] = max(timestamp[w], theirTimestamp[w]) }
        return (theirTimestamp, wants)
    }

    /// Drops this rank's copy of `page` until its new diffs are applied;
    /// its own writes stay in the page, their diff made first so that the
    /// diffs applied next are not taken for this rank's writes.
    private mutating func invalidate(_ page: Int) {
        guard !pages[page].fetching else { return } // `finishFetch` sees the new notice
        if let t = pages[page].twin { storeDiff(page, interval: t) }
        if pages[page].access != .none { setAccess(page, .none) }
    }

    // MARK: Diffs

    private func needsDiffs(_ page: Int) -> Bool {
        guard let want = pending[page] else { return false }
        let have = applied[page]
        return want.indices.contains { w in w != rank && want[w] > (have?[w] ?? 0) }
    }

    /// Asks every writer with notices not applied here for its diffs.
    private mutating func fetch(_ page: Int, forWrite: Bool) {
        invalidate(page)
        let want = pending[page] ?? zeros
        let have = applied[page] ?? zeros
        pages[page].fetching = true
        pages[page].fetchForWrite = forWrite
        pages[page].asked = []
        pages[page].received = []
        for w in want.indices where w != rank && want[w] > have[w] {
            pages[page].asked.append((w, want[w]))
            send(.diffRequest(page: page, after: have[w], upTo: want[w]), to: w)
        }
        pages[page].replies = pages[page].asked.count
        precondition(pages[page].replies > 0, "fetch of page \(page) with nothing to fetch")
    }

    /// Every reply is in: applies the diffs in happened-before order, then
    /// asks again if notices arrived meanwhile, else grants the access.
    private mutating func finishFetch(_ page: Int) {
        let ordered = pages[page].received.sorted { a, b in
            (a.diff.order, a.writer, a.diff.interval, a.diff.part) < (b.diff.order, b.writer, b.diff.interval, b.diff.part)
        }
        for (_, d) in ordered {
            record(.diffApplied(page: page))
            effects.append(.applyDiff(page: page, diff: d.diff))
        }
        var have = applied[page] ?? zeros
        for a in pages[page].asked { have[a.writer] = max(have[a.writer], a.upTo) }
        applied[page] = have
        pages[page].received = []
        pages[page].asked = []
        pages[page].fetching = false
        let forWrite = pages[page].fetchForWrite
        pages[page].fetchForWrite = false
        if needsDiffs(page) {
            fetch(page, forWrite: forWrite)
            return
        }
        if forWrite { startWriting(page) } else { setAccess(page, .read) }
        effects.append(.completeFaults(page: page))
        if collection != nil {
            collection!.validating.remove(page)
            announceIfValidated()
        }
    }

    /// A valid copy becomes writable; with other ranks to tell, it keeps a
    /// twin, after storing the diff of an earlier interval's twin.
    private mutating func startWriting(_ page: Int) {
        if rankCount > 1 {
            if let t = pages[page].twin, t != interval + 1 { storeDiff(page, interval: t) }
            if pages[page].twin == nil {
                effects.append(.makeTwin(page: page))
                pages[page].twin = interval + 1
            }
            if !pages[page].written {
                pages[page].written = true
                writtenPages.append(page)
            }
        }
        setAccess(page, .readWrite)
    }

    private mutating func storeDiff(_ page: Int, interval t: Int) {
        var part = 0
        if let last = pages[page].stored.last, last.interval == t {
            part = last.parts
            pages[page].stored[pages[page].stored.count - 1].parts += 1
        } else {
            precondition(pages[page].stored.last.map { $0.interval < t } ?? true, "page \(page): diff of interval \(t) stored out of order")
            pages[page].stored.append((t, 1))
        }
        pages[page].twin = nil
        record(.diffCreated(page: page))
        effects.append(.storeDiff(page: page, key: DiffKey(page: page, interval: t, part: part)))
    }

    // MARK: Garbage collection

    private mutating func startCollection(_ ticket: SyncTicket) {
        precondition(collection == nil, "a collection started while one is in progress")
        epoch += 1
        collection = (ticket, epoch, [], false)
        // Bring every page with unapplied notices up to date. Pages already
        // being fetched (a fault of another thread) count once they finish.
        for p in pending.keys.sorted() where needsDiffs(p) || pages[p].fetching {
            collection!.validating.insert(p)
            if !pages[p].fetching { fetch(p, forWrite: false) }
        }
        announceIfValidated()
    }

    private mutating func announceIfValidated() {
        guard let c = collection, !c.announced, c.validating.isEmpty else { return }
        collection!.announced = true
        for peer in 0..<rankCount where peer != rank { send(.collected(page: 0, epoch: c.epoch), to: peer) }
        finishCollection()
    }

    /// Once every rank has applied every diff it had notices for, nobody
    /// will ask for a diff of an interval closed before the barrier: they
    /// and the notices naming them go.
    private mutating func finishCollection() {
        guard let c = collection, c.announced, collectedFrom[c.epoch, default: 0] == rankCount - 1 else { return }
        collectedFrom[c.epoch] = nil
        for p in pages.indices {
            if let t = pages[p].twin, t <= interval { storeDiff(p, interval: t) }
            pages[p].stored.removeAll { $0.interval <= interval }
        }
        effects.append(.dropStoredDiffs(throughInterval: interval))
        order = order.filter { $0.key > interval }
        // Every copy here now holds every interval any notice named: a later
        // request's range may start at 0, since the dropped diffs are in it.
        pending = [:]
        applied = [:]
        collection = nil
        record(.garbageCollected)
        effects.append(.syncReady(c.ticket, payload: []))
    }

    // MARK: Helpers

    private var zeros: [Int] { Array(repeating: 0, count: rankCount) }

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

    /// This rank's timestamp and the notices learned since the last barrier
    /// (`WriteNotices`), and whether it wants a collection.
    public func encodedNotices(wantsCollection: Bool) -> [UInt8] {
        WriteNotices.encode(timestamp: timestamp, notices: recent, flag: wantsCollection)
    }

    /// The payload's timestamp, notices and collection flag, or nil if it is malformed.
    public static func decodeNotices(_ bytes: [UInt8], _ configuration: CoherenceConfiguration) -> ([Int], [(Int, [Int])], Bool)? {
        WriteNotices.decode(bytes, configuration, hasFlag: true).map { ($0.timestamp, $0.notices, $0.flag) }
    }
}
