#if canImport(Glibc)
import Glibc
#endif
import Deadlock
import Foundation
import Wire

/// How a job's processes look for deadlocks among their waits, from the
/// environment `plexus run --deadlock POLICY --deadlock-threshold-ms N`
/// gives them (PLEXUS_DEADLOCK, PLEXUS_DEADLOCK_THRESHOLD_MS).
public struct DeadlockSettings: Sendable, Equatable {
    public var policy: DeadlockPolicy
    /// How long a wait lasts before its process starts probing.
    public var thresholdMillis: Int

    public static let policyVariable = "PLEXUS_DEADLOCK"
    public static let thresholdVariable = "PLEXUS_DEADLOCK_THRESHOLD_MS"
    public static let defaultThresholdMillis = 100
    /// The longest threshold accepted (one hour).
    public static let maxThresholdMillis = 3_600_000

    public init(policy: DeadlockPolicy = .abort, thresholdMillis: Int = Self.defaultThresholdMillis) {
        self.policy = policy
        self.thresholdMillis = thresholdMillis
    }

    /// The variables that give a job these settings.
    public var environment: [String: String] {
        [Self.policyVariable: policy.rawValue, Self.thresholdVariable: "\(thresholdMillis)"]
    }

    /// The settings in `environment`; unset variables take the defaults
    /// (abort, 100 ms). A value that does not parse says what would.
    public static func fromEnvironment(_ environment: [String: String]) throws(PlexusError) -> DeadlockSettings {
        var s = DeadlockSettings()
        if let p = environment[policyVariable], !p.isEmpty {
            guard let policy = DeadlockPolicy(rawValue: p) else {
                throw .join("\(policyVariable)=\(p) is not a deadlock policy: use abort, report or off (plexus run --deadlock)")
            }
            s.policy = policy
        }
        if let t = environment[thresholdVariable], !t.isEmpty {
            guard let ms = Int(t), (0...maxThresholdMillis).contains(ms) else {
                throw .join("\(thresholdVariable)=\(t) is not a number of milliseconds in 0...\(maxThresholdMillis) (plexus run --deadlock-threshold-ms)")
            }
            s.thresholdMillis = ms
        }
        return s
    }
}

/// This process's deadlock detector (`DeadlockDetector`) wired to the
/// runtime: blocking calls report their waits here, probes and confirms
/// travel to other ranks as `.deadlock` frames, a timer thread drives the
/// detector's probe rounds, and the detector's verdicts go to stderr and to
/// the blocked call it aborts.
///
/// The detector is a value guarded by `cond`; effects are performed after
/// `cond` is released, so callers may hold their own locks when they report
/// a wait (the lock order is theirs, then this one's; never the reverse).
final class DeadlockAgent: @unchecked Sendable {
    let settings: DeadlockSettings
    private let rank: Int
    private let cond = NSCondition()
    private var detector: DeadlockDetector
    private var lastSequence: UInt64 = 0
    private var stopped = false
    /// The timer thread sleeps (in `cond`), until this deadline (nil: until
    /// woken). Waits wake it only for an earlier deadline, so that a lock
    /// acquired without waiting long costs no thread wake-up.
    private var timerSleeping = false
    private var timerSleepsUntil: Duration?
    private var timer: Thread?
    private let origin = DispatchTime.now().uptimeNanoseconds

    /// Sends an encoded message to the process with this global PID.
    private let send: @Sendable (UInt64, [UInt8]) -> Void
    /// Fails the blocked call of wait `sequence` (policy abort).
    private var abort: (@Sendable (UInt64, DeadlockCycle) -> Void)?
    /// Whether this process holds (acquisition completed) lock `id`: a probe
    /// that comes along an edge "waits for lock L held by this process" is
    /// dropped unless it does.
    private var holds: (@Sendable (Int) -> Bool)?
    /// Writes a verdict (a deadlock found) on stderr.
    private let describe: @Sendable (DeadlockCycle, DeadlockPolicy) -> String
    /// Records the deadlocks this process is the victim of in the job's name
    /// service, if it has one; `pids` give the members' ranks.
    private let recorder: DeadlockRecorder?
    private let pids: [UInt64]

    init(settings: DeadlockSettings, rank: Int, pid: UInt64, node: String,
         send: @escaping @Sendable (UInt64, [UInt8]) -> Void,
         describe: @escaping @Sendable (DeadlockCycle, DeadlockPolicy) -> String,
         recorder: DeadlockRecorder? = nil, pids: [UInt64] = []) {
        self.settings = settings
        self.rank = rank
        self.send = send
        self.describe = describe
        self.recorder = recorder
        self.pids = pids
        var nodeName = node
        while nodeName.utf8.count > Hop.maxNodeBytes { nodeName.removeLast() }
        let threshold = Duration.milliseconds(settings.thresholdMillis)
        let reprobe = Duration.milliseconds(max(settings.thresholdMillis, 50))
        detector = DeadlockDetector(configuration: DeadlockConfiguration(
            pid: pid, node: nodeName, policy: settings.policy, threshold: threshold,
            reprobeInterval: reprobe, maxReprobeInterval: max(reprobe, .milliseconds(1600))))
    }

    /// Connects the lock service and starts the timer thread.
    func start(holds: @escaping @Sendable (Int) -> Bool, abort: @escaping @Sendable (UInt64, DeadlockCycle) -> Void) {
        cond.lock()
        self.holds = holds
        self.abort = abort
        cond.unlock()
        let t = Thread { [self] in runTimer() }
        t.name = "plexus-deadlock"
        t.stackSize = 1 << 20
        timer = t
        t.start()
    }

    /// Stops the timer thread; later waits are not probed. Waits (a few
    /// seconds at most) for the deadlock records still being written.
    func stop() {
        cond.lock()
        stopped = true
        cond.broadcast()
        cond.unlock()
        recorder?.flush(seconds: 5)
    }

    private func now() -> Duration { .nanoseconds(Int64(DispatchTime.now().uptimeNanoseconds &- origin)) }

    // MARK: Waits

    /// A blocked call begins: returns its wait sequence.
    func waitStarted(_ resource: Resource, waitingFor: Set<UInt64>) -> UInt64 {
        cond.lock()
        lastSequence += 1
        let seq = lastSequence
        _ = detector.waitStarted(Wait(waiter: detector.configuration.pid, sequence: seq, waitingFor: waitingFor, resource: resource), now: now())
        nudgeTimer()
        cond.unlock()
        return seq
    }

    func waitChanged(_ sequence: UInt64, waitingFor: Set<UInt64>) {
        cond.lock()
        _ = detector.waitChanged(sequence: sequence, waitingFor: waitingFor, now: now())
        nudgeTimer()
        cond.unlock()
    }

    func waitEnded(_ sequence: UInt64) {
        cond.lock()
        detector.waitEnded(sequence: sequence)
        cond.unlock()
    }

    /// The detector's counters so far.
    var statistics: DeadlockStatistics {
        cond.lock()
        defer { cond.unlock() }
        return detector.statistics
    }

    // MARK: Messages and time

    /// A `.deadlock` frame from another rank.
    func receive(_ payload: [UInt8], size: Int) throws(WireError) {
        let message = try DeadlockMessage(decoding: payload, limits: .init(maxPath: max(2, size), maxBytes: 1 << 20))
        // The edge the message came along, "the previous hop waits for a lock
        // this process holds", must hold here and now (see `LockService`).
        let previous: Hop
        switch message {
        case .probe(let p): previous = p.path[p.path.count - 1]
        case .confirm(let c): previous = c.cycle[c.index - 1]
        }
        if case .lock(let id) = previous.resource {
            cond.lock()
            let holds = self.holds
            cond.unlock()
            guard let holds, id <= UInt64(Int.max), holds(Int(id)) else { return }
        }
        cond.lock()
        let effects = detector.receive(message, now: now())
        cond.unlock()
        perform(effects)
    }

    /// Under `cond`: wakes the timer thread if the detector's next deadline
    /// comes before the one it sleeps until.
    private func nudgeTimer() {
        guard timerSleeping, let deadline = detector.nextDeadline else { return }
        if let until = timerSleepsUntil, until <= deadline { return }
        cond.broadcast()
    }

    private func runTimer() {
        cond.lock()
        while !stopped {
            guard let deadline = detector.nextDeadline else {
                (timerSleeping, timerSleepsUntil) = (true, nil)
                cond.wait()
                timerSleeping = false
                continue
            }
            let t = now()
            if t < deadline {
                let (s, a) = (deadline - t).components
                let seconds = Double(s) + Double(a) / 1e18
                (timerSleeping, timerSleepsUntil) = (true, deadline)
                _ = cond.wait(until: Date(timeIntervalSinceNow: seconds))
                timerSleeping = false
                continue
            }
            let effects = detector.tick(now: t)
            cond.unlock()
            perform(effects)
            cond.lock()
        }
        cond.unlock()
    }

    private func perform(_ effects: [DeadlockEffect]) {
        for e in effects {
            switch e {
            case .send(let m, let to):
                send(to, m.encoded())
            case .deadlock(let cycle):
                writeStderr("plexus[\(rank)]: \(describe(cycle, settings.policy))")
                if let recorder {
                    recorder.record(DeadlockRecord(cycle: cycle, ranks: DeadlockReport.ranks(of: cycle, pids: pids),
                                                   job: recorder.job, policy: settings.policy))
                }
            case .abortWait(let sequence, let error):
                guard case .victim(let cycle) = error else { continue }
                cond.lock()
                let abort = self.abort
                cond.unlock()
                abort?(sequence, cycle)
            }
        }
    }
}

/// What a deadlock victim's failed call reports (`PlexusError.deadlock`):
/// the cycle, with the job's ranks, and what to do about it.
public struct DeadlockReport: Sendable, CustomStringConvertible {
    /// The cycle, starting at the victim (the process that got this report).
    public let cycle: DeadlockCycle
    /// The rank of each process of `cycle.hops`, in the same order (-1 for
    /// a global PID that is not one of this job's).
    public let ranks: [Int]
    /// The lock whose acquire failed.
    public let lock: Int
    /// The locks the victim still held when its acquire failed: the others
    /// go on once it releases them.
    public let held: [Int]

    init(cycle: DeadlockCycle, pids: [UInt64], lock: Int, held: [Int]) {
        self.cycle = cycle
        ranks = Self.ranks(of: cycle, pids: pids)
        self.lock = lock
        self.held = held
    }

    static func ranks(of cycle: DeadlockCycle, pids: [UInt64]) -> [Int] {
        cycle.hops.map { hop in pids.firstIndex(of: hop.pid) ?? -1 }
    }

    /// "rank 1 (pid 2@10.0.0.2) waits for lock 2, held by rank 0 (pid 1@10.0.0.1);
    /// rank 0 (pid 1@10.0.0.1) waits for lock 1, held by rank 1 (pid 2@10.0.0.2)".
    static func text(of cycle: DeadlockCycle, ranks: [Int]) -> String {
        func who(_ i: Int) -> String { "rank \(ranks[i]) (\(cycle.hops[i].label))" }
        return cycle.hops.indices.map { i in
            let next = (i + 1) % cycle.hops.count
            if case .lock(let id) = cycle.hops[i].resource { return "\(who(i)) waits for lock \(id), held by \(who(next))" }
            return "\(who(i)) waits on \(cycle.hops[i].resource) for \(who(next))"
        }.joined(separator: "; ")
    }

    /// The cycle as text, each process with its rank, global PID and node.
    public var cycleText: String { Self.text(of: cycle, ranks: ranks) }

    public var description: String {
        let heldText = held.map { "lock \($0)" }.joined(separator: ", ")
        return "deadlock among \(cycle.hops.count) processes: \(cycleText). This process, rank \(ranks[0]) (global PID \(cycle.victim), "
            + "the highest on the cycle), is its victim: its acquire of lock \(lock) failed and it does not hold lock \(lock). "
            + (held.isEmpty ? "" : "Release what it still holds (\(heldText)) so that the others can go on, then retry if you like. ")
            + "To avoid the deadlock, make every process acquire locks in one order (for example by increasing id)"
    }
}
