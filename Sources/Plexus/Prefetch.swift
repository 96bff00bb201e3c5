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
        self.address = UInt(bitPattern: address)
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
    /// like any fault.
    ///
    /// Use it where a program knows what it needs next and has other work
    /// first: a stencil names its neighbours' boundary rows right after a
    /// barrier, then sweeps its interior. Name everything of one moment in
    /// one call: its messages to each peer then leave together. Hints are
    /// bounded (with `sc`, 64 pages in flight per process; the rest of a
    /// longer range is left to its faults), and protocols may ignore them.
    /// Throws, before any hint is given, if a range is not inside the shared
    /// region, or the job has none.
    public func prefetch(_ ranges: [PrefetchRange]) throws(PlexusError) {
        guard let m = memory else { throw .noSharedMemory }
        let region = m.region
        let base = region.applicationBase, size = UInt(region.size), unit = region.pageSize
        var hints: [PrefetchHint] = []
        for r in ranges {
            let start = r.address
            guard r.bytes >= 0, start >= base, start - base <= size, UInt(r.bytes) <= size - (start - base) else {
                throw .memory(.notInRegion(address: start, bytes: r.bytes, regionBase: base, regionBytes: region.size))
            }
            guard r.bytes > 0 else { continue }
            let offset = Int(start - base)
            hints.append(PrefetchHint(pages: (offset / unit)..<((offset + r.bytes - 1) / unit + 1), forWriting: r.intent == .write))
        }
        m.prefetch(hints)
    }

    /// One prefetch hint (see `prefetch(_:)`).
    public func prefetch(_ address: UnsafeRawPointer, bytes: Int, for intent: PrefetchIntent = .read) throws(PlexusError) {
        try prefetch([PrefetchRange(address, bytes: bytes, for: intent)])
    }

    /// A hint that this thread will soon read (or write) `elements` of `array`.
    public func prefetch<T>(_ array: SharedArray<T>, _ elements: Range<Int>, for intent: PrefetchIntent = .read) throws(PlexusError) {
        try prefetch([PrefetchRange(array, elements, for: intent)])
    }
}
