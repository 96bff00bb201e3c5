import Memory
import Testing

/// Page-state machine of `SCProtocol`, one transition at a time. Section
/// numbers refer to Li & Hudak 1989.
@Suite struct SCProtocolTests {
    static let pageSize = 8
    static let zeros = [UInt8](repeating: 0, count: pageSize)

    func core(rank: Int, of rankCount: Int, pages: Int = 4) -> SCProtocol {
        SCProtocol(configuration: CoherenceConfiguration(rank: rank, rankCount: rankCount, pageCount: pages, pageSize: Self.pageSize))
    }

    /// The effects without the statistics, which have their own test.
    func acts(_ effects: [MemoryEffect]) -> [MemoryEffect] {
        effects.filter { if case .record = $0 { false } else { true } }
    }

    @Test func initialOwnerIsTheManagerAndServesItsFirstTouchLocally() {
        var rank1 = core(rank: 1, of: 2)
        #expect(rank1.isOwner(ofPage: 1) && !rank1.isOwner(ofPage: 0))
        #expect(rank1.access(ofPage: 1) == .none)
        #expect(acts(rank1.onReadFault(page: 1)) == [.setProtection(pages: 1..<2, .read), .completeFaults(page: 1)])
        // Sole holder: the upgrade needs no messages either (section 3.1, owner write).
        #expect(acts(rank1.onWriteFault(page: 1)) == [.setProtection(pages: 1..<2, .readWrite), .completeFaults(page: 1)])
        #expect(acts(rank1.onWriteFault(page: 1)) == [.completeFaults(page: 1)])
        #expect(rank1.isQuiescent)
    }

    /// Placement moves the initial owner of pristine pages: the home writes
    /// without a message, and others' requests go through the manager to it.
    @Test func placementMakesTheHomeTheInitialOwner() {
        var rank0 = core(rank: 0, of: 2), rank1 = core(rank: 1, of: 2)
        #expect(rank0.onPlacement(pages: 0..<4, home: 1).isEmpty)
        #expect(rank1.onPlacement(pages: 0..<4, home: 1).isEmpty)
        #expect(rank1.isOwner(ofPage: 0) && !rank0.isOwner(ofPage: 1))
        #expect(acts(rank1.onWriteFault(page: 0)) == [.setProtection(pages: 0..<1, .readWrite), .completeFaults(page: 0)])
        // Rank 0 manages page 0 and asks itself; its manager role forwards to the home.
        #expect(acts(rank0.onReadFault(page: 0)) == [.send(to: 1, .forward(page: 0, requester: 0, isWrite: false))])
    }

    @Test func readFaultOnANonOwnedPageAsksTheManager() {
        var rank1 = core(rank: 1, of: 3)
        // Page 2 is managed (and initially owned) by rank 2.
        #expect(acts(rank1.onReadFault(page: 2)) == [.send(to: 2, .request(page: 2, isWrite: false))])
        #expect(!rank1.isQuiescent)
        // A second fault on the page, read or write, waits for that request.
        #expect(acts(rank1.onReadFault(page: 2)).isEmpty)
        #expect(acts(rank1.onWriteFault(page: 2)).isEmpty)
    }

    @Test func readGrantInstallsBeforeUnprotectingAndNeedsNoConfirmation() {
        var rank1 = core(rank: 1, of: 3)
        _ = rank1.onReadFault(page: 2)
        let contents = [UInt8](1...8)
        #expect(acts(rank1.onMessage(.readGrant(page: 2, contents: contents), from: 2)) == [
            .installPage(page: 2, contents: contents),
            .setProtection(pages: 2..<3, .read),
            .completeFaults(page: 2),
        ])
        #expect(rank1.access(ofPage: 2) == .read && rank1.isQuiescent)
    }

    @Test func managerForwardsReadsAtOnceAndQueuesBehindAWriteInFlight() {
        // Rank 0 manages and owns page 0 (section 3.2: fixed distributed manager).
        var rank0 = core(rank: 0, of: 3)
        _ = rank0.onWriteFault(page: 0) // owner writes first, so the read must downgrade it
        // The forward to itself runs at once; as owner it downgrades BEFORE copying.
        #expect(acts(rank0.onMessage(.request(page: 0, isWrite: false), from: 1)) == [
            .setProtection(pages: 0..<1, .read),
            .sendWithPage(to: 1, page: 0, .readGrant(page: 0, contents: [])),
        ])
        // A read is done once forwarded: rank 2's write goes to the owner at
        // once, and ownership moves with the copyset {1} to invalidate.
        #expect(acts(rank0.onMessage(.request(page: 0, isWrite: true), from: 2)) == [
            .setProtection(pages: 0..<1, .none),
            .sendWithPage(to: 2, page: 0, .writeGrant(page: 0, copyset: RankSet([1]), contents: [])),
        ])
        #expect(!rank0.isOwner(ofPage: 0) && rank0.queueDepth(ofPage: 0) == 0)
        // Until rank 2 confirms, the manager cannot know where the page is: requests wait.
        #expect(acts(rank0.onMessage(.request(page: 0, isWrite: false), from: 1)).isEmpty)
        #expect(acts(rank0.onReadFault(page: 0)).isEmpty)
        #expect(rank0.queueDepth(ofPage: 0) == 2)
        // The write confirmation records the new owner and releases both reads together.
        #expect(acts(rank0.onMessage(.confirm(page: 0), from: 2)) == [
            .send(to: 2, .forward(page: 0, requester: 1, isWrite: false)),
            .send(to: 2, .forward(page: 0, requester: 0, isWrite: false)),
        ])
        #expect(rank0.queueDepth(ofPage: 0) == 0)
    }

    @Test func writesBehindAWriteWaitForEachConfirmation() {
        var rank0 = core(rank: 0, of: 4)
        _ = rank0.onMessage(.request(page: 0, isWrite: true), from: 1)
        _ = rank0.onMessage(.request(page: 0, isWrite: true), from: 2)
        _ = rank0.onMessage(.request(page: 0, isWrite: false), from: 3)
        #expect(rank0.queueDepth(ofPage: 0) == 2)
        // Rank 1's confirmation releases rank 2's write only; rank 3's read waits behind it.
        #expect(acts(rank0.onMessage(.confirm(page: 0), from: 1)) == [
            .send(to: 1, .forward(page: 0, requester: 2, isWrite: true)),
        ])
        #expect(rank0.queueDepth(ofPage: 0) == 1)
        #expect(acts(rank0.onMessage(.confirm(page: 0), from: 2)) == [
            .send(to: 2, .forward(page: 0, requester: 3, isWrite: false)),
        ])
    }

    /// The one race a read leaves open: the new writer's invalidation
    /// overtakes the old owner's grant. The reader acknowledges at once,
    /// throws the stale grant away and asks again.
    @Test func anInvalidationThatOvertakesItsReadGrantDiscardsTheGrant() {
        var rank1 = core(rank: 1, of: 3)
        #expect(acts(rank1.onReadFault(page: 0)) == [.send(to: 0, .request(page: 0, isWrite: false))])
        #expect(acts(rank1.onMessage(.invalidate(page: 0), from: 2)) == [.send(to: 2, .invalidateAck(page: 0))])
        #expect(!rank1.isQuiescent)
        let stale = [UInt8](repeating: 9, count: Self.pageSize)
        let effects = rank1.onMessage(.readGrant(page: 0, contents: stale), from: 0)
        #expect(acts(effects) == [.send(to: 0, .request(page: 0, isWrite: false))])
        #expect(effects.contains(.record(.staleGrantDiscarded(page: 0))))
        #expect(rank1.access(ofPage: 0) == .none && rank1.statistics.total.staleGrantsDiscarded == 1)
        #expect(rank1.statistics.total.pagesReceived == 1, "the discarded page did travel")
        // The next grant is current and is installed.
        let fresh = [UInt8](repeating: 4, count: Self.pageSize)
        #expect(acts(rank1.onMessage(.readGrant(page: 0, contents: fresh), from: 2)) == [
            .installPage(page: 0, contents: fresh),
            .setProtection(pages: 0..<1, .read),
            .completeFaults(page: 0),
        ])
        #expect(rank1.isQuiescent)
    }

    @Test func ownerUpgradingPastItsReadersHoldsForwardsAndServesThemInOrder() {
        // Rank 1 owns page 0 (managed by rank 0 of 3) and gave rank 2 a copy.
        var rank1 = core(rank: 1, of: 3)
        _ = rank1.onPlacement(pages: 0..<4, home: 1)
        _ = rank1.onMessage(.forward(page: 0, requester: 2, isWrite: false), from: 0)
        #expect(acts(rank1.onWriteFault(page: 0)) == [.send(to: 2, .invalidate(page: 0))])
        // The manager forwards a read and then a write while the upgrade waits for its ack.
        #expect(acts(rank1.onMessage(.forward(page: 0, requester: 0, isWrite: false), from: 0)).isEmpty)
        #expect(acts(rank1.onMessage(.forward(page: 0, requester: 2, isWrite: true), from: 0)).isEmpty)
        #expect(acts(rank1.onMessage(.invalidateAck(page: 0), from: 2)) == [
            .setProtection(pages: 0..<1, .readWrite),
            .completeFaults(page: 0),
            .setProtection(pages: 0..<1, .read),
            .sendWithPage(to: 0, page: 0, .readGrant(page: 0, contents: [])),
            .setProtection(pages: 0..<1, .none),
            .sendWithPage(to: 2, page: 0, .writeGrant(page: 0, copyset: RankSet([0]), contents: [])),
        ])
        #expect(!rank1.isOwner(ofPage: 0) && rank1.isQuiescent)
    }

    @Test func ownerSendsNoContentsToARequesterThatHoldsACopy() {
        var rank0 = core(rank: 0, of: 3)
        _ = rank0.onMessage(.request(page: 0, isWrite: false), from: 1)
        _ = rank0.onMessage(.request(page: 0, isWrite: false), from: 2)
        #expect(acts(rank0.onMessage(.request(page: 0, isWrite: true), from: 1)) == [
            .send(to: 1, .writeGrant(page: 0, copyset: RankSet([2]), contents: nil)),
        ])
    }

    @Test func invalidationAcksGateTheWrite() {
        // Rank 3 of 4 writes page 0 (manager and owner: rank 0); ranks 1 and 2 hold copies.
        var rank3 = core(rank: 3, of: 4)
        #expect(acts(rank3.onWriteFault(page: 0)) == [.send(to: 0, .request(page: 0, isWrite: true))])
        let contents = [UInt8](repeating: 7, count: Self.pageSize)
        #expect(acts(rank3.onMessage(.writeGrant(page: 0, copyset: RankSet([1, 2]), contents: contents), from: 0)) == [
            .installPage(page: 0, contents: contents),
            .send(to: 1, .invalidate(page: 0)),
            .send(to: 2, .invalidate(page: 0)),
        ])
        #expect(rank3.isOwner(ofPage: 0) && rank3.access(ofPage: 0) == .none)
        // No write access, no wake-up, no confirmation until the last ack.
        #expect(acts(rank3.onMessage(.invalidateAck(page: 0), from: 2)).isEmpty)
        #expect(acts(rank3.onWriteFault(page: 0)).isEmpty)
        #expect(acts(rank3.onMessage(.invalidateAck(page: 0), from: 1)) == [
            .setProtection(pages: 0..<1, .readWrite),
            .completeFaults(page: 0),
            .send(to: 0, .confirm(page: 0)),
        ])
        #expect(rank3.isQuiescent)
    }

    @Test func ownerWithCopiesOutUpgradesThroughItsManager() {
        // Rank 1 owns page 1 and gave rank 0 a copy; rank 1 manages it too.
        var rank1 = core(rank: 1, of: 2)
        _ = rank1.onReadFault(page: 1)
        _ = rank1.onMessage(.request(page: 1, isWrite: false), from: 0)
        // Request, forward to itself and invalidation all happen in this one input.
        #expect(acts(rank1.onWriteFault(page: 1)) == [.send(to: 0, .invalidate(page: 1))])
        #expect(acts(rank1.onMessage(.invalidateAck(page: 1), from: 0)) == [
            .setProtection(pages: 1..<2, .readWrite),
            .completeFaults(page: 1),
        ])
        #expect(rank1.isQuiescent)
    }

    @Test func copyHolderDropsItsCopyAndAcknowledges() {
        var rank1 = core(rank: 1, of: 3)
        _ = rank1.onReadFault(page: 0)
        _ = rank1.onMessage(.readGrant(page: 0, contents: Self.zeros), from: 0)
        #expect(acts(rank1.onMessage(.invalidate(page: 0), from: 2)) == [
            .setProtection(pages: 0..<1, .none),
            .send(to: 2, .invalidateAck(page: 0)),
        ])
        #expect(rank1.access(ofPage: 0) == .none)
    }

    @Test func aFaultThatRacedItsGrantCompletesAtOnce() {
        var rank1 = core(rank: 1, of: 2)
        _ = rank1.onReadFault(page: 0)
        _ = rank1.onMessage(.readGrant(page: 0, contents: Self.zeros), from: 0)
        #expect(acts(rank1.onReadFault(page: 0)) == [.completeFaults(page: 0)])
    }

    @Test func aForwardReachingANonOwnerFollowsTheProbableOwner() {
        // Section 3.4: a stale hint is passed on, not dropped.
        var rank1 = core(rank: 1, of: 3)
        _ = rank1.onReadFault(page: 0)
        _ = rank1.onMessage(.readGrant(page: 0, contents: Self.zeros), from: 0)
        _ = rank1.onMessage(.invalidate(page: 0), from: 2)
        #expect(acts(rank1.onMessage(.forward(page: 0, requester: 0, isWrite: true), from: 0)) == [
            .send(to: 2, .forward(page: 0, requester: 0, isWrite: true)),
        ])
    }

    @Test func synchronisationHooksAreImmediateForSC() {
        var rank0 = core(rank: 0, of: 2)
        let ticket = SyncTicket(9)
        #expect(rank0.onAcquire(lock: 1, grant: [], ticket: ticket) == [.syncReady(ticket, payload: [])])
        #expect(rank0.onRelease(lock: 1, ticket: ticket) == [.syncReady(ticket, payload: [])])
        #expect(rank0.onBarrierArrive(barrier: 0, ticket: ticket) == [.syncReady(ticket, payload: [])])
        #expect(rank0.onBarrierDepart(barrier: 0, contributions: [[], []], ticket: ticket) == [.syncReady(ticket, payload: [])])
        #expect(rank0.start().isEmpty)
    }

    @Test func statisticsCountFaultsTransfersAndInvalidations() {
        var rank0 = core(rank: 0, of: 2)
        _ = rank0.onReadFault(page: 1)
        _ = rank0.onMessage(.readGrant(page: 1, contents: Self.zeros), from: 1)
        _ = rank0.onMessage(.invalidate(page: 1), from: 1)
        _ = rank0.onWriteFault(page: 0)
        let page1 = rank0.statistics.pages[1]
        #expect(page1?.readFaults == 1 && page1?.pagesReceived == 1 && page1?.invalidationsReceived == 1)
        #expect(rank0.statistics.total.writeFaults == 1)
        // request and ack left; readGrant and invalidate arrived.
        #expect(rank0.statistics.messagesSent == 2 && rank0.statistics.messagesReceived == 2)
        #expect(rank0.statistics.bytesReceived == 1 + 8 + 4 + Self.pageSize + 1 + 8)
    }

    @Test func registryFindsSCAndNamesTheChoicesOtherwise() throws {
        let configuration = CoherenceConfiguration(rank: 0, rankCount: 2, pageCount: 4, pageSize: Self.pageSize)
        #expect(ProtocolRegistry.names.contains("sc"))
        #expect(try ProtocolRegistry.make("sc", configuration: configuration) is SCProtocol)
        #expect(throws: MemoryError.unknownProtocol(name: "mesi", known: ProtocolRegistry.names)) {
            try ProtocolRegistry.make("mesi", configuration: configuration)
        }
        #expect(MemoryError.unknownProtocol(name: "mesi", known: ["sc"]).description.contains("use one of: sc"))
    }
}
