import Foundation
import Synchronization
import Wire

/// Faults a test can inject between named peers. Directions are
/// (from, to) pairs of process IDs; a one-way partition drops frames in one
/// direction only.
public struct FaultPlan: Sendable {
    /// Frames from `.0` to `.1` are dropped.
    public var blocked: Set<Pair> = []
    /// Extra delay for every frame on a link, in milliseconds.
    public var delayMillis: [Pair: Int] = [:]
    /// Random extra delay up to this many ms for every frame (may reorder frames).
    public var jitterMillis = 0
    /// Probability that a frame is sent twice.
    public var duplicateProbability = 0.0
    /// Probability that a frame is dropped (on any link).
    public var dropProbability = 0.0

    public struct Pair: Hashable, Sendable {
        public var from: ProcessID
        public var to: ProcessID
        public init(_ from: ProcessID, _ to: ProcessID) {
            self.from = from
            self.to = to
        }
    }

    public init() {}

    public mutating func partitionOneWay(from a: ProcessID, to b: ProcessID) { blocked.insert(Pair(a, b)) }
    public mutating func partition(_ a: ProcessID, _ b: ProcessID) {
        blocked.insert(Pair(a, b))
        blocked.insert(Pair(b, a))
    }
    public mutating func heal() { blocked.removeAll() }
}

/// A `Transport` around another that drops, delays and duplicates frames and
/// partitions links according to a `FaultPlan` that a test changes at will.
/// Outgoing frames are filtered on send and incoming ones on receipt, so a
/// partition holds even if only one side wraps its transport. Randomness comes
/// from a seeded generator, so a failing run can be replayed.
public final class FaultInjectingTransport: Transport, @unchecked Sendable {
    public let inner: any Transport
    private let plan: Locked<FaultPlan>
    private let rng: Locked<SplitMix64>
    private let delayQueue = DispatchQueue(label: "plexus-fault-delay")
    public let stats: Locked<Stats>

    public struct Stats: Sendable {
        /// Frames dropped on send (partition or random loss).
        public var dropped = 0
        public var duplicated = 0
        public var delayed = 0
        /// Incoming frames discarded on receipt because of a partition.
        public var filteredOnReceipt = 0
    }

    /// `makeInner` receives the handler the wrapper filters incoming frames with.
    public init(
        seed: UInt64, plan: FaultPlan = FaultPlan(), handler: TransportHandler,
        makeInner: (TransportHandler) throws(TransportError) -> any Transport
    ) throws(TransportError) {
        let planBox = Locked(plan)
        let rngBox = Locked(SplitMix64(seed: seed))
        self.plan = planBox
        self.rng = rngBox
        // The local ID is known only once the inner transport exists; incoming
        // filtering reads it through this box.
        let localBox = Locked<ProcessID?>(nil)
        let statsBox = Locked(Stats())
        stats = statsBox
        let filtered = TransportHandler(
            onFrame: { from, frame in
                let me = localBox.value
                let blocked = planBox.withLock { p in me.map { p.blocked.contains(.init(from, $0)) } ?? false }
                if blocked { statsBox.withLock { $0.filteredOnReceipt += 1 } } else { handler.onFrame(from, frame) }
            },
            onPeerLost: handler.onPeerLost)
        inner = try makeInner(filtered)
        localBox.withLock { $0 = inner.localID }
    }

    public var localID: ProcessID { inner.localID }

    public func update(_ change: (inout FaultPlan) -> Void) { plan.withLock { change(&$0) } }

    public func send(_ frame: Frame, to peer: ProcessID) throws(TransportError) {
        let link = FaultPlan.Pair(localID, peer)
        let p = plan.value
        if p.blocked.contains(link) {
            stats.withLock { $0.dropped += 1 }
            return
        }
        let (drop, dup, jitter) = rng.withLock { r in
            (r.chance(p.dropProbability), r.chance(p.duplicateProbability),
             p.jitterMillis > 0 ? Int(r.next() % UInt64(p.jitterMillis + 1)) : 0)
        }
        if drop {
            stats.withLock { $0.dropped += 1 }
            return
        }
        let copies = dup ? 2 : 1
        if dup { stats.withLock { $0.duplicated += 1 } }
        let delay = (p.delayMillis[link] ?? 0) + jitter
        if delay == 0 {
            for _ in 0..<copies { try inner.send(frame, to: peer) }
            return
        }
        stats.withLock { $0.delayed += 1 }
        let inner = self.inner
        delayQueue.asyncAfter(deadline: .now() + .milliseconds(delay)) {
            for _ in 0..<copies { try? inner.send(frame, to: peer) }
        }
    }

    public func disconnect(_ peer: ProcessID) { inner.disconnect(peer) }
    public func close() { inner.close() }
}

/// Small seeded generator (SplitMix64): deterministic across platforms, so a
/// seed printed by a failing test replays the same faults.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    public mutating func chance(_ p: Double) -> Bool {
        p > 0 && Double(next() >> 11) / Double(1 << 53) < p
    }
}

// MARK: Link faults: below the integrity check

/// Faults injected into the frames of real connections, below their
/// sequence numbers (`Frame.sequence`): a dropped frame leaves a gap the
/// receiver finds, a duplicated one arrives twice with the same number, a
/// reset ends the connection abruptly (TCP RST), delay and jitter hold
/// frames back without reordering them (as a slow network under TCP would).
/// Unlike `FaultInjectingTransport`, which loses or repeats whole messages
/// above the transport, these are faults of the link itself, which the
/// integrity check must turn into a clear error (`LinkFault`).
///
/// For tests only. A job's processes read it at join from
/// `PLEXUS_FAULT_INJECTION`, e.g.
/// `seed=7,drop=0.001,duplicate=0.001,delay=2,jitter=3,reset=0.0005`, and
/// apply it to every link between ranks (`TCPTransport(linkFaults:)`).
/// Each link draws from its own generator, seeded from `seed` and the two
/// process IDs, so a link's decisions depend only on the frames it carries.
public struct LinkFaultPlan: Sendable, Equatable, CustomStringConvertible {
    public static let environmentVariable = "PLEXUS_FAULT_INJECTION"
    public static let syntax = "seed=N,drop=P,duplicate=P,reset=P,delay=MS,jitter=MS: each part optional, "
        + "P a probability per frame from 0 to 1, MS whole milliseconds from 0 to \(maxMillis), "
        + "e.g. seed=7,drop=0.001,delay=2,jitter=3"
    static let maxMillis = 10_000

    public var seed: UInt64 = 0
    /// Probability that a frame is not sent (its number is used up).
    public var drop = 0.0
    /// Probability that a frame is sent twice, with the same number.
    public var duplicate = 0.0
    /// Probability that, instead of a frame, the connection is reset.
    public var reset = 0.0
    /// Every frame is held back this long ...
    public var delayMillis = 0
    /// ... plus a random 0...jitter ms, but never overtakes an earlier one.
    public var jitterMillis = 0

    public init() {}

    /// Parses `syntax`. Throws a message that quotes the bad part and the syntax.
    public init(parsing text: String) throws(LinkFaultPlanError) {
        func bad(_ part: Substring, _ why: String) -> LinkFaultPlanError {
            LinkFaultPlanError(description: "\(Self.environmentVariable)='\(text)': '\(part)' \(why); expected \(Self.syntax)")
        }
        var seen = Set<Substring>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            let kv = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard kv.count == 2, !kv[0].isEmpty else { throw bad(part, "is not NAME=VALUE") }
            let (key, value) = (kv[0].trimmingSpaces, kv[1].trimmingSpaces)
            guard seen.insert(key).inserted else { throw bad(part, "repeats \(key)") }
            switch key {
            case "seed":
                guard let v = UInt64(value) else { throw bad(part, "is not a whole number >= 0") }
                seed = v
            case "drop", "duplicate", "reset":
                guard let p = Double(value), p >= 0, p <= 1 else { throw bad(part, "is not a probability from 0 to 1") }
                switch key {
                case "drop": drop = p
                case "duplicate": duplicate = p
                default: reset = p
                }
            case "delay", "jitter":
                guard let ms = Int(value), ms >= 0, ms <= Self.maxMillis else {
                    throw bad(part, "is not whole milliseconds from 0 to \(Self.maxMillis)")
                }
                if key == "delay" { delayMillis = ms } else { jitterMillis = ms }
            default:
                throw bad(part, "names no fault")
            }
        }
    }

    /// Reads `PLEXUS_FAULT_INJECTION` from `environment`: nil when unset or empty.
    public static func fromEnvironment(_ environment: [String: String]) throws(LinkFaultPlanError) -> LinkFaultPlan? {
        guard let text = environment[environmentVariable], !text.isEmpty else { return nil }
        return try LinkFaultPlan(parsing: text)
    }

    var delays: Bool { delayMillis > 0 || jitterMillis > 0 }

    public var description: String {
        "seed=\(seed),drop=\(drop),duplicate=\(duplicate),reset=\(reset),delay=\(delayMillis),jitter=\(jitterMillis)"
    }
}

/// A `PLEXUS_FAULT_INJECTION` value that does not parse; says the syntax.
public struct LinkFaultPlanError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
}

private extension Substring {
    var trimmingSpaces: Substring {
        var s = self
        while s.first == " " { s.removeFirst() }
        while s.last == " " { s.removeLast() }
        return s
    }
}

/// One connection's injected faults. Used only under the connection's send
/// lock, so its generator needs no lock of its own and decisions are taken
/// in the order the frames are numbered.
final class InjectedFaults: @unchecked Sendable {
    let plan: LinkFaultPlan
    private var rng: SplitMix64
    /// Holds frames back when the plan delays; nil otherwise (frames are
    /// written by the sender, as without faults).
    let line: DelayLine?

    enum Decision {
        case drop
        case reset
        /// Send `copies` times, after `delayNanos` (0: now).
        case send(copies: Int, delayNanos: UInt64)
    }

    init(plan: LinkFaultPlan, local: ProcessID, peer: ProcessID, fd: Int32) {
        self.plan = plan
        var mix = SplitMix64(seed: plan.seed ^ (local &* 0x9E37_79B9_7F4A_7C15) ^ (peer &* 0xC2B2_AE3D_27D4_EB4F))
        rng = SplitMix64(seed: mix.next())
        line = plan.delays ? DelayLine(fd: fd, name: "plexus-delay \(peer)") : nil
    }

    func decide() -> Decision {
        if rng.chance(plan.reset) { return .reset }
        if rng.chance(plan.drop) { return .drop }
        let copies = rng.chance(plan.duplicate) ? 2 : 1
        guard plan.delays else { return .send(copies: copies, delayNanos: 0) }
        let jitter = plan.jitterMillis > 0 ? rng.next() % UInt64(plan.jitterMillis * 1_000_000 + 1) : 0
        return .send(copies: copies, delayNanos: UInt64(plan.delayMillis) * 1_000_000 + jitter)
    }
}

/// Writes frames to a socket after a delay, in the order given: a frame is
/// due no earlier than the one before it, so delays never reorder (TCP
/// does not). Bounded: a sender waits while `capacity` frames are held.
final class DelayLine: @unchecked Sendable {
    static let capacity = 4096
    private let fd: Int32
    private let cond = NSCondition()
    private var queue: [(due: UInt64, header: [UInt8], payload: [UInt8])] = []
    private var head = 0
    private var lastDue: UInt64 = 0
    private var closing = false
    private var done = false
    /// Set when a write failed: later frames fail with it.
    private var failure: Int32?

    init(fd: Int32, name: String) {
        self.fd = fd
        let t = Thread { [self] in run() }
        t.name = name
        t.start()
    }

    /// Queues a frame (header and payload) to be written `delayNanos` from
    /// now, or after the frame before it. Returns an errno if the line
    /// failed or closed.
    func put(_ header: [UInt8], _ payload: [UInt8], delayNanos: UInt64, waiting: Bool = true) -> Int32? {
        cond.lock()
        defer { cond.unlock() }
        while waiting && queue.count - head >= Self.capacity && failure == nil && !closing { cond.wait() }
        if let failure { return failure }
        if closing || queue.count - head >= Self.capacity { return EPIPE }
        let due = max(DispatchTime.now().uptimeNanoseconds + delayNanos, lastDue)
        lastDue = due
        queue.append((due, header, payload))
        cond.broadcast()
        return nil
    }

    /// Writes what is held (each at its time), then stops; waits for that at
    /// most `timeoutSeconds` (a peer that does not read could hold it up
    /// forever). Frames sent before a close are not lost, as with TCP.
    func finish(timeoutSeconds: Double = 2) {
        cond.lock()
        closing = true
        cond.broadcast()
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while !done && cond.wait(until: deadline) {}
        cond.unlock()
    }

    /// Stops at once, dropping what is held (an abrupt reset). A write in
    /// progress ends when the socket is shut down.
    func abort() {
        cond.lock()
        closing = true
        if failure == nil { failure = ECONNRESET }
        queue.removeAll()
        head = 0
        cond.broadcast()
        cond.unlock()
    }

    /// Waits until the line's thread has stopped (after `finish` or `abort`
    /// and the socket shut down): then nothing writes to the descriptor.
    func waitUntilStopped() {
        cond.lock()
        while !done { cond.wait() }
        cond.unlock()
    }

    private func run() {
        cond.lock()
        defer {
            done = true
            cond.broadcast()
            cond.unlock()
        }
        while true {
            if failure != nil { return }
            guard head < queue.count else {
                if closing { return }
                cond.wait()
                continue
            }
            let next = queue[head]
            let now = DispatchTime.now().uptimeNanoseconds
            if next.due > now {
                _ = cond.wait(until: Date().addingTimeInterval(Double(next.due - now) / 1e9))
                continue
            }
            head += 1
            if head > 1024 && head * 2 > queue.count {
                queue.removeFirst(head)
                head = 0
            }
            cond.broadcast()   // room for a waiting sender
            cond.unlock()
            let err = next.header.withUnsafeBytes { h in next.payload.withUnsafeBytes { p in Sys.writeAll(fd, h, p) } }
            cond.lock()
            if let err, failure == nil {
                failure = err
                queue.removeAll()
                head = 0
                cond.broadcast()
            }
        }
    }
}
