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
