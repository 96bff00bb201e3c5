import Memory
import Testing

/// sc's look-ahead: a fault also serves the next pages the rank's history
/// says it will need, as if it had faulted on them, in one exchange.
@Suite struct LookAheadTests {
    static let pageSize = 8

    /// Two ranks, pages 0..<pages placed at rank 1 (the owner-computes
    /// layout of a stencil's rows), with `lookAhead` on both.
    struct Job {
        var cores: [SCProtocol]
        /// Every message sent, in order, for the tests to count.
        var sent: [(from: Int, to: Int, MemoryMessage)] = []
        /// Every effect other than a send that `settle` performed, by rank.
        var performed: [(rank: Int, MemoryEffect)] = []

        init(pages: Int, lookAhead: Int) {
            cores = (0..<2).map { r in
                SCProtocol(configuration: CoherenceConfiguration(rank: r, rankCount: 2, pageCount: pages,
                                                                 pageSize: LookAheadTests.pageSize, lookAhead: lookAhead))
            }
            for r in 0..<2 { _ = cores[r].onPlacement(pages: 0..<pages, home: 1) }
        }

        /// Feeds `effects` of rank `from` and every message they cause until
        /// the network is empty (one FIFO queue is enough for two ranks).
        mutating func settle(_ effects: [MemoryEffect], at from: Int) {
            var queue: [(from: Int, to: Int, MemoryMessage)] = []
            func collect(_ e: [MemoryEffect], _ r: Int) {
                for x in e {
                    switch x {
                    case let .send(to, m), let .sendWithPage(to, _, m): queue.append((r, to, m))
                    default: performed.append((r, x))
                    }
                }
            }
            collect(effects, from)
            while !queue.isEmpty {
                let (f, t, m) = queue.removeFirst()
                sent.append((f, t, m))
                let attached: MemoryMessage
                switch m {
                case .readGrant: attached = m.attaching(contents: [UInt8](repeating: 0, count: LookAheadTests.pageSize))
                case .writeGrant(_, _, .some): attached = m.attaching(contents: [UInt8](repeating: 0, count: LookAheadTests.pageSize))
                default: attached = m
                }
                collect(cores[t].onMessage(attached, from: f), t)
            }
        }

        mutating func read(_ page: Int, at r: Int) { settle(cores[r].onReadFault(page: page), at: r) }
        mutating func write(_ page: Int, at r: Int) { settle(cores[r].onWriteFault(page: page), at: r) }

        /// One stencil iteration's traffic on pages 0..<4: rank 1 writes
        /// them (its boundary row), then rank 0 reads them.
        mutating func iteration() {
            for p in 0..<4 where cores[1].access(ofPage: p) != .readWrite { write(p, at: 1) }
            for p in 0..<4 where cores[0].access(ofPage: p) == .none { read(p, at: 0) }
        }
    }

    @Test func aRereadRunTravelsAsOneExchangeAndANeverHeldPageStaysHome() {
        var job = Job(pages: 8, lookAhead: 3)
        // First iteration: nothing held before, so one page per fault.
        job.iteration()
        #expect(job.cores[0].statistics.total.readsAhead == 0 && job.cores[1].statistics.total.writesAhead == 0)
        #expect(job.cores[0].statistics.total.readFaults == 4)
        // Rank 1 also writes page 4 (the next row), which rank 0 never read.
        job.write(4, at: 1)
        job.sent = []
        job.iteration()
        let s0 = job.cores[0].statistics.total, s1 = job.cores[1].statistics.total
        // One write fault at rank 1 upgraded all four pages; one read fault at
        // rank 0 fetched all four.
        #expect(s1.writesAhead == 3 && s1.writeFaults == 4 + 1 + 1)
        #expect(s0.readsAhead == 3 && s0.readFaults == 4 + 1)
        #expect(job.cores[1].access(ofPage: 4) == .readWrite, "page 4 was never held by rank 0: it must not be fetched")
        for p in 0..<4 { #expect(job.cores[0].access(ofPage: p) == .read && job.cores[1].access(ofPage: p) == .read) }
        // Invalidations and acks for the run, then requests and grants.
        let invalidations = job.sent.filter { if case .invalidate = $0.2 { true } else { false } }
        #expect(invalidations.map(\.2.page) == [0, 1, 2, 3])
        // The faulting page's grant comes first, though rank 0 manages it
        // (its forward is a loopback message) and rank 1 manages page 1.
        let grants = job.sent.filter { if case .readGrant = $0.2 { true } else { false } }
        #expect(grants.map(\.2.page) == [0, 1, 2, 3])
        #expect(job.cores[0].isQuiescent && job.cores[1].isQuiescent)
    }

    @Test func lookAheadStopsAtThePageLimitAndAtAnotherOwner() {
        var job = Job(pages: 4, lookAhead: 8)
        job.iteration()
        job.iteration()
        // Pages 0..<4 are all there is: the run of 8 stops at the region's end.
        #expect(job.cores[0].statistics.total.readsAhead == 3)
        // Rank 0 takes page 2 for writing: its probable owner is now itself,
        // so a read of page 1 after rank 1 rewrites 0..<2 fetches only page 1.
        job.write(2, at: 0)
        job.write(0, at: 1)
        job.write(1, at: 1)
        let before = job.cores[0].statistics.total.readsAhead
        job.read(0, at: 0)
        #expect(job.cores[0].statistics.total.readsAhead == before + 1)
        #expect(job.cores[0].access(ofPage: 1) == .read && job.cores[0].access(ofPage: 2) == .readWrite)
    }

    @Test func writeAheadNeedsTheSameReaders() {
        // Three ranks: pages 0 and 1 owned by rank 1, read by rank 0; page 1
        // also by rank 2. A write of page 0 must not upgrade page 1: its
        // readers differ, and the invalidation of rank 2 was not asked for.
        var cores = (0..<3).map { r in
            SCProtocol(configuration: CoherenceConfiguration(rank: r, rankCount: 3, pageCount: 3, pageSize: Self.pageSize, lookAhead: 2))
        }
        for r in 0..<3 { _ = cores[r].onPlacement(pages: 0..<3, home: 1) }
        _ = cores[1].onWriteFault(page: 0)
        _ = cores[1].onWriteFault(page: 1)
        // Rank 1 is the owner and (for page 1) the manager; serve reads by hand.
        _ = cores[1].onMessage(.forward(page: 0, requester: 0, isWrite: false), from: 0)
        _ = cores[1].onMessage(.request(page: 1, isWrite: false), from: 0)
        _ = cores[1].onMessage(.request(page: 1, isWrite: false), from: 2)
        let effects = cores[1].onWriteFault(page: 0)
        #expect(effects.contains(.send(to: 0, .invalidate(page: 0))))
        #expect(!effects.contains { if case .send(_, .invalidate(page: 1)) = $0 { true } else { false } })
        #expect(cores[1].statistics.total.writesAhead == 0)
    }

    @Test func lookAheadZeroIsThePlainProtocol() {
        var job = Job(pages: 8, lookAhead: 0)
        job.iteration()
        job.iteration()
        #expect(job.cores[0].statistics.total.readsAhead == 0 && job.cores[1].statistics.total.writesAhead == 0)
        #expect(job.cores[0].statistics.total.readFaults == 8)
        // Switched on mid-run (a rank's own decision), the next iteration uses it.
        job.cores[0].setLookAhead(3)
        job.cores[1].setLookAhead(3)
        job.iteration()
        #expect(job.cores[0].statistics.total.readsAhead == 3 && job.cores[1].statistics.total.writesAhead == 3)
    }

    /// A first scan of an array another rank filled: the first miss fetches
    /// one page, the second (the next page: a stream) fetches the next run
    /// too, though rank 0 never held those pages; outside an allocation, or
    /// when the misses are not consecutive, nothing is fetched ahead.
    @Test func aSequentialFirstScanOfAnAllocationStreamsAhead() {
        var job = Job(pages: 16, lookAhead: 3)
        for r in 0..<2 { job.cores[r].onAllocated(pages: 0..<12) }
        job.read(0, at: 0)
        #expect(job.cores[0].statistics.total.readsAhead == 0)
        job.read(1, at: 0)
        #expect(job.cores[0].statistics.total.readsAhead == 3)
        for p in 1...4 { #expect(job.cores[0].access(ofPage: p) == .read, "page \(p)") }
        // The stream goes on at page 5, and stops at the allocation's end.
        job.read(5, at: 0)
        job.read(9, at: 0)
        #expect(job.cores[0].statistics.total.readsAhead == 3 + 3 + 2)
        #expect(job.cores[0].access(ofPage: 12) == .none, "page 12 is outside the allocation")
        job.read(12, at: 0)
        #expect(job.cores[0].access(ofPage: 13) == .none)
        // A miss that is not where a stream expected one fetches nothing never held.
        var other = Job(pages: 16, lookAhead: 3)
        for r in 0..<2 { other.cores[r].onAllocated(pages: 0..<16) }
        other.read(0, at: 0)
        other.read(2, at: 0)
        other.read(6, at: 0)
        #expect(other.cores[0].statistics.total.readsAhead == 0)
    }
}

extension LookAheadTests {
    /// Pages fetched ahead have no thread waiting for them: a barrier
    /// arrival waits until they are in, so none is still in flight when a
    /// process leaves the job behind its last barrier.
    @Test func aBarrierArrivalWaitsForThePagesFetchedAhead() {
        var job = Job(pages: 8, lookAhead: 3)
        job.iteration()
        job.iteration()
        for p in 0..<4 where job.cores[1].access(ofPage: p) != .readWrite { job.write(p, at: 1) }
        let before = job.cores[0].statistics.total.readsAhead
        let fault = job.cores[0].onReadFault(page: 0)
        #expect(job.cores[0].statistics.total.readsAhead == before + 3)
        let ticket = SyncTicket(3)
        #expect(job.cores[0].onBarrierArrive(barrier: 0, ticket: ticket).isEmpty, "three pages fetched ahead are in flight")
        job.settle(fault, at: 0)
        #expect(job.performed.filter { $0.rank == 0 && $0.1 == .syncReady(ticket, payload: []) }.count == 1, "\(job.performed)")
        #expect(job.cores[0].isQuiescent && job.cores[1].isQuiescent)
    }
}
