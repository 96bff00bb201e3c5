import Memory

/// What a prefetch hint says the program will do with the memory soon.
public enum PrefetchIntent: Sendable, Equatable {
    case read
    case write
}

/// Bytes of shared memory a prefetch hint names, and what the program will
/// do with them.
public struct PrefetchRange: Sendable, Equatable {
    public var address: UInt
    public var bytes: Int
    public var intent: PrefetchIntent

    public init(_ address: UnsafeRawPointer, bytes: Int, for intent: PrefetchIntent = .read) {
        self.init(address: UInt(bitPattern: address), bytes: bytes, for: intent)
    }

    /// A range by its numeric address (0 stands for a null pointer, which
    /// `prefetch` refuses like any address outside shared memory).
    public init(address: UInt, bytes: Int, for intent: PrefetchIntent = .read) {
        self.address = address
        self.bytes = bytes
        self.intent = intent
    }

    /// Elements `elements` of `array`.
    public init<T>(_ array: SharedArray<T>, _ elements: Range<Int>, for intent: PrefetchIntent = .read) {
        precondition(elements.lowerBound >= 0 && elements.upperBound <= array.count,
                     "\(array.name)[\(elements.lowerBound)..<\(elements.upperBound)] is out of bounds 0..<\(array.count)")
        self.init(UnsafeRawPointer(array.base + elements.lowerBound), bytes: elements.count * MemoryLayout<T>.stride, for: intent)
    }
}

extension Plexus {
    /// Prefetch hints: this thread will soon read (or write) these ranges
    /// of shared memory. The coherence protocol starts fetching the pages
    /// this process lacks, or taking write access, now, and the call
    /// returns at once, so the transfers overlap the work the program does
    /// before it touches the memory. A hint never changes what the program
    /// can observe: a page touched before its transfer ends waits for it
    /// like any fault. With `sc`, a hint's transactions end before this
    /// process passes its next barrier (its arrival waits for them).
    ///
    /// Use it where a program knows what it needs next and has other work
    /// first: a stencil names its neighbours' boundary rows right after a
    /// barrier, then sweeps its interior. Name everything of one moment in
    /// one call: its messages to each peer then leave together. Hints are
    /// bounded (with `sc`, 64 pages in flight per process; the rest of a
    /// longer range is left to its faults), and protocols may ignore them.
    /// Throws, before any hint is given, if a range is not inside shared
    /// memory allocated so far (the collective allocations this process has
    /// made, and the per-process arenas), if the job has no shared memory,
    /// or after `finalize()`.
    public func prefetch(_ ranges: [PrefetchRange]) throws(PlexusError) {
        guard let m = memory, let h = heap else { throw .noSharedMemory }
        if isFinalized.isSet { throw .finalized }
        var hints: [PrefetchHint] = []
        for r in ranges {
            let pages = try sharedPages(r, m, h)
            if !pages.isEmpty { hints.append(PrefetchHint(pages: pages, forWriting: r.intent == .write)) }
        }
        m.prefetch(hints)
    }

    /// The pages of `r` (none if it is empty); throws `.notShared` unless it
    /// lies inside shared memory allocated so far (the collective heap this
    /// process has allocated, and the per-process arenas).
    func sharedPages(_ r: PrefetchRange, _ m: MemoryEngine, _ h: Heap) throws(PlexusError) -> Range<Int> {
        let base = m.region.applicationBase, unit = m.region.pageSize
        let allowed = h.hintable.filter { !$0.isEmpty }
        // Offsets into the region, without overflow: `address` may be anything.
        let inside = r.bytes >= 0 && r.address >= base && r.address - base <= UInt(m.region.size) && allowed.contains { a in
            let offset = Int(r.address - base)
            return offset >= a.lowerBound && offset <= a.upperBound && r.bytes <= a.upperBound - offset
        }
        guard inside else {
            throw .notShared(address: r.address, bytes: r.bytes,
                             allocated: allowed.map { (base + UInt($0.lowerBound))...(base + UInt($0.upperBound) - 1) })
        }
        let offset = Int(r.address - base)
        guard r.bytes > 0 else { return offset / unit..<offset / unit }
        return (offset / unit)..<((offset + r.bytes - 1) / unit + 1)
    }

    /// One prefetch hint (see `prefetch(_:)`).
    public func prefetch(_ address: UnsafeRawPointer, bytes: Int, for intent: PrefetchIntent = .read) throws(PlexusError) {
        try prefetch([PrefetchRange(address, bytes: bytes, for: intent)])
    }

    /// A hint that this thread will soon read (or write) `elements` of
    /// `array` (see `prefetch(_:)`); throws if they are not all in `array`.
    public func prefetch<T>(_ array: SharedArray<T>, _ elements: Range<Int>, for intent: PrefetchIntent = .read) throws(PlexusError) {
        try prefetch([PrefetchRange.checked(array, elements, for: intent)])
    }
}

extension PrefetchRange {
    /// `elements` of `array`, or `.notShared` naming the array's bytes when
    /// they are out of its bounds (the throwing form of `init(_:_:for:)`).
    static func checked<T>(_ array: SharedArray<T>, _ elements: Range<Int>, for intent: PrefetchIntent) throws(PlexusError) -> PrefetchRange {
        guard elements.lowerBound >= 0 && elements.upperBound <= array.count else {
            throw .notShared(address: array.address &+ UInt(bitPattern: elements.lowerBound &* MemoryLayout<T>.stride),
                             bytes: elements.count &* MemoryLayout<T>.stride,
                             allocated: array.count == 0 ? [] : [array.address...(array.address + UInt(array.count * MemoryLayout<T>.stride) - 1)])
        }
        return PrefetchRange(array, elements, for: intent)
    }
}
