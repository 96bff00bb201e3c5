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
        #expect(!s.realtimeFaultThread && !s.raisedReaders && s.outcome == "normal")
        s.applyToCurrentThread(.faultThread)
        s.applyToCurrentThread(.reader)
        #expect(sched_getscheduler(0) == SCHED_OTHER)
        #expect(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) == 0)
    }

    /// A reader gets nice -20 and a fault thread SCHED_FIFO, each on its own
    /// thread only; the probe leaves the thread that made it as it was.
    @Test(.enabled(if: realtimePermitted(), "this process may not use SCHED_FIFO (not root, no CAP_SYS_NICE, RLIMIT_RTPRIO 0)"))
    func rolesAreRaisedOnTheirOwnThreads() throws {
        let seen = Locked<[String]>([])
        let done = DispatchSemaphore(value: 0)
        Thread {
            let before = (sched_getscheduler(0), getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0))
            let s: ServingScheduler
            do { s = try ServingScheduler(.realtime) } catch {
                seen.withLock { $0.append("init failed: \(error)") }
                done.signal()
                return
            }
            let after = (sched_getscheduler(0), getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0))
            let log = Locked(["probe \(before == after) \(s.outcome)"])
            let inner = DispatchSemaphore(value: 0)
            for role in [ServingRole.reader, .faultThread] {
                Thread {
                    s.applyToCurrentThread(role)
                    let line = "\(role) \(sched_getscheduler(0) & 0xff) \(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0))"
                        + (role == .reader ? " slice \(threadSlice() ?? "none")" : "")
                    log.withLock { $0.append(line) }
                    inner.signal()
                }.start()
                inner.wait()
            }
            let lines = log.value + ["failures \(s.failedThreads)", s.report]
            seen.withLock { $0 = lines }
            done.signal()
        }.start()
        done.wait()
        // Kernels that show no slice (before 6.12) do not take one either.
        let slice = threadSlice() == nil ? "none" : "\(ServingScheduler.readerSliceNanos)"
        #expect(seen.value == ["probe true realtime (fault thread SCHED_FIFO, readers nice -20, 100 us slice)",
                               "reader \(SCHED_OTHER) -20 slice \(slice)", "faultThread \(SCHED_FIFO) 0", "failures 0",
                               "realtime (fault thread SCHED_FIFO, readers nice -20, 100 us slice)"
                                   + (threadSlice() == nil ? ", but the kernel gave 1 reader(s) no 100 us slice (Linux 6.12 or later sets one)" : "")])
    }
}

/// The calling thread's EEVDF slice in nanoseconds (se.slice in
/// /proc/thread-self/sched), nil where the kernel does not show one.
func threadSlice() -> String? {
    guard let sched = try? String(contentsOfFile: "/proc/thread-self/sched", encoding: .utf8) else { return nil }
    for line in sched.split(separator: "\n") where line.hasPrefix("se.slice") {
        return line.split(separator: ":").last.map { $0.trimmingCharacters(in: .whitespaces) }
    }
    return nil
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
    /// "rank R: serving=S fifo=N niced=M app=P/NICE" lines of a `scheduling` job.
    func ranks(_ job: Job) -> [(serving: String, fifo: Int, niced: Int, app: String)] {
        job.stdout.split(separator: "\n").compactMap { line in
            guard let r = line.range(of: "serving="), let f = line.range(of: " fifo="), let n = line.range(of: " niced="),
                  let a = line.range(of: " app=") else { return nil }
            return (String(line[r.upperBound..<f.lowerBound]), Int(line[f.upperBound..<n.lowerBound]) ?? -1,
                    Int(line[n.upperBound..<a.lowerBound]) ?? -1, String(line[a.upperBound...]))
        }
    }

    @Test func normalLeavesEveryThreadOrdinary() throws {
        let job = try runJob(ranks: 3, protocol: "sc", ["scheduling"], plexusOptions: ["--serving-priority", "normal"])
        expectPass(job, "scheduling")
        let r = ranks(job)
        #expect(r.count == 3, "\(job.output)")
        for x in r { #expect(x.serving == "normal" && x.fifo == 0 && x.niced == 0 && x.app == "\(SCHED_OTHER)/0", "\(x)\n\(job.output)") }
    }

    /// Each process's fault thread is real-time and its reader thread for
    /// each of the two peers has nice -20; the application's thread is
    /// neither.
    @Test(.enabled(if: realtimePermitted(), "this process may not use SCHED_FIFO (not root, no CAP_SYS_NICE, RLIMIT_RTPRIO 0)"))
    func realtimeServingThreadsAndOrdinaryApplication() throws {
        for option in ["realtime", "auto"] {
            let job = try runJob(ranks: 3, protocol: "sc", ["scheduling"], plexusOptions: ["--serving-priority", option])
            expectPass(job, "scheduling")
            let r = ranks(job)
            #expect(r.count == 3, "\(job.output)")
            for x in r {
                #expect(x.serving == "realtime (fault thread SCHED_FIFO, readers nice -20, 100 us slice)" && x.fifo == 1 && x.niced == 2
                        && x.app == "\(SCHED_OTHER)/0", "\(option): \(x)\n\(job.output)")
            }
        }
    }
}
