#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Plexus

/// `scheduling`: reports how each rank's threads are scheduled, for the
/// `--serving-priority` tests. After a barrier (every serving thread has
/// started and handled messages), each rank counts its threads whose policy
/// in /proc/self/task/*/stat is SCHED_FIFO, and those with a negative nice
/// value, and reads the policy and nice value of the calling (application)
/// thread. Rank 0 prints one line per rank:
/// "rank R: serving=OUTCOME fifo=N niced=M app=POLICY/NICE", then PASS.
func scheduling(_ px: Plexus, _ o: Options) throws -> Bool {
    try px.barrier()
    let threads = threadStats()
    let fifo = threads.filter { $0.policy == Int(SCHED_FIFO) }.count
    let niced = threads.filter { $0.nice < 0 }.count
    let app = Int(sched_getscheduler(0))
    let appNice = Int(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0))
    let line = "rank \(px.rank): serving=\(px.servingScheduling) fifo=\(fifo) niced=\(niced) app=\(app)/\(appNice)"
    return try reportLines(px, line, scenario: "scheduling")
}

/// Gathers every rank's `line` on rank 0, which prints them in rank order
/// and then PASS.
func reportLines(_ px: Plexus, _ line: String, scenario: String) throws -> Bool {
    let all = try px.allGather(Array(line.utf8))
    if px.rank == 0 {
        for l in all { say(String(decoding: l, as: UTF8.self)) }
        say("PASS \(scenario): \(all.count) ranks reported")
    }
    return true
}

/// The nice value and scheduling policy of every thread of this process
/// (fields 19 and 41 of /proc/self/task/TID/stat, counted after the command
/// name, which is in parentheses and may itself contain spaces or
/// parentheses).
func threadStats() -> [(nice: Int, policy: Int)] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.compactMap { tid in
        guard let stat = try? String(contentsOfFile: "/proc/self/task/\(tid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // After ") " come fields 3, 4, ...: field N is the (N-2)th of them.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 38, let nice = Int(fields[16]), let policy = Int(fields[38]) else { return nil }
        return (nice, policy)
    }
}

/// `binding`: reports which threads of each rank are bound to a CPU, for
/// the `--bind` tests. After a barrier (every thread has started), each rank
/// reads the CPUs every thread may use (Cpus_allowed_list in
/// /proc/self/task/*/status). Rank 0 prints one line per rank:
/// "rank R: binding=OUTCOME app=CPUS single=N threads=M", where CPUS is the
/// application thread's list, N the threads allowed on one CPU only and M
/// all threads; then PASS.
func binding(_ px: Plexus, _ o: Options) throws -> Bool {
    try px.barrier()
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    let lists = tasks.compactMap { allowedCPUs(status: "/proc/self/task/\($0)/status") }
    let app = allowedCPUs(status: "/proc/thread-self/status") ?? "?"
    let single = lists.filter { !$0.contains(",") && !$0.contains("-") }.count
    let line = "rank \(px.rank): binding=\(px.cpuBinding) app=\(app) single=\(single) threads=\(lists.count)"
    return try reportLines(px, line, scenario: "binding")
}

/// The Cpus_allowed_list of a thread's status file, e.g. "0-1" or "1".
func allowedCPUs(status path: String) -> String? {
    guard let status = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
    for line in status.split(separator: "\n") where line.hasPrefix("Cpus_allowed_list:") {
        return line.dropFirst("Cpus_allowed_list:".count).trimmingCharacters(in: .whitespaces)
    }
    return nil
}
