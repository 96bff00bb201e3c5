import Testing
@testable import Wire
import Transport

/// Feeds the frame and hello decoders random, mutated and truncated input.
/// The property: they return a frame, ask for more input, or throw a
/// `WireError`; they never crash, and never return a frame that does not
/// re-encode to the bytes it came from.
@Suite struct FuzzTests {
    static let cases = 120_000

    @Test func frameDecoderSurvivesHostileInput() throws {
        var rng = SplitMix64(seed: 0x5EED)
        var decoded = 0, rejected = 0, incomplete = 0
        let maxPayload = 4096
        for i in 0..<Self.cases {
            var bytes: [UInt8]
            switch i % 4 {
            case 0:  // pure garbage
                bytes = (0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            case 1:  // valid frame, a few bytes flipped
                let n = Int(rng.next() % 300)
                bytes = Frame(MessageKind(rawValue: UInt16(truncatingIfNeeded: rng.next())), requestID: rng.next(),
                              sequence: UInt32(truncatingIfNeeded: rng.next()), payload: (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }).encoded()
                for _ in 0..<(1 + Int(rng.next() % 3)) {
                    let at = Int(rng.next() % UInt64(bytes.count))
                    bytes[at] = UInt8(truncatingIfNeeded: rng.next())
                }
            case 2:  // valid frame, truncated
                let f = Frame(.memory, payload: (0..<Int(rng.next() % 100)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
                let b = f.encoded()
                bytes = Array(b[0..<Int(rng.next() % UInt64(b.count))])
            default:  // valid header with a random length field
                var w = ByteWriter()
                w.u32(Frame.magic); w.u16(Frame.version); w.u16(3); w.u64(rng.next()); w.u32(UInt32(truncatingIfNeeded: rng.next()))
                w.u32(UInt32(truncatingIfNeeded: rng.next() >> UInt64(rng.next() % 32)))
                w.raw((0..<Int(rng.next() % 64)).map { _ in UInt8(truncatingIfNeeded: rng.next()) })
                bytes = w.bytes
            }
            var d = FrameDecoder(maxPayload: maxPayload)
            d.append(bytes)
            do {
                if let f = try d.next() {
                    decoded += 1
                    #expect(f.payload.count <= maxPayload)
                    #expect(Array(bytes[0..<Frame.headerSize + f.payload.count]) == f.encoded())
                } else {
                    incomplete += 1
                }
            } catch {
                rejected += 1
            }
            // The hello decoder sees the same bytes as a payload.
            _ = try? Hello.decode(bytes)
        }
        // Each class of input must actually have been exercised.
        #expect(decoded > 1000 && rejected > 1000 && incomplete > 1000)
    }
}
