import Foundation
import Memory
import Wire

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
                                             alignment: Int? = nil) throws(PlexusError) -> SharedArray<T> {
        let bytes = count * MemoryLayout<T>.stride
        let p = try allocateBytes(bytes, alignment: alignment ?? max(MemoryLayout<T>.alignment, 8), name: name,
                                  elementSize: MemoryLayout<T>.stride)
        return SharedArray(base: p.bindMemory(to: T.self, capacity: count), count: count, name: name)
    }

    /// Collectively allocates raw bytes (see `allocate(_:count:name:)`).
    public func allocateBytes(_ bytes: Int, alignment: Int = 64, name: String, elementSize: Int = 1) throws(PlexusError) -> UnsafeMutableRawPointer {
        guard bytes >= 0, alignment > 0, alignment & (alignment - 1) == 0 else {
            throw .collectiveMismatch("allocation '\(name)': \(bytes) bytes with alignment \(alignment) is invalid (alignment must be a power of two)")
        }
        let (m, h) = try requireMemory()
        // Every rank must ask for the same thing: compare before allocating.
        var w = ByteWriter()
        w.u64(UInt64(bytes)); w.u64(UInt64(alignment)); w.string(name)
        let all = try allGather(w.bytes)
        if let (r, _) = all.enumerated().first(where: { $0.element != w.bytes }) {
            var rd = ByteReader(all[r])
            let theirs = (try? rd.u64()).map { "\($0) bytes" } ?? "?"
            let theirName = (try? rd.u64()).flatMap { _ in try? rd.string() } ?? "?"
            throw .collectiveMismatch("rank \(rank) allocates '\(name)' (\(bytes) bytes) where rank \(r) allocates '\(theirName)' (\(theirs))")
        }
        let offset: Int
        do { offset = try h.allocateCollective(bytes: bytes, alignment: alignment, name: name, elementSize: elementSize) } catch { throw .memory(error) }
        return UnsafeMutableRawPointer(bitPattern: m.region.applicationBase + UInt(offset))!
    }

    /// Allocates in this process's part of the shared heap, without talking
    /// to anyone. The pointer is valid in every process: publish it (in a
    /// collective array, or a message) and others can use it.
    public func allocateLocal<T: BitwiseCopyable>(_ type: T.Type, count: Int, name: String) throws(PlexusError) -> SharedArray<T> {
        let (m, h) = try requireMemory()
        let offset: Int
        do {
            offset = try h.allocateLocal(bytes: count * MemoryLayout<T>.stride, alignment: max(MemoryLayout<T>.alignment, 8),
                                         name: name, elementSize: MemoryLayout<T>.stride)
        } catch { throw .memory(error) }
        let p = UnsafeMutableRawPointer(bitPattern: m.region.applicationBase + UInt(offset))!
        return SharedArray(base: p.bindMemory(to: T.self, capacity: count), count: count, name: name)
    }

    /// The page size (coherence unit) of the shared region, or nil without one.
    public var pageSize: Int? { memory?.region.pageSize }
}
