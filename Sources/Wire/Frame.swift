/// The unit of everything Plexus sends: a fixed 24-byte header and a payload.
///
///     offset  size  field
///          0     4  magic        0x504C5853 ("PLXS"), little-endian
///          4     2  version      Frame.version
///          6     2  kind         MessageKind raw value
///          8     8  requestID    correlates a reply with its request (0: none)
///         16     4  sequence     the frame's number on its connection, in its
///                                direction: 0, 1, 2, ... (wrapping); stamped
///                                by the sending `Connection`, checked by the
///                                receiving one (a gap or a repeat breaks the link)
///         20     4  length       payload length in bytes, <= the decoder's limit
///         24     n  payload
///
/// Version 2 added `sequence` (version 1 had a 20-byte header without it).
public struct Frame: Equatable, Sendable {
    public static let magic: UInt32 = 0x504C_5853
    public static let version: UInt16 = 2
    public static let headerSize = 24
    /// Where `sequence` sits in the header, for a sender that stamps it into
    /// a header encoded earlier.
    public static let sequenceOffset = 16
    /// Default bound on a payload: large enough for a batch of pages, small
    /// enough that a lying length cannot make a process allocate gigabytes.
    public static let defaultMaxPayload = 16 << 20

    public var kind: MessageKind
    public var requestID: UInt64
    /// The frame's number on the connection that carried it (see the header
    /// layout above). A `Connection` overwrites it when it sends the frame:
    /// callers leave it 0; receivers read the sender's number.
    public var sequence: UInt32
    public var payload: [UInt8]

    public init(_ kind: MessageKind, requestID: UInt64 = 0, sequence: UInt32 = 0, payload: [UInt8] = []) {
        self.kind = kind
        self.requestID = requestID
        self.sequence = sequence
        self.payload = payload
    }

    /// Header and payload, ready for the socket.
    public func encoded() -> [UInt8] {
        var bytes = header(reserving: Frame.headerSize + payload.count)
        bytes.append(contentsOf: payload)
        return bytes
    }

    /// The header alone, for a writer that sends the payload from where it
    /// is (`sendmsg` of two parts) instead of copying it behind the header.
    public func encodedHeader() -> [UInt8] { header(reserving: Frame.headerSize) }

    private func header(reserving capacity: Int) -> [UInt8] {
        var w = ByteWriter(capacity: capacity)
        w.u32(Frame.magic)
        w.u16(Frame.version)
        w.u16(kind.rawValue)
        w.u64(requestID)
        w.u32(sequence)
        w.u32(UInt32(payload.count))
        return w.bytes
    }
}

/// Message kinds, grouped by layer in blocks of 0x100 so a layer can add kinds
/// without renumbering others. Unknown kinds decode fine (the frame is valid);
/// the layer that receives one decides whether it is an error.
public struct MessageKind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    // 0x00xx: transport control
    public static let hello = MessageKind(rawValue: 0x0001)
    public static let helloAccepted = MessageKind(rawValue: 0x0002)
    public static let helloRejected = MessageKind(rawValue: 0x0003)
    /// Sent on a link idle for a while: carries nothing but its sequence
    /// number, so a receiver learns of a lost last frame (the one a peer now
    /// waits for an answer to) without waiting for more traffic. Consumed by
    /// `Connection`, never delivered.
    public static let linkCheck = MessageKind(rawValue: 0x0004)
    /// The last frame on a link whose receiver found a gap or a repeat in
    /// the sequence numbers: says which (payload: `LinkFault` encoded).
    /// Consumed by `Connection`, never delivered.
    public static let linkBroken = MessageKind(rawValue: 0x0005)
    // 0x01xx: node daemon and launcher
    public static let spawn = MessageKind(rawValue: 0x0101)
    public static let spawned = MessageKind(rawValue: 0x0102)
    public static let output = MessageKind(rawValue: 0x0103)
    public static let exited = MessageKind(rawValue: 0x0104)
    public static let killJob = MessageKind(rawValue: 0x0105)
    public static let register = MessageKind(rawValue: 0x0106)
    public static let directory = MessageKind(rawValue: 0x0107)
    public static let spawnFailed = MessageKind(rawValue: 0x0108)
    public static let nodeJoin = MessageKind(rawValue: 0x0109)
    public static let nodeMembers = MessageKind(rawValue: 0x010A)
    public static let processReport = MessageKind(rawValue: 0x010B)
    public static let peerLost = MessageKind(rawValue: 0x010C)
    public static let nodeInfoRequest = MessageKind(rawValue: 0x010D)
    public static let nodeInfo = MessageKind(rawValue: 0x010E)
    public static let finalized = MessageKind(rawValue: 0x010F)
    public static let statusRequest = MessageKind(rawValue: 0x0110)
    public static let status = MessageKind(rawValue: 0x0111)
    public static let reportRequest = MessageKind(rawValue: 0x0112)
    /// Standard input for one job process (launcher → node), and the
    /// node's word that the process took some of it (node → launcher).
    public static let input = MessageKind(rawValue: 0x0120)
    public static let inputCredit = MessageKind(rawValue: 0x0121)
    // 0x02xx: shared memory protocols
    public static let memory = MessageKind(rawValue: 0x0201)
    public static let sync = MessageKind(rawValue: 0x0202)
    // 0x03xx: name service
    public static let names = MessageKind(rawValue: 0x0301)
    // 0x04xx: application messages (Plexus.send / receive)
    public static let user = MessageKind(rawValue: 0x0401)
    // 0x05xx: distributed deadlock detection (probes and confirms between ranks)
    public static let deadlock = MessageKind(rawValue: 0x0501)

    public var description: String { "kind 0x\(String(rawValue, radix: 16))" }
}

/// Incremental frame decoder for a byte stream (TCP). Feed it whatever arrived;
/// `next()` returns a frame once one is complete, nil if more bytes are needed,
/// and throws on a frame that can never be valid. The claimed length is checked
/// against `maxPayload` before any buffer of that size exists.
public struct FrameDecoder: Sendable {
    public let maxPayload: Int
    private var buffer: [UInt8] = []
    private var start = 0

    public init(maxPayload: Int = Frame.defaultMaxPayload) {
        self.maxPayload = maxPayload
    }

    /// Bytes received but not yet part of a returned frame.
    public var buffered: Int { buffer.count - start }

    public mutating func append<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        compact()
        buffer.append(contentsOf: bytes)
    }

    /// The receive path's append: a concrete type, so the copy is one
    /// `memcpy` even when called from another module (a generic call across
    /// modules is not specialised and copies byte by byte, about 2 µs for a
    /// 4 KiB page on these machines).
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        compact()
        buffer.append(contentsOf: bytes)
    }

    private mutating func compact() {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
    }

    public mutating func next() throws(WireError) -> Frame? {
        guard buffered >= Frame.headerSize else { return nil }
        // The header is read in place: `buffered` covers it.
        let (magic, version, rawKind, requestID, sequence, rawLength) = buffer.withUnsafeBytes { b in
            (UInt32(littleEndian: b.loadUnaligned(fromByteOffset: start, as: UInt32.self)),
             UInt16(littleEndian: b.loadUnaligned(fromByteOffset: start + 4, as: UInt16.self)),
             UInt16(littleEndian: b.loadUnaligned(fromByteOffset: start + 6, as: UInt16.self)),
             UInt64(littleEndian: b.loadUnaligned(fromByteOffset: start + 8, as: UInt64.self)),
             UInt32(littleEndian: b.loadUnaligned(fromByteOffset: start + 16, as: UInt32.self)),
             UInt32(littleEndian: b.loadUnaligned(fromByteOffset: start + 20, as: UInt32.self)))
        }
        guard magic == Frame.magic else { throw .badMagic(magic) }
        guard version == Frame.version else { throw .unsupportedVersion(got: version, supported: Frame.version) }
        let kind = MessageKind(rawValue: rawKind)
        let length = Int(rawLength)
        guard length <= maxPayload else { throw .oversized(what: "frame payload", length: length, limit: maxPayload) }
        guard buffered >= Frame.headerSize + length else { return nil }
        let p = start + Frame.headerSize
        let payload = Array(buffer[p..<p + length])
        start = p + length
        if start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        return Frame(kind, requestID: requestID, sequence: sequence, payload: payload)
    }

    /// Decodes exactly one frame from a complete byte array (datagram use, tests).
    public static func decodeOne(_ bytes: [UInt8], maxPayload: Int = Frame.defaultMaxPayload) throws(WireError) -> Frame {
        var d = FrameDecoder(maxPayload: maxPayload)
        d.append(bytes)
        guard let f = try d.next() else { throw .truncated(what: "frame") }
        guard d.buffered == 0 else { throw .malformed("\(d.buffered) bytes after the frame") }
        return f
    }
}
