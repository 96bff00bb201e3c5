// matmul: C = A×B on shared matrices, rows of C split among ranks. Rank 0
// then computes the product on private memory and compares.
//   plexus run -n 2 .build/release/matmul [size]
import Foundation
import Plexus
import Workloads

if CommandLine.arguments.contains("--help") || CommandLine.arguments.contains("-h") {
    print("usage: plexus run -n N matmul [size >= 1, default 256]: C = A×B on shared memory, checked against one process")
    exit(0)
}

do {
    let args = CommandLine.arguments
    let n = args.count > 1 ? Int(args[1]) ?? 256 : 256
    guard n >= 1 else {
        FileHandle.standardError.write(Data("usage: matmul [size >= 1]\n".utf8))
        exit(2)
    }
    let px = try Plexus.join()
    let m = try Matmul.allocate(px, n: n)
    let seconds = try Matmul.parallel(px, m)
    if px.rank == 0 {
        let (reference, sequentialSeconds) = Matmul.sequential(n: n)
        let diff = maxAbsDifference(m.c, reference)
        print(String(format: "matmul %dx%d, %d processes: %.1f ms (1 process on private memory: %.1f ms, speedup %.2fx)",
                     n, n, px.size, seconds * 1000, sequentialSeconds * 1000, sequentialSeconds / seconds))
        print("max abs difference from the sequential product: \(diff)")
        print(diff == 0 ? "PASS" : "FAIL")
        if diff != 0 { exit(1) }
    }
    try px.finalize()
} catch {
    FileHandle.standardError.write(Data("matmul: \(error)\n".utf8))
    exit(1)
}
