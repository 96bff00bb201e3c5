import Foundation

/// The false-sharing report of `plexus run --summary` and `plexus demo`: for
/// the pages that moved most between processes, where each rank faulted on
/// them (element, byte offset, read or write, thread, code), and whether the
/// ranks' faults hit the same elements (true sharing: the data is shared) or
/// only different ones (false sharing: the layout is to blame). The two-level
/// view of `perf c2c`, for pages.
///
/// It reads the per-process statistics documents that `statisticsJSON()`
/// writes. A fault shows only the first access of one thread after the page
/// came back, so an element no fault names may still be touched by a rank.
public enum FalseSharingReport {
    public struct Site: Sendable, Equatable {
        public var rank: Int
        public var offset: Int
        public var isWrite: Bool
        public var faults: Int
        public var thread: Int
        public var code: String
        /// "name[index]", or nil outside every allocation the rank knew of.
        public var element: String?

        /// What the verdict compares: the element, else the byte.
        var key: String { element ?? "byte +\(offset)" }
    }

    /// How the faults on one page divide between elements one rank alone
    /// faults on and elements several ranks fault on.
    public struct Verdict: Sendable, Equatable {
        public enum Kind: Sendable, Equatable {
            /// Only one rank faulted here: no sharing to judge.
            case oneRank
            /// Several ranks faulted, never on the same element.
            case falseSharing
            /// Fewer than one fault in ten is on an element another rank also faults on.
            case mostlyFalseSharing
            /// The ranks fault on the same elements: the data is shared.
            case trueSharing
            /// Different elements (or mostly), but only one rank writes the
            /// page and the others only read it. The faults cannot tell
            /// whether the readers read what the writer writes (a halo, a
            /// result: true sharing, the moves are the communication) or
            /// other elements of its page (false sharing).
            case oneWriter
            /// Different elements (or mostly), and no rank writes: every
            /// rank keeps a copy, so the page does not move back and forth.
            case readOnly
        }
        public var ranks = 0
        public var faults = 0
        /// Faults on an element by ranks other than the one that faults on
        /// it most: zero when every element has one rank of its own.
        public var sharingFaults = 0
        /// Elements several ranks fault on, and elements one rank alone faults on.
        public var shared: [String] = []
        public var unshared: [String] = []
        /// Ranks with write faults on the page, and ranks with read faults only.
        public var writers: [Int] = []
        public var readers: [Int] = []

        public var kind: Kind {
            if ranks < 2 { return .oneRank }
            if sharingFaults * 10 >= faults && sharingFaults > 0 { return .trueSharing }
            if writers.isEmpty { return .readOnly }
            if writers.count == 1 { return .oneWriter }
            return sharingFaults == 0 ? .falseSharing : .mostlyFalseSharing
        }
    }

    public struct Page: Sendable, Equatable {
        public var page: Int
        public var name: String
        /// Times the page, or a diff of it, was received by some process.
        public var transfers: Int
        public var sites: [Site]
        public var verdict: Verdict
    }

    /// The `top` pages that moved at least `minimumTransfers` times and have
    /// fault sites, most transferred first. `reports` are the processes'
    /// statistics documents.
    public static func pages(_ reports: [[String: Any]], top: Int = 3, minimumTransfers: Int = 2) -> [Page] {
        var byPage: [Int: Page] = [:]
        for report in reports {
            guard let rank = report["rank"] as? Int else { continue }
            for p in report["pages"] as? [[String: Any]] ?? [] {
                guard let index = p["page"] as? Int else { continue }
                var page = byPage[index] ?? Page(page: index, name: p["name"] as? String ?? "?", transfers: 0, sites: [], verdict: Verdict())
                // A page or a diff of it arrived (multiple-writer protocols
                // move diffs where single-writer ones move pages).
                page.transfers += (p["pagesReceived"] as? Int ?? 0) + (p["diffsApplied"] as? Int ?? 0)
                for s in p["faultSites"] as? [[String: Any]] ?? [] {
                    guard let offset = s["offset"] as? Int, let faults = s["faults"] as? Int else { continue }
                    page.sites.append(Site(rank: rank, offset: offset, isWrite: s["access"] as? String == "write", faults: faults,
                                           thread: s["thread"] as? Int ?? 0, code: s["code"] as? String ?? "?",
                                           element: s["element"] as? String))
                }
                byPage[index] = page
            }
        }
        let hot = byPage.values.filter { $0.transfers >= max(1, minimumTransfers) && !$0.sites.isEmpty }
            .sorted { ($0.transfers, $1.page) > ($1.transfers, $0.page) }
            .prefix(top)
        return hot.map { page in
            var p = page
            p.sites.sort { ($0.rank, $1.faults, $0.offset) < ($1.rank, $0.faults, $1.offset) }
            p.verdict = verdict(p.sites)
            return p
        }
    }

    static func verdict(_ sites: [Site]) -> Verdict {
        var counts: [String: [Int: Int]] = [:]  // element -> rank -> faults
        for s in sites { counts[s.key, default: [:]][s.rank, default: 0] += s.faults }
        var v = Verdict()
        let ranks = Set(sites.map(\.rank))
        v.ranks = ranks.count
        v.writers = Set(sites.filter(\.isWrite).map(\.rank)).sorted()
        v.readers = ranks.subtracting(v.writers).sorted()
        for (element, byRank) in counts {
            let total = byRank.values.reduce(0, +)
            v.faults += total
            v.sharingFaults += total - (byRank.values.max() ?? 0)
            if byRank.count > 1 { v.shared.append(element) } else { v.unshared.append(element) }
        }
        v.shared.sort()
        v.unshared.sort()
        return v
    }

    /// The report as text (empty when no page moved).
    public static func text(_ pages: [Page], sitesPerPage: Int = 6) -> String {
        guard !pages.isEmpty else { return "" }
        var s = "where the ranks faulted on the most transferred pages:\n"
        for p in pages {
            s += "  page \(p.page) (\(p.name)): moved \(p.transfers) times\n"
            for site in p.sites.prefix(sitesPerPage) {
                let what = site.element.map { "\($0) (byte +\(site.offset))" } ?? "byte +\(site.offset)"
                s += "    rank \(site.rank)  \(site.isWrite ? "write" : "read ")  \(what)  \(site.faults) fault\(site.faults == 1 ? "" : "s")"
                s += "  thread \(site.thread)  at \(site.code)\n"
            }
            if p.sites.count > sitesPerPage { s += "    ... \(p.sites.count - sitesPerPage) more sites in --stats\n" }
            let v = p.verdict
            switch v.kind {
            case .oneRank:
                s += "    -> only one rank faulted here: no sharing to judge\n"
            case .falseSharing:
                s += "    -> FALSE SHARING: each element here is faulted on by one rank only; give each rank's data a page of its own (pad or align)\n"
            case .mostlyFalseSharing:
                s += "    -> FALSE SHARING, mostly: only \(v.sharingFaults) of \(v.faults) faults are on an element another rank faults on more (\(list(v.shared))); give each rank's data a page of its own (pad or align)\n"
            case .oneWriter:
                let w = v.writers[0]
                let r = v.readers.map(String.init).joined(separator: ", ")
                let reader = v.readers.count == 1 ? "rank \(r) only reads" : "ranks \(r) only read"
                s += "    -> ONE WRITER: rank \(w) writes here and \(reader), at different elements in the faults above; a fault shows a first access only, so check what the readers read:\n"
                s += "       what rank \(w) writes (a halo, a result): true sharing, each move is the data going where it is needed; a larger coherence unit (--page-size) moves it in fewer faults\n"
                s += "       other elements of the page: false sharing; give rank \(w)'s data a page of its own (pad or align)\n"
            case .readOnly:
                s += "    -> read only: no rank writes here, so every rank keeps its copy; no sharing cost after the first fetch\n"
            case .trueSharing:
                s += "    -> true sharing: \(v.sharingFaults) of \(v.faults) faults are on elements several ranks fault on (\(list(v.shared))); the data itself is shared\n"
                if !v.unshared.isEmpty {
                    s += "    -> and false sharing: \(list(v.unshared)) faulted on by one rank only, on the same page\n"
                }
            }
        }
        s += "  (a fault shows one thread's first access after the page came back; code is FILE+OFFSET: addr2line -f -e FILE OFFSET | swift-demangle names the function and line)\n"
        return s
    }

    private static func list(_ elements: [String]) -> String {
        elements.count <= 4 ? elements.joined(separator: ", ") : elements.prefix(4).joined(separator: ", ") + " and \(elements.count - 4) more"
    }
}
