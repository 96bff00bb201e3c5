import Foundation
import Plexus

/// The false-sharing experiment: two ranks each increment their own counter
/// many times. In the "same page" layout the two counters sit next to each
/// other on one page, so every write by one rank invalidates the other's copy
/// and the page ping-pongs between them although they never share data. In
/// the "separate pages" layout each counter has a page of its own and, after
/// one fault each, both run at local speed.
public enum FalseSharing {
    public struct Result: Sendable, Codable {
        public var layout: String
        public var seconds: Double
        /// Pages, or diffs of pages, received (each one a transfer across
        /// the network; multiple-writer protocols move diffs, not pages).
        public var transfers: Int
        public var faults: Int
        public var counters: [Int]
    }

    /// Runs both layouts on every rank (a collective: all ranks call it) and
    /// returns rank 0's view of each, with page transfers summed over ranks.
    public static func run(_ px: Plexus, iterations: Int) throws -> [Result] {
        guard let pageSize = px.pageSize else { throw PlexusError.noSharedMemory }
        var results: [Result] = []
        for layout in ["same page", "separate pages"] {
            let stride = layout == "same page" ? 1 : pageSize / MemoryLayout<Int>.stride
            let counters = try px.allocate(Int.self, count: stride * px.size,
                                           name: layout == "same page" ? "counters" : "padded_counters",
                                           alignment: pageSize)
            try px.barrier()
            let before = px.memory!.statistics.0.total
            let t0 = Date()
            let mine = counters.base + px.rank * stride
            for _ in 0..<iterations { increment(mine) }
            try px.barrier()
            let seconds = Date().timeIntervalSince(t0)
            let after = px.memory!.statistics.0.total
            let received = (after.pagesReceived + after.diffsApplied) - (before.pagesReceived + before.diffsApplied)
            let faults = (after.readFaults + after.writeFaults) - (before.readFaults + before.writeFaults)
            // Sum the transfers over ranks so rank 0 can report the job's
            // total; each rank also sends its own counter, so that no rank
            // reads another's from shared memory (that would be true sharing,
            // and the false-sharing report would say so).
            var w = [UInt8](repeating: 0, count: 24)
            withUnsafeBytes(of: received) { w.replaceSubrange(0..<8, with: $0) }
            withUnsafeBytes(of: faults) { w.replaceSubrange(8..<16, with: $0) }
            withUnsafeBytes(of: mine.pointee) { w.replaceSubrange(16..<24, with: $0) }
            let all = try px.allGather(w)
            func field(_ offset: Int) -> [Int] { all.map { $0.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: Int.self) } } }
            let totalReceived = field(0).reduce(0, +)
            let totalFaults = field(8).reduce(0, +)
            let values = field(16)
            results.append(Result(layout: layout, seconds: seconds, transfers: totalReceived, faults: totalFaults, counters: values))
        }
        return results
    }

    /// The protocols side by side: each one's two layouts, how much slower
    /// sharing a page made it and how many transfers it took.
    public static func comparison(_ rows: [(protocol: String, results: [Result])]) -> String {
        var s = "false sharing under each protocol (same page against a page each):\n"
        s += "protocol        same page ms   page each ms   slower   transfers (same / each)\n"
        for row in rows where row.results.count == 2 {
            let (same, padded) = (row.results[0], row.results[1])
            s += row.protocol.padding(toLength: 14, withPad: " ", startingAt: 0)
            s += String(format: " %12.1f   %12.1f   %5.1fx   %9d / %d\n", same.seconds * 1000, padded.seconds * 1000,
                        padded.seconds > 0 ? same.seconds / padded.seconds : 0, same.transfers, padded.transfers)
        }
        s += "single-writer protocols move the shared page on almost every write; multiple-writer ones (twins and diffs)\n"
        s += "let each process write its own words of its own copy and move only the changed words, at the barrier.\n"
        return s
    }

    /// The side-by-side table rank 0 prints.
    public static func table(_ results: [Result], iterations: Int, ranks: Int) -> String {
        var s = "false sharing: \(ranks) processes, each increments its own counter \(iterations) times\n"
        s += "layout           time (ms)        transfers   faults   counters\n"
        for r in results {
            s += r.layout.padding(toLength: 16, withPad: " ", startingAt: 0)
            s += String(format: " %9.1f", r.seconds * 1000)
            s += String(format: "   %14d   %6d   ", r.transfers, r.faults)
            s += r.counters.map(String.init).joined(separator: ",") + "\n"
        }
        if results.count == 2, results[1].seconds > 0 {
            s += String(format: "same page is %.1fx slower, with %d transfers instead of %d (a transfer: a page, or a diff of one)\n",
                        results[0].seconds / results[1].seconds, results[0].transfers, results[1].transfers)
        }
        return s
    }
}

/// One real load and store on shared memory per call: the optimizer may not
/// keep the counter in a register across iterations, as it would for a plain
/// loop (Swift has no volatile).
@inline(never) @_optimize(none)
public func increment(_ p: UnsafeMutablePointer<Int>) {
    p.pointee &+= 1
}
