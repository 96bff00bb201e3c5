import Foundation
import Memory
import Wire

/// Which rank a collective allocation's pages start on (their initial owner
/// or home). Owner-computes programs that split an array into contiguous
/// parts per rank want `.block`, the default: each rank then writes its own
/// part without a single message.
public enum Distribution: Sendable, Equatable {
    /// Contiguous blocks: rank r gets pages [r*P/N, (r+1)*P/N) of the P pages.
    case block
    /// Page i on rank i % N.
    case cyclic
    /// Every page on one rank.
    case on(rank: Int)
}

extension Plexus {
    private func requireMemory() throws(PlexusError) -> (MemoryEngine, Heap) {
        guard let m = memory, let h = heap else { throw .noSharedMemory }
        return (m, h)
    }

    /// Collectively allocates `count` elements in shared memory: every rank
    /// calls this in the same order with the same arguments and gets the
    /// same pointer. The memory starts zeroed. `alignment` defaults to the
    /// element's; pass the page size to give an array pages of its own.
    public func allocate<T: BitwiseCopyable>(_ type: T.Type, count: Int, name: String,
                                             alignment: Int? = nil, distribution: Distribution = .block) throws(PlexusError) -> SharedArray<T> {
        let bytes = try byteCount(T.self, count, name)
        let p = try allocateBytes(bytes, alignment: alignment ?? max(MemoryLayout<T>.alignment, 8), name: name,
                                  elementSize: MemoryLayout<T>.stride, distribution: distribution)
        return SharedArray(base: p.bindMemory(to: T.self, capacity: count), count: count, name: name)
    }

    /// Collectively allocates raw bytes (see `allocate(_:count:name:)`).
    public func allocateBytes(_ bytes: Int, alignment: Int = 64, name: String, elementSize: Int = 1,
                              distribution: Distribution = .block) throws(PlexusError) -> UnsafeMutableRawPointer {
        if case .on(let r) = distribution, r < 0 || r >= size {
            throw .badRank(r, size: size)
        }
        guard bytes >= 0, alignment > 0, alignment & (alignment - 1) == 0 else {
            throw .collectiveMismatch("allocation '\(name)': \(bytes) bytes with alignment \(alignment) is invalid (alignment must be a power of two)")
        }
        let (m, h) = try requireMemory()
        // Every rank must ask for the same thing: compare before allocating.
        // Size, alignment and name decide the address; element size and
        // distribution decide where the pages start (a rank that placed them
        // differently would own a page another rank also owns).
        let mine = CollectiveRequest(bytes: bytes, alignment: alignment, name: name, elementSize: elementSize, distribution: distribution)
        let all = try allGather(mine.encoded)
        if let (r, _) = all.enumerated().first(where: { $0.element != mine.encoded }) {
            let theirs = CollectiveRequest(decoding: all[r]).map(\.description) ?? "something else (an undecodable request)"
            throw .collectiveMismatch("rank \(rank) allocates \(mine) where rank \(r) allocates \(theirs)")
        }
        let offset: Int
        do { offset = try h.allocateCollective(bytes: bytes, alignment: alignment, name: name, elementSize: elementSize) } catch { throw .memory(error) }
        // Place the pages that lie wholly inside the new allocation (nobody
        // can have touched them), then wait until every rank has, so no
        // request reaches a manager that still has the old placement.
        let ps = m.region.pageSize
        let first = (offset + ps - 1) / ps, end = (offset + bytes) / ps
        if end > first {
            let count = end - first
            switch distribution {
            case .block:
                for r in 0..<size { m.place(pages: (first + r * count / size)..<(first + (r + 1) * count / size), home: r) }
            case .cyclic:
                for p in first..<end { m.place(pages: p..<(p + 1), home: (p - first) % size) }
            case .on(let r):
                m.place(pages: first..<end, home: r)
            }
            try barrier()
            // Now every rank has placed them: look-ahead may fetch them.
            m.allocated(pages: first..<end)
        }
        h.restrictFaults(of: m)
        return UnsafeMutableRawPointer(bitPattern: m.region.applicationBase + UInt(offset))!
    }

    /// Allocates in this process's part of the shared heap, without talking
    /// to anyone. The pointer is valid in every process: publish it (in a
    /// collective array, or a message) and others can use it.
    public func allocateLocal<T: BitwiseCopyable>(_ type: T.Type, count: Int, name: String) throws(PlexusError) -> SharedArray<T> {
        let (m, h) = try requireMemory()
        let bytes = try byteCount(T.self, count, name)
        let offset: Int
        do {
            offset = try h.allocateLocal(bytes: bytes, alignment: max(MemoryLayout<T>.alignment, 8),
                                         name: name, elementSize: MemoryLayout<T>.stride)
        } catch { throw .memory(error) }
        h.restrictFaults(of: m)
        let p = UnsafeMutableRawPointer(bitPattern: m.region.applicationBase + UInt(offset))!
        return SharedArray(base: p.bindMemory(to: T.self, capacity: count), count: count, name: name)
    }

    /// `count` elements of `T` in bytes, or the out-of-memory error if that
    /// does not even fit in an Int.
    private func byteCount<T>(_: T.Type, _ count: Int, _ name: String) throws(PlexusError) -> Int {
        let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<T>.stride)
        guard count >= 0, !overflow else {
            throw .memory(.outOfSharedMemory(askedBytes: count < 0 ? count : Int.max, leftBytes: heap.map { $0.size } ?? 0))
        }
        return bytes
    }

    /// The page size (coherence unit) of the shared region, or nil without one.
    public var pageSize: Int? { memory?.region.pageSize }
}

/// What one rank asks of a collective allocation, as the ranks compare it.
private struct CollectiveRequest: CustomStringConvertible {
    var bytes: Int
    var alignment: Int
    var name: String
    var elementSize: Int
    var distribution: Distribution

    init(bytes: Int, alignment: Int, name: String, elementSize: Int, distribution: Distribution) {
        self.bytes = bytes
        self.alignment = alignment
        self.name = name
        self.elementSize = elementSize
        self.distribution = distribution
    }

    init?(decoding bytes: [UInt8]) {
        var r = ByteReader(bytes)
        guard let size = try? r.u64(), let alignment = try? r.u64(), let name = try? r.string(),
              let elementSize = try? r.u64(), let kind = try? r.u8(), let home = try? r.u64() else { return nil }
        let distribution: Distribution
        switch kind {
        case 0: distribution = .block
        case 1: distribution = .cyclic
        case 2: distribution = .on(rank: Int(truncatingIfNeeded: home))
        default: return nil
        }
        self.init(bytes: Int(truncatingIfNeeded: size), alignment: Int(truncatingIfNeeded: alignment), name: name,
                  elementSize: Int(truncatingIfNeeded: elementSize), distribution: distribution)
    }

    var encoded: [UInt8] {
        var w = ByteWriter()
        w.u64(UInt64(bitPattern: Int64(bytes))); w.u64(UInt64(bitPattern: Int64(alignment))); w.string(name)
        w.u64(UInt64(bitPattern: Int64(elementSize)))
        switch distribution {
        case .block: w.u8(0); w.u64(0)
        case .cyclic: w.u8(1); w.u64(0)
        case .on(let r): w.u8(2); w.u64(UInt64(bitPattern: Int64(r)))
        }
        return w.bytes
    }

    /// "'grid' (4096 bytes) of 8-byte elements, aligned to 8, distribution .block".
    var description: String {
        let d: String
        switch distribution {
        case .block: d = ".block"
        case .cyclic: d = ".cyclic"
        case .on(let r): d = ".on(rank: \(r))"
        }
        return "'\(name)' (\(bytes) bytes) of \(elementSize)-byte elements, aligned to \(alignment), distribution \(d)"
    }
}
