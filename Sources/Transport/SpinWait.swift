#if canImport(Glibc)
import Glibc
#endif

/// How a thread waits for an answer that is microseconds away (a barrier's
/// release, a lock grant): it polls briefly before it sleeps.
///
/// On these 2-core VMs a thread that sleeps lets its CPU halt, and waking it
/// again costs about as much as the message it waited for (MEASUREMENTS.md).
/// A bounded poll avoids that when the answer comes within the budget. The
/// poll calls `sched_yield` every few checks, so a thread that the answer
/// depends on (a transport reader woken on this CPU) runs at once instead of
/// waiting for the poller's time slice to end: polling without yielding did
/// not make the barrier faster (Papers/ivy-remote-fault.md, record of 9441081).
public struct SpinWait: Sendable {
    /// How long to poll before the caller sleeps; 0 disables polling.
    public var nanoseconds: UInt64
    /// A `sched_yield` after this many checks.
    public var yieldEvery: Int

    public init(nanoseconds: UInt64, yieldEvery: Int = 4) {
        precondition(yieldEvery > 0, "yieldEvery must be positive")
        self.nanoseconds = nanoseconds
        self.yieldEvery = yieldEvery
    }

    /// The runtime's default for waits on a peer's reply: 50 µs, about two
    /// loopback round trips here, or `PLEXUS_WAIT_SPIN_NS` (0 turns polling off).
    public static let replyImminent = SpinWait(nanoseconds: {
        guard let s = getenv("PLEXUS_WAIT_SPIN_NS"), let v = UInt64(String(cString: s)) else { return 50_000 }
        return v
    }())

    /// Polls `ready` until it returns true or the budget is spent; returns
    /// its last answer. The caller then waits the usual way if it is false.
    @inline(__always)
    public func poll(until ready: () -> Bool) -> Bool {
        if ready() { return true }
        if nanoseconds == 0 { return false }
        let end = Self.now() &+ nanoseconds
        var checks = 0
        while true {
            if ready() { return true }
            checks += 1
            if checks % yieldEvery == 0 {
                sched_yield()
                if Self.now() >= end { return ready() }
            }
        }
    }

    private static func now() -> UInt64 {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return UInt64(t.tv_sec) &* 1_000_000_000 &+ UInt64(t.tv_nsec)
    }
}
