#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Plexus
import Testing
import TestSupport

// Jobs that go wrong in the fault path: each misbehaving
// scenario of dsm-check (Tests/Workers/dsm-check/Misuse.swift) must end at
// once with a message naming the cause, never hang or corrupt silently.

/// The first "0x..." word of the stdout line containing `text`, without "0x".
func address(in output: String, after text: String) -> String? {
    let line = output.split(separator: "\n").first { $0.contains(text) }
    return line.flatMap { $0.split(separator: " ").first { $0.hasPrefix("0x") } }.map { String($0.dropFirst(2).prefix { $0.isHexDigit }) }
}

/// The environment of a job whose crash should not spend seconds in
/// Swift's backtracer (the tests read the handler's message, not the trace).
let noBacktrace = ["SWIFT_BACKTRACE": "enable=no"]

@Suite(.serialized) struct RefusedAccessTests {
    /// Item 7: a call into a shared page is refused at the instruction
    /// fetch, naming the address; the rank dies of SIGSEGV and the job ends
    /// (before, fault and read grant alternated for ever).
    @Test func instructionFetchFromSharedMemoryIsRefused() throws {
        let job = try runJob(ranks: 2, protocol: "sc", ["exec-shared"], environment: noBacktrace, timeout: 30)
        #expect(job.status == 128 + SIGSEGV, "exit status \(job.status)\n\(job.output)")
        let code = try #require(address(in: job.stdout, after: "calls code at 0x"), "\(job.output)")
        #expect(job.stderr.contains("[1] plexus: instruction fetch from shared memory at 0x\(code): Plexus does not serve execute access"), "\(job.stderr)")
        #expect(job.stderr.contains("rank 1 (pid") && job.stderr.contains("killed by signal 11 (SIGSEGV)"), "\(job.stderr)")
        #expect(!job.stdout.contains("FAIL"), "\(job.output)")
    }
}

extension RefusedAccessTests {
    /// Item 3: a store or load on a page no allocation covers fails at the
    /// access, naming the address and the allocations that exist; the rank
    /// dies of SIGSEGV (before, the store was served silently and the next
    /// allocation failed a bare precondition).
    @Test(arguments: ["store", "load"])
    func accessOutsideEveryAllocationFailsAtTheAccess(kind: String) throws {
        let job = try runJob(ranks: 2, protocol: "sc", ["store-unallocated", "at=\(kind)"], environment: noBacktrace, timeout: 30)
        #expect(job.status == 128 + SIGSEGV, "exit status \(job.status)\n\(job.output)")
        let target = try #require(address(in: job.stdout, after: kind == "store" ? "stores to 0x" : "loads from 0x"), "\(job.output)")
        let first = try #require(job.stdout.split(separator: "\n").first { $0.contains("'first' is at 0x") }
            .flatMap { $0.split(separator: " ").last }, "\(job.output)")
        let verb = kind == "store" ? "store to" : "load from"
        #expect(job.stderr.contains("[1] plexus: \(verb) 0x\(target), which no allocation covers"), "\(job.stderr)")
        #expect(job.stderr.contains("Plexus serves only allocated shared memory. Allocated: 'first' \(first)-"), "\(job.stderr)")
        #expect(job.stderr.contains("rank 1 (pid") && job.stderr.contains("killed by signal 11 (SIGSEGV)"), "\(job.stderr)")
        #expect(!job.stdout.contains("FAIL"), "\(job.output)")
    }
}

extension RefusedAccessTests {
    /// Item 14: a SIGSEGV outside the region reaches the handler installed
    /// before Plexus as the kernel would deliver it: once (SA_RESETHAND),
    /// with its sa_mask blocked, on the alternate stack Plexus gave the
    /// joining thread; a stack overflow reaches it too (without an alternate
    /// stack no handler can run). The rank then dies of SIGSEGV.
    @Test(arguments: ["null", "overflow"])
    func previousHandlerIsCalledAsTheKernelWouldCallIt(at: String) throws {
        let job = try runJob(ranks: 2, protocol: "sc", ["chain-previous", "at=\(at)"], environment: noBacktrace, timeout: 30)
        #expect(job.status == 128 + SIGSEGV, "exit status \(job.status)\n\(job.output)")
        let calls = job.stdout.split(separator: "\n").filter { $0.contains("previous SIGSEGV handler: call") }
        #expect(calls == ["[1] previous SIGSEGV handler: call 1, SIGUSR1 blocked, on the alternate stack"], "\(job.output)")
        #expect(job.stderr.contains("rank 1 (pid") && job.stderr.contains("killed by signal 11 (SIGSEGV)"), "\(job.stderr)")
        #expect(!job.stdout.contains("FAIL"), "\(job.output)")
    }
}

extension RefusedAccessTests {
    /// Item 2: a child forked by a job process does not share the region
    /// (MADV_DONTFORK): its store is refused with a message and it dies of
    /// SIGSEGV; the parent's page is untouched and the job passes.
    @Test func forkedChildCannotTouchTheRegion() throws {
        let job = try runJob(ranks: 2, protocol: "sc", ["fork-child"], environment: noBacktrace, timeout: 30)
        expectPass(job, "fork-child")
        #expect(job.stdout.contains("[1] rank 1: the forked child died of SIGSEGV"), "\(job.output)")
        #expect(job.stderr.contains("[1] plexus: a forked child cannot use Plexus shared memory: process "), "\(job.stderr)")
        #expect(job.stderr.contains(". The region is not copied to children (MADV_DONTFORK)"), "\(job.stderr)")
    }
}

extension RefusedAccessTests {
    /// Item 13: read(2) into shared pages without access fails with EFAULT
    /// (the kernel does not fault them in); after `px.touch` it reads every
    /// byte, across a page boundary, and the other rank sees them.
    @Test(arguments: try Registered.all())
    func touchMakesSharedMemoryUsableBySystemCalls(protocol: String) throws {
        let job = try runJob(ranks: 2, protocol: `protocol`, ["syscall-io"], timeout: 30)
        expectPass(job, "syscall-io")
        #expect(job.stdout.contains("[1] rank 1: read(2) into shared memory without access gave errno \(EFAULT)"), "\(job.output)")
        #expect(job.stdout.contains("[1] rank 1: read(2) of 4196 bytes into shared memory after touch: 4196"), "\(job.output)")
    }
}

extension RefusedAccessTests {
    /// Item 12: writing every other page of an array larger than twice
    /// vm.max_map_count runs out of mappings. The allocation warns first,
    /// naming the limit and the sysctl that raises it; the failing
    /// protection change then stops the process with the same advice
    /// instead of a bare "Cannot allocate memory".
    @Test func runningOutOfMappingsSaysWhatToRaise() throws {
        let text = try String(contentsOfFile: "/proc/sys/vm/max_map_count", encoding: .utf8)
        let limit = try #require(Int(text.trimmingCharacters(in: .whitespacesAndNewlines)))
        guard limit < 1 << 20 else { return } // a raised limit cannot be reached with a test-sized region
        // The array is 2 x (limit + 1000) pages; the collective heap is half the region.
        let regionMiB = ((4 * (limit + 1000) * 4096) >> 20) + 16
        let job = try runJob(ranks: 1, protocol: "sc", ["map-count"], plexusOptions: ["--look-ahead", "0", "--shared-memory", "\(regionMiB)M"],
                             environment: noBacktrace, timeout: 120)
        let regionPages = (regionMiB << 20) / 4096
        let raise = "sudo sysctl -w vm.max_map_count=\((regionPages + limit + 65535) / 65536 * 65536)"
        #expect(job.status == 128 + SIGILL, "exit status \(job.status)\n\(job.output)")
        #expect(job.stderr.contains("[0] plexus[0]: warning: shared allocations span \(2 * (limit + 1000)) pages of 4096 bytes")
                && job.stderr.contains("this process may have \(limit) (vm.max_map_count;") && job.stderr.contains("Raise it before the job: \(raise)"),
                "\(job.stderr)")
        #expect(job.stderr.contains("this process has reached vm.max_map_count (\(limit) mappings")
                && job.stderr.contains("Raise the limit on every node before the job: \(raise) "), "\(job.stderr)")
        #expect(job.stderr.contains("rank 0 (pid") && job.stderr.contains("killed by signal 4 (SIGILL)"), "\(job.stderr)")
        #expect(!job.stdout.contains("FAIL"), "\(job.output)")
    }
}
