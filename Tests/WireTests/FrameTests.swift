import Testing
@testable import Wire
import Transport

@Suite struct FrameTests {
    @Test func roundTripsAFrame() throws {
        let f = Frame(.user, requestID: 0xDEAD_BEEF_0102, payload: Array(0..<200).map { UInt8($0 & 0xFF) })
        let bytes = f.encoded()
        #expect(bytes.count == Frame.headerSize + 200)
        #expect(try FrameDecoder.decodeOne(bytes) == f)
    }

    /// The header's layout, byte by byte: version 2 put the connection's
    /// frame number after the request ID.
    @Test func headerLayoutCarriesTheSequenceNumber() throws {
        let f = Frame(.memory, requestID: 0x0807_0605_0403_0201, sequence: 0xDDCC_BBAA, payload: [9, 8, 7])
        let bytes = f.encoded()
        #expect(Frame.version == 2 && Frame.headerSize == 24 && Frame.sequenceOffset == 16)
        #expect(Array(bytes[0..<4]) == [0x53, 0x58, 0x4C, 0x50])   // "PLXS" little-endian
        #expect(Array(bytes[4..<6]) == [2, 0])
        #expect(Array(bytes[6..<8]) == [0x01, 0x02])               // kind 0x0201
        #expect(Array(bytes[8..<16]) == [1, 2, 3, 4, 5, 6, 7, 8])
        #expect(Array(bytes[16..<20]) == [0xAA, 0xBB, 0xCC, 0xDD])
        #expect(Array(bytes[20..<24]) == [3, 0, 0, 0])
        #expect(Array(bytes[24...]) == [9, 8, 7])
        let back = try FrameDecoder.decodeOne(bytes)
        #expect(back == f && back.sequence == 0xDDCC_BBAA)
    }

    /// A version-1 frame (20-byte header, no sequence) is refused as
    /// another version, not misread.
    @Test func versionOneFramesAreRefused() {
        var w = ByteWriter()
        w.u32(Frame.magic); w.u16(1); w.u16(0x0401); w.u64(0); w.u32(4); w.raw([1, 2, 3, 4])
        #expect(throws: WireError.unsupportedVersion(got: 1, supported: 2)) { try FrameDecoder.decodeOne(w.bytes) }
    }

    @Test func decodesAcrossArbitrarySplits() throws {
        let frames = (0..<50).map { i in
            Frame(MessageKind(rawValue: UInt16(i)), requestID: UInt64(i), sequence: UInt32(i) &* 0x0101_0101, payload: Array(repeating: UInt8(i), count: i * 7))
        }
        let stream = frames.flatMap { $0.encoded() }
        var rng = SplitMix64(seed: 7)
        var d = FrameDecoder()
        var out: [Frame] = []
        var i = 0
        while i < stream.count {
            let n = Int(rng.next() % 40) + 1
            d.append(stream[i..<min(stream.count, i + n)])
            i += n
            while let f = try d.next() { out.append(f) }
        }
        #expect(out == frames)
        #expect(d.buffered == 0)
    }

    @Test func rejectsBadMagic() {
        var bytes = Frame(.user).encoded()
        bytes[0] ^= 0xFF
        #expect(throws: WireError.self) { try FrameDecoder.decodeOne(bytes) }
    }

    @Test func rejectsOtherVersionNamingBoth() {
        var bytes = Frame(.user).encoded()
        bytes[4] = 9
        do {
            _ = try FrameDecoder.decodeOne(bytes)
            Issue.record("accepted a version-9 frame")
        } catch {
            #expect(error == .unsupportedVersion(got: 9, supported: Frame.version))
            #expect(error.description.contains("version 9"))
        }
    }

    /// A header claiming 4 GiB must be refused from the header alone, before
    /// any payload arrives and without allocating the claimed size.
    @Test func rejectsOversizedFromHeaderAlone() {
        var w = ByteWriter()
        w.u32(Frame.magic); w.u16(Frame.version); w.u16(1); w.u64(0); w.u32(0); w.u32(0xFFFF_FFFF)
        var d = FrameDecoder(maxPayload: 1 << 20)
        d.append(w.bytes)
        #expect(throws: WireError.oversized(what: "frame payload", length: 0xFFFF_FFFF, limit: 1 << 20)) { try d.next() }
    }

    @Test func truncatedFrameWaitsThenFailsAsOne() throws {
        let bytes = Frame(.user, payload: [1, 2, 3]).encoded()
        for cut in 0..<bytes.count {
            var d = FrameDecoder()
            d.append(bytes[0..<cut])
            #expect(try d.next() == nil)
            #expect(throws: WireError.self) { try FrameDecoder.decodeOne(Array(bytes[0..<cut])) }
        }
    }

    @Test func helloRoundTripAndRefusals() throws {
        let h = Hello(job: "job-1", sender: 42, role: "process")
        #expect(try Hello.decode(h.encoded()) == h)
        #expect(h.refusal(expectedJob: "job-1") == nil)
        let other = h.refusal(expectedJob: "job-2")
        #expect(other?.contains("job-1") == true && other?.contains("job-2") == true)
        let old = Hello(job: "job-1", sender: 42, role: "process", protocolVersion: 0)
        #expect(old.refusal(expectedJob: "job-1")?.contains("version 0") == true)
        #expect(throws: WireError.self) { try Hello.decode(h.encoded() + [0]) }
    }

    @Test func readerRejectsLyingLengths() {
        var w = ByteWriter()
        w.u32(1_000_000)
        var r = ByteReader(w.bytes)
        #expect(throws: WireError.oversized(what: "x", length: 1_000_000, limit: 100)) { try r.blob("x", limit: 100) }
        var r2 = ByteReader(w.bytes)
        #expect(throws: WireError.truncated(what: "x")) { try r2.blob("x", limit: 2_000_000) }
        var r3 = ByteReader([2])
        #expect(throws: WireError.self) { try r3.bool() }
    }
}
