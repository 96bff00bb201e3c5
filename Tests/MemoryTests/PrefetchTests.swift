import Memory
import Testing

/// sc's prefetch hints: the transactions a fault would start, started early
/// with no thread waiting, bounded, and free where no message is needed.
@Suite struct PrefetchTests {
    typealias Job = LookAheadTests.Job

    static func sends(_ effects: [MemoryEffect]) -> [MemoryMessage] {
        effects.compactMap { e in
            switch e {
            case let .send(_, m), let .sendWithPage(_, _, m): m
            default: nil
            }
        }
    }

    @Test func aReadHintFetchesAPageAndTheReadThenTakesNoMessage() {
        var job = Job(pages: 4, lookAhead: 0)
        job.write(0, at: 1)
        job.settle(job.cores[0].onPrefetch(pages: 0..<1, forWriting: false), at: 0)
        #expect(job.cores[0].access(ofPage: 0) == .read && job.cores[1].access(ofPage: 0) == .read)
        let s = job.cores[0].statistics.total
        #expect(s.prefetches == 1 && s.readFaults == 0 && s.pagesReceived == 1)
        #expect(job.cores[0].prefetchesInFlight == 0 && job.cores[0].isQuiescent)
        // A read fault taken anyway (raced with the grant) completes at once.
        let effects = job.cores[0].onReadFault(page: 0)
        #expect(Self.sends(effects).isEmpty && effects.contains(.completeFaults(page: 0)))
    }

    @Test func aWriteHintInvalidatesTheReadersAhead() {
        var job = Job(pages: 4, lookAhead: 0)
        job.iteration()
        for p in 0..<4 { #expect(job.cores[0].access(ofPage: p) == .read && job.cores[1].access(ofPage: p) == .read) }
        let faults = job.cores[1].statistics.total.writeFaults
        job.sent = []
        job.settle(job.cores[1].onPrefetch(pages: 0..<4, forWriting: true), at: 1)
        for p in 0..<4 { #expect(job.cores[1].access(ofPage: p) == .readWrite && job.cores[0].access(ofPage: p) == .none) }
        #expect(job.cores[1].statistics.total.writeFaults == faults && job.cores[1].statistics.total.prefetches == 4)
        #expect(job.cores[1].prefetchesInFlight == 0 && job.cores[1].isQuiescent, "every hinted upgrade must be accounted for")
        // The owner upgrades by itself: invalidations and acks only.
        #expect(job.sent.allSatisfy { if case .invalidate = $0.2 { true } else if case .invalidateAck = $0.2 { true } else { false } })
        #expect(job.sent.count == 8)
        // The write the hint was for needs nothing more.
        #expect(Self.sends(job.cores[1].onWriteFault(page: 2)).isEmpty)
    }

    @Test func aHintToAPageOfOnesOwnOrAlreadyHeldSendsNothing() {
        var job = Job(pages: 4, lookAhead: 0)
        // Rank 1 owns every page, never touched: read and write locally.
        var effects = job.cores[1].onPrefetch(pages: 0..<2, forWriting: false)
        effects += job.cores[1].onPrefetch(pages: 2..<4, forWriting: true)
        #expect(Self.sends(effects).isEmpty)
        #expect(job.cores[1].access(ofPage: 0) == .read && job.cores[1].access(ofPage: 3) == .readWrite)
        // Held already, or with a request in flight: nothing new.
        let held = job.cores[1].onPrefetch(pages: 0..<4, forWriting: false)
        #expect(Self.sends(held).isEmpty && job.cores[1].statistics.total.prefetches == 4)
        let first = job.cores[0].onPrefetch(pages: 0..<1, forWriting: false)
        #expect(Self.sends(first).count == 1)
        #expect(Self.sends(job.cores[0].onPrefetch(pages: 0..<1, forWriting: true)).isEmpty)
        #expect(Self.sends(job.cores[0].onReadFault(page: 0)).isEmpty, "a fault behind a hint in flight waits for it")
        job.settle(first, at: 0)
        #expect(job.cores[0].access(ofPage: 0) == .read && job.cores[0].isQuiescent)
    }

    @Test func aHintStartsAtMostTheBoundAndTheRestIsLeftToFaults() {
        let pages = SCProtocol.maxPrefetchesInFlight + 20
        var job = Job(pages: pages, lookAhead: 0)
        let effects = job.cores[0].onPrefetch(pages: 0..<pages, forWriting: false)
        #expect(job.cores[0].prefetchesInFlight == SCProtocol.maxPrefetchesInFlight)
        #expect(job.cores[0].statistics.total.prefetches == SCProtocol.maxPrefetchesInFlight)
        // A second hint while the first is in flight starts nothing.
        #expect(Self.sends(job.cores[0].onPrefetch(pages: 0..<pages, forWriting: false)).isEmpty)
        job.settle(effects, at: 0)
        #expect(job.cores[0].prefetchesInFlight == 0 && job.cores[0].isQuiescent)
        for p in 0..<pages {
            #expect(job.cores[0].access(ofPage: p) == (p < SCProtocol.maxPrefetchesInFlight ? .read : .none), "page \(p)")
        }
        // Once they are done, hints may start again.
        job.settle(job.cores[0].onPrefetch(pages: 0..<pages, forWriting: false), at: 0)
        #expect((0..<pages).allSatisfy { job.cores[0].access(ofPage: $0) == .read })
    }

    @Test func readHintsDoNotCountAsFaultsOrMakeReadHistory() {
        var job = Job(pages: 8, lookAhead: 3)
        job.write(0, at: 1)
        job.write(1, at: 1)
        job.settle(job.cores[0].onPrefetch(pages: 0..<2, forWriting: false), at: 0)
        job.write(0, at: 1)
        job.write(1, at: 1)
        // Rank 0 never faulted on pages 0 and 1: look-ahead must not treat
        // them as a rereading run. (A write hint does count as having had
        // write access, which write look-ahead uses: the program said it
        // would write.)
        job.read(0, at: 0)
        #expect(job.cores[0].statistics.total.readsAhead == 0 && job.cores[0].statistics.total.readFaults == 1)
        #expect(job.cores[0].access(ofPage: 1) == .none)
    }
}

extension PrefetchTests {
    @Test func aBarrierArrivalWaitsForTheHintsInFlight() {
        var job = Job(pages: 4, lookAhead: 0)
        job.write(0, at: 1)
        job.write(1, at: 1)
        let hint = job.cores[0].onPrefetch(pages: 0..<2, forWriting: true)
        #expect(job.cores[0].prefetchesInFlight == 2)
        let ticket = SyncTicket(7)
        #expect(job.cores[0].onBarrierArrive(barrier: 0, ticket: ticket).isEmpty, "the arrival must wait for the hints")
        #expect(!job.cores[0].isQuiescent)
        job.settle(hint, at: 0)
        let ready = job.performed.filter { $0.rank == 0 && $0.1 == .syncReady(ticket, payload: []) }
        #expect(ready.count == 1, "\(job.performed)")
        #expect(job.cores[0].isQuiescent && job.cores[0].prefetchesInFlight == 0)
        // With nothing in flight an arrival proceeds at once.
        #expect(job.cores[0].onBarrierArrive(barrier: 0, ticket: SyncTicket(8)) == [.syncReady(SyncTicket(8), payload: [])])
    }

    @Test func atTheBoundPagesThatNeedNoMessageAreStillServed() {
        var job = Job(pages: 6, lookAhead: 0)
        // Pages 0..<3 at rank 1 (remote for rank 0), 3..<6 placed at rank 0.
        job.cores[0] = SCProtocol(configuration: job.cores[0].configuration)
        job.cores[1] = SCProtocol(configuration: job.cores[1].configuration)
        for r in 0..<2 {
            _ = job.cores[r].onPlacement(pages: 0..<3, home: 1)
            _ = job.cores[r].onPlacement(pages: 3..<6, home: 0)
        }
        job.cores[0].prefetchLimit = 1
        let effects = job.cores[0].onPrefetch(pages: 0..<6, forWriting: false)
        #expect(PrefetchTests.sends(effects).count == 1, "one request: the bound")
        #expect((3..<6).allSatisfy { job.cores[0].access(ofPage: $0) == .read }, "own pages are served past the bound")
        job.settle(effects, at: 0)
        #expect(job.cores[0].access(ofPage: 0) == .read && job.cores[0].access(ofPage: 1) == .none)
        #expect(job.cores[0].isQuiescent)
    }
}
