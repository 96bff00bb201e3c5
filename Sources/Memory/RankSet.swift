/// A set of ranks (0..<rankCount) as a bit set. Iterates in ascending order,
/// which keeps every protocol core deterministic (Swift's `Set` iterates in a
/// per-process random order, which would make a seeded schedule unreplayable).
public struct RankSet: Sendable, Hashable, Sequence, CustomStringConvertible {
    /// Trailing zero words are always trimmed, so equal sets compare equal.
    private var words: [UInt64] = []

    public init() {}

    public init(_ ranks: some Sequence<Int>) {
        for rank in ranks { insert(rank) }
    }

    public var isEmpty: Bool { words.isEmpty }
    public var count: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    public func contains(_ rank: Int) -> Bool {
        let (word, bit) = rank.quotientAndRemainder(dividingBy: 64)
        return word < words.count && words[word] & (1 << UInt64(bit)) != 0
    }

    public mutating func insert(_ rank: Int) {
        precondition(rank >= 0, "negative rank \(rank)")
        let (word, bit) = rank.quotientAndRemainder(dividingBy: 64)
        if word >= words.count { words.append(contentsOf: repeatElement(0, count: word + 1 - words.count)) }
        words[word] |= 1 << UInt64(bit)
    }

    public mutating func remove(_ rank: Int) {
        let (word, bit) = rank.quotientAndRemainder(dividingBy: 64)
        guard word < words.count else { return }
        words[word] &= ~(1 << UInt64(bit))
        while words.last == 0 { words.removeLast() }
    }

    public func removing(_ rank: Int) -> RankSet {
        var copy = self
        copy.remove(rank)
        return copy
    }

    public func makeIterator() -> some IteratorProtocol<Int> {
        var wordIndex = 0
        var current = words.first ?? 0
        let words = self.words
        return AnyIterator {
            while true {
                if current != 0 {
                    let bit = current.trailingZeroBitCount
                    current &= current - 1
                    return wordIndex * 64 + bit
                }
                wordIndex += 1
                guard wordIndex < words.count else { return nil }
                current = words[wordIndex]
            }
        }
    }

    public var description: String { "{" + map(String.init).joined(separator: ",") + "}" }
}
