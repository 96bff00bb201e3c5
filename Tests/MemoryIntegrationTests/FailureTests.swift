#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport

// Jobs that go wrong: each scenario of
// Tests/Workers/dsm-check/Failures.swift run as a real job, with the exact
// outcome asserted: exit status, the message naming the cause, no hang past
// the bound, no process left over.

/// Waits until `c`'s standard error contains `text`, up to `timeout` seconds.
private func waitForStderr(_ c: Child, containing text: String, timeout: Double) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while !c.stderr.contains(text) {
        guard Date() < deadline else { throw HarnessError("no '\(text)' on stderr within \(timeout) s; stdout: \(c.stdout) stderr: \(c.stderr)") }
        usleep(10_000)
    }
}

private func temporaryPath(_ name: String) -> String {
    NSTemporaryDirectory() + "/plexus-\(name)-\(UInt32.random(in: 0...UInt32.max))"
}

@Suite(.serialized) struct FailureTests {
    /// Item 4: a rank that exits with status 0 without finalize fails the
    /// job, and the launcher says so, naming it; the statistics are written.
    @Test func rankThatExitsWithoutFinalizeFailsTheJob() throws {
        let stats = temporaryPath("stats.json")
        defer { unlink(stats) }
        let job = try runJob(ranks: 2, protocol: "sc", ["leave", "at=exit"], plexusOptions: ["--stats", stats], timeout: 40)
        #expect(job.status == 1, "\(job.output)")
        #expect(job.stderr.contains("plexus: rank 1 (pid ") && job.stderr.contains("exited with status 0 without calling finalize"),
                "\(job.stderr)")
        #expect(!job.output.contains("Connection refused") && !job.output.contains("cannot reach"), "\(job.output)")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: stats))) as? [String: Any])
        #expect(doc["status"] as? Int == 1, "\(doc)")
        #expect((doc["failures"] as? [String])?.first?.contains("without calling finalize") == true, "\(doc)")
    }

    /// Items 4, 5 and 11: when rank 1's connections end without finalize,
    /// every wait of rank 0 fails naming rank 1 (a barrier, a lock twice,
    /// a lock it manages itself, a receive, a send), and its access to rank
    /// 1's page ends the process with a message naming rank 1 and the page,
    /// once; nobody tries to dial the lost rank.
    @Test func everyWaitFailsNamingTheLostRank() throws {
        let job = try runJob(ranks: 2, protocol: "sc", ["leave", "at=cut"], timeout: 40)
        #expect(job.status == 1, "\(job.output)")
        #expect(job.stdout.contains("[0] PASS leave: every wait failed naming rank 1"), "\(job.output)")
        for what in ["barrier", "acquire of lock 1", "second acquire of lock 1", "acquire of lock 0", "receive", "send to rank 1"] {
            #expect(job.stdout.contains("[0] rank 0: \(what) failed: rank 1 is gone: it ended without calling finalize"), "\(what)\n\(job.stdout)")
        }
        let reads = try #require(job.stdout.split(separator: "\n").first { $0.contains("rank 0 reads page ") }, "\(job.stdout)")
        let page = String(reads.split(separator: " ")[5].dropLast())   // "page 12, owned by rank 1"
        let lines = job.stderr.split(separator: "\n").filter { $0.contains("plexus[0]:") }
        #expect(lines.count == 1, "the runtime should say once that rank 1 is gone:\n\(job.stderr)")
        #expect(lines.first?.contains("rank 1 is gone") == true && lines.first?.contains("page \(page) (address 0x") == true
                && lines.first?.contains("exiting with status 1") == true, "\(job.stderr)")
        #expect(!job.stdout.contains("FAIL"), "\(job.stdout)")
        #expect(job.stderr.contains("rank 0 (pid ") && job.stderr.contains("exited with status 1 after losing rank 1"), "\(job.stderr)")
        #expect(job.stderr.contains("rank 0 lost its connection to it while it was still running"), "\(job.stderr)")
        #expect(!job.output.contains("Connection refused") && !job.output.contains("cannot reach"), "\(job.output)")
    }

    /// Item 9: a rank that fails after every rank finalized does not take
    /// the finalized ranks down: rank 0 is left to write its output and
    /// exit, and the report gives both ranks' fates.
    @Test func finalizedRankIsLeftToExitWhenAnotherFails() throws {
        let fifo = temporaryPath("fifo")
        #expect(mkfifo(fifo, 0o600) == 0)
        defer { unlink(fifo) }
        // Held open for writing: rank 0's read blocks until it is closed.
        let writer = open(fifo, O_RDWR)
        #expect(writer >= 0)
        var closed = false
        defer { if !closed { close(writer) } }
        let marker = uniqueMarker()
        let c = try Child(try product("plexus"), ["run", "-n", "2", try product("dsm-check"), "finalize-then-fail", "fifo=\(fifo)", marker])
        // The launcher has acted on rank 1's failure once it says it stops the job.
        try waitForStderr(c, containing: "stopping the job", timeout: 30)
        close(writer)
        closed = true
        let status = try c.wait(timeout: 30)
        #expect(status == 3, "\(c.stdout)\n\(c.stderr)")
        for i in 1...5 { #expect(c.stdout.contains("[0] rank 0 after finalize: line \(i) of 5"), "\(c.stdout)\n\(c.stderr)") }
        #expect(c.stderr.contains("rank 0 called finalize and is left to exit"), "\(c.stderr)")
        #expect(c.stderr.contains("rank 1 (pid ") && c.stderr.contains("exited with status 3"), "\(c.stderr)")
        #expect(c.stderr.contains("rank 0 (pid ") && c.stderr.contains("called finalize and exited with status 0"), "\(c.stderr)")
        #expect(processes(containing: marker).isEmpty, "leftover processes")
    }

    /// Item 8: ranks waiting at a barrier another rank never reaches are
    /// reported with the ranks missing; --timeout ends the job with status
    /// 124 and says so; the statistics are written for the timed-out job.
    @Test func stuckBarrierIsReportedAndTimeoutEndsTheJob() throws {
        let stats = temporaryPath("stats.json")
        defer { unlink(stats) }
        let t0 = Date()
        let job = try runJob(ranks: 3, protocol: "sc", ["stall-barrier"],
                             plexusOptions: ["--stall-report", "1", "--timeout", "10", "--stats", stats], timeout: 40)
        #expect(job.status == 124, "\(job.output)")
        #expect(Date().timeIntervalSince(t0) < 25, "the job outlived --timeout by far")
        #expect(job.stderr.contains("the job has made no progress for 1 s (--stall-report); what each rank waits for:"), "\(job.stderr)")
        for r in [0, 1] {
            #expect(job.stderr.split(separator: "\n").contains { $0.contains("rank \(r): waits at barrier #") && $0.hasSuffix("not arrived: rank 2") },
                    "rank \(r)\n\(job.stderr)")
        }
        #expect(job.stderr.contains("rank 2: is not waiting in Plexus"), "\(job.stderr)")
        #expect(job.stderr.contains("the job did not finish within --timeout 10 s; stopping it"), "\(job.stderr)")
        let doc = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: stats))) as? [String: Any])
        #expect(doc["status"] as? Int == 124, "\(doc)")
        #expect((doc["processes"] as? [Any])?.count == 3, "every rank should have sent its statistics: \(doc)")
    }

    /// Item 8: a rank waiting for a lock that a rank in finalize holds.
    @Test func lockHeldIntoFinalizeIsReported() throws {
        let job = try runJob(ranks: 2, protocol: "sc", ["stall-lock"], plexusOptions: ["--stall-report", "1", "--timeout", "10"], timeout: 40)
        #expect(job.status == 124, "\(job.output)")
        let lines = job.stderr.split(separator: "\n")
        #expect(lines.contains { $0.contains("rank 0: waits for lock 5 for") && $0.hasSuffix("held by rank 1") }, "\(job.stderr)")
        #expect(lines.contains { $0.contains("rank 1: waits at barrier #") && $0.contains("not arrived: rank 0; holds lock 5") }, "\(job.stderr)")
    }

    /// Item 8: a rank waiting for a page whose owner is stopped.
    @Test func pageWaitIsReported() throws {
        let job = try runJob(ranks: 2, protocol: "sc", ["stall-page"], plexusOptions: ["--stall-report", "1", "--timeout", "10"], timeout: 40)
        #expect(job.status == 124, "\(job.output)")
        let reads = try #require(job.stdout.split(separator: "\n").first { $0.contains("rank 0 reads page ") }, "\(job.stdout)")
        let page = String(reads.split(separator: " ").last!)
        #expect(job.stderr.contains("rank 0: waits for page \(page) for"), "\(job.stderr)")
        #expect(job.stderr.contains("requested from rank 1 (its manager)"), "\(job.stderr)")
        #expect(job.stderr.contains("rank 1: did not answer"), "\(job.stderr)")
    }

    /// Item 6: 70,000 unreceived user messages stall neither page requests
    /// nor locks nor barriers; the sends past the bound fail saying why,
    /// and every message sent before is delivered in order.
    @Test func unreceivedMessagesNeverStallProtocolTraffic() throws {
        let job = try runJob(ranks: 2, protocol: "sc", ["flood", "70000"], timeout: 60)
        expectPass(job, "flood")
        #expect(job.stdout.contains("rank 1 sent 16384 of 70000 messages"), "\(job.stdout)")
        #expect(job.stdout.contains("rank 0 has 16384 unreceived messages from this rank"), "\(job.stdout)")
    }
}
