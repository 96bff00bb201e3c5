/// Messages between the coherence cores of a job. Ranks, never addresses:
/// the engine maps a rank to the peer's global PID. The sender of a message
/// is known from the connection and passed to `onMessage(_:from:)`.
///
/// New protocols add their cases here with the next free tags.
public enum MemoryMessage: Sendable, Equatable, CustomStringConvertible {
    /// Requester -> manager: "I need `page` for reading (or writing)".
    case request(page: Int, isWrite: Bool)
    /// Manager -> owner: serve `requester`'s request. Relayed along
    /// probable owners if it reaches a node that no longer owns the page.
    case forward(page: Int, requester: Int, isWrite: Bool)
    /// Owner -> requester: a read-only copy of the page.
    case readGrant(page: Int, contents: [UInt8])
    /// Owner -> requester: ownership, the copyset the new owner must
    /// invalidate, and the contents unless the requester already holds a
    /// valid copy (it was in the copyset).
    case writeGrant(page: Int, copyset: RankSet, contents: [UInt8]?)
    /// New owner -> copy holder: drop your copy, then acknowledge.
    case invalidate(page: Int)
    /// Copy holder -> new owner.
    case invalidateAck(page: Int)
    /// Requester -> manager: my write is complete (I own the page now);
    /// release the next request. Reads are not confirmed.
    case confirm(page: Int)

    // Home-based release consistency (hlrc).

    /// Writer -> home: the changes the writer made to `page` in its
    /// interval `interval` (a `PageDiff`, checked against the page size
    /// when decoded). The home applies it and acknowledges.
    case diff(page: Int, interval: Int, diff: [UInt8])
    /// Home -> writer: the diff for `page` is applied.
    case diffAck(page: Int)
    /// Requester -> home: the whole page, once the home has applied every
    /// writer's diffs up to `version[writer]` (one interval per rank).
    case fetch(page: Int, version: [Int])
    /// Home -> requester: the page, holding at least every writer's
    /// intervals up to `version[writer]` (what the home had applied).
    case pageData(page: Int, version: [Int], contents: [UInt8])

    // Homeless lazy release consistency (lrc).

    /// Requester -> writer: your diffs of `page` made in your intervals
    /// `after + 1 ... upTo` (the requester has applied those up to `after`).
    case diffRequest(page: Int, after: Int, upTo: Int)
    /// Writer -> requester: those diffs, in the writer's order (see
    /// `IntervalDiff`); an interval that did not write the page has none.
    case diffReply(page: Int, diffs: [IntervalDiff])
    /// Every rank -> every other: this rank has brought every page it knew
    /// a write notice of up to date for garbage collection `epoch`, so no
    /// diff or twin that collection covers will be asked of anyone by it.
    /// (`page` is 0: it names no page.)
    case collected(page: Int, epoch: Int)

    public var page: Int {
        switch self {
        case let .request(page, _), let .forward(page, _, _), let .readGrant(page, _), let .writeGrant(page, _, _),
             let .invalidate(page), let .invalidateAck(page), let .confirm(page),
             let .diff(page, _, _), let .diffAck(page), let .fetch(page, _), let .pageData(page, _, _),
             let .diffRequest(page, _, _), let .diffReply(page, _), let .collected(page, _):
            page
        }
    }

    /// The same grant with its page contents filled in (see `MemoryEffect.sendWithPage`).
    public func attaching(contents: [UInt8]) -> MemoryMessage {
        switch self {
        case let .readGrant(page, _): .readGrant(page: page, contents: contents)
        case let .writeGrant(page, copyset, _): .writeGrant(page: page, copyset: copyset, contents: contents)
        case let .pageData(page, version, _): .pageData(page: page, version: version, contents: contents)
        default: preconditionFailure("only grants carry page contents, not \(self)")
        }
    }

    /// The same `.diff` with its diff filled in (see `MemoryEffect.sendDiff`).
    public func attaching(diff: [UInt8]) -> MemoryMessage {
        guard case let .diff(page, interval, _) = self else { preconditionFailure("only .diff carries a diff, not \(self)") }
        return .diff(page: page, interval: interval, diff: diff)
    }

    public var description: String {
        switch self {
        case let .request(page, w): "request(page \(page), \(w ? "write" : "read"))"
        case let .forward(page, r, w): "forward(page \(page), requester \(r), \(w ? "write" : "read"))"
        case let .readGrant(page, c): "readGrant(page \(page), \(c.count) bytes)"
        case let .writeGrant(page, cs, c): "writeGrant(page \(page), copyset \(cs), \(c.map { "\($0.count) bytes" } ?? "no contents"))"
        case let .invalidate(page): "invalidate(page \(page))"
        case let .invalidateAck(page): "invalidateAck(page \(page))"
        case let .confirm(page): "confirm(page \(page))"
        case let .diff(page, interval, d): "diff(page \(page), interval \(interval), \(d.count) bytes)"
        case let .diffAck(page): "diffAck(page \(page))"
        case let .fetch(page, v): "fetch(page \(page), version \(v))"
        case let .pageData(page, v, c): "pageData(page \(page), version \(v), \(c.count) bytes)"
        case let .diffRequest(page, a, b): "diffRequest(page \(page), intervals \(a + 1)...\(b))"
        case let .diffReply(page, d): "diffReply(page \(page), \(d.count) diffs, \(d.reduce(0) { $0 + $1.diff.count }) bytes)"
        case let .collected(_, e): "collected(epoch \(e))"
        }
    }

    /// The same `.diffReply` with each diff's bytes filled in by `lookup`
    /// (see `MemoryEffect.sendStoredDiffs`).
    public func attachingStoredDiffs(_ lookup: (DiffKey) -> [UInt8]) -> MemoryMessage {
        guard case let .diffReply(page, diffs) = self else { preconditionFailure("only .diffReply carries stored diffs, not \(self)") }
        return .diffReply(page: page, diffs: diffs.map { d in
            var filled = d
            filled.diff = lookup(DiffKey(page: page, interval: d.interval, part: d.part))
            return filled
        })
    }
}

/// One diff of a page in a `.diffReply`: made by the replying writer in
/// its interval `interval` (`part` numbers the diffs of one interval, in
/// the order they must be applied: a page invalidated in the middle of an
/// interval has its diff so far taken then, and a second one later).
/// `order` is the sum of the interval's vector timestamp, which grows
/// along happened-before: applying a page's diffs by ascending `order`
/// applies them in an order consistent with it.
public struct IntervalDiff: Sendable, Equatable {
    public var interval: Int
    public var part: Int
    public var order: UInt64
    /// A `PageDiff` (empty in a reply the engine has not filled yet).
    public var diff: [UInt8]

    public init(interval: Int, part: Int, order: UInt64, diff: [UInt8] = []) {
        self.interval = interval
        self.part = part
        self.order = order
        self.diff = diff
    }

    /// Encoded size without the diff: interval u32, part u32, order u64, length u32.
    static let headerCount = 4 + 4 + 8 + 4
    /// Most diffs in one reply: a writer's intervals that wrote one page
    /// between two collections (far fewer in practice; the transport's
    /// frame limit bounds the bytes).
    static let maxCount: UInt32 = 1 << 20
}

/// Where the engine keeps a diff a core asked it to store
/// (`MemoryEffect.storeDiff`), until a reply sends it or a collection drops it.
public struct DiffKey: Sendable, Hashable {
    public var page: Int
    public var interval: Int
    public var part: Int
    public init(page: Int, interval: Int, part: Int) {
        self.page = page
        self.interval = interval
        self.part = part
    }
}

// MARK: - Codec

extension MemoryMessage {
    /// What a decoded message must respect; everything outside is rejected
    /// before any allocation, so a corrupt frame cannot reach a core.
    public struct Limits: Sendable, Equatable {
        public var rankCount: Int
        public var pageCount: Int
        public var pageSize: Int
        public init(rankCount: Int, pageCount: Int, pageSize: Int) {
            self.rankCount = rankCount
            self.pageCount = pageCount
            self.pageSize = pageSize
        }
    }

    public enum DecodingError: Error, Equatable, Sendable {
        case truncated
        case unknownTag(UInt8)
        case invalidFlag(UInt8)
        case pageOutOfRange(UInt64)
        case rankOutOfRange(UInt32)
        case contentsLength(UInt32)
        case copysetTooLarge(UInt32)
        case copysetNotAscending
        case trailingBytes(Int)
        /// A batch must hold 2...`maxBatchCount` messages.
        case batchCount(UInt16)
        /// A version vector whose length is not the job's rank count.
        case versionLength(UInt32)
        /// A diff that does not fit the page.
        case diff(PageDiff.DecodingError)
        /// A diff reply announcing more diffs than a reply may hold.
        case diffCount(UInt32)
    }

    private enum Tag: UInt8 {
        case request = 1, forward, readGrant, writeGrant, invalidate, invalidateAck, confirm
        case diff, diffAck, fetch, pageData
        case diffRequest, diffReply, collected
    }

    /// Little-endian: tag u8, page u64, then the case's fields (ranks u32,
    /// flags u8, contents as u32 length + bytes, copyset as u32 count + ranks).
    public func encoded() -> [UInt8] { encode(pageBytes: nil) }

    /// The encoding of `attaching(contents: page)`, with the page copied once,
    /// straight from memory into the encoding (the engine's send path).
    public func encoded(attaching page: UnsafeRawBufferPointer) -> [UInt8] {
        switch self {
        case .readGrant, .writeGrant, .pageData: return encode(pageBytes: page)
        default: preconditionFailure("only grants carry page contents, not \(self)")
        }
    }

    /// `pageBytes`, when given, replace a grant's contents.
    private func encode(pageBytes: UnsafeRawBufferPointer?) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(encodedCount + (pageBytes.map { $0.count + 5 } ?? 0))
        func put<T: FixedWidthInteger>(_ value: T) {
            withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
        }
        func putFlag(_ flag: Bool) { out.append(flag ? 1 : 0) }
        func putVersion(_ version: [Int]) {
            put(UInt32(version.count))
            for v in version { put(UInt32(v)) }
        }
        func putContents(_ contents: [UInt8]) {
            if let pageBytes {
                put(UInt32(pageBytes.count))
                out.append(contentsOf: pageBytes)
            } else {
                put(UInt32(contents.count))
                out.append(contentsOf: contents)
            }
        }
        switch self {
        case let .request(page, isWrite):
            put(Tag.request.rawValue); put(UInt64(page)); putFlag(isWrite)
        case let .forward(page, requester, isWrite):
            put(Tag.forward.rawValue); put(UInt64(page)); put(UInt32(requester)); putFlag(isWrite)
        case let .readGrant(page, contents):
            put(Tag.readGrant.rawValue); put(UInt64(page)); putContents(contents)
        case let .writeGrant(page, copyset, contents):
            put(Tag.writeGrant.rawValue); put(UInt64(page))
            put(UInt32(copyset.count))
            for rank in copyset { put(UInt32(rank)) }
            putFlag(contents != nil || pageBytes != nil)
            if contents != nil || pageBytes != nil { putContents(contents ?? []) }
        case let .invalidate(page):
            put(Tag.invalidate.rawValue); put(UInt64(page))
        case let .invalidateAck(page):
            put(Tag.invalidateAck.rawValue); put(UInt64(page))
        case let .confirm(page):
            put(Tag.confirm.rawValue); put(UInt64(page))
        case let .diff(page, interval, d):
            put(Tag.diff.rawValue); put(UInt64(page)); put(UInt32(interval))
            put(UInt32(d.count)); out.append(contentsOf: d)
        case let .diffAck(page):
            put(Tag.diffAck.rawValue); put(UInt64(page))
        case let .fetch(page, version):
            put(Tag.fetch.rawValue); put(UInt64(page)); putVersion(version)
        case let .pageData(page, version, contents):
            put(Tag.pageData.rawValue); put(UInt64(page)); putVersion(version); putContents(contents)
        case let .diffRequest(page, after, upTo):
            put(Tag.diffRequest.rawValue); put(UInt64(page)); put(UInt32(after)); put(UInt32(upTo))
        case let .diffReply(page, diffs):
            put(Tag.diffReply.rawValue); put(UInt64(page)); put(UInt32(diffs.count))
            for d in diffs {
                put(UInt32(d.interval)); put(UInt32(d.part)); put(UInt64(d.order))
                put(UInt32(d.diff.count)); out.append(contentsOf: d.diff)
            }
        case let .collected(page, epoch):
            put(Tag.collected.rawValue); put(UInt64(page)); put(UInt32(epoch))
        }
        return out
    }

    /// Size of `encoded()` without encoding.
    public var encodedCount: Int {
        let header = 1 + 8
        switch self {
        case .request: return header + 1
        case .forward: return header + 4 + 1
        case let .readGrant(_, contents): return header + 4 + contents.count
        case let .writeGrant(_, copyset, contents): return header + 4 + 4 * copyset.count + 1 + (contents.map { 4 + $0.count } ?? 0)
        case .invalidate, .invalidateAck, .confirm, .diffAck: return header
        case let .diff(_, _, d): return header + 4 + 4 + d.count
        case let .fetch(_, v): return header + 4 + 4 * v.count
        case let .pageData(_, v, c): return header + 4 + 4 * v.count + 4 + c.count
        case .diffRequest: return header + 4 + 4
        case let .diffReply(_, d): return header + 4 + d.reduce(0) { $0 + IntervalDiff.headerCount + $1.diff.count }
        case .collected: return header + 4
        }
    }

    /// Decodes one whole message. Never traps: any byte array either decodes
    /// to a message within `limits` or throws.
    public init(decoding bytes: [UInt8], limits: Limits) throws(DecodingError) {
        try self.init(decoding: bytes, in: bytes.indices, limits: limits)
    }

    /// Decodes the message in `bytes[range]`, nothing outside it (a batch's
    /// inner messages, without copying them out first).
    init(decoding bytes: [UInt8], in range: Range<Int>, limits: Limits) throws(DecodingError) {
        var reader = Reader(bytes: bytes, offset: range.lowerBound, end: range.upperBound)
        let tagByte = try reader.u8()
        guard let tag = Tag(rawValue: tagByte) else { throw .unknownTag(tagByte) }
        let rawPage = try reader.u64()
        guard rawPage < UInt64(limits.pageCount) else { throw .pageOutOfRange(rawPage) }
        let page = Int(rawPage)
        func rank() throws(DecodingError) -> Int {
            let raw = try reader.u32()
            guard raw < UInt32(clamping: limits.rankCount) else { throw .rankOutOfRange(raw) }
            return Int(raw)
        }
        func contents() throws(DecodingError) -> [UInt8] {
            let length = try reader.u32()
            guard Int(length) == limits.pageSize else { throw .contentsLength(length) }
            return try reader.bytes(Int(length))
        }
        func diffBytes() throws(DecodingError) -> [UInt8] {
            let length = try reader.u32()
            let limit = PageDiff.maxEncodedCount(pageSize: limits.pageSize)
            guard Int(length) <= limit else { throw .diff(.oversized(count: Int(length), limit: limit)) }
            let d = try reader.bytes(Int(length))
            do { _ = try PageDiff.runs(of: d, pageSize: limits.pageSize) } catch { throw .diff(error) }
            return d
        }
        func version() throws(DecodingError) -> [Int] {
            let count = try reader.u32()
            guard Int(count) == limits.rankCount else { throw .versionLength(count) }
            var v: [Int] = []
            v.reserveCapacity(Int(count))
            for _ in 0..<count { v.append(Int(try reader.u32())) }
            return v
        }
        switch tag {
        case .request:
            self = .request(page: page, isWrite: try reader.flag())
        case .forward:
            let requester = try rank()
            self = .forward(page: page, requester: requester, isWrite: try reader.flag())
        case .readGrant:
            self = .readGrant(page: page, contents: try contents())
        case .writeGrant:
            let count = try reader.u32()
            guard count <= UInt32(clamping: limits.rankCount) else { throw .copysetTooLarge(count) }
            var copyset = RankSet()
            var previous = -1
            for _ in 0..<count {
                let member = try rank()
                guard member > previous else { throw .copysetNotAscending }
                copyset.insert(member)
                previous = member
            }
            let hasContents = try reader.flag()
            self = .writeGrant(page: page, copyset: copyset, contents: hasContents ? try contents() : nil)
        case .invalidate:
            self = .invalidate(page: page)
        case .invalidateAck:
            self = .invalidateAck(page: page)
        case .confirm:
            self = .confirm(page: page)
        case .diff:
            let interval = Int(try reader.u32())
            self = .diff(page: page, interval: interval, diff: try diffBytes())
        case .diffAck:
            self = .diffAck(page: page)
        case .fetch:
            self = .fetch(page: page, version: try version())
        case .pageData:
            let v = try version()
            self = .pageData(page: page, version: v, contents: try contents())
        case .diffRequest:
            let after = Int(try reader.u32())
            let upTo = Int(try reader.u32())
            self = .diffRequest(page: page, after: after, upTo: upTo)
        case .diffReply:
            let count = try reader.u32()
            // Every diff takes at least its header: a count the bytes cannot
            // hold is refused before anything is reserved for it.
            guard count <= IntervalDiff.maxCount else { throw .diffCount(count) }
            guard Int(count) <= reader.remaining / IntervalDiff.headerCount else { throw .truncated }
            var diffs: [IntervalDiff] = []
            diffs.reserveCapacity(Int(count))
            for _ in 0..<count {
                let interval = Int(try reader.u32())
                let part = Int(try reader.u32())
                let order = try reader.u64()
                diffs.append(IntervalDiff(interval: interval, part: part, order: order, diff: try diffBytes()))
            }
            self = .diffReply(page: page, diffs: diffs)
        case .collected:
            self = .collected(page: page, epoch: Int(try reader.u32()))
        }
        guard reader.remaining == 0 else { throw .trailingBytes(reader.remaining) }
    }
}

// MARK: - Batches

extension MemoryMessage {
    /// Tag of a batch: several messages for one peer in one frame. The
    /// engine's writer joins consecutive outbox messages for one peer (such
    /// as the requests of a look-ahead run), so the receiver reads, handles
    /// and answers them in one pass (one read, one engine step, one
    /// `mprotect` for a run of pages, one reply).
    static let batchTag: UInt8 = 0x80
    /// Most messages in one batch; the writer starts a new batch beyond it.
    public static let maxBatchCount = 64

    /// Joins encoded messages: tag u8, count u16, then per message its
    /// length u32 and its bytes. One message is sent as itself.
    public static func batch(_ encoded: [[UInt8]]) -> [UInt8] {
        precondition((1...maxBatchCount).contains(encoded.count), "a batch holds 1...\(maxBatchCount) messages, not \(encoded.count)")
        if encoded.count == 1 { return encoded[0] }
        var out: [UInt8] = [batchTag]
        out.reserveCapacity(3 + encoded.reduce(0) { $0 + 4 + $1.count })
        withUnsafeBytes(of: UInt16(encoded.count).littleEndian) { out.append(contentsOf: $0) }
        for m in encoded {
            withUnsafeBytes(of: UInt32(m.count).littleEndian) { out.append(contentsOf: $0) }
            out.append(contentsOf: m)
        }
        return out
    }

    /// Decodes a frame's messages: one message, or a batch of them (never
    /// nested). Never traps; every inner message is checked against `limits`.
    public static func decodeAll(_ bytes: [UInt8], limits: Limits) throws(DecodingError) -> [MemoryMessage] {
        guard bytes.first == batchTag else { return [try MemoryMessage(decoding: bytes, limits: limits)] }
        var reader = Reader(bytes: bytes, offset: 0, end: bytes.count)
        _ = try reader.u8()
        let count = try reader.u16()
        guard count >= 2, count <= UInt16(maxBatchCount) else { throw .batchCount(count) }
        var messages: [MemoryMessage] = []
        messages.reserveCapacity(Int(count))
        for _ in 0..<count {
            let length = try reader.u32()
            let start = reader.offset
            try reader.skip(Int(length))
            messages.append(try MemoryMessage(decoding: bytes, in: start..<reader.offset, limits: limits))
        }
        guard reader.remaining == 0 else { throw .trailingBytes(reader.remaining) }
        return messages
    }
}

/// Bounds-checked little-endian reads; every read checks before it touches.
/// (Also the reader of hlrc's write-notice payloads.)
struct Reader {
    let bytes: [UInt8]
    var offset: Int
    /// Reads stop here (the end of the message being decoded).
    let end: Int

    var remaining: Int { end - offset }

    mutating func u8() throws(MemoryMessage.DecodingError) -> UInt8 {
        guard remaining >= 1 else { throw .truncated }
        defer { offset += 1 }
        return bytes[offset]
    }

    mutating func flag() throws(MemoryMessage.DecodingError) -> Bool {
        let byte = try u8()
        guard byte <= 1 else { throw .invalidFlag(byte) }
        return byte == 1
    }

    mutating func u16() throws(MemoryMessage.DecodingError) -> UInt16 { try integer(UInt16.self) }
    mutating func u32() throws(MemoryMessage.DecodingError) -> UInt32 { try integer(UInt32.self) }
    mutating func u64() throws(MemoryMessage.DecodingError) -> UInt64 { try integer(UInt64.self) }

    private mutating func integer<T: FixedWidthInteger>(_: T.Type) throws(MemoryMessage.DecodingError) -> T {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { throw .truncated }
        var value: T = 0
        for i in 0..<size { value |= T(bytes[offset + i]) << (8 * i) }
        offset += size
        return value
    }

    mutating func bytes(_ count: Int) throws(MemoryMessage.DecodingError) -> [UInt8] {
        guard count >= 0, remaining >= count else { throw .truncated }
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    mutating func skip(_ count: Int) throws(MemoryMessage.DecodingError) {
        guard count >= 0, remaining >= count else { throw .truncated }
        offset += count
    }
}
