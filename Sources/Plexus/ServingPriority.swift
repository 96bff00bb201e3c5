import CFault
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
/// the peer that sent it sits idle (Papers/ivy-remote-fault.md, records of
/// 80f304c and a078faf). TreadMarks served requests in a SIGIO handler, which
/// interrupts the computation at once; `realtime` gets that from the
/// scheduler, in a way that fits each thread's role:
/// - The fault thread runs `SCHED_FIFO` at the lowest priority. It works
///   while its own application thread waits for a page, on that thread's
///   CPU when the process is bound (`CPUBindingMode`), and preempts it at
///   once.
/// - The readers are ordinary threads at nice −20, the highest ordinary
///   priority, with the shortest time slice the kernel allows (100 µs), so
///   that a woken one preempts an application thread on its CPU almost at
///   once. A woken real-time thread is placed on the CPU it last ran on
///   whenever that CPU runs only ordinary threads, even with another CPU
///   idle: a request preempted one process's computation while the other
///   CPU sat idle, and the two hops of a miss crossed CPUs and woke an idle
///   one each time. An ordinary thread is placed on an idle CPU if there is one,
///   else next to the thread that woke it (Papers/ivy-remote-fault.md,
///   record of 5cbd7cc).
/// Their work is short and every wait in them is bounded; the kernel's
/// real-time throttling still leaves ordinary threads 5 % of each CPU if
/// the fault thread ever ran away.
public enum ServingPriority: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Raised as far as this process may (root or CAP_SYS_NICE: both;
    /// RLIMIT_RTPRIO of at least 1: the fault thread; RLIMIT_NICE of 40:
    /// the readers), ordinary scheduling for the rest; `--stats` and
    /// `--summary` say what each process got.
    case auto
    /// Ordinary scheduling, like the application's threads.
    case normal
    /// The fault thread real-time and the readers at nice −20; the job
    /// fails at start if a process may not have both.
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

/// What a serving thread does, which decides how it is raised.
enum ServingRole: Sendable {
    /// A transport reader: serves the messages of one peer.
    case reader
    /// The engine's fault thread: takes this process's faults.
    case faultThread
}

/// The scheduling this process's serving threads get, decided once at start.
final class ServingScheduler: Sendable {
    /// True if the fault thread is made real-time.
    let realtimeFaultThread: Bool
    /// True if the readers get nice −20.
    let raisedReaders: Bool
    /// What was decided: "realtime (…)", "partly raised (…)", "normal", or
    /// "normal (…why…)"; `report` adds the threads that did not get it.
    let outcome: String
    /// Serving threads whose priority change failed after the probe
    /// succeeded (should stay 0; reported in statistics).
    private let failures = Atomic<Int>(0)
    /// Readers whose slice the kernel did not take (before Linux 6.12 an
    /// ordinary thread has no slice of its own); reported in statistics.
    private let unsliced = Atomic<Int>(0)

    /// SCHED_RESET_ON_FORK from <linux/sched.h>: a child forked by a
    /// serving thread starts with ordinary scheduling and nice 0.
    private static let resetOnFork: Int32 = 0x4000_0000
    /// The readers' nice value.
    static let readerNice: Int32 = -20
    /// The readers' time slice: the shortest the kernel allows (a reader's
    /// work is tens of microseconds), so that a woken reader preempts an
    /// application thread on its CPU almost at once.
    static let readerSliceNanos: UInt64 = 100_000

    init(_ requested: ServingPriority) throws(PlexusError) {
        guard requested != .normal else {
            realtimeFaultThread = false
            raisedReaders = false
            outcome = "normal"
            return
        }
        let fifo = Self.probe(fifo: true), nice = Self.probe(fifo: false)
        func why(_ e: Int32) -> String { String(cString: strerror(e)) }
        if requested == .realtime && (fifo != 0 || nice != 0) {
            let refused = [fifo != 0 ? "real-time scheduling (\(why(fifo)))" : nil, nice != 0 ? "nice \(Self.readerNice) (\(why(nice)))" : nil]
                .compactMap { $0 }.joined(separator: " and ")
            throw .join("--serving-priority realtime: this process may not use \(refused); run as root, grant CAP_SYS_NICE, raise RLIMIT_RTPRIO to at least 1 and RLIMIT_NICE to 40 (ulimit -r 1 -e 40), or use --serving-priority auto or normal")
        }
        realtimeFaultThread = fifo == 0
        raisedReaders = nice == 0
        switch (fifo == 0, nice == 0) {
        case (true, true): outcome = "realtime (fault thread SCHED_FIFO, readers nice \(Self.readerNice), 100 us slice)"
        case (true, false): outcome = "partly raised (fault thread SCHED_FIFO; readers normal: nice \(Self.readerNice) refused: \(why(nice)))"
        case (false, true): outcome = "partly raised (readers nice \(Self.readerNice), 100 us slice; fault thread normal: real-time scheduling refused: \(why(fifo)))"
        case (false, false): outcome = "normal (real-time scheduling refused: \(why(fifo)))"
        }
    }

    /// Raises the calling thread as its role says, if this process does.
    func applyToCurrentThread(_ role: ServingRole) {
        switch role {
        case .faultThread:
            guard realtimeFaultThread else { return }
            if Self.set(fifo: true) != 0 { failures.add(1, ordering: .relaxed) }
        case .reader:
            guard raisedReaders else { return }
            // Kernels before 6.12 ignore or refuse the slice: then nice alone.
            if cfault_set_ordinary_thread(Self.readerNice, Self.readerSliceNanos) != 0,
               Self.set(fifo: false) != 0 || Self.setNice(Self.readerNice) != 0 {
                failures.add(1, ordering: .relaxed)
                return
            }
            if Self.currentSlice() != Self.readerSliceNanos { unsliced.add(1, ordering: .relaxed) }
        }
    }

    var failedThreads: Int { failures.load(ordering: .relaxed) }

    /// `outcome`, with the threads that did not get all of it.
    var report: String {
        var s = outcome
        let failed = failedThreads, noSlice = unsliced.load(ordering: .relaxed)
        if failed > 0 { s += ", but \(failed) thread(s) could not be switched" }
        if noSlice > 0 { s += "\(failed > 0 ? " and" : ", but") the kernel gave \(noSlice) reader(s) no 100 us slice (Linux 6.12 or later sets one)" }
        return s
    }

    /// The calling thread's EEVDF slice in nanoseconds (se.slice in
    /// /proc/thread-self/sched), nil where the kernel shows none.
    static func currentSlice() -> UInt64? {
        guard let sched = try? String(contentsOfFile: "/proc/thread-self/sched", encoding: .utf8) else { return nil }
        for line in sched.split(separator: "\n") where line.hasPrefix("se.slice") {
            return line.split(separator: ":").last.flatMap { UInt64($0.trimmingCharacters(in: .whitespaces)) }
        }
        return nil
    }

    /// Whether the calling thread may be raised (real-time, or to the
    /// readers' nice value): raises it and puts it straight back (going
    /// back is always permitted). Returns 0 or the errno.
    private static func probe(fifo: Bool) -> Int32 {
        if fifo {
            let error = set(fifo: true)
            if error == 0 { _ = set(fifo: false, raised: false) }
            return error
        }
        errno = 0
        let before = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        if before == -1 && errno != 0 { return errno }
        let error = setNice(readerNice)
        if error == 0 { _ = setNice(before) }
        return error
    }

    /// Sets the calling thread's nice value (on Linux, `setpriority` with
    /// who 0 changes the calling thread only). Returns 0 or the errno.
    private static func setNice(_ value: Int32) -> Int32 {
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, value) == 0 ? 0 : errno
    }

    /// SCHED_FIFO at the lowest priority, or SCHED_OTHER; a raised thread
    /// also gets SCHED_RESET_ON_FORK.
    private static func set(fifo: Bool, raised: Bool = true) -> Int32 {
        var param = sched_param(sched_priority: fifo ? sched_get_priority_min(Int32(SCHED_FIFO)) : 0)
        let policy = (fifo ? Int32(SCHED_FIFO) : Int32(SCHED_OTHER)) | (raised ? resetOnFork : 0)
        return pthread_setschedparam(pthread_self(), policy, &param)
    }
}
