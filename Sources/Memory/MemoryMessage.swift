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

    public var page: Int {
        switch self {
        case let .request(page, _), let .forward(page, _, _), let .readGrant(page, _), let .writeGrant(page, _, _),
             let .invalidate(page), let .invalidateAck(page), let .confirm(page),
             let .diff(page, _, _), let .diffAck(page), let .fetch(page, _), let .pageData(page, _, _):
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
        }
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
    }

    private enum Tag: UInt8 {
        case request = 1, forward, readGrant, writeGrant, invalidate, invalidateAck, confirm
        case diff, diffAck, fetch, pageData
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
            let length = try reader.u32()
            let limit = PageDiff.maxEncodedCount(pageSize: limits.pageSize)
            guard Int(length) <= limit else { throw .diff(.oversized(count: Int(length), limit: limit)) }
            let d = try reader.bytes(Int(length))
            do { _ = try PageDiff.runs(of: d, pageSize: limits.pageSize) } catch { throw .diff(error) }
            self = .diff(page: page, interval: interval, diff: d)
        case .diffAck:
            self = .diffAck(page: page)
        case .fetch:
            self = .fetch(page: page, version: try version())
        case .pageData:
            let v = try version()
            self = .pageData(page: page, version: v, contents: try contents())
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
