/// Errors of the wire layer. Every decoder in Plexus reports bad input with one
/// of these instead of crashing or trusting a length it has not checked.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The first four bytes of a frame were not Plexus's magic: the peer is not a
    /// Plexus process (or the stream lost its framing). Check the address you dialled.
    case badMagic(UInt32)
    /// The peer speaks another version of the Plexus wire protocol. Run the same
    /// Plexus build on every node.
    case unsupportedVersion(got: UInt16, supported: UInt16)
    /// A frame or field claimed more bytes than the bound allows. Nothing of
    /// that size was allocated.
    case oversized(what: String, length: Int, limit: Int)
    /// The input ended inside a frame or field.
    case truncated(what: String)
    /// The bytes were well framed but their contents make no sense.
    case malformed(String)

    public var description: String {
        switch self {
        case .badMagic(let m):
            return "not a Plexus frame (magic 0x\(String(m, radix: 16)), expected 0x\(String(Frame.magic, radix: 16))): is the address a Plexus node or process?"
        case .unsupportedVersion(let got, let supported):
            return "peer speaks Plexus wire protocol version \(got), this build speaks \(supported): run the same Plexus build on every node"
        case .oversized(let what, let length, let limit):
            return "\(what) of \(length) bytes exceeds the limit of \(limit) bytes"
        case .truncated(let what):
            return "input ended inside \(what)"
        case .malformed(let why):
            return "malformed input: \(why)"
        }
    }
}
