#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Memory
import Transport
import Wire

/// Settings of a job's shared region, from the environment `plexus run` sets
/// (`--shared-memory`, `--protocol`, `--page-size`, `--look-ahead`).
public struct SharedMemoryConfiguration: Sendable, Equatable {
    /// The same virtual address in every process: pointers into the region
    /// are valid cluster-wide. 0x5000_0000_0000 lies between the PIE area
    /// (0x55…/0x56…) and the mmap area (0x7f…) on x86_64 Linux.
    public static let defaultBase: UInt = 0x5000_0000_0000
    public static let defaultSize = 1 << 30

    public var base: UInt = defaultBase
    public var size: Int = defaultSize
    public var pageSize: Int = 4096
    public var protocolName: String = "sc"
    /// Pages past a fault the protocol may serve ahead (`--look-ahead`).
    public var lookAhead: Int = SharedMemoryConfiguration.defaultLookAhead
    public static let defaultLookAhead = 7
    /// Twins and diffs a process keeps before a barrier collects them (lrc).
    public var collectionBound: Int = CoherenceConfiguration.defaultCollectionBound
    /// One batch must hold a fault's request and its look-ahead's.
    public static let maxLookAhead = MemoryMessage.maxBatchCount - 1

    public init() {}

    /// Reads PLEXUS_SHARED_MEMORY (bytes, or with K/M/G suffix; 0 = none),
    /// PLEXUS_PROTOCOL, PLEXUS_PAGE_SIZE, PLEXUS_LOOK_AHEAD, PLEXUS_COLLECTION_BOUND
    /// (a size) and PLEXUS_SHARED_BASE (hex).
    static func fromEnvironment(_ env: [String: String]) throws(PlexusError) -> SharedMemoryConfiguration? {
        var c = SharedMemoryConfiguration()
        if let s = env["PLEXUS_SHARED_MEMORY"] {
            guard let n = parseSize(s) else { throw .join("PLEXUS_SHARED_MEMORY='\(s)' is not a size like 512M or 2G") }
            if n == 0 { return nil }
            c.size = n
        }
        if let p = env["PLEXUS_PROTOCOL"], !p.isEmpty { c.protocolName = p }
        if let s = env["PLEXUS_PAGE_SIZE"] {
            guard let n = parseSize(s) else { throw .join("PLEXUS_PAGE_SIZE='\(s)' is not a size") }
            c.pageSize = n
        }
        if let s = env["PLEXUS_LOOK_AHEAD"] {
            guard let n = Int(s), (0...SharedMemoryConfiguration.maxLookAhead).contains(n) else {
                throw .join("PLEXUS_LOOK_AHEAD='\(s)' is not a page count in 0...\(SharedMemoryConfiguration.maxLookAhead)")
            }
            c.lookAhead = n
        }
        if let s = env["PLEXUS_COLLECTION_BOUND"] {
            guard let n = parseSize(s) else { throw .join("PLEXUS_COLLECTION_BOUND='\(s)' is not a size like 64M") }
            c.collectionBound = n
        }
        if let s = env["PLEXUS_SHARED_BASE"] {
            let hex = s.hasPrefix("0x") ? String(s.dropFirst(2)) : s
            guard let b = UInt(hex, radix: 16) else { throw .join("PLEXUS_SHARED_BASE='\(s)' is not a hex address") }
            c.base = b
        }
        // Round the size up to whole pages and say so (nothing silent).
        return c
    }
}

/// Parses "4096", "64K", "512M", "1G" (binary units).
public func parseSize(_ text: String) -> Int? {
    let t = text.trimmingCharacters(in: .whitespaces).uppercased()
    var digits = t
    var mult = 1
    for (suffix, m) in [("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("B", 1)]
    where t.hasSuffix(suffix) {
        digits = String(t.dropLast(suffix.count))
        mult = m
        break
    }
    guard let n = Int(digits), n >= 0, n <= Int.max / mult else { return nil }
    return n * mult
}

/// A typed array in shared memory: the same address in every process.
/// Reads and writes are plain loads and stores; coherence is the protocol's.
public struct SharedArray<Element: BitwiseCopyable>: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Element>
    public let count: Int
    public let name: String

    public subscript(i: Int) -> Element {
        get {
            precondition(i >= 0 && i < count, "\(name)[\(i)] is out of bounds 0..<\(count)")
            return base[i]
        }
        nonmutating set {
            precondition(i >= 0 && i < count, "\(name)[\(i)] is out of bounds 0..<\(count)")
            base[i] = newValue
        }
    }

    public var indices: Range<Int> { 0..<count }
    public var address: UInt { UInt(bitPattern: base) }
    public var buffer: UnsafeMutableBufferPointer<Element> { UnsafeMutableBufferPointer(start: base, count: count) }

    public init(base: UnsafeMutablePointer<Element>, count: Int, name: String) {
        self.base = base
        self.count = count
        self.name = name
    }
}

/// A named allocation, for statistics ("counters[1]" instead of an address).
public struct Allocation: Sendable, Equatable {
    public var name: String
    public var offset: Int
    public var bytes: Int
    public var elementSize: Int
}

/// The shared region's layout and allocator.
///
/// Layout (reported in statistics): the lower half is the collective heap,
/// allocated identically by every rank in program order; the upper half is
/// split into one arena per rank for per-process allocations, whose pointers
/// can be published to other ranks.
final class Heap: @unchecked Sendable {
    let size: Int
    let ranks: Int
    let rank: Int
    let pageSize: Int
    private(set) var collectiveNext = 0
    private(set) var localNext: Int
    var collectiveLimit: Int { size / 2 / pageSize * pageSize }
    var arenaSize: Int { (size - collectiveLimit) / ranks / pageSize * pageSize }
    var arenaStart: Int { collectiveLimit + rank * arenaSize }
    private(set) var allocations: [Allocation] = []
    private let lock = NSLock()

    init(size: Int, ranks: Int, rank: Int, pageSize: Int) {
        self.size = size
        self.ranks = ranks
        self.rank = rank
        self.pageSize = pageSize
        localNext = 0
        localNext = arenaStart
    }

    func allocateCollective(bytes: Int, alignment: Int, name: String, elementSize: Int) throws(MemoryError) -> Int {
        lock.lock()
        defer { lock.unlock() }
        let start = (collectiveNext + alignment - 1) / alignment * alignment
        // `bytes <= limit - start`, not `start + bytes <= limit`: sizes near
        // Int.max must give the error, not an overflow trap.
        guard bytes >= 0, start <= collectiveLimit, bytes <= collectiveLimit - start else {
            throw .outOfSharedMemory(askedBytes: bytes, leftBytes: max(0, collectiveLimit - collectiveNext))
        }
        collectiveNext = start + bytes
        allocations.append(Allocation(name: name, offset: start, bytes: bytes, elementSize: elementSize))
        return start
    }

    func allocateLocal(bytes: Int, alignment: Int, name: String, elementSize: Int) throws(MemoryError) -> Int {
        lock.lock()
        defer { lock.unlock() }
        let start = (localNext + alignment - 1) / alignment * alignment
        let end = arenaStart + arenaSize
        guard bytes >= 0, start <= end, bytes <= end - start else {
            throw .outOfSharedMemory(askedBytes: bytes, leftBytes: max(0, end - localNext))
        }
        localNext = start + bytes
        allocations.append(Allocation(name: name, offset: start, bytes: bytes, elementSize: elementSize))
        return start
    }

    /// The byte ranges of the region a process may name in a prefetch hint:
    /// the collective heap allocated so far, and the per-process arenas
    /// (placed before the job starts). Pages past the collective heap's end
    /// must stay untouched until an allocation places them.
    var hintable: [Range<Int>] {
        lock.lock()
        defer { lock.unlock() }
        return [0..<collectiveNext, collectiveLimit..<(collectiveLimit + ranks * arenaSize)]
    }

    /// Tells `engine`'s fault path which pages hold memory a process may
    /// touch, and what is allocated (for its message when it refuses one):
    /// the pages of the collective heap allocated so far, and the
    /// per-process arenas. The arenas are served whole, since another
    /// rank's per-process allocations are known only to that rank; so is
    /// the rest of a page an allocation ends in (page granularity). Called
    /// at join and after each allocation.
    func restrictFaults(of engine: MemoryEngine) {
        lock.lock()
        let collectivePages = 0..<((collectiveNext + pageSize - 1) / pageSize)
        let arenaPages = (collectiveLimit / pageSize)..<((collectiveLimit + ranks * arenaSize) / pageSize)
        // The latest allocations, the likeliest to be the ones overrun.
        let shown = allocations.suffix(16)
        let base = engine.region.applicationBase
        func hex(_ offset: Int) -> String { "0x" + String(base + UInt(offset), radix: 16) }
        var parts = shown.map { "'\($0.name)' \(hex($0.offset))-\(hex($0.offset + $0.bytes)) (\($0.bytes) bytes)" }
        if allocations.count > shown.count { parts.insert("\(allocations.count - shown.count) earlier allocations", at: 0) }
        let allocatedPages = collectivePages.count + (localNext - arenaStart + pageSize - 1) / pageSize
        lock.unlock()
        let collective = parts.isEmpty ? "no collective or per-process allocation in this process" : parts.joined(separator: ", ")
        let arenas = "; the per-process arenas of the \(ranks) ranks \(hex(collectiveLimit))-\(hex(collectiveLimit + ranks * arenaSize))"
        engine.serveFaultsOnly(on: [collectivePages, arenaPages], allocations: collective + arenas)
        // Say before it happens that the mappings may run out.
        engine.checkMappingLimit(allocatedPages: allocatedPages)
    }

    /// The element at byte `offset` of the region, "name[index]", or nil
    /// outside every allocation this process knows of (another rank's
    /// per-process allocations are known only to that rank).
    func element(atOffset offset: Int) -> String? {
        lock.lock()
        defer { lock.unlock() }
        guard let a = allocations.last(where: { offset >= $0.offset && offset - $0.offset < $0.bytes }) else { return nil }
        return "\(a.name)[\((offset - a.offset) / max(1, a.elementSize))]"
    }

    /// A human name for a page: the allocations on it and the element range.
    func describe(page: Int, pageSize: Int) -> String {
        lock.lock()
        defer { lock.unlock() }
        let lo = page * pageSize, hi = lo + pageSize
        let parts = allocations.filter { $0.offset < hi && $0.offset + $0.bytes > lo }.map { a -> String in
            let first = (max(lo, a.offset) - a.offset) / max(1, a.elementSize)
            let last = (min(hi, a.offset + a.bytes) - a.offset - 1) / max(1, a.elementSize)
            return first == last ? "\(a.name)[\(first)]" : "\(a.name)[\(first)...\(last)]"
        }
        return parts.isEmpty ? "unallocated" : parts.joined(separator: ", ")
    }
}
