// jacobi: a 2-D 5-point stencil on a shared grid, rows split among ranks, a
// barrier per iteration. Rank 0 then runs the same code on private memory
// and compares the results.
//   plexus run -n 2 .build/release/jacobi [size] [iterations] [--no-prefetch]
// --no-prefetch leaves out the prefetch hints: every transfer then waits in
// a fault.
import Foundation
import Plexus
import Workloads

do {
    let prefetch = !CommandLine.arguments.contains("--no-prefetch")
    let args = CommandLine.arguments.filter { $0 != "--no-prefetch" }
    let n = args.count > 1 ? Int(args[1]) ?? 512 : 512
    let iterations = args.count > 2 ? Int(args[2]) ?? 50 : 50
    guard n >= 3, iterations >= 0 else {
        FileHandle.standardError.write(Data("usage: jacobi [size >= 3] [iterations >= 0] [--no-prefetch]\n".utf8))
        exit(2)
    }
    let px = try Plexus.join()
    let grids = try Jacobi.allocate(px, n: n)
    let seconds = try Jacobi.parallel(px, grids: grids, iterations: iterations, prefetch: prefetch)
    if px.rank == 0 {
        let (reference, sequentialSeconds) = Jacobi.sequential(n: n, iterations: iterations)
        let diff = maxAbsDifference(grids.result(after: iterations), reference)
        print(String(format: "jacobi %dx%d, %d iterations, %d processes%@: %.1f ms (1 process on private memory: %.1f ms, speedup %.2fx)",
                     n, n, iterations, px.size, prefetch ? "" : " (no prefetch hints)", seconds * 1000, sequentialSeconds * 1000, sequentialSeconds / seconds))
        print("max abs difference from the sequential run: \(diff)")
        print(diff == 0 ? "PASS" : "FAIL")
        if diff != 0 { exit(1) }
    }
    try px.finalize()
} catch {
    FileHandle.standardError.write(Data("jacobi: \(error)\n".utf8))
    exit(1)
}
