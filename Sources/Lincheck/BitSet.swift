/// A fixed-capacity set of small integers: which operations of a partition are linearised.
/// Part of the memoisation key, hence `Hashable`; value semantics via the array's copy-on-write,
/// so storing a key in the cache and then mutating the working set copies only when needed.
struct BitSet: Hashable, Sendable {
    private(set) var words: [UInt64]

    init(capacity: Int) {
        words = [UInt64](repeating: 0, count: (capacity + 63) / 64)
    }

    func contains(_ i: Int) -> Bool {
        words[i >> 6] & (1 << UInt64(i & 63)) != 0
    }

    mutating func insert(_ i: Int) {
        words[i >> 6] |= 1 << UInt64(i & 63)
    }

    mutating func remove(_ i: Int) {
        words[i >> 6] &= ~(1 << UInt64(i & 63))
    }

    /// Whether every element of `self` is in `other` (same capacity).
    func isSubset(of other: BitSet) -> Bool {
        for i in words.indices where words[i] & ~other.words[i] != 0 { return false }
        return true
    }
}
