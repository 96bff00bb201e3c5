/// Word-granular run-length diffs of a page against its twin, as
/// multiple-writer release consistency uses them (TreadMarks: P. Keleher,
/// A. Cox, S. Dwarkadas, W. Zwaenepoel, USENIX Winter 1994, section 3.3;
/// HLRC: Y. Zhou, L. Iftode, K. Li, OSDI 1996, section 2): a writer keeps a
/// copy of the page from before its first write in an interval (the twin)
/// and at release sends only the words that changed.
///
/// Encoding (little-endian): run count u32, then per run its byte offset
/// u32, its byte length u32 and the bytes. Runs are found a word
/// (`wordSize` bytes) at a time, maximal, in ascending order; the last word
/// of a page whose size is not a multiple of the word may be shorter.
///
/// Two writers that changed disjoint words of one page produce diffs that
/// commute: applying both, in either order, gives the union of the writes.
public enum PageDiff {
    /// The comparison unit, in bytes.
    public static let wordSize = 8

    public enum DecodingError: Error, Equatable, Sendable, CustomStringConvertible {
        /// The diff ends inside a header or a run.
        case truncated
        /// More bytes than any diff of a page this size can take.
        case oversized(count: Int, limit: Int)
        /// A run that reaches outside the page.
        case runOutsidePage(offset: UInt32, length: UInt32, pageSize: Int)
        /// A run of zero bytes, or one that starts before the previous ended.
        case runsNotAscending(offset: UInt32)
        case tooManyRuns(UInt32)
        case trailingBytes(Int)

        public var description: String {
            switch self {
            case .truncated: "the diff is truncated"
            case let .oversized(count, limit): "the diff has \(count) bytes, more than the \(limit) a page diff can have"
            case let .runOutsidePage(offset, length, pageSize): "a diff run of \(length) bytes at offset \(offset) reaches outside a \(pageSize)-byte page"
            case let .runsNotAscending(offset): "the diff run at offset \(offset) is empty or overlaps the previous one"
            case let .tooManyRuns(count): "the diff claims \(count) runs, more than a page can have"
            case .trailingBytes(let n): "\(n) bytes follow the diff's last run"
            }
        }
    }

    /// The largest diff of a page of `pageSize` bytes (every other word changed).
    public static func maxEncodedCount(pageSize: Int) -> Int {
        let words = (pageSize + wordSize - 1) / wordSize
        return 4 + (words + 1) / 2 * 8 + pageSize
    }

    /// The diff that turns `twin` into `current` (both one page).
    public static func encode(twin: UnsafeRawBufferPointer, current: UnsafeRawBufferPointer) -> [UInt8] {
        precondition(twin.count == current.count, "twin of \(twin.count) bytes for a page of \(current.count)")
        let size = current.count
        var out: [UInt8] = [0, 0, 0, 0]
        var runs: UInt32 = 0
        func put(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func differs(_ at: Int) -> Bool {
            let n = min(wordSize, size - at)
            if n == 8 { return twin.loadUnaligned(fromByteOffset: at, as: UInt64.self) != current.loadUnaligned(fromByteOffset: at, as: UInt64.self) }
            for i in at..<at + n where twin[i] != current[i] { return true }
            return false
        }
        var at = 0
        while at < size {
            guard differs(at) else { at += wordSize; continue }
            var end = at + wordSize
            while end < size && differs(end) { end += wordSize }
            end = min(end, size)
            put(UInt32(at)); put(UInt32(end - at))
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: current[at..<end]))
            runs += 1
            at = end
        }
        withUnsafeBytes(of: runs.littleEndian) { for i in 0..<4 { out[i] = $0[i] } }
        return out
    }

    public static func encode(twin: [UInt8], current: [UInt8]) -> [UInt8] {
        twin.withUnsafeBytes { t in current.withUnsafeBytes { c in encode(twin: t, current: c) } }
    }

    /// The runs of `diff`, as (offset, length, offset of the bytes in
    /// `diff`), checked against a page of `pageSize` bytes. Never traps.
    public static func runs(of diff: [UInt8], pageSize: Int) throws(DecodingError) -> [(offset: Int, length: Int, at: Int)] {
        let limit = maxEncodedCount(pageSize: pageSize)
        guard diff.count <= limit else { throw .oversized(count: diff.count, limit: limit) }
        var at = 0
        func u32() throws(DecodingError) -> UInt32 {
            guard diff.count - at >= 4 else { throw .truncated }
            defer { at += 4 }
            return UInt32(diff[at]) | UInt32(diff[at + 1]) << 8 | UInt32(diff[at + 2]) << 16 | UInt32(diff[at + 3]) << 24
        }
        let count = try u32()
        guard Int(count) <= pageSize else { throw .tooManyRuns(count) }
        var out: [(offset: Int, length: Int, at: Int)] = []
        out.reserveCapacity(Int(count))
        var previousEnd = 0
        for _ in 0..<count {
            let offset = try u32(), length = try u32()
            guard UInt64(offset) + UInt64(length) <= UInt64(pageSize) else {
                throw .runOutsidePage(offset: offset, length: length, pageSize: pageSize)
            }
            guard length > 0, Int(offset) >= previousEnd else { throw .runsNotAscending(offset: offset) }
            guard diff.count - at >= Int(length) else { throw .truncated }
            out.append((Int(offset), Int(length), at))
            at += Int(length)
            previousEnd = Int(offset) + Int(length)
        }
        guard at == diff.count else { throw .trailingBytes(diff.count - at) }
        return out
    }

    /// Writes the diff's runs into `page`; checks the whole diff first, so a
    /// malformed one changes nothing.
    public static func apply(_ diff: [UInt8], to page: UnsafeMutableRawBufferPointer) throws(DecodingError) {
        let runs = try runs(of: diff, pageSize: page.count)
        diff.withUnsafeBytes { d in
            for r in runs {
                UnsafeMutableRawBufferPointer(rebasing: page[r.offset..<r.offset + r.length])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: d[r.at..<r.at + r.length]))
            }
        }
    }

    public static func apply(_ diff: [UInt8], to page: inout [UInt8]) throws(DecodingError) {
        let runs = try runs(of: diff, pageSize: page.count)
        for r in runs { page.replaceSubrange(r.offset..<r.offset + r.length, with: diff[r.at..<r.at + r.length]) }
    }
}
