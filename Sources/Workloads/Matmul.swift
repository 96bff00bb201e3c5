import Foundation
import Plexus

/// Dense C = A×B of n×n doubles, row-major. The parallel version keeps A, B
/// and C in shared memory and gives each rank a block of rows of C: it reads
/// its rows of A, all of B (each page of B is fetched once per rank and then
/// read locally: read sharing is what write-invalidate handles best) and
/// writes only its own rows of C.
public enum Matmul {
    /// Deterministic, exactly representable inputs (small integers / 8), so
    /// the product is exact and the check can demand equality.
    @inline(__always)
    public static func a(_ i: Int, _ j: Int) -> Double { Double((i * 7 + j * 3) % 17 - 8) / 8 }
    @inline(__always)
    public static func b(_ i: Int, _ j: Int) -> Double { Double((i * 5 + j * 11) % 13 - 6) / 8 }

    public static func fill(_ m: UnsafeMutablePointer<Double>, n: Int, rows: Range<Int>, _ f: (Int, Int) -> Double) {
        for i in rows { for j in 0..<n { m[i * n + j] = f(i, j) } }
    }

    /// Rows `rows` of C = A×B, i-k-j order (unit stride in the inner loop).
    public static func multiply(_ a: UnsafePointer<Double>, _ b: UnsafePointer<Double>, _ c: UnsafeMutablePointer<Double>,
                                n: Int, rows: Range<Int>) {
        for i in rows {
            let ci = c + i * n
            for j in 0..<n { ci[j] = 0 }
            for k in 0..<n {
                let aik = a[i * n + k]
                let bk = b + k * n
                var j = 0
                while j < n {
                    ci[j] += aik * bk[j]
                    j &+= 1
                }
            }
        }
    }

    /// Rows of C that rank `rank` of `size` computes.
    public static func rows(n: Int, rank: Int, size: Int) -> Range<Int> {
        (n * rank / size)..<(n * (rank + 1) / size)
    }

    /// The product on private memory; returns C and the seconds of the multiplication.
    public static func sequential(n: Int) -> (c: [Double], seconds: Double) {
        var a = [Double](repeating: 0, count: n * n), b = a, c = a
        var seconds = 0.0
        a.withUnsafeMutableBufferPointer { pa in
            b.withUnsafeMutableBufferPointer { pb in
                c.withUnsafeMutableBufferPointer { pc in
                    fill(pa.baseAddress!, n: n, rows: 0..<n, Matmul.a)
                    fill(pb.baseAddress!, n: n, rows: 0..<n, Matmul.b)
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    multiply(pa.baseAddress!, pb.baseAddress!, pc.baseAddress!, n: n, rows: 0..<n)
                    seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
                }
            }
        }
        return (c, seconds)
    }

    public struct Matrices: Sendable {
        public let a: SharedArray<Double>
        public let b: SharedArray<Double>
        public let c: SharedArray<Double>
        public let n: Int
    }

    /// Collectively allocates A, B, C (page-aligned) and fills A and B: each
    /// rank writes its own rows of A and of B.
    public static func allocate(_ px: Plexus, n: Int) throws -> Matrices {
        let align = px.pageSize ?? 4096
        let a = try px.allocate(Double.self, count: n * n, name: "matmul.A", alignment: align)
        let b = try px.allocate(Double.self, count: n * n, name: "matmul.B", alignment: align)
        let c = try px.allocate(Double.self, count: n * n, name: "matmul.C", alignment: align)
        let mine = rows(n: n, rank: px.rank, size: px.size)
        fill(a.base, n: n, rows: mine, Matmul.a)
        fill(b.base, n: n, rows: mine, Matmul.b)
        try px.barrier()
        return Matrices(a: a, b: b, c: c, n: n)
    }

    /// Computes this rank's rows of C (a collective); returns the seconds
    /// from the start barrier to the end barrier.
    public static func parallel(_ px: Plexus, _ m: Matrices) throws -> Double {
        try px.barrier()
        let t0 = DispatchTime.now().uptimeNanoseconds
        multiply(m.a.base, m.b.base, m.c.base, n: m.n, rows: rows(n: m.n, rank: px.rank, size: px.size))
        try px.barrier()
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }
}
