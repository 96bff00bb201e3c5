import Memory
import Transport

/// A deterministic simulation of one job: one core per rank, a network of
/// FIFO channels per ordered pair of ranks delivered in a seeded random order
/// (so messages between different pairs reorder freely), and application
/// threads doing random reads and writes of a few small pages.
///
/// It mirrors the real fault path: a thread that lacks access is blocked and
/// its fault is reported to the core in a later step (or never, if a
/// completion wakes it first, as a CFault slot completed while still pending);
/// a woken thread re-executes its access and may fault again.
///
/// Every step checks the memory model; the run ends with a healing phase that
/// delivers everything and demands that every fault completed.
///
/// `run()` picks each step at random from the seed. `ExhaustiveExploration`
/// instead drives `availableActions()` / `step(_:)` itself and visits
/// every reachable state of a small scripted job.
struct CoherenceSimulation {
    struct Failure: Error, CustomStringConvertible {
        var seed: UInt64
        var message: String
        var trace: [String]
        var description: String {
            "seed \(seed): \(message)\nlast steps:\n" + trace.suffix(40).joined(separator: "\n")
        }
    }

    struct Parameters {
        var protocolName: String
        var rankCount: Int
        var pageCount: Int
        var operations: Int
        var threadsPerRank = 2
        /// `CoherenceConfiguration.lookAhead` of every core.
        var lookAhead = 0
        /// If set, rank r performs exactly `scripts[r]`, in order (each start
        /// takes the next operation), instead of random operations; then
        /// `operations` is ignored.
        var scripts: [[Operation]]? = nil
        /// If set, makes the cores instead of the registry (tests of the
        /// checkers use deliberately broken protocols).
        var makeCore: (@Sendable (CoherenceConfiguration) -> any CoherenceProtocol)? = nil
        /// Prefetch hints the run may give (`CoherenceProtocol.onPrefetch`),
        /// each at any moment, by any rank, for one page or all of them, to
        /// read or to write; 0 for none.
        var prefetches = 0
        /// If set, `SCProtocol.prefetchLimit` of every `sc` core (low
        /// values make the bound's path run).
        var prefetchLimit: Int? = nil
        /// Steps allowed after the last operation started, before the run
        /// counts as livelocked.
        var stepBudget = 100_000

        /// If set, page p's home (`CoherenceProtocol.onPlacement`) is `homes[p]`.
        var homes: [Int]? = nil
        /// Every read must return the last write: true for sequential
        /// protocols; for release-consistent ones, true only for
        /// data-race-free programs (random schedules under a `.release`
        /// protocol are: each access is made holding its page's lock).
        /// Nil picks by the model: scripts of a `.release` protocol are
        /// not checked unless they say they are race-free.
        var dataRaceFree: Bool? = nil

        /// Reads and writes the run performs: the scripts' accesses, else `operations`.
        var totalOperations: Int { scripts.map { $0.reduce(0) { $0 + $1.reduce(0) { $0 + $1.accesses } } } ?? operations }
    }

    struct Operation: Sendable {
        var page: Int
        var isWrite: Bool
        /// A lock operation instead of an access.
        var sync: Sync? = nil
        /// A read that races with writes on purpose: never checked.
        var racy = false
        /// Operations the same thread performs after this one.
        var then: [Operation] = []
        /// Accesses (reads and writes) this operation and its `then` make.
        var accesses: Int { (sync == nil ? 1 : 0) + then.filter { $0.sync == nil }.count }
        enum Sync: Sendable, Hashable {
            case acquire(Int), release(Int)
        }
        static func read(_ page: Int) -> Operation { Operation(page: page, isWrite: false) }
        static func write(_ page: Int) -> Operation { Operation(page: page, isWrite: true) }
        /// `operations` in order on one thread (a script entry is otherwise one thread).
        static func thread(_ operations: [Operation]) -> Operation {
            var first = operations[0]
            first.then = Array(operations.dropFirst())
            return first
        }
        static func racyRead(_ page: Int) -> Operation { Operation(page: page, isWrite: false, racy: true) }
        static func acquire(_ lock: Int) -> Operation { Operation(page: 0, isWrite: false, sync: .acquire(lock)) }
        static func release(_ lock: Int) -> Operation { Operation(page: 0, isWrite: false, sync: .release(lock)) }
    }

    private enum ThreadState: Hashable { case faulted, reported, runnable, lockWait, syncing(UInt64) }

    private struct AppThread {
        var id: Int
        var rank: Int
        var page: Int
        var isWrite: Bool
        var sync: Operation.Sync?
        var racy = false
        var state: ThreadState
        /// Operations after this one, in order.
        var rest: [Operation] = []
    }

    /// A lock of the job, as the lock service keeps it: its holder (a rank,
    /// for one of its threads) and the payload its last releaser's core attached.
    private struct SimulatedLock: Hashable {
        var holder: Int?
        var payload: [UInt8] = []
    }

    enum Action {
        case start(rank: Int)
        case deliver(from: Int, to: Int)
        case report(thread: Int)
        case run(thread: Int)
        case prefetch(rank: Int, pages: Range<Int>, forWriting: Bool)
    }

    static let pageSize = 8
    let seed: UInt64
    let parameters: Parameters
    private var rng: SplitMix64
    private var cores: [any CoherenceProtocol]
    private let model: MemoryModel
    /// What each rank's memory holds, per page (the "system view").
    private var contents: [[[UInt8]]]
    /// Twins the cores asked for (`MemoryEffect.makeTwin`), per rank and page.
    private var twins: [[[UInt8]?]]
    /// Diffs the cores stored (`MemoryEffect.storeDiff`), per rank.
    private var storedDiffs: [[DiffKey: [UInt8]]]
    /// The application-view protections, as the cores' effects set them.
    private var protection: [[PageAccess]]
    /// channels[from][to], FIFO.
    private var channels: [[[[UInt8]]]]
    private var threads: [AppThread] = []
    private var operationsLeft: Int
    private var prefetchesLeft: Int
    /// With scripts: the next operation of each rank.
    private var scriptPosition: [Int]
    /// The value of the last completed write of each page (0 = initial zeros).
    private var lastWrite: [UInt64]
    private var nextValue: UInt64 = 1
    /// Statistics folded from `.record` effects, compared with the cores' own.
    private var recorded: [MemoryStatistics]
    private(set) var trace: [String] = []
    let keepTrace: Bool
    private var locks: [Int: SimulatedLock] = [:]
    private var nextThreadID = 0
    private var nextTicket: UInt64 = 0
    private let checksReads: Bool
    /// Every completed read: rank, page and the value it returned.
    private(set) var reads: [(rank: Int, page: Int, value: UInt64)] = []
    private(set) var completedReads = 0
    private(set) var completedWrites = 0
    private(set) var messagesDelivered = 0
    /// Each core's own counters.
    var coreStatistics: [MemoryStatistics] { cores.map(\.statistics) }

    init(seed: UInt64, parameters: Parameters, keepTrace: Bool = false) throws {
        self.seed = seed
        self.parameters = parameters
        self.keepTrace = keepTrace
        rng = SplitMix64(seed: seed)
        let n = parameters.rankCount, pages = parameters.pageCount
        cores = try (0..<n).map { rank in
            let configuration = CoherenceConfiguration(rank: rank, rankCount: n, pageCount: pages, pageSize: CoherenceSimulation.pageSize,
                                                       lookAhead: parameters.lookAhead)
            if let make = parameters.makeCore { return make(configuration) }
            var core = try ProtocolRegistry.make(parameters.protocolName, configuration: configuration)
            // Every page is one collective allocation every rank has placed,
            // so look-ahead may also fetch pages never held.
            if let homes = parameters.homes {
                for page in 0..<pages { _ = core.onPlacement(pages: page..<page + 1, home: homes[page]) }
            }
            core.onAllocated(pages: 0..<pages)
            if let limit = parameters.prefetchLimit, var sc = core as? SCProtocol {
                sc.prefetchLimit = limit
                core = sc
            }
            return core
        }
        model = type(of: cores[0]).model
        checksReads = model == .sequential || (parameters.dataRaceFree ?? (parameters.scripts == nil))
        contents = Array(repeating: Array(repeating: Array(repeating: 0, count: CoherenceSimulation.pageSize), count: pages), count: n)
        protection = Array(repeating: Array(repeating: .none, count: pages), count: n)
        twins = Array(repeating: Array(repeating: nil, count: pages), count: n)
        storedDiffs = Array(repeating: [:], count: n)
        channels = Array(repeating: Array(repeating: [], count: n), count: n)
        operationsLeft = parameters.scripts.map { $0.reduce(0) { $0 + $1.count } } ?? parameters.operations
        prefetchesLeft = parameters.prefetches
        scriptPosition = Array(repeating: 0, count: n)
        if let scripts = parameters.scripts {
            precondition(scripts.count == n, "one script per rank")
            precondition(scripts.joined().allSatisfy { (0..<pages).contains($0.page) }, "a script names a page outside 0..<\(pages)")
        }
        lastWrite = Array(repeating: 0, count: pages)
        recorded = Array(repeating: MemoryStatistics(), count: n)
    }

    /// Runs the whole schedule; throws the first violation.
    mutating func run() throws(Failure) {
        try begin()
        var steps = 0
        while true {
            let actions = availableActions()
            if actions.isEmpty { break }
            if operationsLeft == 0 {
                steps += 1
                if steps > parameters.stepBudget { throw fail("no progress after \(steps) healing steps: livelock") }
            }
            try step(actions[Int.random(in: 0..<actions.count, using: &rng)])
        }
        try checkHealed()
    }

    // MARK: Steps

    /// Performs the cores' start effects; call once, before any action.
    mutating func begin() throws(Failure) {
        for rank in cores.indices {
            apply(cores[rank].start(), at: rank)
        }
        try check()
    }

    /// Everything that could happen next, the same list on every call for
    /// the same state.
    func availableActions() -> [Action] {
        var actions: [Action] = []
        if operationsLeft > 0 {
            var running = Array(repeating: 0, count: cores.count)
            for thread in threads { running[thread.rank] += 1 }
            for rank in cores.indices where running[rank] < parameters.threadsPerRank {
                if let scripts = parameters.scripts, scriptPosition[rank] >= scripts[rank].count { continue }
                actions.append(.start(rank: rank))
            }
        }
        for from in channels.indices {
            for to in channels.indices where !channels[from][to].isEmpty {
                actions.append(.deliver(from: from, to: to))
            }
        }
        for index in threads.indices {
            switch threads[index].state {
            case .faulted: actions.append(.report(thread: index))
            case .runnable: actions.append(.run(thread: index))
            case .reported, .lockWait, .syncing: break
            }
        }
        if prefetchesLeft > 0 {
            let pages = parameters.pageCount
            for rank in cores.indices {
                for forWriting in [false, true] {
                    for page in 0..<pages { actions.append(.prefetch(rank: rank, pages: page..<page + 1, forWriting: forWriting)) }
                    if pages > 1 { actions.append(.prefetch(rank: rank, pages: 0..<pages, forWriting: forWriting)) }
                }
            }
        }
        return actions
    }

    /// Performs one action and checks the memory model afterwards.
    mutating func step(_ action: Action) throws(Failure) {
        try perform(action)
        try check()
    }

    private mutating func perform(_ action: Action) throws(Failure) {
        switch action {
        case let .start(rank):
            operationsLeft -= 1
            let operation: Operation
            var rest: [Operation] = []
            if let scripts = parameters.scripts {
                operation = scripts[rank][scriptPosition[rank]]
                rest = operation.then
                scriptPosition[rank] += 1
            } else {
                let access = Operation(page: Int.random(in: 0..<parameters.pageCount, using: &rng), isWrite: Bool.random(using: &rng))
                if model == .release {
                    // Race-free: the access holds its page's lock.
                    operation = .acquire(access.page)
                    rest = [access, .release(access.page)]
                } else {
                    operation = access
                }
            }
            let thread = AppThread(id: nextThreadID, rank: rank, page: operation.page, isWrite: operation.isWrite, sync: operation.sync,
                                   racy: operation.racy, state: .runnable, rest: rest)
            nextThreadID += 1
            let started = "rank \(rank) starts \(describe(operation))"
            note(started)
            threads.append(thread)
            try execute(thread: threads.count - 1)
        case let .deliver(from, to):
            let bytes = channels[from][to].removeFirst()
            let message: MemoryMessage
            do {
                message = try MemoryMessage(decoding: bytes, limits: cores[to].configuration.messageLimits)
            } catch {
                throw fail("rank \(to) cannot decode a message from rank \(from): \(error)")
            }
            messagesDelivered += 1
            note("deliver \(from) -> \(to): \(message)")
            apply(cores[to].onMessage(message, from: from), at: to)
        case let .report(index):
            threads[index].state = .reported
            let thread = threads[index]
            note("rank \(thread.rank) engine takes \(thread.isWrite ? "write" : "read") fault on page \(thread.page)")
            let effects = thread.isWrite ? cores[thread.rank].onWriteFault(page: thread.page) : cores[thread.rank].onReadFault(page: thread.page)
            apply(effects, at: thread.rank)
        case let .run(index):
            try execute(thread: index)
        case let .prefetch(rank, pages, forWriting):
            prefetchesLeft -= 1
            note("rank \(rank) hints it will \(forWriting ? "write" : "read") pages \(pages)")
            apply(cores[rank].onPrefetch(pages: pages, forWriting: forWriting), at: rank)
        }
    }

    /// The thread's access runs if the protection allows it, else it faults.
    private mutating func execute(thread index: Int) throws(Failure) {
        let thread = threads[index]
        if let sync = thread.sync {
            nextTicket += 1
            let ticket = nextTicket
            switch sync {
            case let .acquire(lock):
                if locks[lock]?.holder != nil {
                    threads[index].state = .lockWait
                    note("rank \(thread.rank) waits for lock \(lock)")
                    return
                }
                locks[lock, default: SimulatedLock()].holder = thread.rank
                threads[index].state = .syncing(ticket)
                note("rank \(thread.rank) acquires lock \(lock)")
                apply(cores[thread.rank].onAcquire(lock: lock, grant: locks[lock]!.payload, ticket: SyncTicket(ticket)), at: thread.rank)
            case let .release(lock):
                precondition(locks[lock]?.holder == thread.rank, "a script releases lock \(lock) its rank does not hold")
                threads[index].state = .syncing(ticket)
                note("rank \(thread.rank) releases lock \(lock)")
                apply(cores[thread.rank].onRelease(lock: lock, ticket: SyncTicket(ticket)), at: thread.rank)
            }
            return
        }
        guard protection[thread.rank][thread.page].allows(write: thread.isWrite) else {
            threads[index].state = .faulted
            note("rank \(thread.rank) \(thread.isWrite ? "write" : "read") of page \(thread.page) faults")
            return
        }
        if thread.isWrite {
            let value = nextValue
            nextValue += 1
            contents[thread.rank][thread.page] = encode(value)
            lastWrite[thread.page] = value
            completedWrites += 1
            note("rank \(thread.rank) wrote \(value) to page \(thread.page)")
        } else {
            let value = decode(contents[thread.rank][thread.page])
            completedReads += 1
            note("rank \(thread.rank) read \(value) from page \(thread.page)")
            reads.append((thread.rank, thread.page, value))
            if checksReads && !thread.racy && value != lastWrite[thread.page] {
                throw fail("rank \(thread.rank) read \(value) from page \(thread.page), but the last write was \(lastWrite[thread.page])")
            }
        }
        advance(thread: index)
    }

    /// The thread goes on to its next operation, or ends.
    private mutating func advance(thread index: Int) {
        if threads[index].rest.isEmpty {
            threads.remove(at: index)
            return
        }
        let next = threads[index].rest.removeFirst()
        threads[index].page = next.page
        threads[index].isWrite = next.isWrite
        threads[index].sync = next.sync
        threads[index].racy = next.racy
        threads[index].state = .runnable
    }

    /// A synchronisation hook completed: the thread waiting on it goes on.
    private mutating func syncCompleted(_ ticket: UInt64, payload: [UInt8], at rank: Int) {
        guard let index = threads.firstIndex(where: { $0.state == .syncing(ticket) }) else {
            preconditionFailure("rank \(rank) completed a synchronisation nobody waits for")
        }
        precondition(threads[index].rank == rank, "rank \(rank) completed rank \(threads[index].rank)'s synchronisation")
        if case let .release(lock) = threads[index].sync {
            locks[lock] = SimulatedLock(holder: nil, payload: payload)
            for i in threads.indices where threads[i].state == .lockWait && threads[i].sync == .acquire(lock) { threads[i].state = .runnable }
        }
        let done = "rank \(rank) \(threads[index].sync.map { describe(Operation(page: 0, isWrite: false, sync: $0)) } ?? "") done"
        note(done)
        advance(thread: index)
    }

    private func describe(_ operation: Operation) -> String {
        switch operation.sync {
        case let .acquire(lock)?: "acquire of lock \(lock)"
        case let .release(lock)?: "release of lock \(lock)"
        case nil: "\(operation.isWrite ? "write" : "read") of page \(operation.page)"
        }
    }

    private mutating func apply(_ effects: [MemoryEffect], at rank: Int) {
        for effect in effects {
            switch effect {
            case let .send(to, message):
                precondition(to != rank, "a core sent a message to itself")
                channels[rank][to].append(message.encoded())
            case let .sendWithPage(to, page, message):
                precondition(to != rank, "a core sent a page to itself")
                channels[rank][to].append(message.attaching(contents: contents[rank][page]).encoded())
            case let .installPage(page, bytes):
                contents[rank][page] = bytes
            case let .makeTwin(page):
                twins[rank][page] = contents[rank][page]
            case let .sendDiff(to, page, message):
                precondition(to != rank, "a core sent a diff to itself")
                let diff = PageDiff.encode(twin: twins[rank][page] ?? contents[rank][page], current: contents[rank][page])
                twins[rank][page] = nil
                channels[rank][to].append(message.attaching(diff: diff).encoded())
            case let .storeDiff(page, key):
                storedDiffs[rank][key] = PageDiff.encode(twin: twins[rank][page] ?? contents[rank][page], current: contents[rank][page])
                twins[rank][page] = nil
            case let .sendStoredDiffs(to, message):
                precondition(to != rank, "a core sent diffs to itself")
                let store = storedDiffs[rank]
                channels[rank][to].append(message.attachingStoredDiffs { key in
                    guard let d = store[key] else { preconditionFailure("rank \(rank) sent a diff it never stored: \(key)") }
                    return d
                }.encoded())
            case let .dropStoredDiffs(last):
                storedDiffs[rank] = storedDiffs[rank].filter { $0.key.interval > last }
            case let .applyDiff(page, diff):
                do { try PageDiff.apply(diff, to: &contents[rank][page]) } catch { preconditionFailure("a decoded diff failed to apply: \(error)") }
            case let .setProtection(pages, access):
                for page in pages { protection[rank][page] = access }
            case let .completeFaults(page):
                for index in threads.indices where threads[index].rank == rank && threads[index].sync == nil && threads[index].page == page
                    && (threads[index].state == .faulted || threads[index].state == .reported) {
                    threads[index].state = .runnable
                }
            case let .syncReady(ticket, payload):
                syncCompleted(ticket.id, payload: payload, at: rank)
            case let .record(statistic):
                recorded[rank].apply(statistic)
            }
        }
    }

    // MARK: Checks

    /// Plain loops: this runs after every step of thousands of schedules.
    private func check() throws(Failure) {
        for page in 0..<parameters.pageCount {
            var writer: Int?
            var readers = 0
            for rank in cores.indices {
                let access = protection[rank][page]
                if cores[rank].access(ofPage: page) != access {
                    throw fail("rank \(rank) core says page \(page) is \(cores[rank].access(ofPage: page)), its effects set \(access)")
                }
                guard model == .sequential, access >= .read else { continue }
                readers += 1
                if access == .readWrite {
                    if let other = writer { throw fail("page \(page) writable at ranks \(other) and \(rank)") }
                    writer = rank
                }
                if decode(contents[rank][page]) != lastWrite[page] {
                    throw fail("rank \(rank) can read page \(page) holding \(decode(contents[rank][page])), not the last write \(lastWrite[page])")
                }
            }
            if let writer, readers > 1 { throw fail("page \(page) writable at rank \(writer) and readable at \(readers - 1) other ranks") }
        }
        for case let sc as SCProtocol in cores where sc.maxQueueDepth > sc.queueBound {
            throw fail("rank \(sc.configuration.rank) manager queue reached \(sc.maxQueueDepth) > bound \(sc.queueBound)")
        }
    }

    /// At a state with no action left: every operation completed and every
    /// core is quiescent.
    func checkHealed() throws(Failure) {
        if let stuck = threads.first {
            throw fail("rank \(stuck.rank) \(stuck.isWrite ? "write" : "read") fault on page \(stuck.page) never completed")
        }
        for rank in cores.indices {
            if !cores[rank].isQuiescent { throw fail("rank \(rank) still has protocol work in progress after all messages were delivered") }
            if recorded[rank] != cores[rank].statistics { throw fail("rank \(rank) recorded statistics differ from its counters") }
        }
        if completedReads + completedWrites != parameters.totalOperations {
            throw fail("\(completedReads + completedWrites) of \(parameters.totalOperations) operations completed")
        }
    }

    /// A hash of everything that decides what can happen next and what the
    /// checks see: the cores' state (by reflection, so a protocol needs no
    /// extra code), memory, protections, channels, threads and scripts.
    /// Counters are left out (statistics, high-water marks): they only grow,
    /// so with them a schedule that ping-pongs a page would never revisit a
    /// state and the state graph would be infinite.
    var fingerprint: Int {
        var h = Hasher()
        // A core wrapped in another (a planted bug) is taken apart too, so
        // that its counters are left out as well.
        func combine(core: Any) {
            for child in Mirror(reflecting: core).children where !(child.value is MemoryStatistics) && child.label != "maxQueueDepth" {
                h.combine(child.label)
                if child.value is any CoherenceProtocol {
                    combine(core: child.value)
                } else {
                    h.combine(String(reflecting: child.value))
                }
            }
        }
        for core in cores { combine(core: core) }
        h.combine(contents)
        h.combine(twins)
        h.combine(storedDiffs)
        for row in protection { for access in row { h.combine(access.rawValue) } }
        h.combine(channels)
        for t in threads {
            h.combine(t.rank)
            h.combine(t.page)
            h.combine(t.isWrite)
            h.combine(t.state)
            h.combine(t.sync)
            h.combine(t.racy)
            for o in t.rest {
                h.combine(o.page)
                h.combine(o.isWrite)
                h.combine(o.sync)
            }
        }
        for (lock, l) in locks.sorted(by: { $0.key < $1.key }) {
            h.combine(lock)
            h.combine(l)
        }
        h.combine(scriptPosition)
        h.combine(operationsLeft)
        h.combine(prefetchesLeft)
        h.combine(lastWrite)
        h.combine(nextValue)
        return h.finalize()
    }

    // MARK: Helpers

    /// A page holds one UInt64 (the simulation's page size is 8 bytes).
    private func encode(_ value: UInt64) -> [UInt8] {
        withUnsafeBytes(of: value.littleEndian) { Array($0) }
    }

    private func decode(_ bytes: [UInt8]) -> UInt64 {
        UInt64(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
    }

    private mutating func note(_ line: @autoclosure () -> String) {
        if keepTrace { trace.append(line()) }
    }

    func fail(_ message: String) -> Failure {
        Failure(seed: seed, message: message, trace: trace)
    }
}
