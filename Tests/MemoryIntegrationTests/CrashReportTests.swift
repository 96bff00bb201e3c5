#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Plexus
import Testing
import TestSupport

// A crashing rank's backtrace must be short and complete,
// with shared memory as without. The crash scenarios of dsm-check
// (Tests/Workers/dsm-check/Crashes.swift) crash the last rank, or with
// `others=crash` every rank, in a distinctively named function.

/// One crash scenario: how the rank dies, the job's status and the frame
/// its backtrace must show.
struct CrashCase: Sendable, CustomTestStringConvertible {
    var scenario: String
    var signal: Int32
    var signalName: String
    /// The crashing function; nil where Swift's backtracer cannot unwind
    /// past libc's raise() (abort(): the trace stops at
    /// __pthread_kill_implementation, in any Swift program on this libc).
    var function: String?
    var testDescription: String { scenario }

    static let all = [
        CrashCase(scenario: "crash-fatal", signal: SIGILL, signalName: "SIGILL", function: "plexusCrashScenarioCallsFatalError()"),
        CrashCase(scenario: "crash-nil", signal: SIGILL, signalName: "SIGILL", function: "plexusCrashScenarioUnwrapsNil(_:)"),
        CrashCase(scenario: "crash-null", signal: SIGSEGV, signalName: "SIGSEGV", function: "plexusCrashScenarioStoresThroughNull(_:)"),
        CrashCase(scenario: "crash-abort", signal: SIGABRT, signalName: "SIGABRT", function: nil),
    ]
}

/// The job's environment: SWIFT_BACKTRACE empty counts as unset, so the
/// launcher's defaults apply even if the test runner's shell sets it.
private let launcherDefaults = ["SWIFT_BACKTRACE": ""]

/// Checks rank `rank`'s crash report in `job`: complete ("done", the
/// summary line), the crashed thread only, symbolicated, no registers or
/// images, short; and the launcher's note naming the rank and signal.
private func expectCompleteReport(_ job: Job, rank: Int, _ c: CrashCase, sourceLocation: SourceLocation = #_sourceLocation) {
    let lines = job.output.split(separator: "\n", omittingEmptySubsequences: false).filter { $0.hasPrefix("[\(rank)] ") }
    let report = lines.joined(separator: "\n")
    #expect(report.contains("Backtracing from 0x") && report.contains("... done ***"),
            "rank \(rank)'s report was cut off\n\(job.output)", sourceLocation: sourceLocation)
    #expect(!report.contains("failed ***"), "rank \(rank)'s backtracer failed\n\(job.output)", sourceLocation: sourceLocation)
    #expect(report.contains("Thread 0 \"dsm-check\" crashed:") && report.contains("Backtrace took"),
            "rank \(rank)'s report is incomplete\n\(job.output)", sourceLocation: sourceLocation)
    if let f = c.function {
        // A symbolicated frame of the crashing function, with its source line.
        #expect(lines.contains { $0.contains(" \(f) + ") && $0.contains("Crashes.swift:") },
                "rank \(rank)'s backtrace does not name \(f)\n\(job.output)", sourceLocation: sourceLocation)
    } else {
        #expect(lines.contains { $0.contains("  0 ") && $0.contains(" in libc.so.6") },
                "rank \(rank)'s backtrace has no first frame\n\(job.output)", sourceLocation: sourceLocation)
    }
    #expect(!report.contains("Registers:") && !report.contains("rip 0x") && !report.contains("Images ("),
            "rank \(rank)'s report dumps registers or images\n\(job.output)", sourceLocation: sourceLocation)
    #expect(lines.filter { $0.hasPrefix("[\(rank)] Thread ") }.count == 1,
            "rank \(rank)'s report shows threads that did not crash\n\(job.output)", sourceLocation: sourceLocation)
    #expect(lines.count < 60, "rank \(rank)'s output has \(lines.count) lines\n\(job.output)", sourceLocation: sourceLocation)
    #expect(job.stderr.contains("plexus: rank \(rank) (pid") && job.stderr.contains("killed by signal \(c.signal) (\(c.signalName))"),
            "the launcher does not report rank \(rank)'s crash\n\(job.stderr)", sourceLocation: sourceLocation)
}

@Suite(.serialized) struct CrashReportTests {
    /// The last rank crashes after joining and using shared memory (and,
    /// for comparison, in a job without it): its report is complete and
    /// short, and the job exits with the crash's status. Before, the full
    /// preset of a non-terminal printed every thread, ~25 lines of
    /// registers and the image list (over 100 lines).
    @Test(arguments: CrashCase.all, [true, false])
    func crashingRankShowsAShortCompleteBacktrace(_ c: CrashCase, sharedMemory: Bool) throws {
        let job = try runJob(ranks: 2, protocol: "sc", [c.scenario], plexusOptions: sharedMemory ? [] : ["--shared-memory", "0"],
                             environment: launcherDefaults, timeout: 30)
        #expect(job.status == 128 + c.signal, "exit status \(job.status)\n\(job.output)")
        expectCompleteReport(job, rank: 1, c)
        #expect(!job.stdout.contains("FAIL"), "\(job.output)")
        #expect(job.seconds < 15, "the job took \(job.seconds) s")
    }

    /// Every rank crashes at once (an SPMD program's bug reaches all
    /// ranks). The first rank to die stops the job; before, the stop's
    /// SIGTERM killed the other rank's backtracer mid-report (its output
    /// ended at "Backtracing from 0x..." and it was reported as stopped by
    /// the launcher). Now each rank's report is complete and each is
    /// reported as crashed.
    @Test(arguments: [CrashCase.all[0], CrashCase.all[2]])
    func everyRankThatCrashesFinishesItsReport(_ c: CrashCase) throws {
        let job = try runJob(ranks: 2, protocol: "sc", [c.scenario, "others=crash"], environment: launcherDefaults, timeout: 40)
        #expect(job.status == 128 + c.signal, "exit status \(job.status)\n\(job.output)")
        for rank in 0..<2 { expectCompleteReport(job, rank: rank, c) }
        #expect(!job.stderr.contains("stopped by the launcher"), "\(job.stderr)")
        #expect(job.seconds < 20, "the job took \(job.seconds) s")
    }

    /// A SWIFT_BACKTRACE the user set is passed on unchanged.
    @Test func userSettingIsKept() throws {
        let job = try runJob(ranks: 2, protocol: "sc", ["crash-fatal"], environment: ["SWIFT_BACKTRACE": "enable=no"], timeout: 30)
        #expect(job.status == 128 + SIGILL, "exit status \(job.status)\n\(job.output)")
        #expect(!job.output.contains("Backtracing"), "\(job.output)")
    }
}
