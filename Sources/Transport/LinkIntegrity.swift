import Wire

/// What a connection's integrity check found wrong with the frames it
/// received. Every frame carries its number on its connection, in its
/// direction (`Frame.sequence`); the receiver expects 0, 1, 2, ... A gap
/// means a frame was lost (or frames were reordered: the later one shows up
/// first), a number seen before means a frame was duplicated. TCP itself
/// never loses, duplicates or reorders bytes, so on a healthy network none
/// of this happens: it comes from a faulty transport or from fault injection
/// (`LinkFaultPlan`). Nothing is retransmitted: the link is declared broken,
/// which reaches the layer above as the loss of the peer, naming why.
///
/// Descriptions speak of the peer as "it", for the layer above to name it
/// ("rank 1 is gone: its link broke: frame 812 from it is missing ...").
public indirect enum LinkFault: Error, Sendable, Equatable, CustomStringConvertible {
    /// Frame `expected` never arrived: frame `got` came in its place.
    case missing(expected: UInt32, got: UInt32)
    /// Frame `got` arrived although frame `expected` was next: a frame seen
    /// before (a duplicate).
    case repeated(got: UInt32, expected: UInt32)
    /// The peer found `fault` in the frames this process sent it.
    case foundByPeer(LinkFault)
    /// This process reset the connection on purpose (fault injection).
    case injectedReset

    /// Every reason string a connection gives for a link fault starts with
    /// this (the transport hands reasons up as strings).
    public static let reasonPrefix = "link integrity: "

    /// The reason a broken connection reports (`TransportHandler.onPeerLost`).
    public var reason: String { Self.reasonPrefix + description }

    public var description: String {
        switch self {
        case let .missing(expected, got):
            return "frame \(expected) from it is missing (frame \(got) came next): a frame was lost on the link; the job cannot continue"
        case let .repeated(got, expected):
            return "frame \(got) from it arrived a second time (frame \(expected) was next): a frame was duplicated on the link; the job cannot continue"
        case .foundByPeer(.missing(let expected, let got)):
            return "it found frame \(expected) from this process missing (frame \(got) came next): a frame was lost on the link; the job cannot continue"
        case .foundByPeer(.repeated(let got, let expected)):
            return "it received frame \(got) from this process a second time (frame \(expected) was next): a frame was duplicated on the link; the job cannot continue"
        case .foundByPeer(let other):
            return "it found the link broken: \(other)"
        case .injectedReset:
            return "this process reset the connection on purpose (fault injection, \(LinkFaultPlan.environmentVariable)); the job cannot continue"
        }
    }

    /// The payload of a `.linkBroken` frame: what the receiver found.
    /// Only `missing` and `repeated` travel.
    func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 9)
        switch self {
        case let .missing(expected, got): w.u8(1); w.u32(expected); w.u32(got)
        case let .repeated(got, expected): w.u8(2); w.u32(expected); w.u32(got)
        case .foundByPeer, .injectedReset: w.u8(0); w.u32(0); w.u32(0)
        }
        return w.bytes
    }

    /// Decodes a `.linkBroken` payload; rejects anything but exactly 9 bytes
    /// with a known tag.
    static func decode(_ bytes: [UInt8]) throws(WireError) -> LinkFault {
        var r = ByteReader(bytes)
        let tag = try r.u8("link fault kind")
        let expected = try r.u32("expected frame"), got = try r.u32("received frame")
        try r.expectEnd("link fault")
        switch tag {
        case 1: return .missing(expected: expected, got: got)
        case 2: return .repeated(got: got, expected: expected)
        default: throw .malformed("unknown link fault kind \(tag)")
        }
    }
}
