/// The payload the release-consistent protocols (hlrc, lrc) attach to a
/// release: the releaser's vector timestamp and, per page, the last interval
/// of each writer known to have written it.
///
/// Little-endian: rank count u32, the timestamp (one u32 per rank), notice
/// count u32, per notice its page u32 and one interval u32 per rank (pages
/// ascending), then, for a protocol that has one, a flag u8.
enum WriteNotices {
    static func encode(timestamp: [Int], notices: [Int: [Int]], flag: Bool?) -> [UInt8] {
        let n = timestamp.count
        var out: [UInt8] = []
        out.reserveCapacity(9 + 4 * n + notices.count * (4 + 4 * n))
        func put(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { out.append(contentsOf: $0) } }
        put(n)
        for t in timestamp { put(t) }
        put(notices.count)
        for p in notices.keys.sorted() {
            put(p)
            for i in notices[p]! { put(i) }
        }
        if let flag { out.append(flag ? 1 : 0) }
        return out
    }

    /// The timestamp, notices and flag (false when `hasFlag` is false), or
    /// nil for a payload that does not fit the job or is malformed.
    static func decode(_ bytes: [UInt8], _ configuration: CoherenceConfiguration, hasFlag: Bool)
        -> (timestamp: [Int], notices: [(Int, [Int])], flag: Bool)? {
        var reader = Reader(bytes: bytes, offset: 0, end: bytes.count)
        func u32() -> Int? { (try? reader.u32()).map(Int.init) }
        let n = configuration.rankCount
        guard u32() == n else { return nil }
        var timestamp: [Int] = []
        for _ in 0..<n {
            guard let t = u32() else { return nil }
            timestamp.append(t)
        }
        guard let count = u32(), count <= configuration.pageCount,
              reader.remaining == count * (4 + 4 * n) + (hasFlag ? 1 : 0) else { return nil }
        var out: [(Int, [Int])] = []
        out.reserveCapacity(count)
        var previous = -1
        for _ in 0..<count {
            guard let p = u32(), p > previous, p < configuration.pageCount else { return nil }
            previous = p
            var v: [Int] = []
            for _ in 0..<n {
                guard let i = u32() else { return nil }
                v.append(i)
            }
            out.append((p, v))
        }
        guard hasFlag else { return (timestamp, out, false) }
        guard let flag = try? reader.flag() else { return nil }
        return (timestamp, out, flag)
    }
}
