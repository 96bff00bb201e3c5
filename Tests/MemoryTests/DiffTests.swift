import Memory
import Testing
import Transport

/// Property tests of `PageDiff` on seeded random pages and edits, and a
/// naive oracle: a diff's runs cover exactly the words that differ.
@Suite struct DiffTests {
    static let pageSizes = [8, 13, 64, 4096]

    static func randomPage(_ size: Int, using rng: inout SplitMix64) -> [UInt8] {
        (0..<size).map { _ in UInt8.random(in: 0...255, using: &rng) }
    }

    /// Changes a few random byte ranges (clustered or scattered) of `page`,
    /// only at offsets `allowed` says yes to.
    static func edit(_ page: [UInt8], using rng: inout SplitMix64, allowed: (Int) -> Bool = { _ in true }) -> [UInt8] {
        var out = page
        for _ in 0..<Int.random(in: 0...6, using: &rng) {
            let start = Int.random(in: 0..<page.count, using: &rng)
            let length = Int.random(in: 1...min(40, page.count - start), using: &rng)
            for i in start..<start + length where allowed(i) { out[i] = UInt8.random(in: 0...255, using: &rng) }
        }
        return out
    }

    @Test(arguments: pageSizes)
    func applyingTheDiffToTheTwinGivesTheCurrentPage(pageSize: Int) throws {
        var rng = SplitMix64(seed: 0xd1ff ^ UInt64(pageSize))
        for _ in 0..<500 {
            let twin = Self.randomPage(pageSize, using: &rng)
            let current = Self.edit(twin, using: &rng)
            let diff = PageDiff.encode(twin: twin, current: current)
            #expect(diff.count <= PageDiff.maxEncodedCount(pageSize: pageSize))
            var page = twin
            try PageDiff.apply(diff, to: &page)
            #expect(page == current)
            // Through raw memory too, as the engine applies it.
            var raw = twin
            let appliedRaw = raw.withUnsafeMutableBytes { p in (try? PageDiff.apply(diff, to: p)) != nil }
            #expect(appliedRaw && raw == current)
            // The oracle: a word is in some run iff it changed.
            let runs = try PageDiff.runs(of: diff, pageSize: pageSize)
            for word in stride(from: 0, to: pageSize, by: PageDiff.wordSize) {
                let end = min(word + PageDiff.wordSize, pageSize)
                let changed = twin[word..<end] != current[word..<end]
                let covered = runs.contains { $0.offset <= word && word < $0.offset + $0.length }
                #expect(changed == covered, "word at \(word)")
            }
        }
    }

    @Test func anUnchangedPageHasAnEmptyDiff() throws {
        var rng = SplitMix64(seed: 3)
        let page = Self.randomPage(4096, using: &rng)
        let diff = PageDiff.encode(twin: page, current: page)
        #expect(diff == [0, 0, 0, 0])
        #expect(try PageDiff.runs(of: diff, pageSize: 4096).isEmpty)
    }

    /// The worst case, every other word changed, fits the bound exactly.
    @Test(arguments: pageSizes)
    func everyOtherWordChangedFitsTheBound(pageSize: Int) throws {
        let twin = [UInt8](repeating: 0, count: pageSize)
        var current = twin
        for word in stride(from: 0, to: pageSize, by: 2 * PageDiff.wordSize) { current[word] = 1 }
        let diff = PageDiff.encode(twin: twin, current: current)
        #expect(diff.count <= PageDiff.maxEncodedCount(pageSize: pageSize))
        var page = twin
        try PageDiff.apply(diff, to: &page)
        #expect(page == current)
    }

    /// Two writers change disjoint words of one page in the same interval:
    /// their diffs, applied to the home's copy in either order, give both
    /// writers' words (what a home must end with).
    @Test(arguments: pageSizes)
    func disjointWritersDiffsCommute(pageSize: Int) throws {
        var rng = SplitMix64(seed: 0xc0de ^ UInt64(pageSize))
        for _ in 0..<500 {
            let base = Self.randomPage(pageSize, using: &rng)
            // Each word belongs to writer a, writer b, or nobody.
            let owner = (0..<(pageSize + PageDiff.wordSize - 1) / PageDiff.wordSize).map { _ in Int.random(in: 0...2, using: &rng) }
            let a = Self.edit(base, using: &rng) { owner[$0 / PageDiff.wordSize] == 0 }
            let b = Self.edit(base, using: &rng) { owner[$0 / PageDiff.wordSize] == 1 }
            var union = base
            for i in 0..<pageSize {
                if owner[i / PageDiff.wordSize] == 0 { union[i] = a[i] }
                if owner[i / PageDiff.wordSize] == 1 { union[i] = b[i] }
            }
            let da = PageDiff.encode(twin: base, current: a), db = PageDiff.encode(twin: base, current: b)
            var ab = base, ba = base
            try PageDiff.apply(da, to: &ab); try PageDiff.apply(db, to: &ab)
            try PageDiff.apply(db, to: &ba); try PageDiff.apply(da, to: &ba)
            #expect(ab == union && ba == union)
        }
    }

    /// Random bytes, and mutated valid diffs, either decode to runs inside
    /// the page or throw; none traps, and a rejected diff changes nothing.
    @Test func theDecoderRejectsGarbageWithoutTrapping() {
        var rng = SplitMix64(seed: 0xf022)
        var rejected = 0, accepted = 0
        for round in 0..<20_000 {
            let pageSize = Self.pageSizes[round % Self.pageSizes.count]
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = Self.randomPage(Int.random(in: 0...64, using: &rng), using: &rng)
                // Small counts and offsets now and then, so that some pass the header.
                if bytes.count >= 4 && Bool.random(using: &rng) { bytes[1] = 0; bytes[2] = 0; bytes[3] = 0; bytes[0] %= 4 }
            } else {
                let twin = Self.randomPage(pageSize, using: &rng)
                bytes = PageDiff.encode(twin: twin, current: Self.edit(twin, using: &rng))
                MemoryMessageCodecTests.mutate(&bytes, using: &rng)
            }
            let before = Self.randomPage(pageSize, using: &rng)
            var page = before
            do {
                try PageDiff.apply(bytes, to: &page)
                accepted += 1
                #expect(page.count == pageSize)
            } catch {
                rejected += 1
                #expect(page == before, "a rejected diff (\(error)) changed the page")
            }
        }
        #expect(rejected > 1000 && accepted > 100, "\(rejected) rejected, \(accepted) accepted")
    }

    @Test func eachMalformationHasItsError() {
        func le(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        var page = [UInt8](repeating: 0, count: 64)
        #expect(throws: PageDiff.DecodingError.truncated) { try PageDiff.apply([1, 0], to: &page) }
        #expect(throws: PageDiff.DecodingError.truncated) { try PageDiff.apply(le(1) + le(0) + le(8) + [1, 2], to: &page) }
        #expect(throws: PageDiff.DecodingError.runOutsidePage(offset: 60, length: 8, pageSize: 64)) {
            try PageDiff.apply(le(1) + le(60) + le(8) + [UInt8](repeating: 1, count: 8), to: &page)
        }
        #expect(throws: PageDiff.DecodingError.runOutsidePage(offset: .max, length: 2, pageSize: 64)) {
            try PageDiff.apply(le(1) + le(.max) + le(2) + [1, 1], to: &page)
        }
        #expect(throws: PageDiff.DecodingError.runsNotAscending(offset: 4)) {
            try PageDiff.apply(le(2) + le(0) + le(8) + [UInt8](repeating: 1, count: 8) + le(4) + le(4) + [1, 1, 1, 1], to: &page)
        }
        #expect(throws: PageDiff.DecodingError.runsNotAscending(offset: 0)) { try PageDiff.apply(le(1) + le(0) + le(0), to: &page) }
        #expect(throws: PageDiff.DecodingError.tooManyRuns(65)) { try PageDiff.apply(le(65), to: &page) }
        #expect(throws: PageDiff.DecodingError.trailingBytes(1)) { try PageDiff.apply(le(0) + [9], to: &page) }
        #expect(throws: PageDiff.DecodingError.oversized(count: 1000, limit: PageDiff.maxEncodedCount(pageSize: 64))) {
            try PageDiff.apply([UInt8](repeating: 0, count: 1000), to: &page)
        }
        #expect(page == [UInt8](repeating: 0, count: 64))
    }
}
