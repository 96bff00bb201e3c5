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
    let usage = "usage: jacobi [size >= 3, default 512] [iterations >= 0, default 50] [--no-prefetch]\n"
    let words = CommandLine.arguments.dropFirst()
    if words.contains("--help") || words.contains("-h") {
        print(usage, terminator: "")
        exit(0)
    }
    let prefetch = !words.contains("--no-prefetch")
    let numbers = words.compactMap { Int($0) }
    // Other words are reported and ignored (tests tag their jobs with one).
    for w in words where w != "--no-prefetch" && Int(w) == nil {
        FileHandle.standardError.write(Data("jacobi: ignoring the argument '\(w)'\n".utf8))
    }
    guard numbers.count <= 2 else {
        FileHandle.standardError.write(Data(("jacobi: more than two numbers in \(Array(words))\n" + usage).utf8))
        exit(2)
    }
    let n = numbers.count > 0 ? numbers[0] : 512
    let iterations = numbers.count > 1 ? numbers[1] : 50
    guard n >= 3, iterations >= 0 else {
        FileHandle.standardError.write(Data(usage.utf8))
        exit(2)
    }
    let px = try Plexus.join()
    let grids = try Jacobi.allocate(px, n: n)
    let timing = try Jacobi.parallel(px, grids: grids, iterations: iterations, prefetch: prefetch)
    let seconds = timing.seconds
    print("rank \(px.rank): \(timing.summary)")
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
