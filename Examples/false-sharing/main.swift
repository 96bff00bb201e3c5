// false-sharing: two (or more) processes increment their own counters; with
// the counters on one page versus on separate pages. Prints time and page
// transfers for both layouts.
//   plexus run -n 2 .build/debug/false-sharing [iterations]
import Foundation
import Plexus
import Workloads

if CommandLine.arguments.contains("--help") || CommandLine.arguments.contains("-h") {
    print("usage: plexus run -n 2 false-sharing [iterations, default 20000]: each process increments its own counter,")
    print("both counters on one page, then on a page each; prints time, transfers and faults of both layouts")
    exit(0)
}

do {
    let px = try Plexus.join()
    let iterations = CommandLine.arguments.count > 1 ? Int(CommandLine.arguments[1]) ?? 20_000 : 20_000
    let results = try FalseSharing.run(px, iterations: iterations)
    if px.rank == 0 { print(FalseSharing.table(results, iterations: iterations, ranks: px.size), terminator: "") }
    for r in results where r.counters.contains(where: { $0 != iterations }) {
        FileHandle.standardError.write(Data("false-sharing: lost updates in layout '\(r.layout)': \(r.counters)\n".utf8))
        exit(1)
    }
    try px.finalize()
} catch {
    FileHandle.standardError.write(Data("false-sharing: \(error)\n".utf8))
    exit(1)
}
