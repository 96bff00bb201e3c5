import Memory
import Testing
import Transport

@Suite struct MemoryMessageCodecTests {
    static let limits = MemoryMessage.Limits(rankCount: 5, pageCount: 1000, pageSize: 16)

    static func randomMessage(using rng: inout SplitMix64) -> MemoryMessage {
        let page = Int.random(in: 0..<limits.pageCount, using: &rng)
        let rank = Int.random(in: 0..<limits.rankCount, using: &rng)
        let contents = (0..<limits.pageSize).map { _ in UInt8.random(in: 0...255, using: &rng) }
        let copyset = RankSet((0..<limits.rankCount).filter { _ in Bool.random(using: &rng) })
        let version = (0..<limits.rankCount).map { _ in Int(UInt32.random(in: 0...UInt32.max, using: &rng) >> UInt32.random(in: 0...31, using: &rng)) }
        switch Int.random(in: 0..<15, using: &rng) {
        case 0: return .request(page: page, isWrite: Bool.random(using: &rng))
        case 1: return .forward(page: page, requester: rank, isWrite: Bool.random(using: &rng))
        case 2: return .readGrant(page: page, contents: contents)
        case 3: return .writeGrant(page: page, copyset: copyset, contents: contents)
        case 4: return .writeGrant(page: page, copyset: copyset, contents: nil)
        case 5: return .invalidate(page: page)
        case 6: return .invalidateAck(page: page)
        case 7: return .confirm(page: page)
        case 8:
            var edited = contents
            for _ in 0..<Int.random(in: 0...4, using: &rng) { edited[Int.random(in: 0..<edited.count, using: &rng)] &+= 1 }
            return .diff(page: page, interval: version[0], diff: PageDiff.encode(twin: contents, current: edited))
        case 9: return .diffAck(page: page)
        case 10: return .fetch(page: page, version: version)
        case 12: return .diffRequest(page: page, after: version[0], upTo: version[1])
        case 13:
            let diffs = (0..<Int.random(in: 0...3, using: &rng)).map { i -> IntervalDiff in
                var edited = contents
                for _ in 0..<Int.random(in: 0...4, using: &rng) { edited[Int.random(in: 0..<edited.count, using: &rng)] &+= 1 }
                return IntervalDiff(interval: version[i], part: i, order: UInt64.random(in: 0...UInt64.max, using: &rng),
                                    diff: PageDiff.encode(twin: contents, current: edited))
            }
            return .diffReply(page: page, diffs: diffs)
        case 14: return .collected(page: 0, epoch: version[2])
        default: return .pageData(page: page, version: version, contents: contents)
        }
    }

    /// Changes, inserts or removes one to three bytes.
    static func mutate(_ bytes: inout [UInt8], using rng: inout SplitMix64) {
        for _ in 0..<Int.random(in: 1...3, using: &rng) {
            let at = Int.random(in: 0..<bytes.count, using: &rng)
            switch Int.random(in: 0..<3, using: &rng) {
            case 0: bytes[at] = UInt8.random(in: 0...255, using: &rng)
            case 1: bytes.insert(UInt8.random(in: 0...255, using: &rng), at: at)
            default: if bytes.count > 1 { bytes.remove(at: at) }
            }
        }
    }

    /// Decodes, and if that succeeds checks the encoding is canonical.
    static func decodeChecked(_ bytes: [UInt8]) -> MemoryMessage? {
        guard let message = try? MemoryMessage(decoding: bytes, limits: limits) else { return nil }
        #expect(message.encoded() == bytes, "\(message) decoded from bytes it does not encode to")
        return message
    }

    /// The engine encodes a grant straight from the page; the bytes must be
    /// those of the grant with the page attached, whatever placeholder the
    /// core left (empty contents, or none for a write grant).
    @Test func grantEncodedFromThePageMatchesTheAttachedGrant() throws {
        var rng = SplitMix64(seed: 7)
        for _ in 0..<200 {
            let page = (0..<Self.limits.pageSize).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let copyset = RankSet((0..<Self.limits.rankCount).filter { _ in Bool.random(using: &rng) })
            let index = Int.random(in: 0..<Self.limits.pageCount, using: &rng)
            for grant: MemoryMessage in [.readGrant(page: index, contents: []), .writeGrant(page: index, copyset: copyset, contents: []),
                                         .writeGrant(page: index, copyset: copyset, contents: nil)] {
                let direct = page.withUnsafeBytes { grant.encoded(attaching: $0) }
                #expect(direct == grant.attaching(contents: page).encoded(), "\(grant)")
                #expect(try MemoryMessage(decoding: direct, limits: Self.limits) == grant.attaching(contents: page))
            }
        }
    }

    @Test func everyMessageRoundTrips() throws {
        var rng = SplitMix64(seed: 1)
        var tagsSeen = Set<UInt8>()
        for _ in 0..<2000 {
            let message = Self.randomMessage(using: &rng)
            let bytes = message.encoded()
            #expect(bytes.count == message.encodedCount)
            #expect(try MemoryMessage(decoding: bytes, limits: Self.limits) == message)
            tagsSeen.insert(bytes[0])
        }
        #expect(tagsSeen.count == 14)
    }

    @Test func everyTruncationIsRejected() {
        var rng = SplitMix64(seed: 2)
        for _ in 0..<500 {
            let bytes = Self.randomMessage(using: &rng).encoded()
            for length in 0..<bytes.count {
                #expect(throws: MemoryMessage.DecodingError.truncated) {
                    try MemoryMessage(decoding: Array(bytes.prefix(length)), limits: Self.limits)
                }
            }
            #expect(throws: MemoryMessage.DecodingError.trailingBytes(1)) {
                try MemoryMessage(decoding: bytes + [0], limits: Self.limits)
            }
        }
    }

    @Test func outOfRangeFieldsAreRejectedBeforeAllocating() {
        let hugeGrant: [UInt8] = [3] + [UInt8](repeating: 0, count: 8) + [0xff, 0xff, 0xff, 0xff]
        #expect(throws: MemoryMessage.DecodingError.contentsLength(0xffff_ffff)) {
            try MemoryMessage(decoding: hugeGrant, limits: Self.limits)
        }
        let farPage = MemoryMessage.invalidate(page: 5000).encoded()
        #expect(throws: MemoryMessage.DecodingError.pageOutOfRange(5000)) {
            try MemoryMessage(decoding: farPage, limits: Self.limits)
        }
        let badRank = MemoryMessage.forward(page: 1, requester: 9, isWrite: false).encoded()
        #expect(throws: MemoryMessage.DecodingError.rankOutOfRange(9)) {
            try MemoryMessage(decoding: badRank, limits: Self.limits)
        }
        let bigCopyset: [UInt8] = [4] + [UInt8](repeating: 0, count: 8) + [6, 0, 0, 0]
        #expect(throws: MemoryMessage.DecodingError.copysetTooLarge(6)) {
            try MemoryMessage(decoding: bigCopyset, limits: Self.limits)
        }
        let unsorted: [UInt8] = [4] + [UInt8](repeating: 0, count: 8) + [2, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 0]
        #expect(throws: MemoryMessage.DecodingError.copysetNotAscending) {
            try MemoryMessage(decoding: unsorted, limits: Self.limits)
        }
        #expect(throws: MemoryMessage.DecodingError.unknownTag(0)) {
            try MemoryMessage(decoding: [0], limits: Self.limits)
        }
        #expect(throws: MemoryMessage.DecodingError.invalidFlag(2)) {
            try MemoryMessage(decoding: [1] + [UInt8](repeating: 0, count: 8) + [2], limits: Self.limits)
        }
    }

    /// hlrc's kinds: a version vector must have one entry per rank, a diff
    /// must fit the page, a page must have the page size.
    @Test func malformedHomeBasedMessagesAreRejected() {
        func le(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.littleEndian) { Array($0) } }
        let header: (UInt8) -> [UInt8] = { [$0] + [UInt8](repeating: 0, count: 8) }
        #expect(throws: MemoryMessage.DecodingError.versionLength(4)) {
            try MemoryMessage(decoding: header(10) + le(4) + [UInt8](repeating: 0, count: 16), limits: Self.limits)
        }
        #expect(throws: MemoryMessage.DecodingError.versionLength(0xffff_ffff)) {
            try MemoryMessage(decoding: header(11) + le(0xffff_ffff), limits: Self.limits)
        }
        let limit = PageDiff.maxEncodedCount(pageSize: Self.limits.pageSize)
        #expect(throws: MemoryMessage.DecodingError.diff(.oversized(count: 0xffff_ffff, limit: limit))) {
            try MemoryMessage(decoding: header(8) + le(1) + le(0xffff_ffff), limits: Self.limits)
        }
        let outside = le(1) + le(12) + le(8) + [UInt8](repeating: 1, count: 8)
        #expect(throws: MemoryMessage.DecodingError.diff(.runOutsidePage(offset: 12, length: 8, pageSize: 16))) {
            try MemoryMessage(decoding: header(8) + le(1) + le(UInt32(outside.count)) + outside, limits: Self.limits)
        }
        // lrc's diff reply: a count its bytes cannot hold, a diff outside the page.
        #expect(throws: MemoryMessage.DecodingError.diffCount(0xffff_ffff)) {
            try MemoryMessage(decoding: header(13) + le(0xffff_ffff) + [UInt8](repeating: 0, count: 40), limits: Self.limits)
        }
        #expect(throws: MemoryMessage.DecodingError.diff(.runOutsidePage(offset: 12, length: 8, pageSize: 16))) {
            try MemoryMessage(decoding: header(13) + le(1) + le(1) + le(0) + le(0) + le(0) + le(UInt32(outside.count)) + outside, limits: Self.limits)
        }
        let shortPage = MemoryMessage.pageData(page: 0, version: [0, 0, 0, 0, 0], contents: [1, 2, 3]).encoded()
        #expect(throws: MemoryMessage.DecodingError.contentsLength(3)) {
            try MemoryMessage(decoding: shortPage, limits: Self.limits)
        }
    }

    @Test func pageDataEncodedFromThePageMatchesTheAttachedMessage() throws {
        let page = (0..<Self.limits.pageSize).map { UInt8($0 * 7 & 0xff) }
        let message = MemoryMessage.pageData(page: 9, version: [1, 2, 3, 4, 5], contents: [])
        let direct = page.withUnsafeBytes { message.encoded(attaching: $0) }
        #expect(direct == message.attaching(contents: page).encoded())
        #expect(try MemoryMessage(decoding: direct, limits: Self.limits) == message.attaching(contents: page))
    }

    @Test func randomAndMutatedBytesNeverCrashTheDecoder() {
        var rng = SplitMix64(seed: 3)
        var decoded = 0
        for _ in 0..<20_000 {
            // Random bytes, mostly with a valid tag so the field checks are reached.
            let length = Int.random(in: 0..<64, using: &rng)
            var bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            if !bytes.isEmpty && Bool.random(using: &rng) { bytes[0] = UInt8.random(in: 1...11, using: &rng) }
            if Self.decodeChecked(bytes) != nil { decoded += 1 }
        }
        for _ in 0..<20_000 {
            // A valid message with one to three bytes changed, inserted or removed.
            var bytes = Self.randomMessage(using: &rng).encoded()
            Self.mutate(&bytes, using: &rng)
            if Self.decodeChecked(bytes) != nil { decoded += 1 }
        }
        // Some mutations (a flipped content byte) still decode; the check above
        // verified each of those re-encodes to the same bytes.
        #expect(decoded > 100)
    }

    // MARK: Batches

    @Test func batchesRoundTripAndOneMessageTravelsAsItself() throws {
        var rng = SplitMix64(seed: 4)
        for _ in 0..<500 {
            let messages = (0..<Int.random(in: 1...MemoryMessage.maxBatchCount, using: &rng)).map { _ in Self.randomMessage(using: &rng) }
            let bytes = MemoryMessage.batch(messages.map { $0.encoded() })
            if messages.count == 1 { #expect(bytes == messages[0].encoded()) }
            #expect(try MemoryMessage.decodeAll(bytes, limits: Self.limits) == messages)
        }
    }

    @Test func malformedBatchesAreRejected() throws {
        let a = MemoryMessage.invalidate(page: 3).encoded(), b = MemoryMessage.invalidateAck(page: 4).encoded()
        let good = MemoryMessage.batch([a, b])
        for length in 0..<good.count {
            #expect(throws: MemoryMessage.DecodingError.self) {
                try MemoryMessage.decodeAll(Array(good.prefix(length)), limits: Self.limits)
            }
        }
        #expect(throws: MemoryMessage.DecodingError.trailingBytes(1)) {
            try MemoryMessage.decodeAll(good + [0], limits: Self.limits)
        }
        // Counts of 0, 1 and past the limit.
        for count: UInt16 in [0, 1, UInt16(MemoryMessage.maxBatchCount + 1), 0xffff] {
            var bytes = good
            bytes[1] = UInt8(count & 0xff); bytes[2] = UInt8(count >> 8)
            #expect(throws: MemoryMessage.DecodingError.batchCount(count)) {
                try MemoryMessage.decodeAll(bytes, limits: Self.limits)
            }
        }
        // An inner length past the end is refused before any copy.
        var long = good
        long[3] = 0xff; long[4] = 0xff; long[5] = 0xff; long[6] = 0xff
        #expect(throws: MemoryMessage.DecodingError.truncated) {
            try MemoryMessage.decodeAll(long, limits: Self.limits)
        }
        // No batch inside a batch.
        let nested = MemoryMessage.batch([good, a])
        #expect(throws: MemoryMessage.DecodingError.unknownTag(0x80)) {
            try MemoryMessage.decodeAll(nested, limits: Self.limits)
        }
        // Every inner message is checked against the limits.
        let far = MemoryMessage.batch([a, MemoryMessage.invalidate(page: 5000).encoded()])
        #expect(throws: MemoryMessage.DecodingError.pageOutOfRange(5000)) {
            try MemoryMessage.decodeAll(far, limits: Self.limits)
        }
    }

    @Test func mutatedBatchesNeverCrashTheDecoder() {
        var rng = SplitMix64(seed: 5)
        var decoded = 0
        for _ in 0..<20_000 {
            let messages = (0..<Int.random(in: 2...6, using: &rng)).map { _ in Self.randomMessage(using: &rng).encoded() }
            var bytes = MemoryMessage.batch(messages)
            Self.mutate(&bytes, using: &rng)
            if let all = try? MemoryMessage.decodeAll(bytes, limits: Self.limits) {
                decoded += 1
                if all.count > 1 { #expect(MemoryMessage.batch(all.map { $0.encoded() }) == bytes) }
            }
        }
        #expect(decoded > 100)
    }
}
