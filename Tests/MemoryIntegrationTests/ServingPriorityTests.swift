#if canImport(Glibc)
import Glibc
#endif
import Foundation
@testable import Plexus
import Testing
import Transport

@Suite struct ServingPriorityParsingTests {
    @Test func environmentChoosesThePriority() throws {
        #expect(try ServingPriority.fromEnvironment([:]) == .auto)
        #expect(try ServingPriority.fromEnvironment(["PLEXUS_SERVING_PRIORITY": ""]) == .auto)
        for p in ServingPriority.allCases {
            #expect(try ServingPriority.fromEnvironment(["PLEXUS_SERVING_PRIORITY": p.rawValue]) == p)
        }
    }

    @Test func unknownPriorityIsRefusedWithTheChoices() {
        #expect {
            _ = try ServingPriority.fromEnvironment(["PLEXUS_SERVING_PRIORITY": "fast"])
        } throws: { error in
            "\(error)".contains("'fast'") && "\(error)".contains("auto, normal, realtime")
        }
    }

    @Test func normalNeverSwitchesTheThread() throws {
        let s = try ServingScheduler(.normal)
        #expect(!s.realtime && s.outcome == "normal")
        s.applyToCurrentThread()
        #expect(sched_getscheduler(0) == SCHED_OTHER)
    }
}

/// Whether this process may use SCHED_FIFO (tries it on a thread of its own).
func realtimePermitted() -> Bool {
    let result = Locked(false)
    let done = DispatchSemaphore(value: 0)
    Thread {
        var p = sched_param(sched_priority: 1)
        let ok = pthread_setschedparam(pthread_self(), SCHED_FIFO, &p) == 0
        result.withLock { $0 = ok }
        done.signal()
    }.start()
    done.wait()
    return result.value
}

/// `--serving-priority` on a real 3-process job: which threads end up
/// SCHED_FIFO, as each process reads them from /proc.
@Suite(.serialized) struct ServingPriorityJobTests {
    /// "rank R: serving=S fifo=N app=P" lines of a `scheduling` job.
    func ranks(_ job: Job) -> [(serving: String, fifo: Int, app: Int)] {
        job.stdout.split(separator: "\n").compactMap { line in
            guard let r = line.range(of: "serving=") , let f = line.range(of: " fifo="), let a = line.range(of: " app=") else { return nil }
            return (String(line[r.upperBound..<f.lowerBound]), Int(line[f.upperBound..<a.lowerBound]) ?? -1, Int(line[a.upperBound...]) ?? -1)
        }
    }

    @Test func normalLeavesEveryThreadOrdinary() throws {
        let job = try runJob(ranks: 3, protocol: "sc", ["scheduling"], plexusOptions: ["--serving-priority", "normal"])
        expectPass(job, "scheduling")
        let r = ranks(job)
        #expect(r.count == 3, "\(job.output)")
        for x in r { #expect(x.serving == "normal" && x.fifo == 0 && x.app == Int(SCHED_OTHER), "\(x)\n\(job.output)") }
    }

    /// Each process's fault thread and its reader thread for each of the two
    /// peers are real-time; the application's thread is not.
    @Test(.enabled(if: realtimePermitted(), "this process may not use SCHED_FIFO (not root, no CAP_SYS_NICE, RLIMIT_RTPRIO 0)"))
    func realtimeServingThreadsAndOrdinaryApplication() throws {
        for option in ["realtime", "auto"] {
            let job = try runJob(ranks: 3, protocol: "sc", ["scheduling"], plexusOptions: ["--serving-priority", option])
            expectPass(job, "scheduling")
            let r = ranks(job)
            #expect(r.count == 3, "\(job.output)")
            for x in r { #expect(x.serving == "realtime" && x.fifo == 3 && x.app == Int(SCHED_OTHER), "\(option): \(x)\n\(job.output)") }
        }
    }
}
