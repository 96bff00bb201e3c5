import Memory
import Testing

/// `HLRCProtocol` fed inputs by hand, one transition at a time. Section
/// numbers refer to Zhou, Iftode and Li, OSDI 1996.
@Suite struct HLRCProtocolTests {
    static let pageSize = 16
    static let zeros = [UInt8](repeating: 0, count: pageSize)
    static let ones = [UInt8](repeating: 1, count: pageSize)

    func core(rank: Int, of rankCount: Int, pages: Int = 4) -> HLRCProtocol {
        HLRCProtocol(configuration: CoherenceConfiguration(rank: rank, rankCount: rankCount, pageCount: pages, pageSize: Self.pageSize))
    }

    func acts(_ effects: [MemoryEffect]) -> [MemoryEffect] {
        effects.filter { if case .record = $0 { false } else { true } }
    }

    /// The payload a core attached to its completed synchronisation.
    func payload(_ effects: [MemoryEffect], _ ticket: SyncTicket) -> [UInt8]? {
        for e in effects { if case let .syncReady(t, p) = e, t == ticket { return p } }
        return nil
    }

    /// A non-home rank takes a read-only copy of a page from its home.
    func readCopy(_ c: inout HLRCProtocol, page: Int, version: [Int]) {
        _ = c.onReadFault(page: page)
        _ = c.onMessage(.pageData(page: page, version: version, contents: Self.zeros), from: c.home(ofPage: page))
    }

    /// Section 2: a home writes its own pages in place, without twin or
    /// diff, and names a written page in the release's notices. The page
    /// stays writable until someone fetches a copy; then the home's next
    /// write faults, so it is noticed.
    @Test func aHomeWritesInPlaceAndNamesThePageAtRelease() throws {
        var home = core(rank: 0, of: 2)
        #expect(home.home(ofPage: 0) == 0 && home.home(ofPage: 1) == 1)
        #expect(acts(home.onWriteFault(page: 0)) == [.setProtection(pages: 0..<1, .readWrite), .completeFaults(page: 0)])
        let release = home.onRelease(lock: 7, ticket: SyncTicket(1))
        #expect(acts(release) == [.syncReady(SyncTicket(1), payload: home.encodedNotices())])
        #expect(home.interval == 1 && home.notices == [0: [1, 0]])
        #expect(home.access(ofPage: 0) == .readWrite)
        // Nobody holds a copy: the next interval writes without faults, and
        // names nothing.
        #expect(acts(home.onRelease(lock: 7, ticket: SyncTicket(2))) == [.syncReady(SyncTicket(2), payload: home.encodedNotices())])
        #expect(home.interval == 1)
        // A copy is served after a downgrade; the next write faults and is named.
        #expect(acts(home.onMessage(.fetch(page: 0, version: [0, 0]), from: 1))
                == [.setProtection(pages: 0..<1, .read), .sendWithPage(to: 1, page: 0, .pageData(page: 0, version: [1, 0], contents: []))])
        #expect(acts(home.onWriteFault(page: 0)) == [.setProtection(pages: 0..<1, .readWrite), .completeFaults(page: 0)])
        _ = home.onRelease(lock: 7, ticket: SyncTicket(3))
        #expect(home.interval == 2 && home.notices == [0: [2, 0]])
        #expect(home.isQuiescent)
    }

    /// A non-home writer fetches the page, twins it before write access, and
    /// at release sends the diff home; the release completes only once the
    /// home acknowledged it.
    @Test func aNonHomeWriterTwinsThenFlushesItsDiffBeforeTheReleaseCompletes() throws {
        var writer = core(rank: 1, of: 2), home = core(rank: 0, of: 2)
        #expect(acts(writer.onWriteFault(page: 0)) == [.send(to: 0, .fetch(page: 0, version: [0, 0]))])
        #expect(acts(writer.onWriteFault(page: 0)).isEmpty) // a second fault waits for the fetch
        #expect(!writer.isQuiescent)
        let served = acts(home.onMessage(.fetch(page: 0, version: [0, 0]), from: 1))
        #expect(served == [.sendWithPage(to: 1, page: 0, .pageData(page: 0, version: [0, 0], contents: []))])
        #expect(acts(writer.onMessage(.pageData(page: 0, version: [0, 0], contents: Self.zeros), from: 0))
                == [.installPage(page: 0, contents: Self.zeros), .makeTwin(page: 0), .setProtection(pages: 0..<1, .readWrite), .completeFaults(page: 0)])
        let release = acts(writer.onRelease(lock: 0, ticket: SyncTicket(5)))
        #expect(release == [.setProtection(pages: 0..<1, .read), .sendDiff(to: 0, page: 0, .diff(page: 0, interval: 1, diff: []))])
        #expect(!writer.isQuiescent)
        let diff = PageDiff.encode(twin: Self.zeros, current: Self.ones)
        #expect(acts(home.onMessage(.diff(page: 0, interval: 1, diff: diff), from: 1))
                == [.applyDiff(page: 0, diff: diff), .send(to: 1, .diffAck(page: 0))])
        let ack = writer.onMessage(.diffAck(page: 0), from: 0)
        let notices = try #require(payload(ack, SyncTicket(5)))
        let decoded = try #require(HLRCProtocol.decodeNotices(notices, writer.configuration))
        #expect(decoded.0 == [0, 1] && decoded.1.count == 1 && decoded.1[0].0 == 0 && decoded.1[0].1 == [0, 1])
        #expect(writer.isQuiescent && home.isQuiescent)
        #expect(writer.statistics.total.diffsSent == 1 && home.statistics.pages[0]?.diffsApplied == 1)
        // The home now answers with the writer's interval applied.
        #expect(acts(home.onMessage(.fetch(page: 0, version: [0, 1]), from: 1))
                == [.sendWithPage(to: 1, page: 0, .pageData(page: 0, version: [0, 1], contents: []))])
    }

    /// Section 2, acquire: notices not seen before invalidate non-home
    /// copies; notices already seen, and the home's own pages, do not.
    @Test func anAcquireInvalidatesOnlyCopiesNamedByUnseenNotices() throws {
        var writer = core(rank: 0, of: 3), reader = core(rank: 2, of: 3)
        readCopy(&reader, page: 0, version: [0, 0, 0])
        readCopy(&reader, page: 1, version: [0, 0, 0])
        #expect(reader.access(ofPage: 0) == .read && reader.access(ofPage: 1) == .read)
        _ = writer.onWriteFault(page: 0) // its own page: no fetch
        let grant = try #require(payload(writer.onRelease(lock: 3, ticket: SyncTicket(1)), SyncTicket(1)))
        #expect(acts(reader.onAcquire(lock: 3, grant: grant, ticket: SyncTicket(9)))
                == [.setProtection(pages: 0..<1, .none), .syncReady(SyncTicket(9), payload: [])])
        #expect(reader.access(ofPage: 1) == .read)
        #expect(reader.timestamp == [1, 0, 0])
        // The same notices again (a lock passed around): nothing to do.
        readCopy(&reader, page: 0, version: [1, 0, 0])
        #expect(acts(reader.onAcquire(lock: 3, grant: grant, ticket: SyncTicket(10))) == [.syncReady(SyncTicket(10), payload: [])])
        #expect(reader.access(ofPage: 0) == .read)
        // A never-released lock's grant is empty.
        #expect(acts(reader.onAcquire(lock: 4, grant: [], ticket: SyncTicket(11))) == [.syncReady(SyncTicket(11), payload: [])])
    }

    /// The race of a release's diff and a later fetch at the home: a fetch
    /// that names an interval whose diff the home has not applied waits.
    @Test func aHomeHoldsAFetchUntilItHasTheDiffsItNames() {
        var home = core(rank: 0, of: 3)
        #expect(acts(home.onMessage(.fetch(page: 0, version: [0, 0, 1]), from: 1)).isEmpty)
        #expect(!home.isQuiescent)
        let diff = PageDiff.encode(twin: Self.zeros, current: Self.ones)
        #expect(acts(home.onMessage(.diff(page: 0, interval: 1, diff: diff), from: 2))
                == [.applyDiff(page: 0, diff: diff), .send(to: 2, .diffAck(page: 0)),
                    .sendWithPage(to: 1, page: 0, .pageData(page: 0, version: [0, 0, 1], contents: []))])
        #expect(home.isQuiescent)
    }

    /// A fetch sent before an acquire may be answered before the releaser's
    /// diff reached the home: the requester drops that reply and asks again.
    @Test func aReplyOlderThanTheNoticesIsDroppedAndFetchedAgain() throws {
        var writer = core(rank: 1, of: 3), reader = core(rank: 2, of: 3)
        #expect(acts(reader.onReadFault(page: 0)) == [.send(to: 0, .fetch(page: 0, version: [0, 0, 0]))])
        // Meanwhile rank 1 wrote page 0 and released; rank 2 acquires.
        _ = writer.onWriteFault(page: 0)
        _ = writer.onMessage(.pageData(page: 0, version: [0, 0, 0], contents: Self.zeros), from: 0)
        _ = writer.onRelease(lock: 0, ticket: SyncTicket(1))
        let grant = try #require(payload(writer.onMessage(.diffAck(page: 0), from: 0), SyncTicket(1)))
        #expect(acts(reader.onAcquire(lock: 0, grant: grant, ticket: SyncTicket(2))) == [.syncReady(SyncTicket(2), payload: [])])
        // The old reply comes: dropped, fetched again naming rank 1's interval.
        let effects = reader.onMessage(.pageData(page: 0, version: [0, 0, 0], contents: Self.zeros), from: 0)
        #expect(acts(effects) == [.send(to: 0, .fetch(page: 0, version: [0, 1, 0]))])
        #expect(effects.contains(.record(.staleGrantDiscarded(page: 0))))
        #expect(reader.access(ofPage: 0) == .none)
        // A reply that holds the interval is installed.
        #expect(acts(reader.onMessage(.pageData(page: 0, version: [0, 1, 0], contents: Self.ones), from: 0))
                == [.installPage(page: 0, contents: Self.ones), .setProtection(pages: 0..<1, .read), .completeFaults(page: 0)])
    }

    /// Two ranks write different words of one page in the same interval:
    /// when one learns of the other's write while its own copy is dirty, it
    /// sends its diff home before dropping the copy, so neither write is
    /// lost; its next release still names the page.
    @Test func aDirtyCopyIsFlushedHomeBeforeItIsInvalidated() throws {
        var a = core(rank: 1, of: 3), b = core(rank: 2, of: 3)
        for c in [1, 2] {
            var x = c == 1 ? a : b
            _ = x.onWriteFault(page: 0)
            _ = x.onMessage(.pageData(page: 0, version: [0, 0, 0], contents: Self.zeros), from: 0)
            if c == 1 { a = x } else { b = x }
        }
        _ = b.onRelease(lock: 0, ticket: SyncTicket(1))
        let grant = try #require(payload(b.onMessage(.diffAck(page: 0), from: 0), SyncTicket(1)))
        #expect(acts(a.onAcquire(lock: 0, grant: grant, ticket: SyncTicket(2)))
                == [.setProtection(pages: 0..<1, .none), .sendDiff(to: 0, page: 0, .diff(page: 0, interval: 1, diff: [])),
                    .syncReady(SyncTicket(2), payload: [])])
        // The release waits for that diff's acknowledgement and names page 0.
        #expect(acts(a.onRelease(lock: 0, ticket: SyncTicket(3))).isEmpty)
        #expect(a.notices[0] == [0, 1, 1])
        let done = try #require(payload(a.onMessage(.diffAck(page: 0), from: 0), SyncTicket(3)))
        #expect(HLRCProtocol.decodeNotices(done, a.configuration)?.1.first?.1 == [0, 1, 1])
        #expect(a.isQuiescent)
    }

    /// A barrier: every arrival's notices reach every rank; afterwards the
    /// notices are dropped (everyone has seen them, every home has the diffs).
    @Test func aBarrierSpreadsEveryArrivalsNoticesThenDropsThem() throws {
        var r = (0..<2).map { core(rank: $0, of: 2) }
        readCopy(&r[1], page: 0, version: [0, 0])
        _ = r[0].onWriteFault(page: 0)
        let arrivals = try (0..<2).map { i in try #require(payload(r[i].onBarrierArrive(barrier: 0, ticket: SyncTicket(1)), SyncTicket(1))) }
        #expect(acts(r[1].onBarrierDepart(barrier: 0, contributions: arrivals, ticket: SyncTicket(2)))
                == [.setProtection(pages: 0..<1, .none), .syncReady(SyncTicket(2), payload: [])])
        _ = r[0].onBarrierDepart(barrier: 0, contributions: arrivals, ticket: SyncTicket(2))
        #expect(r[0].notices.isEmpty && r[1].notices.isEmpty)
        #expect(r[1].timestamp == [1, 0])
    }

    /// A lock released before a barrier and acquired after it carries
    /// notices the barrier already spread: nothing is invalidated, and the
    /// dropped notices do not come back.
    @Test func notesFromBeforeABarrierAreNotLearnedAgain() throws {
        var r = (0..<2).map { core(rank: $0, of: 2) }
        _ = r[0].onWriteFault(page: 0)
        let grant = try #require(payload(r[0].onRelease(lock: 5, ticket: SyncTicket(1)), SyncTicket(1)))
        let arrivals = try (0..<2).map { i in try #require(payload(r[i].onBarrierArrive(barrier: 0, ticket: SyncTicket(2)), SyncTicket(2))) }
        for i in 0..<2 { _ = r[i].onBarrierDepart(barrier: 0, contributions: arrivals, ticket: SyncTicket(3)) }
        readCopy(&r[1], page: 0, version: [1, 0])
        #expect(acts(r[1].onAcquire(lock: 5, grant: grant, ticket: SyncTicket(4))) == [.syncReady(SyncTicket(4), payload: [])])
        #expect(r[1].notices.isEmpty && r[1].access(ofPage: 0) == .read)
    }

    /// A payload that does not decode cannot say what changed: every copy
    /// is dropped, which is always safe.
    @Test func aMalformedPayloadInvalidatesEveryCopy() {
        var reader = core(rank: 1, of: 2)
        readCopy(&reader, page: 0, version: [0, 0])
        readCopy(&reader, page: 2, version: [0, 0])
        _ = reader.onReadFault(page: 1) // its own page
        #expect(acts(reader.onAcquire(lock: 0, grant: [1, 2, 3], ticket: SyncTicket(1)))
                == [.setProtection(pages: 0..<1, .none), .setProtection(pages: 2..<3, .none), .syncReady(SyncTicket(1), payload: [])])
        #expect(reader.access(ofPage: 1) == .read)
    }

    /// Prefetch hints fetch the pages without a copy, once; a fault on one
    /// of them waits for its fetch, and a write fault after it twins locally.
    @Test func prefetchHintsFetchPagesWithoutACopy() {
        var r1 = core(rank: 1, of: 2)
        readCopy(&r1, page: 2, version: [0, 0])
        let effects = r1.onPrefetch(pages: 0..<4, forWriting: true)
        #expect(acts(effects) == [.send(to: 0, .fetch(page: 0, version: [0, 0]))])
        #expect(effects.contains(.record(.prefetch(page: 0))) && r1.statistics.total.prefetches == 1)
        #expect(acts(r1.onPrefetch(pages: 0..<1, forWriting: false)).isEmpty)
        #expect(acts(r1.onWriteFault(page: 0)).isEmpty)
        #expect(acts(r1.onMessage(.pageData(page: 0, version: [0, 0], contents: Self.zeros), from: 0))
                == [.installPage(page: 0, contents: Self.zeros), .makeTwin(page: 0), .setProtection(pages: 0..<1, .readWrite), .completeFaults(page: 0)])
        #expect(r1.isQuiescent)
    }

    /// Look-ahead: a read miss right after the previous page's continues a
    /// scan, so the next pages of the allocation come with it; pages this
    /// rank is the home of, holds or is fetching are skipped, and nothing
    /// past the allocation is fetched.
    @Test func aSequentialReadMissFetchesThePagesAhead() {
        var r1 = HLRCProtocol(configuration: CoherenceConfiguration(rank: 1, rankCount: 2, pageCount: 8, pageSize: Self.pageSize, lookAhead: 3))
        #expect(r1.onPlacement(pages: 0..<6, home: 0).isEmpty)
        r1.onAllocated(pages: 0..<6)
        #expect(acts(r1.onReadFault(page: 0)) == [.send(to: 0, .fetch(page: 0, version: [0, 0]))])
        let effects = r1.onReadFault(page: 1)
        #expect(acts(effects) == [.send(to: 0, .fetch(page: 1, version: [0, 0])), .send(to: 0, .fetch(page: 2, version: [0, 0])),
                                  .send(to: 0, .fetch(page: 3, version: [0, 0])), .send(to: 0, .fetch(page: 4, version: [0, 0]))])
        #expect(effects.contains(.record(.readAhead(page: 4))))
        // The scan goes on past the pages fetched ahead, up to the allocation's end.
        #expect(acts(r1.onReadFault(page: 5)) == [.send(to: 0, .fetch(page: 5, version: [0, 0]))])
        // Past the allocation, nothing is fetched ahead.
        #expect(acts(r1.onReadFault(page: 6)) == [.send(to: 0, .fetch(page: 6, version: [0, 0]))])
    }

    /// Placement gives homes; a page's home serves it.
    @Test func placementGivesPagesTheirHome() {
        var r1 = core(rank: 1, of: 2)
        #expect(r1.onPlacement(pages: 0..<4, home: 1).isEmpty)
        #expect((0..<4).allSatisfy { r1.home(ofPage: $0) == 1 })
        #expect(acts(r1.onReadFault(page: 0)) == [.setProtection(pages: 0..<1, .read), .completeFaults(page: 0)])
    }

    /// The decoder of payloads rejects what does not fit the job.
    @Test func malformedPayloadsDoNotDecode() {
        let c = core(rank: 0, of: 2)
        var good = c
        _ = good.onWriteFault(page: 2) // its own page
        _ = good.onRelease(lock: 0, ticket: SyncTicket(1))
        let bytes = good.encodedNotices()
        #expect(HLRCProtocol.decodeNotices(bytes, c.configuration) != nil)
        for n in 0..<bytes.count { #expect(HLRCProtocol.decodeNotices(Array(bytes.prefix(n)), c.configuration) == nil) }
        #expect(HLRCProtocol.decodeNotices(bytes + [0], c.configuration) == nil)
        var farPage = bytes
        farPage[16] = 9 // page 9 of 4
        #expect(HLRCProtocol.decodeNotices(farPage, c.configuration) == nil)
    }
}
