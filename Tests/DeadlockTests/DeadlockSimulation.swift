@testable import Deadlock
import Wire

/// A seeded world of 3–8 processes that take locks, meet at barriers, send,
/// receive and wait for each other's exit, each with its own
/// `DeadlockDetector`, exchanging encoded detector messages over a network
/// that loses (until `healAt`), delays, duplicates and so reorders them.
///
/// Schedules are built around at most one ring of 2–8 processes, each
/// waiting for the next through a random primitive: a *real* ring is a
/// deadlock; a *transient* one has its closing edge released just before its
/// first member blocks (the classic phantom shape). The other processes are
/// free (they hold what others wait for and let go after a while) or chains
/// that wait for a ring member, a free process or another chain (chains into
/// a cycle, chains ending at a free process, converging chains). Lock grants
/// may have their reply delayed, during which the lock manager already names
/// the grantee as holder.
///
/// The oracle sees the true wait-for graph: each process's history of
/// (wait sequence, set of processes waited for) by event number. A declared
/// cycle is real only if at one event every member was in the wait its hop
/// names and waited for the next member. At the end, a real ring must have
/// been declared exactly once, by its highest PID, and nothing else.
struct DeadlockSimulation {
    enum EdgeKind: CaseIterable, CustomStringConvertible {
        case lock, receive, exit, barrier
        var description: String {
            switch self {
            case .lock: "lock"
            case .receive: "receive"
            case .exit: "exit"
            case .barrier: "barrier"
            }
        }
    }

    enum Step: CustomStringConvertible {
        case acquire(lock: Int)
        case release(lock: Int)
        case releaseAll
        case compute(Int)
        case arrive(barrier: Int)
        case send(to: Int)
        case receive(from: Int)
        case awaitExit(Int)

        var description: String {
            switch self {
            case .acquire(let l): "acquire L\(l)"
            case .release(let l): "release L\(l)"
            case .releaseAll: "release all"
            case .compute(let ms): "compute \(ms)ms"
            case .arrive(let b): "arrive B\(b)"
            case .send(let to): "send to #\(to)"
            case .receive(let from): "receive from #\(from)"
            case .awaitExit(let p): "await exit of #\(p)"
            }
        }
    }

    enum RingKind: CustomStringConvertible {
        case none, real, transient
        var description: String {
            switch self {
            case .none: "no ring"
            case .real: "real ring"
            case .transient: "transient ring"
            }
        }
    }

    struct Scenario {
        var pids: [UInt64]
        var programs: [[Step]]
        var barriers: [Int: Set<Int>] = [:]
        var ring: [Int] = []
        var ringKind: RingKind
        var loss: Double
        var duplication: Double
        var maxDelay: Int
        var delayedGrant: Double
        var healAt = 1500
        var endAt = 7000
        var policy: DeadlockPolicy

        var description: String {
            var lines = ["\(ringKind) \(ring.map { "#\($0)" }.joined(separator: "→")), loss \(loss) until \(healAt)ms, "
                + "duplication \(duplication), delay ≤\(maxDelay)ms, delayed grants \(delayedGrant), policy \(policy)"]
            for (i, program) in programs.enumerated() {
                lines.append("  #\(i) pid \(pids[i]): " + program.map(\.description).joined(separator: "; "))
            }
            return lines.joined(separator: "\n")
        }

        /// Builds the schedule of one seed.
        static func generate(seed: UInt64, policy: DeadlockPolicy) -> Scenario {
            var rng = SplitMix64(seed: seed)
            let n = Int.random(in: 3...8, using: &rng)
            let pids = Array(Array(UInt64(1)...UInt64(200)).shuffled(using: &rng).prefix(n))
            let roll = Double.random(in: 0..<1, using: &rng)
            let ringKind: RingKind = roll < 0.15 ? .none : roll < 0.65 ? .real : .transient
            let k = ringKind == .none ? 0 : Int.random(in: 2...n, using: &rng)
            let order = Array(0..<n).shuffled(using: &rng)
            let ring = Array(order.prefix(k))

            // One outgoing edge per blocking process: (kind, target).
            var out: [Int: (EdgeKind, Int)] = [:]
            for j in 0..<k {
                let kind = EdgeKind.allCases.randomElement(using: &rng)!
                out[ring[j]] = (kind, ring[(j + 1) % k])
            }
            if ringKind == .transient {
                out[ring[k - 1]] = ([EdgeKind.lock, .receive].randomElement(using: &rng)!, ring[0])
            }
            var placed = ring
            for e in order.dropFirst(k) {
                if placed.isEmpty || rng.chance(0.35) {
                    placed.append(e)  // free: nothing to wait for
                    continue
                }
                out[e] = (EdgeKind.allCases.randomElement(using: &rng)!, placed.randomElement(using: &rng)!)
                placed.append(e)
            }

            var incoming = [[(waiter: Int, kind: EdgeKind)]](repeating: [], count: n)
            for (w, edge) in out.sorted(by: { $0.key < $1.key }) { incoming[edge.1].append((w, edge.0)) }
            var scenario = Scenario(pids: pids, programs: [], ring: ring, ringKind: ringKind,
                                    loss: [0, 0, 0.05, 0.2, 0.5].randomElement(using: &rng)!,
                                    duplication: [0, 0.1, 0.3].randomElement(using: &rng)!,
                                    maxDelay: [1, 5, 20, 80].randomElement(using: &rng)!,
                                    delayedGrant: [0, 0.3].randomElement(using: &rng)!,
                                    policy: policy)
            var barrierOf: [Int: Int] = [:]  // waiter -> barrier id (one outgoing edge each)
            for (w, edge) in out where edge.0 == .barrier {
                barrierOf[w] = w
                scenario.barriers[w] = [w, edge.1]
            }
            for p in 0..<n {
                var steps: [Step] = []
                let isFree = out[p] == nil
                if incoming[p].contains(where: { $0.kind == .lock }) { steps.append(.acquire(lock: p)) }
                let holdsClosingEdge = ringKind == .transient && p == ring[0]
                steps.append(.compute(isFree ? Int.random(in: 50...600, using: &rng)
                    : holdsClosingEdge ? Int.random(in: 150...900, using: &rng) : Int.random(in: 1...250, using: &rng)))
                var earlySend: Int?
                if holdsClosingEdge, let closing = out[ring[k - 1]] {
                    // The closing edge goes away just before this process blocks.
                    if closing.0 == .lock { steps.append(.release(lock: p)) } else {
                        steps.append(.send(to: ring[k - 1]))
                        earlySend = ring[k - 1]
                    }
                    // A short gap: probes already in flight arrive after it blocks.
                    steps.append(.compute(Int.random(in: 0...(rng.chance(0.5) ? 5 : 40), using: &rng)))
                }
                if let (kind, t) = out[p] {
                    switch kind {
                    case .lock: steps.append(.acquire(lock: t))
                    case .receive: steps.append(.receive(from: t))
                    case .exit: steps.append(.awaitExit(t))
                    case .barrier: steps.append(.arrive(barrier: barrierOf[p]!))
                    }
                    // The last member of a transient ring, released, keeps the
                    // others blocked past the threshold before it lets go.
                    let lingers = ringKind == .transient && p == ring[k - 1]
                    steps.append(.compute(lingers ? Int.random(in: 100...1000, using: &rng) : Int.random(in: 1...30, using: &rng)))
                }
                for (w, kind) in incoming[p] {
                    switch kind {
                    case .receive where w != earlySend: steps.append(.send(to: w))
                    case .barrier: steps.append(.arrive(barrier: barrierOf[w]!))
                    default: break
                    }
                }
                steps.append(.releaseAll)
                scenario.programs.append(steps)
            }
            return scenario
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var seed: UInt64
        var message: String
        var scenario: String
        var trace: [String]
        var description: String {
            var text = "seed \(seed): \(message)\n"
                + "replay: DEADLOCK_SEED=\(seed) swift test --skip-build --filter DeadlockTests.DeadlockSimulationTests/replay\n"
                + scenario
            if !trace.isEmpty { text += "\ntrace:\n" + trace.joined(separator: "\n") }
            return text
        }
    }

    struct Stats {
        var schedules = 0
        var realRings = 0
        var transientRings = 0
        var declared = 0
        var messages = 0
        var lost = 0
        var duplicated = 0
        var delayedGrants = 0

        mutating func add(_ o: Stats) {
            schedules += o.schedules; realRings += o.realRings; transientRings += o.transientRings
            declared += o.declared; messages += o.messages; lost += o.lost; duplicated += o.duplicated
            delayedGrants += o.delayedGrants
        }
    }

    // MARK: World state

    enum Event {
        case resume(Int)
        case grantReply(Int, sequence: UInt64)
        case deliver([UInt8], to: Int)
        case tick(Int)
    }

    struct Blocked {
        var sequence: UInt64
        var step: Step
        var reported: Set<UInt64>
    }

    struct Segment {
        var sequence: UInt64
        var waitingFor: Set<UInt64>
        var from: Int
        var to: Int?
    }

    struct Process {
        var pc = 0
        var blocked: Blocked?
        var exited = false
        var held: Set<Int> = []
        var sequence: UInt64 = 0
        var detector: DeadlockDetector
        var tickAt: Int?
    }

    let seed: UInt64
    let scenario: Scenario
    var rng: SplitMix64
    var now = 0
    var eventNumber = 0
    var queue = EventQueue<Event>()
    var processes: [Process]
    var holder: [Int: Int] = [:]
    var lockQueue: [Int: [Int]] = [:]
    var arrived: [Int: Set<Int>] = [:]
    var mailbox: [Int: [Int: Int]] = [:]
    var history: [[Segment]]
    var declarations: [(pid: UInt64, cycle: DeadlockCycle)] = []
    var aborted: [(pid: UInt64, sequence: UInt64)] = []
    var failures: [String] = []
    /// The event log of a traced run (a reference, so logging reads the world without mutating it).
    final class Trace {
        var lines: [String] = []
    }
    let trace: Trace?
    var stats = Stats()
    let index: [UInt64: Int]

    init(seed: UInt64, policy: DeadlockPolicy = .abort, defects: DeadlockDetector.Defects = [], tracing: Bool = false) {
        self.seed = seed
        scenario = Scenario.generate(seed: seed, policy: policy)
        rng = SplitMix64(seed: seed ^ 0xD1B5_4A32_D192_ED03)
        processes = scenario.pids.map { pid in
            let configuration = DeadlockConfiguration(pid: pid, node: "node-\(pid % 3)", policy: policy,
                                                      maxReprobeInterval: .milliseconds(800))
            return Process(detector: DeadlockDetector(configuration: configuration, defects: defects))
        }
        history = Array(repeating: [], count: scenario.pids.count)
        index = Dictionary(uniqueKeysWithValues: scenario.pids.enumerated().map { ($1, $0) })
        trace = tracing ? Trace() : nil
    }

    /// Runs one seed; nil if every check held.
    static func check(seed: UInt64, policy: DeadlockPolicy = .abort, defects: DeadlockDetector.Defects = [],
                      tracing: Bool = false) -> (Failure?, Stats) {
        var world = DeadlockSimulation(seed: seed, policy: policy, defects: defects, tracing: tracing)
        world.run()
        let failure = world.failures.first.map {
            Failure(seed: seed, message: $0, scenario: world.scenario.description, trace: world.trace?.lines ?? [])
        }
        return (failure, world.stats)
    }

    func log(_ line: @autoclosure () -> String) {
        trace?.lines.append("[\(now)ms #\(eventNumber)] \(line())")
    }

    func pid(_ p: Int) -> UInt64 { scenario.pids[p] }

    // MARK: Running

    mutating func run() {
        stats.schedules = 1
        if scenario.ringKind == .real { stats.realRings = 1 }
        if scenario.ringKind == .transient { stats.transientRings = 1 }
        for p in processes.indices { queue.push(.resume(p), at: 0) }
        while let (time, event) = queue.pop(), time <= scenario.endAt, failures.isEmpty {
            now = time
            eventNumber += 1
            switch event {
            case .resume(let p): execute(p)
            case .grantReply(let p, let sequence):
                if let b = processes[p].blocked, b.sequence == sequence {
                    log("#\(p) lock reply arrives")
                    unblock(p)
                }
            case .deliver(let bytes, let p): deliver(bytes, to: p)
            case .tick(let p):
                guard processes[p].tickAt == time else { break }
                processes[p].tickAt = nil
                let effects = processes[p].detector.tick(now: .milliseconds(time))
                apply(effects, of: p)
            }
            refresh()
            for p in processes.indices { scheduleTick(p) }
        }
        if failures.isEmpty { checkEnd() }
    }

    mutating func execute(_ p: Int) {
        let program = scenario.programs[p]
        while processes[p].blocked == nil, !processes[p].exited {
            guard processes[p].pc < program.count else { exit(p); return }
            let step = program[processes[p].pc]
            switch step {
            case .compute(let ms):
                processes[p].pc += 1
                queue.push(.resume(p), at: now + ms)
                return
            case .acquire(let lock):
                if let h = holder[lock] {
                    precondition(h != p, "schedule relocks L\(lock)")
                    lockQueue[lock, default: []].append(p)
                    block(p, step)
                } else {
                    holder[lock] = p
                    processes[p].held.insert(lock)
                    if now > 0, rng.chance(scenario.delayedGrant) { delayGrant(p, step) } else { processes[p].pc += 1 }
                }
            case .release(let lock):
                release(lock, by: p)
                processes[p].pc += 1
            case .releaseAll:
                for lock in processes[p].held.sorted() { release(lock, by: p) }
                processes[p].pc += 1
            case .arrive(let barrier):
                arrived[barrier, default: []].insert(p)
                if arrived[barrier] == scenario.barriers[barrier] {
                    arrived[barrier] = []
                    for q in processes.indices where q != p {
                        if case .arrive(let b)? = processes[q].blocked?.step, b == barrier { unblock(q) }
                    }
                    processes[p].pc += 1
                } else {
                    block(p, step)
                }
            case .send(let q):
                if case .receive(let from)? = processes[q].blocked?.step, from == p {
                    unblock(q)
                } else {
                    mailbox[q, default: [:]][p, default: 0] += 1
                }
                processes[p].pc += 1
            case .receive(let q):
                if let n = mailbox[p]?[q], n > 0 {
                    mailbox[p]![q] = n - 1
                    processes[p].pc += 1
                } else {
                    block(p, step)
                }
            case .awaitExit(let q):
                if processes[q].exited { processes[p].pc += 1 } else { block(p, step) }
            }
        }
    }

    /// The lock is this process's, but the reply saying so is late: it stays
    /// blocked, and the lock manager's view (holder = itself) is what a naive
    /// integration would report.
    mutating func delayGrant(_ p: Int, _ step: Step) {
        stats.delayedGrants += 1
        block(p, step)
        queue.push(.grantReply(p, sequence: processes[p].sequence), at: now + Int.random(in: 5...80, using: &rng))
    }

    mutating func release(_ lock: Int, by p: Int) {
        guard processes[p].held.remove(lock) != nil else { return }
        holder[lock] = nil
        guard var waiting = lockQueue[lock], !waiting.isEmpty else { return }
        let q = waiting.removeFirst()
        lockQueue[lock] = waiting
        holder[lock] = q
        processes[q].held.insert(lock)
        if rng.chance(scenario.delayedGrant) {
            stats.delayedGrants += 1
            queue.push(.grantReply(q, sequence: processes[q].sequence), at: now + Int.random(in: 5...80, using: &rng))
        } else {
            unblock(q)
        }
    }

    mutating func exit(_ p: Int) {
        for lock in processes[p].held.sorted() { release(lock, by: p) }
        processes[p].exited = true
        log("#\(p) exits")
        for q in processes.indices {
            if case .awaitExit(let t)? = processes[q].blocked?.step, t == p { unblock(q) }
        }
    }

    /// The set a naive integration reports (it may name the waiter itself).
    func reportedSet(_ p: Int, _ step: Step) -> Set<UInt64> {
        switch step {
        case .acquire(let lock):
            guard let h = holder[lock] else { return [] }
            if h == p { return [pid(p)] }  // the reply is late
            let queued = lockQueue[lock] ?? []
            let ahead = queued.firstIndex(of: p).map { queued[..<$0] } ?? []
            return Set([pid(h)] + ahead.map(pid))
        case .arrive(let barrier):
            return Set(scenario.barriers[barrier]!.subtracting(arrived[barrier] ?? []).map(pid))
        case .receive(let q), .awaitExit(let q):
            return [pid(q)]
        default:
            return []
        }
    }

    func resource(_ step: Step) -> Resource {
        switch step {
        case .acquire(let lock): .lock(UInt64(lock))
        case .arrive(let barrier): .barrier(UInt64(barrier))
        case .receive(let q): .receive(from: pid(q))
        case .awaitExit(let q): .exit(of: pid(q))
        default: .other(kind: "step", id: 0)
        }
    }

    mutating func block(_ p: Int, _ step: Step) {
        processes[p].sequence += 1
        let sequence = processes[p].sequence
        let set = reportedSet(p, step)
        processes[p].blocked = Blocked(sequence: sequence, step: step, reported: set)
        history[p].append(Segment(sequence: sequence, waitingFor: set.subtracting([pid(p)]), from: eventNumber))
        log("#\(p) blocks in wait \(sequence) on \(step) for \(set.sorted())")
        let effects = processes[p].detector.waitStarted(
            Wait(waiter: pid(p), sequence: sequence, waitingFor: set, resource: resource(step)), now: .milliseconds(now))
        apply(effects, of: p)
    }

    mutating func unblock(_ p: Int) {
        guard let b = processes[p].blocked else { return }
        processes[p].blocked = nil
        processes[p].pc += 1
        history[p][history[p].count - 1].to = eventNumber
        processes[p].detector.waitEnded(sequence: b.sequence)
        log("#\(p) wait \(b.sequence) ends")
        queue.push(.resume(p), at: now)
    }

    /// Reports changed wait sets to the detectors and the history.
    mutating func refresh() {
        for p in processes.indices {
            guard let b = processes[p].blocked else { continue }
            let set = reportedSet(p, b.step)
            guard set != b.reported else { continue }
            processes[p].blocked!.reported = set
            let truth = set.subtracting([pid(p)])
            if truth != history[p].last!.waitingFor {
                history[p][history[p].count - 1].to = eventNumber
                history[p].append(Segment(sequence: b.sequence, waitingFor: truth, from: eventNumber))
            }
            log("#\(p) wait \(b.sequence) now for \(set.sorted())")
            let effects = processes[p].detector.waitChanged(sequence: b.sequence, waitingFor: set, now: .milliseconds(now))
            apply(effects, of: p)
        }
    }

    mutating func scheduleTick(_ p: Int) {
        guard let deadline = processes[p].detector.nextDeadline else { return }
        let (seconds, attoseconds) = deadline.components
        let ms = max(now, Int(seconds) * 1000 + Int((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000))
        if let at = processes[p].tickAt, at <= ms { return }
        processes[p].tickAt = ms
        queue.push(.tick(p), at: ms)
    }

    mutating func deliver(_ bytes: [UInt8], to p: Int) {
        let message: DeadlockMessage
        do {
            message = try DeadlockMessage(decoding: bytes)
        } catch {
            failures.append("a detector's own encoding was rejected: \(error)")
            return
        }
        let effects = processes[p].detector.receive(message, now: .milliseconds(now))
        apply(effects, of: p)
    }

    mutating func apply(_ effects: [DeadlockEffect], of p: Int) {
        for effect in effects {
            switch effect {
            case .send(let message, let to):
                guard let q = index[to] else {
                    failures.append("pid \(pid(p)) sent to unknown pid \(to)")
                    return
                }
                stats.messages += 1
                if now < scenario.healAt, rng.chance(scenario.loss) {
                    stats.lost += 1
                    continue
                }
                let bytes = message.encoded()
                queue.push(.deliver(bytes, to: q), at: now + Int.random(in: 1...scenario.maxDelay, using: &rng))
                if rng.chance(scenario.duplication) {
                    stats.duplicated += 1
                    queue.push(.deliver(bytes, to: q), at: now + Int.random(in: 1...scenario.maxDelay * 3, using: &rng))
                }
            case .deadlock(let cycle):
                log("pid \(pid(p)) declares \(cycle)")
                stats.declared += 1
                checkDeclared(cycle, by: p)
                declarations.append((pid(p), cycle))
            case .abortWait(let sequence, let error):
                guard scenario.policy == .abort else {
                    failures.append("pid \(pid(p)) aborted a wait under policy \(scenario.policy)")
                    return
                }
                guard case .victim(let cycle) = error, declarations.last?.cycle == cycle, declarations.last?.pid == pid(p) else {
                    failures.append("pid \(pid(p)) aborted without declaring the cycle first: \(error)")
                    return
                }
                abort(p, sequence: sequence)
            }
        }
    }

    /// The victim's blocked call fails; the program unwinds: it lets go of
    /// what it holds and exits.
    mutating func abort(_ p: Int, sequence: UInt64) {
        guard let b = processes[p].blocked, b.sequence == sequence else {
            failures.append("pid \(pid(p)) aborted wait \(sequence), which is not its current wait")
            return
        }
        if aborted.contains(where: { $0 == (pid(p), sequence) }) {
            failures.append("pid \(pid(p)) aborted wait \(sequence) twice")
        }
        aborted.append((pid(p), sequence))
        log("#\(p) aborts wait \(sequence)")
        switch b.step {
        case .acquire(let lock): lockQueue[lock]?.removeAll { $0 == p }
        case .arrive(let barrier): arrived[barrier]?.remove(p)
        default: break
        }
        processes[p].blocked = nil
        history[p][history[p].count - 1].to = eventNumber
        processes[p].detector.waitEnded(sequence: sequence)
        exit(p)
    }

    // MARK: Oracle

    /// A declared cycle must have existed: one event at which every member
    /// was in the named wait and waited for the next member.
    mutating func checkDeclared(_ cycle: DeadlockCycle, by p: Int) {
        let hops = cycle.hops
        guard cycle.victim == pid(p), cycle.victim == hops.map(\.pid).max() else {
            failures.append("pid \(pid(p)) declared a cycle whose victim is pid \(cycle.victim): \(cycle)")
            return
        }
        var intervals: [[(Int, Int)]] = []
        for (i, hop) in hops.enumerated() {
            guard let q = index[hop.pid] else {
                failures.append("declared cycle names unknown pid \(hop.pid)")
                return
            }
            let next = hops[(i + 1) % hops.count].pid
            intervals.append(history[q].filter { $0.sequence == hop.sequence && $0.waitingFor.contains(next) }
                .map { ($0.from, $0.to ?? eventNumber + 1) })
        }
        let starts = intervals.flatMap { $0.map(\.0) }
        let real = starts.contains { t in intervals.allSatisfy { $0.contains { $0.0 <= t && t < $0.1 } } }
        if !real { failures.append("phantom deadlock declared by pid \(pid(p)): \(cycle)") }
    }

    /// The blocked processes' true edges now.
    func trueEdges() -> [UInt64: Set<UInt64>] {
        var edges: [UInt64: Set<UInt64>] = [:]
        for p in processes.indices where processes[p].blocked != nil { edges[pid(p)] = history[p].last!.waitingFor }
        return edges
    }

    /// Processes that reach themselves through processes no higher than
    /// themselves: the highest PIDs of the cycles of the true graph now.
    func cycleMaxima() -> Set<UInt64> {
        let edges = trueEdges()
        var maxima = Set<UInt64>()
        for start in edges.keys {
            var seen = Set<UInt64>()
            var stack = Array(edges[start] ?? [])
            while let v = stack.popLast() {
                if v == start { maxima.insert(start); break }
                if v < start, seen.insert(v).inserted { stack.append(contentsOf: edges[v] ?? []) }
            }
        }
        return maxima
    }

    /// At the end, with messages flowing long since: under abort no cycle is
    /// left; under report every cycle's highest PID has reported; a real
    /// ring's highest PID has declared; without a ring nothing was declared.
    /// (Lock queues can add cycles that detour through a chain waiting on a
    /// ring member's lock; each such cycle has its own victim.)
    mutating func checkEnd() {
        let ringMax = scenario.ring.map(pid).max()
        let declarers = Set(declarations.map(\.pid))
        let maxima = cycleMaxima()
        if declarers.count != declarations.count {
            failures.append("a process declared twice: " + declarations.map { "by pid \($0.pid): \($0.cycle)" }.joined(separator: "; "))
        }
        switch scenario.ringKind {
        case .real:
            if !declarers.contains(ringMax!) {
                failures.append("the real ring's highest pid \(ringMax!) did not declare; declared: "
                    + declarations.map { "by pid \($0.pid): \($0.cycle)" }.joined(separator: "; "))
            }
            if scenario.policy == .abort {
                if !maxima.isEmpty { failures.append("cycles left after resolution, highest pids \(maxima.sorted())") }
                if Set(aborted.map(\.pid)) != declarers { failures.append("aborted \(aborted), declared by \(declarers.sorted())") }
            } else {
                if !aborted.isEmpty { failures.append("aborted \(aborted) under policy \(scenario.policy)") }
                if maxima != declarers { failures.append("cycles with highest pids \(maxima.sorted()) remain, reported by \(declarers.sorted())") }
            }
        case .none, .transient:
            if !declarations.isEmpty {
                failures.append("no deadlock exists, yet declared: " + declarations.map { "by pid \($0.pid): \($0.cycle)" }.joined(separator: "; "))
            }
            if !maxima.isEmpty { failures.append("the schedule deadlocked \(maxima.sorted()) (schedule generator bug)") }
        }
    }
}

/// A binary min-heap of events by (time, insertion order): equal times keep
/// their order, so runs are deterministic.
struct EventQueue<Element> {
    private var heap: [(time: Int, order: Int, element: Element)] = []
    private var counter = 0

    var isEmpty: Bool { heap.isEmpty }

    mutating func push(_ element: Element, at time: Int) {
        counter += 1
        heap.append((time, counter, element))
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard less(i, parent) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> (Int, Element)? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var m = i
            if l < heap.count, less(l, m) { m = l }
            if r < heap.count, less(r, m) { m = r }
            if m == i { break }
            heap.swapAt(i, m)
            i = m
        }
        return (top.time, top.element)
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        (heap[a].time, heap[a].order) < (heap[b].time, heap[b].order)
    }
}
