import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// How the threads that serve peers are scheduled: the transport's reader
/// threads (which run the coherence protocol, locks and collectives for
/// every message that arrives) and the engine's fault thread.
///
/// These threads run for microseconds and then block. What delays them is
/// waiting for a CPU: on a 2-core machine, a message that wakes a serving
/// thread while the application computes on both CPUs waits until the
/// scheduler preempts the computation, often a millisecond or more, while
/// the peer that sent it sits idle (Papers/ivy-remote-fault.md, tenth and
/// eleventh sessions). TreadMarks served requests in a SIGIO handler, which
/// interrupts the computation at once; `realtime` gets the same effect from
/// the scheduler: a woken serving thread (SCHED_FIFO, lowest priority)
/// preempts ordinary threads immediately. Its work is short and every wait
/// in it is bounded, and the kernel's real-time throttling still leaves
/// ordinary threads 5 % of each CPU if a serving thread ever ran away.
public enum ServingPriority: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Real-time if this process may (root, CAP_SYS_NICE or RLIMIT_RTPRIO
    /// of at least 1), otherwise ordinary scheduling; `--stats` and
    /// `--summary` say which one each process got.
    case auto
    /// Ordinary scheduling, like the application's threads.
    case normal
    /// Real-time, and the job fails at start if a process may not use it.
    case realtime

    public var description: String { rawValue }

    /// PLEXUS_SERVING_PRIORITY, set by `plexus run --serving-priority`.
    static func fromEnvironment(_ env: [String: String]) throws(PlexusError) -> ServingPriority {
        guard let s = env["PLEXUS_SERVING_PRIORITY"], !s.isEmpty else { return .auto }
        guard let p = ServingPriority(rawValue: s) else {
            throw .join("PLEXUS_SERVING_PRIORITY='\(s)' is not one of \(allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return p
    }
}

/// The scheduling this process's serving threads get, decided once at start.
final class ServingScheduler: Sendable {
    /// True if serving threads are made real-time.
    let realtime: Bool
    /// What `--stats` reports: "realtime", "normal", or "normal (…why…)".
    let outcome: String
    /// Serving threads whose priority change failed after the probe
    /// succeeded (should stay 0; reported in statistics).
    private let failures = Atomic<Int>(0)

    /// SCHED_RESET_ON_FORK from <linux/sched.h>: a child forked by a
    /// serving thread starts with ordinary scheduling.
    private static let resetOnFork: Int32 = 0x4000_0000

    init(_ requested: ServingPriority) throws(PlexusError) {
        switch requested {
        case .normal:
            realtime = false
            outcome = "normal"
        case .auto, .realtime:
            let error = Self.probe()
            if error == 0 {
                realtime = true
                outcome = "realtime"
            } else if requested == .auto {
                realtime = false
                outcome = "normal (real-time scheduling refused: \(String(cString: strerror(error))))"
            } else {
                throw .join("--serving-priority realtime: this process may not use real-time scheduling (\(String(cString: strerror(error)))); run as root, grant CAP_SYS_NICE, raise RLIMIT_RTPRIO to at least 1 (ulimit -r 1), or use --serving-priority auto or normal")
            }
        }
    }

    /// Makes the calling thread real-time if the job's serving threads are.
    func applyToCurrentThread() {
        guard realtime else { return }
        if Self.set(fifo: true) != 0 { failures.add(1, ordering: .relaxed) }
    }

    var failedThreads: Int { failures.load(ordering: .relaxed) }

    /// Whether real-time scheduling is permitted: switches the calling
    /// thread to SCHED_FIFO and straight back (going back to ordinary
    /// scheduling is always permitted). Returns 0 or the errno.
    private static func probe() -> Int32 {
        let error = set(fifo: true)
        if error == 0 { _ = set(fifo: false) }
        return error
    }

    private static func set(fifo: Bool) -> Int32 {
        var param = sched_param(sched_priority: fifo ? sched_get_priority_min(Int32(SCHED_FIFO)) : 0)
        let policy = fifo ? Int32(SCHED_FIFO) | resetOnFork : Int32(SCHED_OTHER)
        return pthread_setschedparam(pthread_self(), policy, &param)
    }
}
