import Foundation
import Testing
import TestSupport

// Deadlocks among Plexus locks in real jobs (`plexus run` of dsm-check's
// deadlock and lock scenarios): found and resolved under --deadlock abort,
// reported under report, left alone under off, and no false alarm in
// lock-heavy jobs without a cycle. Synchronisation is by barriers and the
// locks themselves; no test sleeps.

/// How many times the runtime's "deadlock found" line appears.
private func verdicts(_ job: Job) -> Int { job.stderr.components(separatedBy: "deadlock found among").count - 1 }

@Suite(.serialized) struct DeadlockIntegrationTests {
    /// Two ranks take two locks in opposite order: exactly one victim (the
    /// highest global PID), whose error names both ranks and locks; the
    /// other completes; the victim's lock request left nothing behind.
    @Test(arguments: [2, 3])
    func lockOrderInversionIsFoundAndResolved(ranks: Int) throws {
        let job = try runJob(ranks: ranks, protocol: "sc", ["deadlock-inversion"])
        expectPass(job, "deadlock-inversion")
        #expect(verdicts(job) == 1, "\(job.output)")
        #expect(job.stderr.contains("is the victim: its acquire fails (--deadlock abort)"), "\(job.stderr)")
        #expect(job.stdout.contains("is its victim: its acquire of lock"), "\(job.stdout)")
    }

    /// Twenty inversions in a row: each has exactly one victim, and a
    /// withdrawn request never leaves the lock held or the queue stuck.
    @Test func repeatedInversionsEachHaveOneVictim() throws {
        let job = try runJob(ranks: 2, protocol: "sc", ["deadlock-inversion", "20"], plexusOptions: ["--deadlock-threshold-ms", "10"])
        expectPass(job, "deadlock-inversion")
        #expect(job.stdout.contains("20 round(s), one victim each: rank 1 was the victim 20 time(s)") || job.stdout.contains("rank 0 was the victim 20 time(s)"),
                "\(job.stdout)")
        #expect(verdicts(job) == 20, "\(job.output)")
    }

    /// Five dining philosophers, each holding its left fork: one cycle of
    /// five processes, exactly one victim, four eat.
    @Test func diningPhilosophersHaveExactlyOneVictim() throws {
        let job = try runJob(ranks: 5, protocol: "sc", ["deadlock-philosophers"])
        expectPass(job, "deadlock-philosophers")
        #expect(job.stdout.contains("5 philosophers, victims [") && job.stdout.contains("], 4 ate"), "\(job.stdout)")
        #expect(verdicts(job) == 1, "\(job.output)")
        #expect(job.stderr.contains("deadlock found among 5 processes"), "\(job.stderr)")
    }

    /// Random subsets of four locks taken in increasing order by three
    /// ranks (no cycle possible) with probing from the first moment of every
    /// wait: probes run, and nothing is declared.
    @Test func orderedLocksRaiseNoFalseAlarm() throws {
        let job = try runJob(ranks: 3, protocol: "sc", ["lock-ordered", "300"], plexusOptions: ["--deadlock-threshold-ms", "0"])
        expectPass(job, "lock-ordered")
        #expect(!job.output.contains("deadlock found"), "\(job.output)")
        let started = job.stdout.split(separator: "\n").first { $0.contains("probes started ") }
            .flatMap { line in line.split(separator: " ").drop { $0 != "started" }.dropFirst().first }
            .flatMap { Int($0.trimmingCharacters(in: .punctuationCharacters)) }
        #expect((started ?? 0) > 0, "the detectors never probed: \(job.stdout)")
    }

    /// The lock-counter scenario (one lock, many hand-offs, one and two
    /// threads per process) under --deadlock abort reports nothing.
    @Test(arguments: [1, 2])
    func lockCounterRaisesNoFalseAlarm(threads: Int) throws {
        let job = try runJob(ranks: 3, protocol: "sc", ["lock-counter", "150", "threads=\(threads)"],
                             plexusOptions: ["--deadlock", "abort", "--deadlock-threshold-ms", "0"])
        expectPass(job, "lock-counter")
        #expect(!job.output.contains("deadlock"), "\(job.output)")
    }

    /// Every grant of a lock carries a token above the previous grant's,
    /// job-wide, under every protocol.
    @Test(arguments: try Registered.all())
    func fencingTokensStrictlyIncrease(protocol: String) throws {
        let job = try runJob(ranks: 3, protocol: `protocol`, ["lock-tokens", "100"])
        expectPass(job, "lock-tokens")
        #expect(job.stdout.contains("300 grants, tokens strictly increasing up to 300"), "\(job.stdout)")
    }

    /// --deadlock report prints the cycle once and leaves the processes
    /// waiting: the job ends at --timeout (status 124).
    @Test func reportPrintsTheCycleAndKeepsWaiting() throws {
        let job = try runJob(ranks: 2, protocol: "sc", ["deadlock-inversion"], plexusOptions: ["--deadlock", "report", "--timeout", "3"])
        #expect(job.status == 124, "\(job.output)")
        #expect(verdicts(job) == 1, "\(job.output)")
        #expect(job.stderr.contains("stays blocked (--deadlock report)"), "\(job.stderr)")
        #expect(!job.stdout.contains("PASS"), "\(job.stdout)")
    }

    /// --deadlock off: nobody looks, the deadlock hangs until --timeout.
    @Test func offLeavesTheDeadlockUntilTimeout() throws {
        let job = try runJob(ranks: 2, protocol: "sc", ["deadlock-inversion"], plexusOptions: ["--deadlock", "off", "--timeout", "3"])
        #expect(job.status == 124, "\(job.output)")
        #expect(!job.output.contains("deadlock found"), "\(job.output)")
    }

    /// From C: the victim's plexus_lock_acquire returns -1 and
    /// plexus_last_error() names the cycle; the other gets a token.
    @Test func cVictimGetsMinusOneAndTheCycle() throws {
        let r = try runPlexus(["run", "-n", "2", try product("c-deadlock")])
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("PASS") && !r.stdout.contains("FAIL"), "\(r.stdout)")
        let victim = r.stdout.split(separator: "\n").first { $0.contains("victim: plexus_lock_acquire returned -1: deadlock among 2 processes") }
        #expect(victim != nil, "\(r.stdout)")
        #expect(r.stdout.contains("got lock") && r.stdout.contains("token "), "\(r.stdout)")
    }
}
