#if canImport(Glibc)
import Glibc
#endif
import CFault
import Foundation
@testable import Plexus
import Testing
import Transport

@Suite struct CPUBindingChoiceTests {
    @Test func eachProcessGetsTheCPUOfItsIndexWhenAllFit() {
        let cpus: [Int32] = [2, 5, 7]
        for (i, cpu) in cpus.enumerated() {
            let b = CPUBinding(choosing: i, of: 3, among: cpus)
            #expect(b.cpu == cpu && b.outcome == "CPU \(cpu)")
        }
        #expect(CPUBinding(choosing: 0, of: 2, among: cpus).cpu == 2)
    }

    @Test func moreProcessesThanCPUsBindNothing() {
        let b = CPUBinding(choosing: 2, of: 3, among: [0, 1])
        #expect(b.cpu == nil && b.outcome == "none (3 processes on this node, 2 CPUs)")
        #expect(CPUBinding(choosing: 0, of: 2, among: [4]).outcome == "none (2 processes on this node, 1 CPU)")
    }

    @Test func environmentSelectsTheMode() throws {
        let none = try CPUBinding(environment: ["PLEXUS_BIND": "none", "PLEXUS_LOCAL_RANK": "0", "PLEXUS_LOCAL_SIZE": "1"])
        #expect(none.cpu == nil && none.outcome == "none (--bind none)")
        let unplaced = try CPUBinding(environment: ["PLEXUS_BIND": "auto"])
        #expect(unplaced.cpu == nil && unplaced.outcome.contains("launcher did not say"))
        for bad in [["PLEXUS_LOCAL_RANK": "1", "PLEXUS_LOCAL_SIZE": "1"], ["PLEXUS_LOCAL_RANK": "x", "PLEXUS_LOCAL_SIZE": "2"],
                    ["PLEXUS_LOCAL_RANK": "0", "PLEXUS_LOCAL_SIZE": "0"]] {
            #expect(try CPUBinding(environment: bad).cpu == nil, "\(bad)")
        }
        // Alone on the node, a process binds to the first CPU it may use.
        let cpus = try #require(CPUBinding.allowedCPUs())
        #expect(!cpus.isEmpty)
        let alone = try CPUBinding(environment: ["PLEXUS_LOCAL_RANK": "0", "PLEXUS_LOCAL_SIZE": "1"])
        #expect(alone.cpu == cpus.first)
    }

    @Test func unknownModeIsRefusedWithTheChoices() {
        #expect {
            _ = try CPUBinding(environment: ["PLEXUS_BIND": "core"])
        } throws: { error in
            "\(error)".contains("'core'") && "\(error)".contains("auto, none")
        }
    }

    /// Binding restricts only the calling thread, and threads it starts later.
    @Test func bindingAThreadLeavesTheOthersFree() throws {
        let cpus = try #require(CPUBinding.allowedCPUs())
        let b = CPUBinding(choosing: 0, of: 1, among: cpus)
        let seen = Locked<(bound: Int, child: Int, failures: Int)>((-1, -1, -1))
        let done = DispatchSemaphore(value: 0)
        Thread {
            b.applyToCurrentThread()
            let bound = CPUBinding.allowedCPUs()?.count ?? -1
            let inner = DispatchSemaphore(value: 0)
            let child = Locked(-1)
            Thread {
                let n = CPUBinding.allowedCPUs()?.count ?? -1
                child.withLock { $0 = n }
                inner.signal()
            }.start()
            inner.wait()
            seen.withLock { $0 = (bound, child.value, b.failedThreads) }
            done.signal()
        }.start()
        done.wait()
        #expect(seen.value.bound == 1 && seen.value.child == 1 && seen.value.failures == 0, "\(seen.value)")
        #expect(CPUBinding.allowedCPUs() == cpus)
        #expect(cfault_bind_current_thread(-1) == -1 && errno == EINVAL)
    }
}

/// `--bind` on real jobs: which threads each process finds bound, from /proc.
@Suite(.serialized) struct CPUBindingJobTests {
    /// "rank R: binding=B app=CPUS single=N threads=M" lines of a `binding` job.
    func ranks(_ job: Job) -> [(binding: String, app: String, single: Int, threads: Int)] {
        job.stdout.split(separator: "\n").compactMap { line in
            guard let b = line.range(of: "binding="), let a = line.range(of: " app="), let s = line.range(of: " single="),
                  let t = line.range(of: " threads=") else { return nil }
            return (String(line[b.upperBound..<a.lowerBound]), String(line[a.upperBound..<s.lowerBound]),
                    Int(line[s.upperBound..<t.lowerBound]) ?? -1, Int(line[t.upperBound...]) ?? -1)
        }
    }


    /// Two processes on a node with two CPUs or more: each binds its
    /// application thread and its fault thread, to a CPU of its own; the
    /// readers stay free.
    @Test(.enabled(if: (CPUBinding.allowedCPUs()?.count ?? 0) >= 2, "needs 2 CPUs"))
    func autoBindsOneCPUPerProcess() throws {
        let cpus = try #require(CPUBinding.allowedCPUs())
        let job = try runJob(ranks: 2, protocol: "sc", ["binding"])
        expectPass(job, "binding")
        let r = ranks(job)
        #expect(r.count == 2, "\(job.output)")
        for (rank, x) in r.enumerated() {
            #expect(x.binding == "CPU \(cpus[rank])" && x.app == "\(cpus[rank])" && x.single == 2 && x.threads > 2, "\(x)\n\(job.output)")
        }
    }

    @Test func noneAndTooManyProcessesBindNothing() throws {
        let cpus = try #require(CPUBinding.allowedCPUs())
        let cases: [(ranks: Int, options: [String], outcome: String)] = [
            (2, ["--bind", "none"], "none (--bind none)"),
            (cpus.count + 1, [], "none (\(cpus.count + 1) processes on this node, \(cpus.count) CPU\(cpus.count == 1 ? "" : "s"))"),
        ]
        for c in cases {
            let job = try runJob(ranks: c.ranks, protocol: "sc", ["binding"], plexusOptions: c.options)
            expectPass(job, "binding")
            let r = ranks(job)
            #expect(r.count == c.ranks, "\(job.output)")
            for x in r { #expect(x.binding == c.outcome && x.single == 0, "\(c.options): \(x)\n\(job.output)") }
        }
    }
}
