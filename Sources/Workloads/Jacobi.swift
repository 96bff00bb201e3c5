import Foundation
import Plexus

/// Jacobi relaxation of Laplace's equation on an n×n grid of doubles: the
/// 5-point stencil `u'[i][j] = (u[i-1][j] + u[i+1][j] + u[i][j-1] + u[i][j+1]) / 4`
/// on the interior, with a fixed boundary (top edge 1, the others 0). Two
/// grids are swapped every iteration.
///
/// The parallel version keeps both grids in shared memory and gives each
/// rank a contiguous block of rows; a barrier ends every iteration. A rank
/// reads one row of each neighbour per iteration, so with page-aligned rows
/// the only coherence traffic is the boundary rows (a row of 2048 doubles is
/// 4 pages of 4 KiB) moving between neighbours: fetched on a read miss,
/// then invalidated when the neighbour writes it in the next iteration.
///
/// With prefetch hints (the default), a rank names those rows right after
/// each barrier: its neighbours' boundary rows, which it will read, and its
/// own, which it will write. It then sweeps its interior rows first and the
/// two rows next to its neighbours last, so the transfers and invalidations
/// run while it computes instead of while it waits in faults.
///
/// The sequential version runs the very same `sweep` on private memory: the
/// parallel result must match it bit for bit (same operations, same order).
public enum Jacobi {
    /// Rows `rows` of the grid that rank `rank` of `size` updates (interior rows only).
    public static func rows(n: Int, rank: Int, size: Int) -> Range<Int> {
        let interior = n - 2
        let lo = 1 + interior * rank / size
        let hi = 1 + interior * (rank + 1) / size
        return lo..<hi
    }

    /// The rows rank `rank` of `size` initialises in the shared grids (first
    /// touch): its own, and the fixed top and bottom rows for the first and
    /// last rank.
    static func initializedRows(n: Int, rank: Int, size: Int) -> Range<Int> {
        let mine = rows(n: n, rank: rank, size: size)
        return (rank == 0 ? 0 : mine.lowerBound)..<(rank == size - 1 ? n : mine.upperBound)
    }

    /// Writes the initial values of rows `rows` into `grid`: 1 on the top edge, 0 elsewhere.
    public static func initialize(_ grid: UnsafeMutablePointer<Double>, n: Int, rows: Range<Int>) {
        for i in rows {
            let row = grid + i * n
            let value: Double = i == 0 ? 1 : 0
            for j in 0..<n { row[j] = value }
        }
    }

    /// One sweep over rows `rows` (interior rows: 1 ≤ i < n-1), reading `src`
    /// and writing `dst`. Columns 0 and n-1 are boundary and are copied.
    @inline(__always)
    public static func sweep(_ src: UnsafePointer<Double>, _ dst: UnsafeMutablePointer<Double>, n: Int, rows: Range<Int>) {
        for i in rows {
            let up = src + (i - 1) * n
            let mid = src + i * n
            let down = src + (i + 1) * n
            let out = dst + i * n
            out[0] = mid[0]
            var j = 1
            while j < n - 1 {
                out[j] = 0.25 * ((up[j] + down[j]) + (mid[j - 1] + mid[j + 1]))
                j &+= 1
            }
            out[n - 1] = mid[n - 1]
        }
    }

    /// One iteration over rows `rows` in the order that leaves prefetched
    /// rows the most time: the rows between the first and the last, then
    /// the first, then the last (the two next to other ranks' rows). Every
    /// version uses it, so all compute the same values in the same order
    /// per row (each output depends on `src` only, so the row order cannot
    /// change a result).
    @inline(__always)
    public static func sweepInteriorFirst(_ src: UnsafePointer<Double>, _ dst: UnsafeMutablePointer<Double>, n: Int, rows: Range<Int>) {
        guard rows.count > 2 else {
            sweep(src, dst, n: n, rows: rows)
            return
        }
        sweep(src, dst, n: n, rows: (rows.lowerBound + 1)..<(rows.upperBound - 1))
        sweep(src, dst, n: n, rows: rows.lowerBound..<(rows.lowerBound + 1))
        sweep(src, dst, n: n, rows: (rows.upperBound - 1)..<rows.upperBound)
    }

    /// The prefetch hints of one iteration of rank rows `rows`: the rows
    /// just outside them in `src` (the neighbours', to be read), and the
    /// first and last of them in `dst` (this rank's boundary rows, to be
    /// written; the neighbours hold copies from the last iteration).
    static func prefetchHalo(_ px: Plexus, _ src: UnsafePointer<Double>, _ dst: UnsafeMutablePointer<Double>,
                             n: Int, rows: Range<Int>) throws {
        let rowBytes = n * MemoryLayout<Double>.stride
        var hints: [PrefetchRange] = []
        for i in [rows.lowerBound - 1, rows.upperBound] where i >= 0 && i < n {
            hints.append(PrefetchRange(src + i * n, bytes: rowBytes, for: .read))
        }
        // The first and last row, once if they are the same (the same order in every process).
        let boundary = rows.count > 1 ? [rows.lowerBound, rows.upperBound - 1] : Array(rows)
        for i in boundary {
            hints.append(PrefetchRange(dst + i * n, bytes: rowBytes, for: .write))
        }
        try px.prefetch(hints)
    }

    /// The whole computation on private memory in this process: returns the
    /// final grid and the seconds spent iterating (initialisation excluded).
    public static func sequential(n: Int, iterations: Int) -> (grid: [Double], seconds: Double) {
        var a = [Double](repeating: 0, count: n * n)
        var b = [Double](repeating: 0, count: n * n)
        var seconds = 0.0
        a.withUnsafeMutableBufferPointer { pa in
            b.withUnsafeMutableBufferPointer { pb in
                let p = pa.baseAddress!, q = pb.baseAddress!
                initialize(p, n: n, rows: 0..<n)
                initialize(q, n: n, rows: 0..<n)
                var src = p, dst = q
                let t0 = DispatchTime.now().uptimeNanoseconds
                for _ in 0..<iterations {
                    sweepInteriorFirst(src, dst, n: n, rows: 1..<(n - 1))
                    swap(&src, &dst)
                }
                seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            }
        }
        return (iterations % 2 == 0 ? a : b, seconds)
    }

    /// The shared grids of a parallel run.
    public struct Grids: Sendable {
        public let a: SharedArray<Double>
        public let b: SharedArray<Double>
        public let n: Int
        /// The grid that holds the result after `iterations` sweeps.
        public func result(after iterations: Int) -> SharedArray<Double> { iterations % 2 == 0 ? a : b }
    }

    /// Collectively allocates both grids, page-aligned, and initialises them:
    /// each rank writes its own rows (first touch), rank 0 and the last rank
    /// also the boundary rows.
    public static func allocate(_ px: Plexus, n: Int, name: String = "jacobi") throws -> Grids {
        let align = px.pageSize ?? 4096
        let a = try px.allocate(Double.self, count: n * n, name: "\(name).a", alignment: align)
        let b = try px.allocate(Double.self, count: n * n, name: "\(name).b", alignment: align)
        let mine = initializedRows(n: n, rank: px.rank, size: px.size)
        initialize(a.base, n: n, rows: mine)
        initialize(b.base, n: n, rows: mine)
        try px.barrier()
        return Grids(a: a, b: b, n: n)
    }

    /// Where one rank's time in `parallel` went.
    public struct Timing: Sendable {
        /// From the first sweep to the last barrier.
        public var seconds = 0.0
        /// Blocked in page faults (the engine's clock: any thread of this
        /// process, from the fault's arrival at the engine to its wake-up).
        public var faultSeconds = 0.0
        /// Waiting at the barriers that end the iterations.
        public var barrierSeconds = 0.0
        /// In the prefetch hints' calls (sending their requests; the
        /// transfers themselves run on the engine's threads).
        public var hintSeconds = 0.0

        /// "123.4 ms: 0.3 ms blocked in faults, 12.1 ms at barriers, 2.0 ms giving hints".
        public var summary: String {
            String(format: "%.1f ms: %.1f ms blocked in faults, %.1f ms at barriers, %.1f ms giving hints",
                   seconds * 1000, faultSeconds * 1000, barrierSeconds * 1000, hintSeconds * 1000)
        }
    }

    /// Runs `iterations` sweeps on the shared grids (a collective); returns
    /// this rank's time from the first sweep to the last barrier and where
    /// it went. With `prefetch`, each iteration starts with the rank's
    /// prefetch hints.
    public static func parallel(_ px: Plexus, grids: Grids, iterations: Int, prefetch: Bool = true) throws -> Timing {
        let n = grids.n
        let mine = rows(n: n, rank: px.rank, size: px.size)
        var src = grids.a.base, dst = grids.b.base
        func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }
        func blocked() -> UInt64 { px.memory?.statistics.blockedNanos ?? 0 }
        var barrierNanos: UInt64 = 0, hintNanos: UInt64 = 0
        try px.barrier()
        let blocked0 = blocked()
        let t0 = now()
        for _ in 0..<iterations {
            if prefetch {
                let h = now()
                try prefetchHalo(px, src, dst, n: n, rows: mine)
                hintNanos += now() - h
            }
            sweepInteriorFirst(src, dst, n: n, rows: mine)
            let b = now()
            try px.barrier()
            barrierNanos += now() - b
            swap(&src, &dst)
        }
        let elapsed = now() - t0
        return Timing(seconds: Double(elapsed) / 1e9, faultSeconds: Double(blocked() - blocked0) / 1e9,
                      barrierSeconds: Double(barrierNanos) / 1e9, hintSeconds: Double(hintNanos) / 1e9)
    }

    /// The most a split of the grid among the ranks can gain on this machine,
    /// without shared memory (a collective): every rank sweeps its own rows
    /// `iterations` times on private grids, all at once, with no halo
    /// exchange and no barrier between iterations. Returns the seconds from
    /// a barrier before the first sweep to a barrier after every rank's
    /// last: the slowest rank's time. On the 2-core VMs of this project
    /// two processes that share nothing still slow each other down (the
    /// two vCPUs give about 1.5 times one), so this, not the rank count,
    /// is the ceiling of the parallel version's speedup.
    ///
    /// With `barriers`, a barrier ends every iteration, as in the parallel
    /// version: then it is the ceiling of any memory system for this
    /// program, which pays for the ranks' uneven sweeps at every barrier.
    public static func privateHalves(_ px: Plexus, n: Int, iterations: Int, barriers: Bool = false) throws -> Double {
        let mine = rows(n: n, rank: px.rank, size: px.size)
        let a = UnsafeMutablePointer<Double>.allocate(capacity: n * n)
        let b = UnsafeMutablePointer<Double>.allocate(capacity: n * n)
        defer {
            a.deallocate()
            b.deallocate()
        }
        let touched = (mine.lowerBound - 1)..<(mine.upperBound + 1)
        a.initialize(repeating: 0, count: n * n)
        b.initialize(repeating: 0, count: n * n)
        initialize(a, n: n, rows: touched)
        initialize(b, n: n, rows: touched)
        var src = a, dst = b
        try px.barrier()
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<iterations {
            sweepInteriorFirst(src, dst, n: n, rows: mine)
            if barriers { try px.barrier() }
            swap(&src, &dst)
        }
        try px.barrier()
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }

    /// The Jacobi rows of `plexus bench` (a collective). Returns, on rank 0,
    /// the seconds of each run of every version, and the largest difference
    /// between a shared-memory result and the sequential one.
    public struct BenchmarkRuns: Sendable {
        /// The parallel version as the example runs it, with prefetch hints.
        public var parallel: [Double] = []
        /// The same without prefetch hints: every transfer waits in a fault.
        public var parallelWithoutPrefetch: [Double] = []
        public var sequential: [Double] = []
        public var privateHalves: [Double] = []
        public var privateWithBarriers: [Double] = []
        public var maxDifference = 0.0
    }

    /// `runs` times: rank 0 runs the sequential version on private memory
    /// while the others wait in a barrier; then all ranks run the parallel
    /// version with and without prefetch hints (in alternating order, on
    /// freshly initialised shared grids), then `privateHalves` without and
    /// with a barrier per iteration. Both shared-memory results of the last
    /// run are checked against the sequential one.
    public static func benchmark(_ px: Plexus, n: Int, iterations: Int, runs: Int,
                                 progress: (String) -> Void = { _ in }) throws -> BenchmarkRuns {
        let grids = try allocate(px, n: n)
        var out = BenchmarkRuns()
        var reference: [Double] = []
        let mine = initializedRows(n: n, rank: px.rank, size: px.size)
        for run in 0..<runs {
            if px.rank == 0 {
                progress("jacobi run \(run + 1)/\(runs): 1 process on private memory")
                let (grid, seconds) = sequential(n: n, iterations: iterations)
                out.sequential.append(seconds)
                reference = grid
            }
            try px.barrier()
            for prefetch in run % 2 == 0 ? [true, false] : [false, true] {
                if px.rank == 0 { progress("jacobi run \(run + 1)/\(runs): \(px.size) processes on shared memory, \(prefetch ? "with" : "without") prefetch hints") }
                initialize(grids.a.base, n: n, rows: mine)
                initialize(grids.b.base, n: n, rows: mine)
                let seconds = try parallel(px, grids: grids, iterations: iterations, prefetch: prefetch).seconds
                if prefetch { out.parallel.append(seconds) } else { out.parallelWithoutPrefetch.append(seconds) }
                if run == runs - 1 {
                    // Checked before the grids are initialised again.
                    if px.rank == 0 { out.maxDifference = max(out.maxDifference, maxAbsDifference(grids.result(after: iterations), reference)) }
                    try px.barrier()
                }
            }
            if px.rank == 0 { progress("jacobi run \(run + 1)/\(runs): \(px.size) processes on private halves, no shared memory") }
            out.privateHalves.append(try privateHalves(px, n: n, iterations: iterations))
            if px.rank == 0 { progress("jacobi run \(run + 1)/\(runs): \(px.size) processes on private halves with a barrier per iteration") }
            out.privateWithBarriers.append(try privateHalves(px, n: n, iterations: iterations, barriers: true))
        }
        try px.barrier()
        return out
    }
}

/// Largest absolute difference between a shared array and a private one
/// (reads the whole shared array: faults in every page this rank does not hold).
public func maxAbsDifference(_ shared: SharedArray<Double>, _ reference: [Double]) -> Double {
    precondition(shared.count == reference.count, "arrays of different sizes")
    var worst = 0.0
    reference.withUnsafeBufferPointer { r in
        let s = shared.base
        for k in 0..<r.count { worst = max(worst, abs(s[k] - r[k])) }
    }
    return worst
}
