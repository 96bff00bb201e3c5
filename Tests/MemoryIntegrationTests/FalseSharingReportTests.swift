import Plexus
import Testing

/// The report's verdicts on statistics documents written by hand (the
/// integration tests above check it on real jobs).
struct FalseSharingReportTests {
    /// One process's statistics document with one page and its fault sites:
    /// (offset, access, faults, element).
    static func report(rank: Int, page: Int = 7, received: Int, sites: [(Int, String, Int, String?)]) -> [String: Any] {
        let s: [[String: Any]] = sites.map { offset, access, faults, element in
            var d: [String: Any] = ["offset": offset, "access": access, "faults": faults, "thread": 100 + rank, "code": "prog+0x10"]
            if let element { d["element"] = element }
            return d
        }
        return ["rank": rank, "pages": [["page": page, "name": "x[0...511]", "pagesReceived": received, "faultSites": s]]]
    }

    @Test func differentElementsPerRankIsFalseSharing() throws {
        let pages = FalseSharingReport.pages([
            Self.report(rank: 0, received: 5, sites: [(0, "write", 5, "x[0]"), (0, "read", 2, "x[0]")]),
            Self.report(rank: 1, received: 6, sites: [(8, "write", 6, "x[1]")]),
        ])
        let page = try #require(pages.first)
        #expect(page.page == 7 && page.transfers == 11)
        #expect(page.verdict.kind == .falseSharing && page.verdict.shared.isEmpty && page.verdict.unshared == ["x[0]", "x[1]"])
        #expect(page.sites.map(\.rank) == [0, 0, 1], "sites are grouped by rank, most faults first")
        #expect(page.sites.first?.faults == 5)
        let text = FalseSharingReport.text(pages)
        #expect(text.contains("page 7 (x[0...511]): moved 11 times"))
        #expect(text.contains("rank 1  write  x[1] (byte +8)  6 faults  thread 101  at prog+0x10"))
        #expect(text.contains("-> FALSE SHARING: each element here is faulted on by one rank only"))
    }

    @Test func aFewFaultsOnAnotherRanksElementIsMostlyFalseSharing() throws {
        let pages = FalseSharingReport.pages([
            Self.report(rank: 0, received: 10, sites: [(0, "write", 10, "x[0]")]),
            Self.report(rank: 1, received: 10, sites: [(8, "write", 10, "x[1]"), (0, "read", 1, "x[0]")]),
        ])
        let v = try #require(pages.first).verdict
        #expect(v.kind == .mostlyFalseSharing && v.sharingFaults == 1 && v.faults == 21 && v.shared == ["x[0]"])
        #expect(FalseSharingReport.text(pages).contains("only 1 of 21 faults are on an element another rank faults on more (x[0])"))
    }

    @Test func ranksFaultingOnOneElementShareIt() throws {
        let pages = FalseSharingReport.pages([
            Self.report(rank: 0, received: 4, sites: [(0, "write", 4, "x[0]"), (16, "write", 1, "x[2]")]),
            Self.report(rank: 1, received: 4, sites: [(0, "write", 3, "x[0]")]),
        ])
        let v = try #require(pages.first).verdict
        #expect(v.kind == .trueSharing && v.sharingFaults == 3 && v.shared == ["x[0]"] && v.unshared == ["x[2]"])
        let text = FalseSharingReport.text(pages)
        #expect(text.contains("-> true sharing: 3 of 8 faults are on elements several ranks fault on (x[0])"))
        #expect(text.contains("-> and false sharing: x[2] faulted on by one rank only"))
    }

    /// Jacobi's boundary row: the owner's rank writes it from element 0, the
    /// neighbour reads it from element 1 (and, once, element 0). Different
    /// elements in the faults, but the reader reads what the writer writes:
    /// the report must not advise padding as if it were false sharing.
    @Test func oneWriterAndReadersIsNotCalledFalseSharing() throws {
        let pages = FalseSharingReport.pages([
            Self.report(rank: 0, received: 26, sites: [(8, "read", 25, "g[2049]"), (0, "read", 1, "g[2048]")]),
            Self.report(rank: 1, received: 0, sites: [(0, "write", 26, "g[2048]")]),
        ])
        let v = try #require(pages.first).verdict
        #expect(v.kind == .oneWriter && v.writers == [1] && v.readers == [0] && v.sharingFaults == 1)
        let text = FalseSharingReport.text(pages)
        #expect(text.contains("-> ONE WRITER: rank 1 writes here and rank 0 only reads"), "\(text)")
        #expect(!text.contains("FALSE SHARING"))
        // With a second writer on other elements, it is false sharing again.
        let two = FalseSharingReport.pages([
            Self.report(rank: 0, received: 26, sites: [(8, "read", 25, "g[2049]"), (16, "write", 3, "g[2050]")]),
            Self.report(rank: 1, received: 20, sites: [(0, "write", 26, "g[2048]")]),
        ])
        #expect(try #require(two.first).verdict.kind == .falseSharing)
    }

    @Test func pagesNobodyWritesAreReadOnly() throws {
        let pages = FalseSharingReport.pages([
            Self.report(rank: 0, received: 2, sites: [(0, "read", 2, "x[0]")]),
            Self.report(rank: 1, received: 2, sites: [(8, "read", 2, "x[1]")]),
        ])
        let v = try #require(pages.first).verdict
        #expect(v.kind == .readOnly && v.writers.isEmpty && v.readers == [0, 1])
        #expect(FalseSharingReport.text(pages).contains("-> read only: no rank writes here"))
    }

    @Test func bytesOutsideAllocationsCompareByOffset() throws {
        let pages = FalseSharingReport.pages([
            Self.report(rank: 0, received: 2, sites: [(64, "write", 2, nil)]),
            Self.report(rank: 1, received: 2, sites: [(64, "read", 2, nil)]),
        ])
        let v = try #require(pages.first).verdict
        #expect(v.kind == .trueSharing && v.shared == ["byte +64"])
    }

    @Test func oneRankAloneAndQuietPagesAreNotJudged() throws {
        let alone = FalseSharingReport.pages([Self.report(rank: 0, received: 3, sites: [(0, "write", 3, "x[0]")])])
        #expect(alone.first?.verdict.kind == .oneRank)
        #expect(FalseSharingReport.text(alone).contains("only one rank faulted here"))
        // A page that moved once is not shown by default, and no page, no text.
        let once = [Self.report(rank: 0, received: 1, sites: [(0, "write", 1, "x[0]")]),
                    Self.report(rank: 1, received: 0, sites: [(8, "write", 1, "x[1]")])]
        #expect(FalseSharingReport.pages(once).isEmpty)
        #expect(FalseSharingReport.pages(once, minimumTransfers: 1).count == 1)
        #expect(FalseSharingReport.text([]) == "")
    }

    @Test func theMostTransferredPagesComeFirst() {
        var docs: [[String: Any]] = []
        for (page, moves) in [(1, 3), (2, 9), (3, 5), (4, 7)] {
            docs.append(Self.report(rank: 0, page: page, received: moves, sites: [(0, "write", 1, "x[0]")]))
        }
        #expect(FalseSharingReport.pages(docs, top: 3).map(\.page) == [2, 4, 3])
    }

    /// Documents with missing or mistyped fields are read as far as they go,
    /// never trapped on.
    @Test func malformedDocumentsAreSkipped() {
        let docs: [[String: Any]] = [
            [:],
            ["rank": "zero", "pages": [["page": 1, "pagesReceived": 5]]],
            ["rank": 1, "pages": "none"],
            ["rank": 1, "pages": [["page": "one"], ["page": 2, "pagesReceived": 4, "faultSites": [["offset": 1], ["faults": 2], 7]]]],
        ]
        #expect(FalseSharingReport.pages(docs, minimumTransfers: 1).isEmpty, "no page has a complete site")
    }
}
