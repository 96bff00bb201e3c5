import Foundation
import Testing
import TestSupport

// The memory-model checks of dsm-check run with
// faults injected into the links between ranks (PLEXUS_FAULT_INJECTION:
// drop, duplicate, reset, delay, jitter; seeded) must end with either the
// correct result or a clear error naming the broken link and the rank:
// never a wrong value, never a hang. Each job is bounded by `--timeout`
// (status 124 if it ran out, which fails the test) and by the wait on the
// launcher.

/// A job of `scenario` with `plan` injected on every link between ranks.
private func runWithFaults(_ plan: String, ranks: Int, _ scenario: [String]) throws -> Job {
    try runJob(ranks: ranks, protocol: "sc", scenario, plexusOptions: ["--timeout", "40"],
               environment: ["PLEXUS_FAULT_INJECTION": plan], timeout: 60)
}

/// The outcome every faulty run must have: not timed out, and either a
/// PASS with the correct values or a failure that names the broken link
/// and the rank, with no check failing on a value.
private func expectCorrectOrClearError(_ job: Job, _ scenario: String, failureNames: [String],
                                       sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(job.status != 124, "the job timed out: a hang\n\(job.output)", sourceLocation: sourceLocation)
    #expect(job.stderr.contains("PLEXUS_FAULT_INJECTION is set"), "\(job.stderr)", sourceLocation: sourceLocation)
    // A check that failed on a value prints "FAIL SCENARIO: ...; failures on ranks [...]".
    #expect(!job.stdout.contains("failures on ranks"), "a check failed on a value\n\(job.output)", sourceLocation: sourceLocation)
    if job.status == 0 {
        expectPass(job, scenario, sourceLocation: sourceLocation)
        return
    }
    // Every FAIL line is an error that ended the rank, naming the lost rank:
    // the link's fault on the ranks at its ends, and on the others the exit
    // of a rank that failed because of it ("it ended without calling finalize").
    let failLines = job.stdout.split(separator: "\n").filter { $0.contains("FAIL") }
    for line in failLines {
        #expect(line.contains(" is gone: "), "not an error naming a lost rank: \(line)\n\(job.output)", sourceLocation: sourceLocation)
    }
    // Somebody says which frame or which reset broke which rank's link.
    #expect(failureNames.contains { job.output.contains($0) }, "none of \(failureNames) in the output\n\(job.output)",
            sourceLocation: sourceLocation)
    #expect(job.output.contains("rank ") && job.output.contains(" is gone"), "\(job.output)", sourceLocation: sourceLocation)
}

/// The words each kind of fault is reported with (by the rank that found
/// it, or the rank it told).
private let lostFrame = ["from it is missing (frame ", "from this process missing (frame "]
private let duplicatedFrame = ["from it arrived a second time (frame ", "from this process a second time (frame "]
private let resetLink = ["reset the connection on purpose (fault injection", "Connection reset by peer", "failed: Broken pipe"]

@Suite(.serialized) struct FaultInjectionTests {
    /// Delay and jitter only: a slow network under TCP. Every check passes
    /// with the correct values.
    @Test(arguments: [
        (3, ["visibility-barrier", "20"]),
        (3, ["visibility-lock", "20"]),
        (3, ["lock-counter", "20", "threads=2"]),
        (2, ["litmus-mp", "100"]),
        (2, ["litmus-sb", "100"]),
    ])
    func delayAndJitterKeepEveryCheckCorrect(ranks: Int, scenario: [String]) throws {
        let job = try runWithFaults("seed=11,delay=1,jitter=2", ranks: ranks, scenario)
        expectPass(job, scenario[0])
        #expect(job.stderr.contains("PLEXUS_FAULT_INJECTION is set"), "\(job.stderr)")
        if scenario[0] == "lock-counter" {
            #expect(job.stdout.contains("counter 120, expected 120"), "\(job.stdout)")
        }
    }

    /// Lost frames on memory and lock traffic: the correct result, or the
    /// missing frame named.
    @Test(arguments: [(3, ["lock-counter", "40", "threads=2"]), (2, ["litmus-mp", "300"])])
    func droppedFramesGiveTheCorrectResultOrNameTheMissingFrame(ranks: Int, scenario: [String]) throws {
        let job = try runWithFaults("seed=21,drop=0.01", ranks: ranks, scenario)
        expectCorrectOrClearError(job, scenario[0], failureNames: lostFrame)
    }

    @Test func duplicatedFramesGiveTheCorrectResultOrNameTheRepeatedFrame() throws {
        let job = try runWithFaults("seed=22,duplicate=0.01", ranks: 3, ["visibility-lock", "40"])
        expectCorrectOrClearError(job, "visibility-lock", failureNames: duplicatedFrame)
    }

    @Test func resetLinksGiveTheCorrectResultOrSayTheLinkWasReset() throws {
        let job = try runWithFaults("seed=23,reset=0.005", ranks: 3, ["visibility-barrier", "40"])
        expectCorrectOrClearError(job, "visibility-barrier", failureNames: resetLink)
    }

    /// Everything at once, on the litmus test that finds reordering.
    @Test func mixedFaultsGiveTheCorrectResultOrAClearError() throws {
        let job = try runWithFaults("seed=24,drop=0.003,duplicate=0.003,reset=0.001,delay=1,jitter=1", ranks: 2, ["litmus-sb", "300"])
        expectCorrectOrClearError(job, "litmus-sb", failureNames: lostFrame + duplicatedFrame + resetLink)
    }

    /// A plan that does not parse refuses the join, saying the syntax.
    @Test func aBadPlanIsRefusedAtJoinWithTheSyntax() throws {
        let job = try runWithFaults("seed=1,drop=2", ranks: 2, ["visibility-barrier", "1"])
        #expect(job.status != 0 && job.status != 124, "\(job.output)")
        #expect(job.output.contains("cannot join the job: PLEXUS_FAULT_INJECTION='seed=1,drop=2': 'drop=2' is not a probability from 0 to 1; "
                                    + "expected seed=N,drop=P,duplicate=P,reset=P,delay=MS,jitter=MS"), "\(job.output)")
    }
}
