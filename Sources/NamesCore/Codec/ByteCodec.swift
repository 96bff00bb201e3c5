/// Minimal bounds-checked binary encoding used for name-service commands,
/// results, snapshots and Raft messages.
///
/// Format: unsigned integers as LEB128 varints (at most 10 bytes, overflow
/// rejected), signed as zig-zag varints, byte strings and UTF-8 strings as a
/// varint length then the bytes, optionals as a 0/1 tag, enums as a varint tag.
/// The reader never traps on malformed input: every read checks the remaining
/// length first and every count is checked against the remaining bytes before
/// anything is allocated. Not thread-safe; values are used by one caller.

/// Why a byte sequence was refused.
public enum DecodeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The input ended in the middle of a value.
    case truncated
    /// The input is larger than the caller's limit.
    case oversized(length: Int, limit: Int)
    /// A varint longer than 10 bytes or exceeding 64 bits.
    case malformedVarint
    /// An enum tag no encoder produces.
    case unknownTag(type: String, tag: UInt64)
    /// A string that is not valid UTF-8.
    case invalidUTF8
    /// A length or count that cannot fit in what remains.
    case invalidLength(UInt64)
    /// A value outside its domain (message names the field).
    case invalidValue(String)
    /// Bytes left over after a complete value.
    case trailingBytes(Int)
    /// A snapshot or frame with the wrong magic/version.
    case badHeader

    public var description: String {
        switch self {
        case .truncated: "input truncated"
        case .oversized(let length, let limit): "input of \(length) bytes exceeds the limit of \(limit)"
        case .malformedVarint: "malformed varint"
        case .unknownTag(let type, let tag): "unknown \(type) tag \(tag)"
        case .invalidUTF8: "string is not valid UTF-8"
        case .invalidLength(let length): "length \(length) exceeds the remaining input"
        case .invalidValue(let what): "invalid value: \(what)"
        case .trailingBytes(let count): "\(count) trailing bytes after the value"
        case .badHeader: "bad magic or unsupported version"
        }
    }
}

public struct ByteWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init() {}

    public mutating func writeVarint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7F) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    public mutating func writeInt(_ value: Int64) {
        writeVarint(UInt64(bitPattern: (value << 1) ^ (value >> 63)))
    }

    public mutating func writeBool(_ value: Bool) { bytes.append(value ? 1 : 0) }

    public mutating func writeBytes(_ value: [UInt8]) {
        writeVarint(UInt64(value.count))
        bytes.append(contentsOf: value)
    }

    public mutating func writeString(_ value: String) {
        writeBytes(Array(value.utf8))
    }

    public mutating func writeRaw(_ value: [UInt8]) { bytes.append(contentsOf: value) }

    public mutating func writeOptional<T>(_ value: T?, _ write: (inout ByteWriter, T) -> Void) {
        if let value {
            writeBool(true)
            write(&self, value)
        } else {
            writeBool(false)
        }
    }

    public mutating func writeArray<T>(_ values: [T], _ write: (inout ByteWriter, T) -> Void) {
        writeVarint(UInt64(values.count))
        for value in values { write(&self, value) }
    }
}

public struct ByteReader: Sendable {
    private let bytes: [UInt8]
    public private(set) var position: Int = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var remaining: Int { bytes.count - position }

    public mutating func readByte() throws(DecodeError) -> UInt8 {
        guard position < bytes.count else { throw .truncated }
        defer { position += 1 }
        return bytes[position]
    }

    public mutating func readVarint() throws(DecodeError) -> UInt64 {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            let byte = try readByte()
            if shift == 63 && byte > 1 { throw .malformedVarint }
            result |= UInt64(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
            if shift > 63 { throw .malformedVarint }
        }
    }

    public mutating func readInt() throws(DecodeError) -> Int64 {
        let raw = try readVarint()
        return Int64(bitPattern: (raw >> 1) ^ (0 &- (raw & 1)))
    }

    public mutating func readInt32() throws(DecodeError) -> Int32 {
        let value = try readInt()
        guard let narrowed = Int32(exactly: value) else { throw .invalidValue("\(value) does not fit in Int32") }
        return narrowed
    }

    public mutating func readBool() throws(DecodeError) -> Bool {
        switch try readByte() {
        case 0: return false
        case 1: return true
        case let other: throw .unknownTag(type: "Bool", tag: UInt64(other))
        }
    }

    /// A length-prefixed byte string of at most `limit` bytes.
    public mutating func readBytes(limit: Int = Int.max) throws(DecodeError) -> [UInt8] {
        let length = try readVarint()
        guard length <= UInt64(remaining) else { throw .invalidLength(length) }
        guard length <= UInt64(limit) else { throw .oversized(length: Int(length), limit: limit) }
        let start = position
        position += Int(length)
        return Array(bytes[start..<position])
    }

    public mutating func readString(limit: Int = Int.max) throws(DecodeError) -> String {
        let raw = try readBytes(limit: limit)
        guard let string = String(validating: raw, as: UTF8.self) else { throw .invalidUTF8 }
        return string
    }

    public mutating func readOptional<T>(_ read: (inout ByteReader) throws(DecodeError) -> T) throws(DecodeError) -> T? {
        try readBool() ? try read(&self) : nil
    }

    /// A counted array; each element is assumed to take at least one byte, so a
    /// count larger than the remaining input is refused before allocating.
    public mutating func readArray<T>(_ read: (inout ByteReader) throws(DecodeError) -> T) throws(DecodeError) -> [T] {
        let count = try readVarint()
        guard count <= UInt64(remaining) else { throw .invalidLength(count) }
        var values: [T] = []
        values.reserveCapacity(Int(count))
        for _ in 0..<count { values.append(try read(&self)) }
        return values
    }

    public func expectEnd() throws(DecodeError) {
        guard remaining == 0 else { throw .trailingBytes(remaining) }
    }
}
