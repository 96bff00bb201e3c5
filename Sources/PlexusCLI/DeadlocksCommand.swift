#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Cluster
import Deadlock
import Foundation
import NameService
import NamesCore
import Plexus

/// `plexus deadlocks`: the deadlocks jobs' victims recorded in the name
/// service, under /deadlocks/<job>/<n>.
struct DeadlocksCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "deadlocks", abstract: "List the deadlocks jobs found, as recorded in the name service.",
        discussion: """
            When a job runs with a name service (plexus run --names, or a node that knows
            one), the victim of every deadlock its detector finds records the cycle under
            /deadlocks/JOB/N: when, the policy, and each member's rank, global PID, node and
            the lock (or other resource) it waited for. Recording is best-effort: a service
            that cannot be reached costs the job a warning on stderr, not its run.

            One row per recorded deadlock, oldest first within a job. --dot DIR and --svg DIR
            also write each cycle's wait-for graph to DIR/JOB-N.dot (Graphviz) and
            DIR/JOB-N.svg (drawn by Plexus, the victim in red).

            Examples:
              plexus deadlocks --names 10.0.0.1:7401
              plexus deadlocks --job job-1a2b3c --svg /tmp/cycles
            """)

    @Option(name: .long, help: "Only this job's deadlocks (its id, as in the records: job-…).")
    var job: String?

    @Option(name: .long, help: ArgumentHelp("Also write each cycle as Graphviz DOT to DIR/JOB-N.dot.", valueName: "DIR"))
    var dot: String?

    @Option(name: .long, help: ArgumentHelp("Also write each cycle as SVG to DIR/JOB-N.svg.", valueName: "DIR"))
    var svg: String?

    @OptionGroup var service: NamesOptions

    func validate() throws {
        for (option, dir) in [("--dot", dot), ("--svg", svg)] {
            guard let dir else { continue }
            try OutputFile.validate(URL(fileURLWithPath: dir).appendingPathComponent("x").path, option: option)
        }
        if let job, job.isEmpty || job.contains("/") { throw ValidationError("--job takes a job id such as job-1a2b3c (no /)") }
    }

    func run() throws {
        let client = try service.client()
        let root = DeadlockRecord.directory
        func list(_ path: String) throws -> [ChildName] {
            do throws(NameServiceError) { return try client.list(path) } catch {
                if case .rejected(.nameNotFound) = error { return [] }
                writeAll(2, "plexus deadlocks: \(error)\n")
                throw ExitCode(1)
            }
        }
        let jobs = try job.map { [ChildName(name: "\(root)/\($0)", isEntry: false, hasChildren: true)] } ?? list(root)
        var rows: [(name: String, record: DeadlockRecord?)] = []
        for j in jobs.sorted(by: { $0.name < $1.name }) {
            for entry in try list(j.name).sorted(by: { $0.name < $1.name }) where entry.isEntry {
                let value = try serviceCall("deadlocks") { () throws(NameServiceError) in try client.get(entry.name).value }
                rows.append((entry.name, try? DeadlockRecord(decoding: value)))
            }
        }
        if rows.isEmpty {
            print("no deadlocks recorded under \(job.map { "\(root)/\($0)" } ?? root)")
            return
        }
        print("RECORD                              TIME                      POLICY  PROCESSES  CYCLE")
        for (name, record) in rows {
            guard let record else {
                print("\(name.padding(35)) (not a deadlock record: skipped)")
                continue
            }
            print([name.padding(35), record.time.padding(25), record.policy.padding(7), "\(record.members.count)".padding(10), record.text]
                .joined(separator: " "))
            let file = name.dropFirst(root.count + 1).replacingOccurrences(of: "/", with: "-")
            if let dot {
                try OutputFile.write(Data(record.cycle.dot(name: file).utf8),
                                     to: URL(fileURLWithPath: dot).appendingPathComponent(file + ".dot").path, option: "--dot")
            }
            if let svg {
                try OutputFile.write(Data(record.cycle.svg(ranks: record.ranks, title: "\(record.job) deadlock \(name.split(separator: "/").last ?? "")").utf8),
                                     to: URL(fileURLWithPath: svg).appendingPathComponent(file + ".svg").path, option: "--svg")
            }
        }
    }
}
