import Memory
import Testing

/// Page-state machine of `IvyCentralProtocol`, one transition at a time.
/// Rank 0 manages every page (Li & Hudak 1989, section 3.1).
@Suite struct IvyCentralProtocolTests {
    static let pageSize = 8
    static let page = [UInt8](1...8)

    func core(rank: Int, of rankCount: Int, pages: Int = 2, home: Int? = nil) -> IvyCentralProtocol {
        var core = IvyCentralProtocol(configuration: CoherenceConfiguration(rank: rank, rankCount: rankCount, pageCount: pages, pageSize: Self.pageSize))
        if let home { _ = core.onPlacement(pages: 0..<pages, home: home) }
        return core
    }

    /// The effects without the statistics.
    func acts(_ effects: [MemoryEffect]) -> [MemoryEffect] {
        effects.filter { if case .record = $0 { false } else { true } }
    }

    func messages(_ effects: [MemoryEffect]) -> Int {
        effects.filter { if case .send = $0 { true } else if case .sendWithPage = $0 { true } else { false } }.count
    }

    @Test func theManagerOwnsEveryPageAndAnOwnerWritesWithoutMessages() {
        var rank0 = core(rank: 0, of: 3), rank1 = core(rank: 1, of: 3)
        #expect(rank0.isOwner(ofPage: 0) && rank0.isOwner(ofPage: 1) && !rank1.isOwner(ofPage: 0))
        #expect(acts(rank0.onReadFault(page: 1)) == [.setProtection(pages: 1..<2, .read), .completeFaults(page: 1)])
        #expect(acts(rank0.onWriteFault(page: 1)) == [.setProtection(pages: 1..<2, .readWrite), .completeFaults(page: 1)])
        #expect(rank0.isQuiescent && rank1.isQuiescent)
    }

    /// A read miss on a page the manager owns: 2 messages, request and
    /// grant, and no confirmation (the manager's later invalidation takes
    /// the same channel as its grant).
    @Test func aReadMissOnAManagerOwnedPageIsTwoMessages() {
        var rank0 = core(rank: 0, of: 2), rank1 = core(rank: 1, of: 2)
        _ = rank0.onWriteFault(page: 0)
        let request = rank1.onReadFault(page: 0)
        #expect(acts(request) == [.send(to: 0, .request(page: 0, isWrite: false))])
        // The owner downgrades BEFORE copying.
        let grant = rank0.onMessage(.request(page: 0, isWrite: false), from: 1)
        #expect(acts(grant) == [.setProtection(pages: 0..<1, .read), .sendWithPage(to: 1, page: 0, .readGrant(page: 0, contents: []))])
        let done = rank1.onMessage(.readGrant(page: 0, contents: Self.page), from: 0)
        #expect(acts(done) == [.installPage(page: 0, contents: Self.page), .setProtection(pages: 0..<1, .read), .completeFaults(page: 0)])
        #expect(messages(request) + messages(grant) + messages(done) == 2)
        #expect(rank0.managerView(ofPage: 0).copyset == RankSet([1]))
        #expect(rank0.isQuiescent && rank1.isQuiescent)
    }

    /// A read miss on a page another rank owns goes request -> forward ->
    /// grant -> confirm, and the manager holds the page's lock until the
    /// confirmation: a write behind it waits.
    @Test func aReadMissOnARemoteOwnerIsConfirmedAndHoldsTheLock() {
        var rank0 = core(rank: 0, of: 3, home: 2), rank1 = core(rank: 1, of: 3, home: 2), rank2 = core(rank: 2, of: 3, home: 2)
        #expect(acts(rank1.onReadFault(page: 0)) == [.send(to: 0, .request(page: 0, isWrite: false))])
        #expect(acts(rank0.onMessage(.request(page: 0, isWrite: false), from: 1)) == [.send(to: 2, .forward(page: 0, requester: 1, isWrite: false))])
        #expect(acts(rank2.onMessage(.forward(page: 0, requester: 1, isWrite: false), from: 0)) == [
            .sendWithPage(to: 1, page: 0, .readGrant(page: 0, contents: [])),
        ])
        #expect(rank0.queueDepth(ofPage: 0) == 0 && !rank0.isQuiescent)
        #expect(acts(rank1.onMessage(.readGrant(page: 0, contents: Self.page), from: 2)) == [
            .installPage(page: 0, contents: Self.page), .setProtection(pages: 0..<1, .read),
            .completeFaults(page: 0), .send(to: 0, .confirm(page: 0)),
        ])
        #expect(acts(rank0.onMessage(.confirm(page: 0), from: 1)).isEmpty)
        #expect(rank0.managerView(ofPage: 0).owner == 2 && rank0.managerView(ofPage: 0).copyset == RankSet([1]))
        #expect(rank0.isQuiescent && rank1.isQuiescent && rank2.isQuiescent)
    }

    /// The race `sc` must detect (a writer's invalidation overtaking the
    /// read grant it cancels) cannot arise: a write that reaches the
    /// manager while a read's grant is still on its way from the owner
    /// waits for the read's confirmation before anything is invalidated.
    @Test func noInvalidationCanOvertakeTheReadGrantItCancels() {
        var rank0 = core(rank: 0, of: 4, home: 2)
        #expect(acts(rank0.onMessage(.request(page: 0, isWrite: false), from: 1)) == [.send(to: 2, .forward(page: 0, requester: 1, isWrite: false))])
        // Rank 3's write arrives before rank 1 has its copy: it waits, and
        // rank 1 is not in the copy set yet.
        #expect(acts(rank0.onMessage(.request(page: 0, isWrite: true), from: 3)).isEmpty)
        #expect(rank0.queueDepth(ofPage: 0) == 1 && rank0.managerView(ofPage: 0).copyset.isEmpty)
        // Rank 1's confirmation proves the grant arrived; only now is its copy invalidated.
        #expect(acts(rank0.onMessage(.confirm(page: 0), from: 1)) == [.send(to: 1, .invalidate(page: 0))])
        // The page moves once the copy is gone.
        #expect(acts(rank0.onMessage(.invalidateAck(page: 0), from: 1)) == [.send(to: 2, .forward(page: 0, requester: 3, isWrite: true))])
        #expect(acts(rank0.onMessage(.confirm(page: 0), from: 3)).isEmpty)
        #expect(rank0.managerView(ofPage: 0) == (3, RankSet()))
        #expect(rank0.isQuiescent)
    }

    /// A write invalidates every copy through the manager, which waits for
    /// every acknowledgement before the page moves; a requester that holds
    /// a copy keeps it.
    @Test func aWriteInvalidatesEveryCopyThroughTheManager() {
        var rank0 = core(rank: 0, of: 4)
        _ = rank0.onWriteFault(page: 0)
        for reader in 1...3 { _ = rank0.onMessage(.request(page: 0, isWrite: false), from: reader) }
        #expect(rank0.managerView(ofPage: 0).copyset == RankSet([1, 2, 3]))
        let invalidations = rank0.onMessage(.request(page: 0, isWrite: true), from: 3)
        #expect(acts(invalidations) == [.send(to: 1, .invalidate(page: 0)), .send(to: 2, .invalidate(page: 0))])
        #expect(rank0.statistics.total.invalidationsSent == 2)
        #expect(acts(rank0.onMessage(.invalidateAck(page: 0), from: 2)).isEmpty)
        // The manager owns the page and sends it itself: no confirmation needed.
        #expect(acts(rank0.onMessage(.invalidateAck(page: 0), from: 1)) == [
            .setProtection(pages: 0..<1, .none),
            .sendWithPage(to: 3, page: 0, .writeGrant(page: 0, copyset: RankSet(), contents: [])),
        ])
        #expect(rank0.managerView(ofPage: 0) == (3, RankSet()) && !rank0.isOwner(ofPage: 0) && rank0.isQuiescent)

        // A copy holder drops its copy before it acknowledges.
        var rank1 = core(rank: 1, of: 4)
        _ = rank1.onReadFault(page: 0)
        _ = rank1.onMessage(.readGrant(page: 0, contents: Self.page), from: 0)
        #expect(acts(rank1.onMessage(.invalidate(page: 0), from: 0)) == [.setProtection(pages: 0..<1, .none), .send(to: 0, .invalidateAck(page: 0))])
        #expect(rank1.access(ofPage: 0) == .none && rank1.isQuiescent)
    }

    /// An owner whose page others read asks the manager to write: the
    /// manager invalidates the readers and answers with a grant without
    /// contents (the owner's copy is current), which needs no confirmation.
    @Test func anOwnerWithReadersUpgradesThroughTheManager() {
        var rank0 = core(rank: 0, of: 3, home: 1), rank1 = core(rank: 1, of: 3, home: 1)
        _ = rank1.onWriteFault(page: 0)
        _ = rank0.onMessage(.request(page: 0, isWrite: false), from: 2)
        #expect(acts(rank1.onMessage(.forward(page: 0, requester: 2, isWrite: false), from: 0)) == [
            .setProtection(pages: 0..<1, .read), .sendWithPage(to: 2, page: 0, .readGrant(page: 0, contents: [])),
        ])
        _ = rank0.onMessage(.confirm(page: 0), from: 2)
        #expect(acts(rank1.onWriteFault(page: 0)) == [.send(to: 0, .request(page: 0, isWrite: true))])
        #expect(acts(rank0.onMessage(.request(page: 0, isWrite: true), from: 1)) == [.send(to: 2, .invalidate(page: 0))])
        #expect(acts(rank0.onMessage(.invalidateAck(page: 0), from: 2)) == [
            .send(to: 1, .writeGrant(page: 0, copyset: RankSet(), contents: nil)),
        ])
        #expect(acts(rank1.onMessage(.writeGrant(page: 0, copyset: RankSet(), contents: nil), from: 0)) == [
            .setProtection(pages: 0..<1, .readWrite), .completeFaults(page: 0),
        ])
        #expect(rank0.isQuiescent && rank1.isQuiescent)
    }

    /// The manager's own faults go through its manager role without the network.
    @Test func theManagerAsksItselfWithoutMessages() {
        var rank0 = core(rank: 0, of: 2, home: 1)
        // Rank 1 owns the page: rank 0's read is forwarded to it.
        #expect(acts(rank0.onReadFault(page: 0)) == [.send(to: 1, .forward(page: 0, requester: 0, isWrite: false))])
        // Its grant comes from another owner, so rank 0 confirms, to itself.
        #expect(acts(rank0.onMessage(.readGrant(page: 0, contents: Self.page), from: 1)) == [
            .installPage(page: 0, contents: Self.page), .setProtection(pages: 0..<1, .read), .completeFaults(page: 0),
        ])
        #expect(rank0.managerView(ofPage: 0).copyset == RankSet([0]) && rank0.isQuiescent)
        // Its write keeps its copy (the page it gets is the same) and takes the page from rank 1.
        #expect(acts(rank0.onWriteFault(page: 0)) == [.send(to: 1, .forward(page: 0, requester: 0, isWrite: true))])
        #expect(rank0.statistics.messagesSent == 2)
    }

    /// Faults on a page with a request in flight wait for it; a repeated
    /// fault on a page already held completes at once.
    @Test func faultsBehindARequestWait() {
        var rank1 = core(rank: 1, of: 2)
        #expect(acts(rank1.onReadFault(page: 0)) == [.send(to: 0, .request(page: 0, isWrite: false))])
        #expect(acts(rank1.onReadFault(page: 0)).isEmpty)
        #expect(acts(rank1.onWriteFault(page: 0)).isEmpty)
        _ = rank1.onMessage(.readGrant(page: 0, contents: Self.page), from: 0)
        #expect(acts(rank1.onReadFault(page: 0)) == [.completeFaults(page: 0)])
        // The woken writer faults again and asks for write access.
        #expect(acts(rank1.onWriteFault(page: 0)) == [.send(to: 0, .request(page: 0, isWrite: true))])
    }

    @Test func registeredAsASequentialProtocol() throws {
        let entry = try #require(ProtocolRegistry.protocols.first { $0.name == "ivy-central" })
        #expect(entry.model == .sequential)
        let core = try ProtocolRegistry.make("ivy-central", configuration: CoherenceConfiguration(rank: 1, rankCount: 2, pageCount: 1, pageSize: 8))
        #expect(core is IvyCentralProtocol)
    }
}
