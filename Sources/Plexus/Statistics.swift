import Foundation
import Memory

/// Collects per-page counters and fault wait times from the engine.
final class PageStatsCollector: PageEventObserver, @unchecked Sendable {
    private let lock = NSLock()
    private(set) var blocked: [Int: UInt64] = [:]

    func pageEvent(_ event: MemoryStatistic) {}

    func faultServed(page: Int, isWrite: Bool, nanoseconds: UInt64) {
        lock.lock()
        blocked[page, default: 0] &+= nanoseconds
        lock.unlock()
    }

    var blockedByPage: [Int: UInt64] {
        lock.lock()
        defer { lock.unlock() }
        return blocked
    }
}

extension Plexus {
    /// This process's shared-memory statistics, as `plexus run --stats` writes them.
    public func statisticsJSON() -> [UInt8] {
        guard let m = memory, let h = heap else { return Array("{}".utf8) }
        let (s, blockedNanos) = m.statistics
        let blocked = pageStats.blockedByPage
        func counters(_ p: PageStatistics) -> [String: Int] {
            ["readFaults": p.readFaults, "writeFaults": p.writeFaults, "pagesReceived": p.pagesReceived,
             "pagesSent": p.pagesSent, "invalidationsSent": p.invalidationsSent,
             "invalidationsReceived": p.invalidationsReceived]
        }
        let pageSize = m.region.pageSize
        let pages: [[String: Any]] = s.pages.keys.sorted().map { p in
            var d: [String: Any] = counters(s.pages[p]!)
            d["page"] = p
            d["address"] = "0x" + String(m.region.applicationBase + UInt(p * pageSize), radix: 16)
            d["name"] = h.describe(page: p, pageSize: pageSize)
            d["blockedMicros"] = Double(blocked[p] ?? 0) / 1000
            return d
        }
        var totals: [String: Any] = counters(s.total)
        totals["messagesSent"] = s.messagesSent
        totals["messagesReceived"] = s.messagesReceived
        totals["bytesSent"] = s.bytesSent
        totals["bytesReceived"] = s.bytesReceived
        totals["blockedMicros"] = Double(blockedNanos) / 1000
        let doc: [String: Any] = [
            "rank": rank, "pid": pid, "protocol": m.protocolName,
            "layout": ["base": "0x" + String(m.region.applicationBase, radix: 16), "size": m.region.size,
                       "pageSize": pageSize, "collectiveHeap": h.collectiveLimit, "arenaPerRank": h.arenaSize],
            "totals": totals, "pages": pages,
        ]
        return Array((try? JSONSerialization.data(withJSONObject: doc, options: [.sortedKeys])) ?? Data("{}".utf8))
    }
}
