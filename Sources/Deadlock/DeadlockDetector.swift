/// What a detector does about a deadlock it finds.
public enum DeadlockPolicy: String, Sendable, CaseIterable, Equatable {
    /// The victim's blocked call fails with `DeadlockError.victim(of:)`.
    case abort
    /// The victim reports the cycle (`DeadlockEffect.deadlock`) and stays blocked.
    case report
    /// No probes are sent or forwarded.
    case off
}

/// Who a detector belongs to and how it probes; times are durations since an
/// origin the integration picks (the same for every input of one detector).
public struct DeadlockConfiguration: Sendable, Equatable {
    /// The process's global PID.
    public var pid: UInt64
    /// The node it runs on, for reports (at most `Hop.maxNodeBytes` of UTF-8).
    public var node: String
    public var policy: DeadlockPolicy
    /// How long a wait lasts before its process starts probing.
    public var threshold: Duration
    /// The first pause between probe rounds of one wait; it doubles each round
    /// up to `maxReprobeInterval`, so a long wait costs a bounded trickle.
    public var reprobeInterval: Duration
    public var maxReprobeInterval: Duration
    /// Paths, and so cycles, longer than this are not followed.
    public var maxPath: Int
    /// Initiators whose latest forwarded probe is remembered per wait; past it
    /// the memory is cleared (more traffic, never a wrong answer).
    public var forwardMemory: Int

    public init(pid: UInt64, node: String, policy: DeadlockPolicy = .abort,
                threshold: Duration = .milliseconds(100),
                reprobeInterval: Duration = .milliseconds(100),
                maxReprobeInterval: Duration = .milliseconds(1600),
                maxPath: Int = 4096, forwardMemory: Int = 4096) {
        precondition(node.utf8.count <= Hop.maxNodeBytes, "node name longer than \(Hop.maxNodeBytes) bytes")
        precondition(threshold >= .zero && reprobeInterval > .zero && maxReprobeInterval >= reprobeInterval, "bad probe timing")
        precondition(maxPath >= 2 && maxPath <= DeadlockMessage.Limits().maxPath && forwardMemory > 0, "bad bounds")
        self.pid = pid
        self.node = node
        self.policy = policy
        self.threshold = threshold
        self.reprobeInterval = reprobeInterval
        self.maxReprobeInterval = maxReprobeInterval
        self.maxPath = maxPath
        self.forwardMemory = forwardMemory
    }
}

/// What the integration must do, in order.
public enum DeadlockEffect: Sendable, Equatable {
    /// Send `message` to the detector of process `to` (any order, any delay;
    /// losing or duplicating it costs time, never correctness).
    case send(DeadlockMessage, to: UInt64)
    /// This process, the victim, found `cycle`: record and show it (policy
    /// abort or report). Emitted once per wait.
    case deadlock(DeadlockCycle)
    /// Policy abort: fail this process's blocked call of wait `sequence` with
    /// `error`, then report `waitEnded(sequence:)`.
    case abortWait(sequence: UInt64, error: DeadlockError)
}

/// Counters for reports and tests.
public struct DeadlockStatistics: Sendable, Equatable {
    public var probesStarted = 0
    public var probesForwarded = 0
    public var probesDropped = 0
    public var confirmsSent = 0
    public var confirmsDropped = 0
    public var deadlocksDeclared = 0
    public init() {}
}

/// The distributed deadlock detector of one process: Chandy–Misra–Haas edge
/// chasing in the AND model, with a confirmation pass. A value fed one input
/// at a time, returning the effects to perform; no threads, sockets, clocks
/// or randomness (time is an input), so the same inputs give the same effects.
/// Not thread-safe: call it from one thread or actor at a time.
///
/// ## Integration
/// Every blocking primitive (lock, barrier, receive from one sender, waiting
/// for an exit, anything new) reports through the same three calls:
/// - `waitStarted(_:now:)` when the process blocks: wait number k on resource
///   R, for the set of processes whose action it needs (a lock: the holder and
///   those queued ahead; a barrier: those not arrived; a receive: the sender;
///   an exit: that process);
/// - `waitChanged(sequence:waitingFor:now:)` when that set changes;
/// - `waitEnded(sequence:)` when the call returns, however it returns.
/// Plus `tick(now:)` from a timer (by `nextDeadline`) and
/// `receive(_:now:)` for each decoded `DeadlockMessage`. Effects send messages
/// to other processes' detectors, report a deadlock, or fail this process's
/// own blocked call.
///
/// The edges must be *stable*: an edge P→Q is reported only while Q itself
/// must act for P's wait to end (or P's call returns by itself, e.g. a
/// timeout, which ends the wait). So a lock names as holder only a process
/// whose acquisition completed on its side — a grant whose reply was lost is
/// not "held" — and a receive waits for its sender only while no message from
/// it is in flight (messages and probes share the ordered channel, and an
/// arrival ends the wait before a later probe is handled). A process waits
/// for itself never: a self-edge is dropped, which rules out the classic
/// phantom self-cycle of a lost lock reply. One detector identity serves one
/// blocking context: a process whose threads block independently needs one
/// identity per thread.
///
/// ## Detection
/// A process blocked for `threshold` starts a probe round: a `Probe`
/// (initiator, wait sequence, round, path = [its own hop]) to each process it
/// waits for, again every `reprobeInterval` (doubling, bounded) while the
/// same wait lasts, so a real cycle is found once messages flow. A process
/// forwards a probe only while it is blocked, appending its hop (pid, wait
/// sequence, edge-set version, node, resource), to every process it waits
/// for, and only
/// - if its PID is lower than the initiator's: a cycle through a higher PID
///   has another victim, whose own probe will find it;
/// - if it is not on the path yet (the probe entered a cycle the initiator
///   is not on; that cycle's members find it);
/// - once per (initiator, initiator's sequence, round) per version of its own
///   wait, and never for a round older than one it has forwarded.
/// So only the victim's probes go round a cycle, and the traffic of one round
/// is at most one message per wait-for edge.
///
/// ## No phantoms
/// A probe that returns to its initiator in the same wait and version only
/// says that each hop's edge existed when the probe passed it, at different
/// times: in between, a process on the path may have been granted what it
/// waited for and blocked again elsewhere. So before declaring, the
/// initiator sends a `Confirm` around the cycle: each member checks it is
/// still in the wait and version its hop recorded (hence still waits for the
/// next member: a version names one unchanged edge set), and passes it on;
/// the initiator checks itself last. Sequences and versions never repeat, so
/// "same wait and version" means the edge existed without a break from the
/// probe's visit to the confirm's. Every probe visit precedes every confirm
/// visit (the confirm starts after the probe returned), so at the moment the
/// probe returned every edge of the cycle existed at once. Each member was
/// blocked then, and by stability none can act until a member acts: the cycle
/// is a deadlock. Lost, late, duplicated or reordered probes and confirms can
/// only fail a check (the cycle is found in a later round); a duplicate of a
/// confirm that passes again names the same real cycle, and the victim
/// declares at most once per wait.
///
/// ## Resolution
/// The victim of a cycle is its highest global PID, which every member
/// computes the same way (`DeadlockCycle.victim`). Only the victim declares:
/// a probe returning to an initiator that is not the highest on its path is
/// dropped. Under `abort` the victim fails its own call; the others do
/// nothing. Under `report` it reports and stays blocked.
public struct DeadlockDetector: Sendable {
    /// Deliberate defects, for tests that show the checks catch them.
    struct Defects: OptionSet, Sendable {
        let rawValue: Int
        /// Declare on the probe's return, without the confirmation pass.
        static let skipConfirmation = Defects(rawValue: 1)
        /// Forward probes and pass confirms with the last wait after it ended.
        static let actAfterWaitEnded = Defects(rawValue: 2)
    }

    struct Current: Sendable {
        var wait: Wait
        var since: Duration
        var version: UInt64 = 0
        var nextProbe: Duration
        var interval: Duration
        var round: UInt32 = 0
        /// The victim has declared this wait's deadlock.
        var declared = false
        /// Per initiator: the newest (sequence, round) forwarded in this version.
        var forwarded: [UInt64: (sequence: UInt64, round: UInt32)] = [:]
    }

    public let configuration: DeadlockConfiguration
    public private(set) var statistics = DeadlockStatistics()
    var current: Current?
    /// The last wait's state, kept only for the `actAfterWaitEnded` defect.
    var ended: Current?
    var lastSequence: UInt64?
    var defects: Defects = []

    public init(configuration: DeadlockConfiguration) {
        self.configuration = configuration
    }

    init(configuration: DeadlockConfiguration, defects: Defects) {
        self.configuration = configuration
        self.defects = defects
    }

    var pid: UInt64 { configuration.pid }

    /// The current wait, if the process is blocked.
    public var wait: Wait? { current?.wait }

    /// When `tick` next has something to do (nil: nothing until an input).
    public var nextDeadline: Duration? {
        guard configuration.policy != .off, let c = current, !c.declared, !c.wait.waitingFor.isEmpty else { return nil }
        return c.nextProbe
    }

    // MARK: Inputs

    /// The process blocks in `wait` (its own PID, a sequence number higher
    /// than any before). Ends a current wait the integration did not end.
    public mutating func waitStarted(_ wait: Wait, now: Duration) -> [DeadlockEffect] {
        precondition(wait.waiter == pid, "wait of pid \(wait.waiter) given to the detector of pid \(pid)")
        precondition(lastSequence.map { wait.sequence > $0 } ?? true, "wait sequence \(wait.sequence) not above \(lastSequence ?? 0)")
        lastSequence = wait.sequence
        var w = wait
        w.waitingFor.remove(pid)
        current = Current(wait: w, since: now, nextProbe: now + configuration.threshold, interval: configuration.reprobeInterval)
        ended = nil
        return []
    }

    /// The processes wait `sequence` needs changed (someone arrived, a lock
    /// changed hands, the queue moved). Stale sequences are ignored.
    public mutating func waitChanged(sequence: UInt64, waitingFor: Set<UInt64>, now: Duration) -> [DeadlockEffect] {
        guard var c = current, c.wait.sequence == sequence else { return [] }
        var set = waitingFor
        set.remove(pid)
        guard set != c.wait.waitingFor else { return [] }
        c.wait.waitingFor = set
        c.version += 1
        c.forwarded = [:]
        // The new edges are probed soon, but not before the threshold.
        c.interval = configuration.reprobeInterval
        c.nextProbe = max(c.since + configuration.threshold, min(c.nextProbe, now + configuration.reprobeInterval))
        current = c
        return []
    }

    /// Wait `sequence` is over (its call returned or failed).
    public mutating func waitEnded(sequence: UInt64) {
        guard let c = current, c.wait.sequence == sequence else { return }
        if defects.contains(.actAfterWaitEnded) { ended = c }
        current = nil
    }

    /// Time passed: starts a probe round when one is due.
    public mutating func tick(now: Duration) -> [DeadlockEffect] {
        guard configuration.policy != .off, var c = current, !c.declared, now >= c.nextProbe,
              !c.wait.waitingFor.isEmpty else { return [] }
        c.round &+= 1
        c.nextProbe = now + c.interval
        c.interval = min(c.interval * 2, configuration.maxReprobeInterval)
        current = c
        statistics.probesStarted += 1
        let probe = Probe(initiator: pid, sequence: c.wait.sequence, round: c.round, path: [hop(c)])
        return c.wait.waitingFor.sorted().map { .send(.probe(probe), to: $0) }
    }

    /// A message from another process's detector.
    public mutating func receive(_ message: DeadlockMessage, now: Duration) -> [DeadlockEffect] {
        guard configuration.policy != .off else { return [] }
        switch message {
        case .probe(let p): return onProbe(p)
        case .confirm(let c): return onConfirm(c)
        }
    }

    // MARK: Probes and confirms

    private func hop(_ c: Current) -> Hop {
        Hop(pid: pid, sequence: c.wait.sequence, version: c.version, node: configuration.node, resource: c.wait.resource)
    }

    /// The wait this process acts on: the current one (or, with the
    /// `actAfterWaitEnded` defect, the last one).
    private var acting: Current? {
        current ?? (defects.contains(.actAfterWaitEnded) ? ended : nil)
    }

    private mutating func onProbe(_ p: Probe) -> [DeadlockEffect] {
        guard !p.path.isEmpty, p.path[0].pid == p.initiator, p.path[0].sequence == p.sequence else { return drop() }
        if p.initiator == pid {
            // Back home: a candidate cycle, if this is still the same wait.
            guard let c = current, !c.declared, c.wait.sequence == p.sequence, c.version == p.path[0].version,
                  p.path.count >= 2, p.path.allSatisfy({ $0.pid <= pid }) else { return drop() }
            if defects.contains(.skipConfirmation) { return declare(p.path) }
            statistics.confirmsSent += 1
            let confirm = Confirm(cycle: p.path, index: 1)
            return [.send(.confirm(confirm), to: confirm.recipient)]
        }
        guard pid < p.initiator, !p.path.contains(where: { $0.pid == pid }), p.path.count < configuration.maxPath,
              var c = acting, !c.wait.waitingFor.isEmpty else { return drop() }
        if let seen = c.forwarded[p.initiator], (seen.sequence, seen.round) >= (p.sequence, p.round) { return drop() }
        if c.forwarded.count >= configuration.forwardMemory { c.forwarded = [:] }
        c.forwarded[p.initiator] = (p.sequence, p.round)
        if current != nil { current = c } else { ended = c }
        statistics.probesForwarded += 1
        var next = p
        next.path.append(hop(c))
        return c.wait.waitingFor.sorted().map { .send(.probe(next), to: $0) }
    }

    private mutating func onConfirm(_ m: Confirm) -> [DeadlockEffect] {
        let n = m.cycle.count
        guard n >= 2, (1...n).contains(m.index), m.recipient == pid,
              m.cycle.allSatisfy({ $0.pid <= m.cycle[0].pid }) else { return dropConfirm() }
        let mine = m.cycle[m.index % n]
        if m.index == n {
            // Round the cycle: the victim checks itself last.
            guard let c = current, !c.declared, c.wait.sequence == mine.sequence, c.version == mine.version
            else { return dropConfirm() }
            return declare(m.cycle)
        }
        let next = m.cycle[(m.index + 1) % n].pid
        guard let c = acting, c.wait.sequence == mine.sequence, c.version == mine.version,
              c.wait.waitingFor.contains(next) else { return dropConfirm() }
        statistics.confirmsSent += 1
        return [.send(.confirm(Confirm(cycle: m.cycle, index: m.index + 1)), to: next)]
    }

    private mutating func declare(_ path: [Hop]) -> [DeadlockEffect] {
        guard var c = current, !c.declared else { return [] }
        c.declared = true
        current = c
        statistics.deadlocksDeclared += 1
        let cycle = DeadlockCycle(path: path)
        precondition(cycle.victim == pid, "declaring a cycle whose victim is pid \(cycle.victim)")
        switch configuration.policy {
        case .abort: return [.deadlock(cycle), .abortWait(sequence: c.wait.sequence, error: .victim(of: cycle))]
        case .report: return [.deadlock(cycle)]
        case .off: return []
        }
    }

    private mutating func drop() -> [DeadlockEffect] {
        statistics.probesDropped += 1
        return []
    }

    private mutating func dropConfirm() -> [DeadlockEffect] {
        statistics.confirmsDropped += 1
        return []
    }
}
