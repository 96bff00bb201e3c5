import Foundation
import Plexus

/// One row of `plexus bench`: a latency (or time) with the floor it is
/// compared with, measured in the same run.
///
/// In JSON a value that is not a number (a ratio without a floor) is left
/// out; decoding gives it back as NaN.
public struct BenchmarkRow: Codable, Sendable, Equatable {
    public var name: String
    public var unit: String
    public var median: Double
    public var p99: Double
    /// What the row is compared with: the TCP 16 B → 4 KiB round trip (µs)
    /// between the job's two processes (blocking reads) for latencies; for
    /// Jacobi, one process on private memory (ms).
    public var floor: Double
    /// median / floor.
    public var ratio: Double
    /// For Jacobi: one-process time / parallel time.
    public var speedup: Double?
    /// What the operation physically needs at the least, as a sum of floors
    /// measured between two plain processes (`PhysicalFloors`); nil when
    /// the row has none.
    public var limitOf: PhysicalLimit?
    /// That sum in the row's unit, once the bench has measured the floors.
    public var limit: Double?
    /// median / limit.
    public var limitRatio: Double?
    /// What the row should reach, e.g. "<= 2" (on `limitRatio`) or ">= 1.2"
    /// (on `speedup`).
    public var target: String?
    public var samples: Int
    /// Look-ahead (pages) in force while the row was measured, when it differs
    /// from the job's.
    public var lookAhead: Int?
    /// Memory-protocol messages (all ranks) per operation, when the operation is a page operation.
    public var messagesPerOp: Double?
    /// Pages transferred (all ranks) per operation, when the operation is a page operation.
    public var pagesPerOp: Double?
    /// Mean time the engine saw per fault (taking the fault to waking the faulting
    /// thread), when the operation is a fault: the median minus this is spent
    /// handing the fault to the engine and waking the faulting thread.
    public var engineMicrosPerOp: Double?

    public init(name: String, unit: String, samples values: [Double], floor: Double, limitOf: PhysicalLimit? = nil,
                target: String? = nil) {
        let s = Summary(values)
        self.name = name
        self.unit = unit
        median = s.median
        p99 = s.p99
        self.floor = floor
        ratio = floor > 0 ? s.median / floor : .nan
        self.limitOf = limitOf
        self.target = target
        samples = values.count
    }

    /// Sets `limit` (and `limitRatio`) from the floors, if the row has a limit.
    public mutating func apply(_ floors: PhysicalFloors) {
        guard let kind = limitOf, let value = floors.limit(kind), value > 0 else { return }
        limit = value
        limitRatio = median / value
    }

    /// Whether the row meets its target (nil without one, or without the
    /// value the target is on).
    public var meetsTarget: Bool? {
        guard let t = target else { return nil }
        let parts = t.split(separator: " ")
        guard parts.count == 2, let bound = Double(parts[1]) else { return nil }
        if parts[0] == "<=" { return limitRatio.map { $0 <= bound } }
        if parts[0] == ">=" { return (speedup ?? ratio) >= bound }
        return nil
    }

    private enum CodingKeys: String, CodingKey {
        case name, unit, median, p99, floor, ratio, speedup, limitOf, limit, limitRatio, target, samples, lookAhead
        case messagesPerOp, pagesPerOp, engineMicrosPerOp
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func number(_ key: CodingKeys) throws -> Double { try c.decodeIfPresent(Double.self, forKey: key) ?? .nan }
        name = try c.decode(String.self, forKey: .name)
        unit = try c.decode(String.self, forKey: .unit)
        median = try number(.median)
        p99 = try number(.p99)
        floor = try number(.floor)
        ratio = try number(.ratio)
        speedup = try c.decodeIfPresent(Double.self, forKey: .speedup)
        limitOf = try c.decodeIfPresent(PhysicalLimit.self, forKey: .limitOf)
        limit = try c.decodeIfPresent(Double.self, forKey: .limit)
        limitRatio = try c.decodeIfPresent(Double.self, forKey: .limitRatio)
        target = try c.decodeIfPresent(String.self, forKey: .target)
        samples = try c.decode(Int.self, forKey: .samples)
        lookAhead = try c.decodeIfPresent(Int.self, forKey: .lookAhead)
        messagesPerOp = try c.decodeIfPresent(Double.self, forKey: .messagesPerOp)
        pagesPerOp = try c.decodeIfPresent(Double.self, forKey: .pagesPerOp)
        engineMicrosPerOp = try c.decodeIfPresent(Double.self, forKey: .engineMicrosPerOp)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        func number(_ v: Double?, _ key: CodingKeys) throws {
            if let v, v.isFinite { try c.encode(v, forKey: key) }
        }
        try c.encode(name, forKey: .name)
        try c.encode(unit, forKey: .unit)
        try number(median, .median)
        try number(p99, .p99)
        try number(floor, .floor)
        try number(ratio, .ratio)
        try number(speedup, .speedup)
        try c.encodeIfPresent(limitOf, forKey: .limitOf)
        try number(limit, .limit)
        try number(limitRatio, .limitRatio)
        try c.encodeIfPresent(target, forKey: .target)
        try c.encode(samples, forKey: .samples)
        try c.encodeIfPresent(lookAhead, forKey: .lookAhead)
        try number(messagesPerOp, .messagesPerOp)
        try number(pagesPerOp, .pagesPerOp)
        try number(engineMicrosPerOp, .engineMicrosPerOp)
    }
}

/// What an operation needs at the least on this machine, in terms of the
/// floors `plexus bench` measures between two plain processes.
public enum PhysicalLimit: String, Codable, Sendable, CaseIterable {
    /// A 16 B request and a 4 KiB reply: the message row.
    case pageRoundTrip = "page round trip"
    /// A fault, then a page fetched in one request/reply: a read miss.
    case faultAndPageRoundTrip = "fault + page round trip"
    /// A fault, then one small request/reply (an invalidation and its
    /// acknowledgement): a write fault that invalidates one reader.
    case faultAndRoundTrip = "fault + round trip"
    /// One small request/reply: a lock acquired from the process that
    /// manages it (the release needs no reply), a barrier of 2 processes
    /// (one message each way).
    case roundTrip = "round trip"
}

/// The floors measured outside the job, in microseconds (medians).
public struct PhysicalFloors: Codable, Sendable, Equatable {
    /// Busy-polling 16 B -> 4 KiB round trip between two plain processes.
    public var pageRoundTrip: Double
    /// Busy-polling 16 B -> 16 B round trip between the same processes.
    public var roundTrip: Double
    /// SIGSEGV on a PROT_NONE page served in the handler by one mprotect.
    public var fault: Double

    public init(pageRoundTrip: Double, roundTrip: Double, fault: Double) {
        self.pageRoundTrip = pageRoundTrip
        self.roundTrip = roundTrip
        self.fault = fault
    }

    public func limit(_ kind: PhysicalLimit) -> Double? {
        let value: Double
        switch kind {
        case .pageRoundTrip: value = pageRoundTrip
        case .faultAndPageRoundTrip: value = fault + pageRoundTrip
        case .faultAndRoundTrip: value = fault + roundTrip
        case .roundTrip: value = roundTrip
        }
        return value.isFinite ? value : nil
    }
}

/// Order statistics of a sample, from the sorted values.
public struct Summary: Sendable {
    public let sorted: [Double]
    public init(_ values: [Double]) { sorted = values.sorted() }
    public var median: Double {
        guard !sorted.isEmpty else { return .nan }
        let m = sorted.count / 2
        return sorted.count % 2 == 1 ? sorted[m] : (sorted[m - 1] + sorted[m]) / 2
    }
    /// The nearest-rank percentile: the smallest value with at least q of the sample at or below it.
    public func percentile(_ q: Double) -> Double {
        guard !sorted.isEmpty else { return .nan }
        let rank = Int((q * Double(sorted.count)).rounded(.up))
        return sorted[min(sorted.count - 1, max(0, rank - 1))]
    }
    public var p99: Double { percentile(0.99) }
    public var minimum: Double { sorted.first ?? .nan }
}

/// The latency micro-benchmarks of `plexus bench`, each a collective of a
/// 2-process job (rank 0 and rank 1; other ranks only join the barriers).
/// Every sample is one operation timed on its own with CLOCK_MONOTONIC.
/// After every `block` samples each benchmark calls `between` on every rank
/// (the bench measures its floor there, so that floor and row share the
/// VM's conditions); no sample spans it.
public enum Microbenchmarks {
    /// Page operations over `pages` pages, in `rounds` rounds. Each round:
    /// rank 0 writes one word of every page it manages, barrier, then of
    /// every other page, barrier; rank 1 reads one word of every page, barrier.
    ///
    /// - Rank 1's reads are remote read misses: rank 0 holds each page
    ///   writable, so the read faults, and under `sc` the page comes from
    ///   rank 0 in one request/reply whichever rank manages it. Round 0's
    ///   reads are the first time rank 1 holds each page: the kernel also
    ///   allocates the page in rank 1's memory file and fills both views'
    ///   page-table entries, which doubles the cost on this VM. They are
    ///   reported apart (`firstReadMiss`); later rounds' reads find the page
    ///   frame and mappings in place, as every miss after the first does.
    /// - From round 1 on, rank 0's writes are write faults that must
    ///   invalidate one reader (rank 1's copy). Under `sc` the page's manager
    ///   (global page % ranks) orders the upgrade: when rank 0 manages the
    ///   page it only sends the invalidation (one round trip); when rank 1
    ///   does, the request and forward add a second round trip. The two
    ///   cases are reported apart, since their mix would have no meaningful median.
    public struct PageResult: Sendable {
        /// Read misses on pages rank 1 held before (rounds 1 and later).
        public var readMiss: [Double] = []
        /// Rank 1's first read miss of each page (round 0).
        public var firstReadMiss: [Double] = []
        public var writeLocalManager: [Double] = []
        public var writeRemoteManager: [Double] = []
        /// Memory-protocol messages sent and pages received, summed over
        /// ranks, during each phase: read misses, writes to pages rank 0
        /// manages, writes to pages rank 1 manages, first read misses.
        public var traffic: [(messages: Int, pages: Int)] = Array(repeating: (0, 0), count: Self.phases)
        /// Microseconds the engine counted from taking each fault to waking
        /// its threads, summed over ranks, per phase (the rest of a sample
        /// is the hand-offs between the faulting thread and the engine).
        public var engineMicros: [Double] = Array(repeating: 0, count: Self.phases)
        static let phases = 4
    }

    public static func pages(_ px: Plexus, pages: Int, rounds: Int, block: Int = .max,
                             between: () throws -> Void = {}) throws -> PageResult {
        guard let pageSize = px.pageSize, let memory = px.memory else { throw PlexusError.noSharedMemory }
        let words = pageSize / MemoryLayout<Int>.stride
        let array = try px.allocate(Int.self, count: pages * words, name: "bench.pages", alignment: pageSize)
        let firstPage = Int(array.address - memory.region.applicationBase) / pageSize
        let managedBy0 = (0..<pages).filter { (firstPage + $0) % px.size == 0 }
        let managedByOther = (0..<pages).filter { (firstPage + $0) % px.size != 0 }
        var result = PageResult()
        var traffic = [Int](repeating: 0, count: 3 * PageResult.phases)
        func counters() -> (Int, Int, Int) {
            let (s, blocked) = memory.statistics
            return (s.messagesSent, s.total.pagesReceived, Int(blocked))
        }
        /// Runs `body` between two barriers and adds this rank's traffic to `phase`.
        func phase(_ k: Int?, _ body: () -> Void) throws {
            let before = counters()
            body()
            try px.barrier()
            let after = counters()
            if let k { traffic[3 * k] += after.0 - before.0; traffic[3 * k + 1] += after.1 - before.1; traffic[3 * k + 2] += after.2 - before.2 }
        }
        try px.barrier()
        for round in 0..<rounds {
            for (k, list) in [(1, managedBy0), (2, managedByOther)] {
                for part in chunks(list, block) {
                    try phase(round > 0 ? k : nil) {
                        guard px.rank == 0 else { return }
                        for p in part {
                            let t0 = nanoseconds()
                            storeWord(array.base + p * words, round + 1)
                            let dt = Double(nanoseconds() - t0) / 1000
                            if round > 0 { if k == 1 { result.writeLocalManager.append(dt) } else { result.writeRemoteManager.append(dt) } }
                        }
                    }
                    try between()
                }
            }
            for part in chunks(Array(0..<pages), block) {
                try phase(round == 0 ? 3 : 0) {
                    guard px.rank == 1 else { return }
                    for p in part {
                        let t0 = nanoseconds()
                        let v = loadWord(array.base + p * words)
                        let dt = Double(nanoseconds() - t0) / 1000
                        if round == 0 { result.firstReadMiss.append(dt) } else { result.readMiss.append(dt) }
                        precondition(v == round + 1, "bench: page \(p) holds \(v) after round \(round + 1): sequential consistency violated")
                    }
                }
                try between()
            }
        }
        // Gather rank 1's reads and everyone's traffic on rank 0.
        var w = [UInt8]()
        for x in traffic { withUnsafeBytes(of: x) { w += $0 } }
        // Rank 1's reads: the first round's, then the later rounds'.
        w += doublesToBytes(result.firstReadMiss)
        w += doublesToBytes(result.readMiss)
        let all = try px.allGather(w)
        if px.rank == 0 {
            result.readMiss = []
            let header = 8 * traffic.count
            for (r, bytes) in all.enumerated() {
                let ints = (0..<traffic.count).map { k in bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 8 * k, as: Int.self) } }
                for k in 0..<PageResult.phases {
                    result.traffic[k].messages += ints[3 * k]
                    result.traffic[k].pages += ints[3 * k + 1]
                    result.engineMicros[k] += Double(ints[3 * k + 2]) / 1000
                }
                if r == 1 {
                    let reads = bytesToDoubles(Array(bytes[header...]))
                    result.firstReadMiss = Array(reads.prefix(pages))
                    result.readMiss = Array(reads.dropFirst(pages))
                }
            }
        }
        return result
    }

    /// Rank 1 acquires and releases lock 0, which rank 0 manages, `samples`
    /// times; each sample is one acquire+release. Returns rank 1's samples on rank 0.
    public static func lock(_ px: Plexus, samples: Int, warmup: Int = 100, block: Int = .max,
                            between: () throws -> Void = {}) throws -> [Double] {
        let lock = px.lock(0)
        var mine: [Double] = []
        mine.reserveCapacity(samples)
        try px.barrier()
        for (i, n) in ([warmup] + chunks(samples, block)).enumerated() {
            if px.rank == 1 {
                for _ in 0..<n {
                    let t0 = nanoseconds()
                    try lock.acquire()
                    try lock.release()
                    if i > 0 { mine.append(Double(nanoseconds() - t0) / 1000) }
                }
            }
            try px.barrier()
            if i > 0 { try between() }
        }
        let all = try px.allGather(doublesToBytes(mine))
        return px.rank == 0 && all.count > 1 ? bytesToDoubles(all[1]) : []
    }

    /// Rank 1 sends 16 bytes to rank 0 with `Plexus.send`, rank 0 answers with
    /// 4 KiB: the round trip of Plexus's own transport (frames, reader
    /// threads, mailboxes), which a remote fault cannot beat. Returns rank
    /// 1's samples on rank 0.
    public static func messageRoundTrip(_ px: Plexus, samples: Int, warmup: Int = 100, block: Int = .max,
                                        between: () throws -> Void = {}) throws -> [Double] {
        let request = [UInt8](repeating: 1, count: 16), reply = [UInt8](repeating: 2, count: 4096)
        var mine: [Double] = []
        try px.barrier()
        for (i, n) in ([warmup] + chunks(samples, block)).enumerated() {
            for _ in 0..<n {
                if px.rank == 1 {
                    let t0 = nanoseconds()
                    try px.send(request, to: 0)
                    _ = try px.receive()
                    if i > 0 { mine.append(Double(nanoseconds() - t0) / 1000) }
                } else if px.rank == 0 {
                    _ = try px.receive()
                    try px.send(reply, to: 1)
                }
            }
            if i > 0 { try between() }
        }
        let all = try px.allGather(doublesToBytes(mine))
        return px.rank == 0 && all.count > 1 ? bytesToDoubles(all[1]) : []
    }

    /// Every rank calls `barrier()` `samples` times; returns rank 0's times.
    public static func barrier(_ px: Plexus, samples: Int, warmup: Int = 100, block: Int = .max,
                               between: () throws -> Void = {}) throws -> [Double] {
        var out: [Double] = []
        out.reserveCapacity(samples)
        try px.barrier()
        for (i, n) in ([warmup] + chunks(samples, block)).enumerated() {
            for _ in 0..<n {
                let t0 = nanoseconds()
                try px.barrier()
                if i > 0 { out.append(Double(nanoseconds() - t0) / 1000) }
            }
            if i > 0 { try between() }
        }
        return out
    }

    /// `list` cut into consecutive parts of at most `size` elements.
    static func chunks<T>(_ list: [T], _ size: Int) -> [ArraySlice<T>] {
        precondition(size > 0, "chunk size must be positive")
        return stride(from: 0, to: list.count, by: size).map { list[$0..<min($0 + size, list.count)] }
    }

    /// `count` cut into parts of at most `size`: their sizes.
    static func chunks(_ count: Int, _ size: Int) -> [Int] {
        precondition(size > 0, "chunk size must be positive")
        return stride(from: 0, to: count, by: size).map { min(size, count - $0) }
    }
}

/// One real load from shared memory (Swift has no volatile).
@inline(never) @_optimize(none)
public func loadWord(_ p: UnsafeMutablePointer<Int>) -> Int { p.pointee }

/// One real store to shared memory.
@inline(never) @_optimize(none)
public func storeWord(_ p: UnsafeMutablePointer<Int>, _ v: Int) { p.pointee = v }

public func doublesToBytes(_ values: [Double]) -> [UInt8] {
    values.withUnsafeBytes { Array($0) }
}

public func bytesToDoubles(_ bytes: [UInt8]) -> [Double] {
    let n = bytes.count / MemoryLayout<Double>.stride
    return bytes.withUnsafeBytes { raw in (0..<n).map { raw.loadUnaligned(fromByteOffset: $0 * 8, as: Double.self) } }
}
