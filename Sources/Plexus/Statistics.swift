import Foundation
import Memory
import Synchronization

/// Collects per-page fault wait times and fault sites from the engine.
///
/// A fault site is where a fault that opened a request came from: its offset
/// in the page, read or write, the faulting thread and instruction. The
/// false-sharing report compares the sites of different ranks on one page.
/// Bounded: at most `sitesPerPage` distinct sites per page and `maxSites` in
/// all; faults beyond are only counted. Wait times also go into a histogram
/// of power-of-two buckets (fault waits under load are not the idle miss).
final class PageStatsCollector: PageEventObserver, @unchecked Sendable {
    struct Site: Hashable {
        var origin: FaultOrigin
        var isWrite: Bool
    }

    static let sitesPerPage = 16
    static let maxSites = 1 << 16

    private let lock = NSLock()
    private var blocked: [Int: UInt64] = [:]
    private var sites: [Int: [Site: Int]] = [:]
    private var siteCount = 0
    private var unrecorded: [Int: Int] = [:]
    /// Faults per `FaultWaits.bucket`.
    private var waits = [Int](repeating: 0, count: FaultWaits.buckets)

    func pageEvent(_ event: MemoryStatistic) {}

    func faultServed(_ fault: Fault, nanoseconds: UInt64) {
        let site = Site(origin: fault.origin, isWrite: fault.isWrite)
        lock.lock()
        defer { lock.unlock() }
        blocked[fault.page, default: 0] &+= nanoseconds
        waits[FaultWaits.bucket(nanoseconds: nanoseconds)] += 1
        if let n = sites[fault.page]?[site] {
            sites[fault.page]![site] = n + 1
        } else if siteCount < Self.maxSites, sites[fault.page, default: [:]].count < Self.sitesPerPage {
            sites[fault.page, default: [:]][site] = 1
            siteCount += 1
        } else {
            unrecorded[fault.page, default: 0] += 1
        }
    }

    var snapshot: (blocked: [Int: UInt64], sites: [Int: [Site: Int]], unrecorded: [Int: Int], waits: [Int]) {
        lock.lock()
        defer { lock.unlock() }
        return (blocked, sites, unrecorded, waits)
    }
}

/// Time this process's threads spent blocked in lock calls and in barriers,
/// summed over threads, on the monotonic clock (`DispatchTime` uptime):
/// `totals.lockBlockedMicros` and `totals.barrierBlockedMicros` of a
/// statistics document. A lock's time runs from the call of `acquire` (or
/// `release`) to its return: waiting for other threads of this process, for
/// the lock's manager and holder, and the protocol's work at that end. A
/// barrier's runs from the call of `barrier` (or `allGather`, a collective
/// that waits the same way) to its return, the protocol's work included.
final class SynchronizationWaits: Sendable {
    private let lockNanos = Atomic<UInt64>(0)
    private let barrierNanos = Atomic<UInt64>(0)

    /// Now on the clock the waits are measured with.
    static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    func lockCallEnded(began: UInt64) { lockNanos.add(Self.now() &- began, ordering: .relaxed) }

    func barrierEnded(began: UInt64) { barrierNanos.add(Self.now() &- began, ordering: .relaxed) }

    var snapshot: (lock: UInt64, barrier: UInt64) {
        (lockNanos.load(ordering: .relaxed), barrierNanos.load(ordering: .relaxed))
    }
}

/// The histogram of fault waits in a statistics document (`totals.faultWaits`):
/// how long faults that opened a request waited for their page, in
/// power-of-two buckets of microseconds. Under load a wait is not the idle
/// miss of `plexus bench`: the serving threads on both sides compete with the
/// computation for the CPUs.
public enum FaultWaits {
    /// Bucket k, for 1 ≤ k < buckets - 1, holds waits of at least 2^(k-1) µs
    /// and less than 2^k µs (bucket 1 also holds waits under 1 µs); the last
    /// bucket holds every wait of at least 2^(buckets-2) µs (about 4 s).
    /// Bucket 0 stays empty.
    public static let buckets = 24

    public static func bucket(nanoseconds: UInt64) -> Int {
        let micros = nanoseconds / 1000
        return min(buckets - 1, max(1, UInt64.bitWidth - micros.leadingZeroBitCount))
    }

    /// The JSON form of per-bucket counts: the non-empty buckets in order,
    /// `{"belowMicros": 64, "faults": 12}`, the last `{"atLeastMicros": ...}`.
    public static func histogram(_ counts: [Int]) -> [[String: Int]] {
        counts.indices.filter { counts[$0] > 0 }.map { k in
            k == buckets - 1 ? ["atLeastMicros": 1 << (k - 1), "faults": counts[k]]
                             : ["belowMicros": 1 << k, "faults": counts[k]]
        }
    }

    /// The upper bound, in µs, of the bucket holding the `q`-quantile wait
    /// ("half the faults waited less than this" for q = 0.5), or the lower
    /// bound with `open` set when that is the open last bucket; nil without
    /// faults. The histogram's buckets are powers of two.
    public static func quantileBound(_ histogram: [[String: Int]], _ q: Double) -> (micros: Int, open: Bool)? {
        let total = histogram.reduce(0) { $0 + ($1["faults"] ?? 0) }
        guard total > 0 else { return nil }
        var seen = 0
        for b in histogram {
            seen += b["faults"] ?? 0
            if Double(seen) >= q * Double(total) {
                if let below = b["belowMicros"] { return (below, false) }
                return (b["atLeastMicros"] ?? 0, true)
            }
        }
        return nil
    }

    /// "<128us", "<16.4ms", ">=4194.3ms" or "-" (no faults), for tables.
    public static func text(_ histogram: [[String: Int]], _ q: Double) -> String {
        guard let (micros, open) = quantileBound(histogram, q) else { return "-" }
        return (open ? ">=" : "<") + (micros >= 10_000 ? String(format: "%.1fms", Double(micros) / 1000) : "\(micros)us")
    }
}

/// Names instruction addresses of this process as "file+0xoffset": the
/// offset from the load address of the executable or library that holds the
/// address, stable across runs (unlike the address, which ASLR moves), for
/// `addr2line -f -C -e file 0xoffset`. Reads /proc/self/maps once.
struct CodeLocator {
    private struct Mapping {
        var start: UInt, end: UInt, base: UInt, file: String
    }
    private var mappings: [Mapping] = []

    init() {
        guard let text = try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8) else { return }
        var bases: [String: UInt] = [:]
        var executable: [(UInt, UInt, String)] = []
        // Each line: "start-end perms offset dev inode path"; lines that do
        // not parse are skipped.
        for line in text.split(separator: "\n") {
            let f = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
            guard f.count == 6 else { continue }
            let path = f[5].trimmingCharacters(in: .whitespaces)
            guard path.hasPrefix("/") else { continue }
            let range = f[0].split(separator: "-")
            guard range.count == 2, let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16),
                  let offset = UInt(f[2], radix: 16) else { continue }
            if offset == 0 { bases[path] = min(bases[path] ?? start, start) }
            if f[1].contains("x") { executable.append((start, end, path)) }
        }
        mappings = executable.compactMap { start, end, path in
            bases[path].map { Mapping(start: start, end: end, base: $0, file: path) }
        }
    }

    func name(_ address: UInt) -> String {
        guard address != 0 else { return "?" }
        guard let m = mappings.first(where: { address >= $0.start && address < $0.end }), address >= m.base else {
            return "0x" + String(address, radix: 16)
        }
        return m.file + "+0x" + String(address - m.base, radix: 16)
    }
}

extension Plexus {
    /// This process's shared-memory statistics, as `plexus run --stats` writes them.
    public func statisticsJSON() -> [UInt8] {
        guard let m = memory, let h = heap else { return Array("{}".utf8) }
        let (s, blockedNanos) = m.statistics
        let (blocked, sites, unrecorded, waits) = pageStats.snapshot
        let locator = sites.isEmpty ? CodeLocator?.none : CodeLocator()
        func counters(_ p: PageStatistics) -> [String: Int] {
            ["readFaults": p.readFaults, "writeFaults": p.writeFaults, "pagesReceived": p.pagesReceived,
             "pagesSent": p.pagesSent, "invalidationsSent": p.invalidationsSent,
             "invalidationsReceived": p.invalidationsReceived, "staleGrantsDiscarded": p.staleGrantsDiscarded,
             "readsAhead": p.readsAhead, "writesAhead": p.writesAhead, "prefetches": p.prefetches,
             "diffsSent": p.diffsSent, "diffsApplied": p.diffsApplied, "diffsCreated": p.diffsCreated]
        }
        let pageSize = m.region.pageSize
        let pages: [[String: Any]] = s.pages.keys.sorted().map { p in
            var d: [String: Any] = counters(s.pages[p]!)
            d["page"] = p
            d["address"] = "0x" + String(m.region.applicationBase + UInt(p * pageSize), radix: 16)
            d["name"] = h.describe(page: p, pageSize: pageSize)
            d["blockedMicros"] = Double(blocked[p] ?? 0) / 1000
            if let here = sites[p] {
                d["faultSites"] = here.sorted { ($0.value, $1.key.origin.offset) > ($1.value, $0.key.origin.offset) }.map { site, count -> [String: Any] in
                    let o = site.origin
                    let location = locator?.name(o.instruction) ?? "?"
                    var e: [String: Any] = ["offset": o.offset, "access": site.isWrite ? "write" : "read",
                                            "faults": count, "thread": Int(o.thread), "code": location]
                    if let name = h.element(atOffset: p * pageSize + o.offset) { e["element"] = name }
                    return e
                }
            }
            if let n = unrecorded[p] { d["unrecordedFaults"] = n }
            return d
        }
        var totals: [String: Any] = counters(s.total)
        totals["messagesSent"] = s.messagesSent
        totals["messagesReceived"] = s.messagesReceived
        totals["bytesSent"] = s.bytesSent
        totals["bytesReceived"] = s.bytesReceived
        totals["garbageCollections"] = s.garbageCollections
        totals["retainedBytesPeak"] = s.retainedBytesPeak
        totals["blockedMicros"] = Double(blockedNanos) / 1000
        let synchronization = synchronizationWaits.snapshot
        totals["lockBlockedMicros"] = Double(synchronization.lock) / 1000
        totals["barrierBlockedMicros"] = Double(synchronization.barrier) / 1000
        totals["faultWaits"] = FaultWaits.histogram(waits)
        let handler = m.handlerCounters
        totals["handlerFaults"] = handler.faults
        totals["handlerJoined"] = handler.joined
        totals["handlerSlept"] = handler.slept
        let doc: [String: Any] = [
            "rank": rank, "pid": pid, "protocol": m.protocolName,
            "servingThreads": serving.report,
            "cpuBinding": binding.report,
            "layout": ["base": "0x" + String(m.region.applicationBase, radix: 16), "size": m.region.size,
                       "pageSize": pageSize, "collectiveHeap": h.collectiveLimit, "arenaPerRank": h.arenaSize],
            "totals": totals, "pages": pages,
        ]
        return Array((try? JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys])) ?? Data("{}".utf8))
    }
}
