import Memory
import Testing

/// `LRCProtocol` driven by a small synchronous job: every effect performed
/// at once, messages delivered in FIFO order until none is left, locks and
/// barriers passing the cores' payloads as the runtime does. Sections refer
/// to Keleher, Cox, Dwarkadas and Zwaenepoel, USENIX Winter 1994.
@Suite struct LRCProtocolTests {
    /// Four words (`PageDiff.wordSize`): concurrent writers write different words.
    static let pageSize = 32

    struct NotReady: Error { var what: String }

    struct Job {
        var cores: [LRCProtocol]
        var contents: [[[UInt8]]]
        var twins: [[Int: [UInt8]]]
        var stored: [[DiffKey: [UInt8]]]
        var queue: [(from: Int, to: Int, bytes: [UInt8])] = []
        var lockPayload: [Int: [UInt8]] = [:]
        var ready: [UInt64: [UInt8]] = [:]
        var nextTicket: UInt64 = 0
        var effects: [[MemoryEffect]]

        init(ranks: Int, pages: Int, collectionBound: Int = CoherenceConfiguration.defaultCollectionBound) {
            cores = (0..<ranks).map {
                LRCProtocol(configuration: CoherenceConfiguration(rank: $0, rankCount: ranks, pageCount: pages, pageSize: LRCProtocolTests.pageSize,
                                                                  collectionBound: collectionBound))
            }
            contents = Array(repeating: Array(repeating: [UInt8](repeating: 0, count: LRCProtocolTests.pageSize), count: pages), count: ranks)
            twins = Array(repeating: [:], count: ranks)
            stored = Array(repeating: [:], count: ranks)
            effects = Array(repeating: [], count: ranks)
        }

        func retained(_ rank: Int) -> Int {
            twins[rank].values.reduce(0) { $0 + $1.count } + stored[rank].values.reduce(0) { $0 + $1.count }
        }

        mutating func perform(_ list: [MemoryEffect], at rank: Int) {
            effects[rank] += list
            for e in list {
                switch e {
                case let .send(to, m): queue.append((rank, to, m.encoded()))
                case let .installPage(p, c): contents[rank][p] = c
                case let .makeTwin(p): twins[rank][p] = contents[rank][p]
                case let .storeDiff(p, key):
                    stored[rank][key] = PageDiff.encode(twin: twins[rank].removeValue(forKey: p) ?? contents[rank][p], current: contents[rank][p])
                case let .sendStoredDiffs(to, m):
                    let s = stored[rank]
                    queue.append((rank, to, m.attachingStoredDiffs { s[$0]! }.encoded()))
                case let .dropStoredDiffs(last): stored[rank] = stored[rank].filter { $0.key.interval > last }
                case let .applyDiff(p, d): try! PageDiff.apply(d, to: &contents[rank][p])
                case let .syncReady(t, payload): ready[t.id] = payload
                case .sendWithPage, .sendDiff: Issue.record("lrc used a home-based effect: \(e)")
                case .setProtection, .completeFaults, .record: break
                }
            }
        }

        mutating func deliver() throws {
            while !queue.isEmpty {
                let m = queue.removeFirst()
                let message = try MemoryMessage(decoding: m.bytes, limits: cores[m.to].configuration.messageLimits)
                perform(cores[m.to].onMessage(message, from: m.from), at: m.to)
            }
        }

        mutating func read(_ rank: Int, page: Int, byte: Int) throws -> UInt8 {
            if cores[rank].access(ofPage: page) == .none {
                perform(cores[rank].onReadFault(page: page), at: rank)
                try deliver()
            }
            #expect(cores[rank].access(ofPage: page) >= .read)
            return contents[rank][page][byte]
        }

        mutating func write(_ rank: Int, page: Int, byte: Int, _ value: UInt8) throws {
            if cores[rank].access(ofPage: page) != .readWrite {
                perform(cores[rank].onWriteFault(page: page), at: rank)
                try deliver()
            }
            #expect(cores[rank].access(ofPage: page) == .readWrite)
            contents[rank][page][byte] = value
        }

        mutating func ticket() -> SyncTicket {
            nextTicket += 1
            return SyncTicket(nextTicket)
        }

        mutating func acquire(_ rank: Int, lock: Int) throws {
            let t = ticket()
            cores[rank].observeRetainedMemory(bytes: retained(rank))
            perform(cores[rank].onAcquire(lock: lock, grant: lockPayload[lock] ?? [], ticket: t), at: rank)
            try deliver()
            #expect(ready.removeValue(forKey: t.id) != nil)
        }

        mutating func release(_ rank: Int, lock: Int) throws {
            let t = ticket()
            cores[rank].observeRetainedMemory(bytes: retained(rank))
            perform(cores[rank].onRelease(lock: lock, ticket: t), at: rank)
            try deliver()
            guard let payload = ready.removeValue(forKey: t.id) else { throw NotReady(what: "release of lock \(lock) at rank \(rank)") }
            lockPayload[lock] = payload
        }

        /// Every rank arrives, then every rank departs; departures complete
        /// only once the messages they need are delivered (a collection).
        mutating func barrier() throws {
            var payloads: [[UInt8]] = []
            for r in cores.indices {
                let t = ticket()
                cores[r].observeRetainedMemory(bytes: retained(r))
                perform(cores[r].onBarrierArrive(barrier: 0, ticket: t), at: r)
                guard let payload = ready.removeValue(forKey: t.id) else { throw NotReady(what: "barrier arrival of rank \(r)") }
                payloads.append(payload)
            }
            var tickets: [SyncTicket] = []
            for r in cores.indices {
                let t = ticket()
                tickets.append(t)
                perform(cores[r].onBarrierDepart(barrier: 0, contributions: payloads, ticket: t), at: r)
            }
            try deliver()
            for t in tickets { #expect(ready.removeValue(forKey: t.id) != nil, "a barrier departure did not complete") }
        }

        func count(_ rank: Int, _ match: (MemoryEffect) -> Bool) -> Int { effects[rank].filter(match).count }
    }

    /// Section 3.3: two ranks write different words of one page in the same
    /// interval (false sharing); each keeps a twin, no diff is made before
    /// anyone asks, and after the barrier both see both writes.
    @Test func concurrentWritersOfOnePageMergeAtABarrier() throws {
        var job = Job(ranks: 2, pages: 1)
        try job.write(0, page: 0, byte: 0, 7)
        try job.write(1, page: 0, byte: 8, 9)
        #expect(job.queue.isEmpty && job.cores.allSatisfy { $0.statistics.total.diffsCreated == 0 })
        try job.barrier()
        #expect(try job.read(0, page: 0, byte: 8) == 9)
        #expect(try job.read(1, page: 0, byte: 0) == 7)
        #expect(try job.read(0, page: 0, byte: 0) == 7 && job.read(1, page: 0, byte: 8) == 9)
        // Each fetched exactly the other's one diff.
        #expect(job.cores.allSatisfy { $0.statistics.total.diffsApplied == 1 && $0.statistics.total.diffsSent == 1 })
        #expect(job.cores.allSatisfy { $0.isQuiescent })
    }

    /// Section 3.2: a lock carries write notices; a page written by two
    /// successive holders is brought up to date at a third with both diffs,
    /// applied in happened-before order (the later value wins).
    @Test func aLockChainAppliesDiffsInHappenedBeforeOrder() throws {
        var job = Job(ranks: 3, pages: 2)
        try job.acquire(0, lock: 0)
        try job.write(0, page: 1, byte: 4, 1)
        try job.release(0, lock: 0)
        try job.acquire(1, lock: 0)
        #expect(try job.read(1, page: 1, byte: 4) == 1)
        try job.write(1, page: 1, byte: 4, 2)
        try job.write(1, page: 1, byte: 5, 3)
        try job.release(1, lock: 0)
        try job.acquire(2, lock: 0)
        #expect(try job.read(2, page: 1, byte: 4) == 2)
        #expect(try job.read(2, page: 1, byte: 5) == 3)
        #expect(job.cores[2].statistics.total.diffsApplied == 2)
        // Page 0 was never written: its first touch needs no message.
        let sent = job.cores[2].statistics.messagesSent
        #expect(try job.read(2, page: 0, byte: 0) == 0)
        #expect(job.cores[2].statistics.messagesSent == sent)
        // A rank that saw no notice keeps reading its own (stale) copy: the
        // model is release consistency, not sequential.
        #expect(job.cores[0].access(ofPage: 1) == .read)
        #expect(try job.read(0, page: 1, byte: 4) == 1)
    }

    /// Section 4.2: diffs are made lazily. A release makes none; the diff
    /// of an interval is made when asked for, or when the writer writes the
    /// page again in a later interval (its twin must be replaced).
    @Test func diffsAreMadeOnlyWhenNeeded() throws {
        var job = Job(ranks: 2, pages: 1)
        try job.acquire(0, lock: 0)
        try job.write(0, page: 0, byte: 0, 1)
        try job.release(0, lock: 0)
        #expect(job.count(0) { if case .storeDiff = $0 { true } else { false } } == 0)
        #expect(job.cores[0].access(ofPage: 0) == .read, "the interval's end takes write access away")
        try job.acquire(0, lock: 0)
        try job.write(0, page: 0, byte: 1, 2)
        #expect(job.count(0) { if case .storeDiff = $0 { true } else { false } } == 1, "a new interval's write stores the old twin's diff")
        try job.release(0, lock: 0)
        try job.acquire(1, lock: 0)
        #expect(try job.read(1, page: 0, byte: 0) == 1 && job.read(1, page: 0, byte: 1) == 2)
        #expect(job.cores[1].statistics.total.diffsApplied == 2)
    }

    /// A page written in an interval that is invalidated in its middle keeps
    /// this rank's writes: their diff is stored first, the other writer's
    /// diff applied, and a second part of the same interval made later.
    @Test func aDirtyPageInvalidatedMidIntervalKeepsItsWrites() throws {
        var job = Job(ranks: 2, pages: 1)
        try job.acquire(0, lock: 0)
        try job.write(0, page: 0, byte: 0, 5)
        try job.release(0, lock: 0)
        try job.write(1, page: 0, byte: 8, 6) // another word, in rank 1's open interval
        try job.acquire(1, lock: 0) // learns rank 0's notice for the page it is writing
        #expect(job.cores[1].access(ofPage: 0) == .none)
        try job.write(1, page: 0, byte: 16, 7)
        #expect(try job.read(1, page: 0, byte: 0) == 5 && job.read(1, page: 0, byte: 8) == 6 && job.read(1, page: 0, byte: 16) == 7)
        try job.release(1, lock: 0)
        try job.acquire(0, lock: 0)
        #expect(try job.read(0, page: 0, byte: 8) == 6 && job.read(0, page: 0, byte: 16) == 7 && job.read(0, page: 0, byte: 0) == 5)
        #expect(job.cores[0].statistics.total.diffsApplied == 2, "both parts of rank 1's interval")
    }

    /// Garbage collection: past the bound, a barrier brings every page up
    /// to date everywhere and drops the stored diffs; the values survive and
    /// later intervals work as before.
    @Test func aCollectionDropsDiffsAndKeepsEveryValue() throws {
        var job = Job(ranks: 3, pages: 3, collectionBound: 1)
        for r in 0..<3 { try job.write(r, page: r, byte: r, UInt8(10 + r)) }
        try job.barrier() // retained twins only now exceed the bound
        for r in 0..<3 { try job.write(r, page: (r + 1) % 3, byte: 8 + r, UInt8(20 + r)) }
        try job.barrier()
        #expect(job.cores.allSatisfy { $0.statistics.garbageCollections >= 1 })
        for r in 0..<3 {
            #expect(job.stored[r].isEmpty && job.twins[r].isEmpty, "rank \(r) kept \(job.stored[r].count) diffs and \(job.twins[r].count) twins")
            #expect(job.cores[r].isQuiescent)
        }
        for r in 0..<3 {
            for p in 0..<3 {
                #expect(try job.read(r, page: p, byte: p) == UInt8(10 + p))
                let second = (p + 2) % 3
                #expect(try job.read(r, page: p, byte: 8 + second) == UInt8(20 + second))
            }
        }
        try job.write(2, page: 0, byte: 15, 99)
        try job.barrier()
        #expect(try job.read(0, page: 0, byte: 15) == 99 && job.read(1, page: 0, byte: 15) == 99)
    }

    /// Below the bound no collection happens and diffs stay where they are.
    @Test func noCollectionBelowTheBound() throws {
        var job = Job(ranks: 2, pages: 1)
        try job.write(0, page: 0, byte: 0, 1)
        try job.barrier()
        try job.write(0, page: 0, byte: 0, 2)
        try job.barrier()
        #expect(job.cores.allSatisfy { $0.statistics.garbageCollections == 0 })
        #expect(job.stored[0].count == 1)
    }

    /// One process alone keeps no twins: nobody will ask for its diffs.
    @Test func oneProcessKeepsNoTwins() throws {
        var job = Job(ranks: 1, pages: 1)
        try job.write(0, page: 0, byte: 0, 1)
        try job.barrier()
        try job.write(0, page: 0, byte: 0, 2)
        #expect(job.twins[0].isEmpty && job.count(0) { if case .makeTwin = $0 { true } else { false } } == 0)
    }

    /// A hint fetches the diffs of a page with unapplied notices before any
    /// fault; the fault that follows finds the page readable. Pages with
    /// nothing to apply are left alone.
    @Test func prefetchHintsFetchDiffsAheadOfTheFault() throws {
        var job = Job(ranks: 2, pages: 2)
        try job.acquire(0, lock: 0)
        try job.write(0, page: 0, byte: 0, 3)
        try job.release(0, lock: 0)
        try job.acquire(1, lock: 0)
        job.perform(job.cores[1].onPrefetch(pages: 0..<2, forWriting: false), at: 1)
        try job.deliver()
        #expect(job.cores[1].statistics.total.prefetches == 1)
        #expect(job.cores[1].access(ofPage: 0) == .read && job.cores[1].access(ofPage: 1) == .none)
        #expect(try job.read(1, page: 0, byte: 0) == 3)
        #expect(job.cores[1].statistics.total.readFaults == 0)
    }

    /// The payload decoder rejects what does not fit the job.
    @Test func malformedPayloadsDoNotDecode() throws {
        var job = Job(ranks: 2, pages: 4)
        try job.write(0, page: 2, byte: 0, 1)
        try job.release(0, lock: 0)
        let bytes = try #require(job.lockPayload[0])
        let configuration = job.cores[0].configuration
        #expect(LRCProtocol.decodeNotices(bytes, configuration) != nil)
        for n in 0..<bytes.count { #expect(LRCProtocol.decodeNotices(Array(bytes.prefix(n)), configuration) == nil) }
        #expect(LRCProtocol.decodeNotices(bytes + [0], configuration) == nil)
        var farPage = bytes
        farPage[16] = 9 // page 9 of 4
        #expect(LRCProtocol.decodeNotices(farPage, configuration) == nil)
        var badFlag = bytes
        badFlag[badFlag.count - 1] = 2
        #expect(LRCProtocol.decodeNotices(badFlag, configuration) == nil)
    }
}
