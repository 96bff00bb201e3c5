/// Little-endian writer for frame payloads. Append-only; the result is `bytes`.
public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8]

    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func bool(_ v: Bool) { bytes.append(v ? 1 : 0) }
    public mutating func u16(_ v: UInt16) { appendLE(v) }
    public mutating func u32(_ v: UInt32) { appendLE(v) }
    public mutating func u64(_ v: UInt64) { appendLE(v) }
    public mutating func i64(_ v: Int64) { appendLE(UInt64(bitPattern: v)) }
    public mutating func f64(_ v: Double) { appendLE(v.bitPattern) }

    /// A u32 length followed by the bytes.
    public mutating func blob<C: Collection>(_ b: C) where C.Element == UInt8 {
        u32(UInt32(b.count))
        bytes.append(contentsOf: b)
    }

    public mutating func string(_ s: String) { blob(Array(s.utf8)) }

    /// Raw bytes without a length (the reader must know the length).
    public mutating func raw<C: Collection>(_ b: C) where C.Element == UInt8 { bytes.append(contentsOf: b) }

    private mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) }
    }
}

/// Bounds-checked little-endian reader. Every read throws `WireError.truncated`
/// past the end and every length is checked against both the remaining input
/// and a caller-given limit before anything is allocated.
public struct ByteReader: Sendable {
    public let bytes: [UInt8]
    public private(set) var offset: Int
    private let end: Int

    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.offset = 0
        self.end = bytes.count
    }

    public var remaining: Int { end - offset }
    public var isAtEnd: Bool { offset == end }

    public mutating func u8(_ what: String = "u8") throws(WireError) -> UInt8 {
        guard remaining >= 1 else { throw .truncated(what: what) }
        defer { offset += 1 }
        return bytes[offset]
    }

    public mutating func bool(_ what: String = "bool") throws(WireError) -> Bool {
        switch try u8(what) {
        case 0: return false
        case 1: return true
        case let b: throw .malformed("\(what) must be 0 or 1, got \(b)")
        }
    }

    public mutating func u16(_ what: String = "u16") throws(WireError) -> UInt16 { try readLE(what) }
    public mutating func u32(_ what: String = "u32") throws(WireError) -> UInt32 { try readLE(what) }
    public mutating func u64(_ what: String = "u64") throws(WireError) -> UInt64 { try readLE(what) }
    public mutating func i64(_ what: String = "i64") throws(WireError) -> Int64 { Int64(bitPattern: try readLE(what) as UInt64) }
    public mutating func f64(_ what: String = "f64") throws(WireError) -> Double { Double(bitPattern: try readLE(what)) }

    /// A u32-length-prefixed byte string of at most `limit` bytes.
    public mutating func blob(_ what: String = "blob", limit: Int) throws(WireError) -> [UInt8] {
        let n = Int(try u32("length of \(what)"))
        guard n <= limit else { throw .oversized(what: what, length: n, limit: limit) }
        return try raw(n, what)
    }

    public mutating func string(_ what: String = "string", limit: Int = 4096) throws(WireError) -> String {
        let b = try blob(what, limit: limit)
        guard let s = String(validating: b, as: UTF8.self) else { throw .malformed("\(what) is not valid UTF-8") }
        return s
    }

    public mutating func raw(_ n: Int, _ what: String = "bytes") throws(WireError) -> [UInt8] {
        guard n >= 0, remaining >= n else { throw .truncated(what: what) }
        defer { offset += n }
        return Array(bytes[offset..<offset + n])
    }

    /// Throws unless every byte was consumed: trailing garbage is malformed.
    public func expectEnd(_ what: String) throws(WireError) {
        guard isAtEnd else { throw .malformed("\(remaining) unexpected trailing bytes after \(what)") }
    }

    private mutating func readLE<T: FixedWidthInteger>(_ what: String) throws(WireError) -> T {
        let n = MemoryLayout<T>.size
        guard remaining >= n else { throw .truncated(what: what) }
        var v: T = 0
        for i in 0..<n { v |= T(bytes[offset + i]) << (8 * i) }
        offset += n
        return v
    }
}
