#if canImport(Glibc)
import Glibc
#endif
import CFault
import Foundation

/// Crash reports of job processes.
///
/// When a Swift program crashes, its runtime catches the signal, stops the
/// process's other threads, spawns the `swift-backtrace` helper and waits
/// for it; the helper reads the process's memory, writes the backtrace to
/// the process's output, and exits; then the process dies of its signal.
/// The helper is in the process's group, so a job stop (SIGTERM to every
/// group) killed it mid-report: a rank's output ended at "Backtracing from
/// 0x...", and the rank, whose blocked SIGTERM arrived once the handler
/// returned, was reported as stopped by the launcher instead of crashed.
/// That happened whenever another rank's failure stopped the job while a
/// rank still wrote its report, as when every rank of an SPMD program
/// reaches the same bug.
public enum CrashReports {
    /// `SWIFT_BACKTRACE` for job processes when the user did not set it: the
    /// crashed thread only, symbolicated, without registers or the image
    /// list, at most 40 frames (the 10 outermost among them), no colour and
    /// no prompt (a job's output is a pipe), on standard error with the
    /// runtime's own crash message. Swift's default for a non-terminal is
    /// the `full` preset: every thread, ~25 lines of registers and the
    /// image list, over 100 lines per crashing rank.
    public static let jobDefaults =
        "enable=yes,interactive=no,color=no,threads=crashed,registers=none,images=none,limit=40,top=10,output-to=stderr"

    /// The `SWIFT_BACKTRACE` a job process gets: the one in the job's
    /// environment, else the launcher's own (the user's), else `jobDefaults`.
    /// An empty value counts as unset.
    static func setting(job: [String: String], launcher: [String: String]) -> String {
        for v in [job["SWIFT_BACKTRACE"], launcher["SWIFT_BACKTRACE"]] {
            if let v, !v.isEmpty { return v }
        }
        return jobDefaults
    }

    /// How long a stopping job leaves a rank that is writing a crash report
    /// to finish it (a report takes well under a second; a loaded machine
    /// and a large program may need a few). Then it is stopped like the rest.
    public static let allowanceMillis = 20_000

    /// The crash reporters process `pid` started and is waiting for: its
    /// children named `swift-backtrace` (also `swift-backtrace-static`,
    /// whose 15-character process name is the same).
    static func reporters(of pid: pid_t) -> [pid_t] {
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
        var found: [pid_t] = []
        for e in entries {
            guard let child = pid_t(e), child != pid,
                  let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8),
                  let open = stat.firstIndex(of: "("), let close = stat.lastIndex(of: ")") else { continue }
            // "PID (NAME) STATE PPID ...": the name may hold spaces and parentheses.
            let name = stat[stat.index(after: open)..<close]
            let rest = stat[stat.index(after: close)...].split(separator: " ")
            guard name.hasPrefix("swift-backtrace"), rest.count > 1, pid_t(rest[1]) == pid else { continue }
            found.append(child)
        }
        return found
    }

    /// Waits until every crash reporter of `pid` has exited and then `pid`
    /// itself (it dies of its crash right after its report), at most until
    /// `deadline`. Returns false if the time ran out.
    static func waitForReport(of pid: pid_t, until deadline: Date) -> Bool {
        func millisLeft() -> Int32 { Int32(max(0, min(Double(Int32.max), deadline.timeIntervalSinceNow * 1000))) }
        while case let reporters = Self.reporters(of: pid), !reporters.isEmpty {
            // 1: the time ran out; -1: no pidfds (before Linux 5.3), so no
            // way to wait here: the process is stopped as before.
            for r in reporters where cfault_wait_for_exit(r, millisLeft()) != 0 { return false }
            if millisLeft() == 0 { return false }
        }
        // The process returns from its crash handler and dies of the signal
        // within microseconds; a stop signal sent before would beat it.
        return cfault_wait_for_exit(pid, min(millisLeft(), 2000)) == 0
    }
}
