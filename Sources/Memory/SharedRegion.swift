import CFault
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The job's shared region in this process: one memfd mapped twice.
///
/// - The application view starts at `applicationBase`, the same address in
///   every process of the job, so raw pointers into it are valid everywhere.
///   Its pages start inaccessible; the coherence protocol changes them.
/// - The system view (`systemView`) is always readable and writable. The
///   engine installs and copies page contents through it, so it never races
///   the protections of the application view.
///
/// Thread safety: all members may be used from any thread. Unmapped on deinit.
public final class SharedRegion: Sendable {
    /// The fixed virtual address of page 0 in the application view.
    public let applicationBase: UInt
    /// Bytes in the region, a multiple of `pageSize`.
    public let size: Int
    /// The coherence unit: a power of two, a multiple of the system page size.
    public let pageSize: Int
    private let systemBase: UInt
    private let memfd: Int32
    /// Offset of the first unallocated byte, for `allocate`.
    private let allocated = Mutex(0)

    /// Maps `size` bytes at exactly `base`. Throws `.fixedRangeTaken` naming
    /// the clashing mapping when the range is in use, `.invalidLayout` when
    /// the numbers do not fit together (nothing is ever rounded silently).
    public init(base: UInt, size: Int, pageSize: Int) throws(MemoryError) {
        let systemPage = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard pageSize > 0, pageSize & (pageSize - 1) == 0, pageSize % systemPage == 0 else {
            throw .invalidLayout(reason: "page size \(pageSize) must be a power of two and a multiple of the system page size \(systemPage)")
        }
        guard size > 0, size % pageSize == 0 else {
            throw .invalidLayout(reason: "size \(size) must be a positive multiple of the page size \(pageSize)")
        }
        guard base % UInt(pageSize) == 0, base > 0 else {
            throw .invalidLayout(reason: "base 0x\(String(base, radix: 16)) must be a non-zero multiple of the page size \(pageSize)")
        }
        var mapping = cfault_mapping()
        let code = cfault_map(base, UInt64(size), &mapping)
        if code != 0 {
            if code == EEXIST && mapping.failed_step == Int32(CFAULT_STEP_MAP_APPLICATION.rawValue) {
                throw .fixedRangeTaken(base: base, size: size, clash: SharedRegion.clashingMapping(base: base, size: size))
            }
            throw .mappingFailed(step: SharedRegion.stepName(mapping.failed_step), errno: code, askedBytes: size)
        }
        applicationBase = base
        self.size = size
        self.pageSize = pageSize
        systemBase = UInt(bitPattern: mapping.system_view)
        memfd = mapping.memfd
    }

    deinit {
        var mapping = cfault_mapping(
            application_view: UnsafeMutableRawPointer(bitPattern: applicationBase),
            system_view: UnsafeMutableRawPointer(bitPattern: systemBase),
            size: UInt64(size), memfd: memfd, failed_step: 0)
        // Nothing useful can be done about a failing munmap at teardown.
        _ = cfault_unmap(&mapping)
    }

    /// Number of coherence units in the region.
    public var pageCount: Int { size / pageSize }

    /// The always-writable view of the region (page 0).
    public var systemView: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: systemBase)! }

    /// The application view of the region (page 0).
    public var applicationView: UnsafeMutableRawPointer { UnsafeMutableRawPointer(bitPattern: applicationBase)! }

    /// Address of `page` in the application view.
    public func applicationAddress(ofPage page: Int) -> UInt {
        precondition(page >= 0 && page < pageCount, "page \(page) outside the region of \(pageCount) pages")
        return applicationBase + UInt(page * pageSize)
    }

    /// Bytes of `page` in the system view.
    public func systemPage(_ page: Int) -> UnsafeMutableRawBufferPointer {
        precondition(page >= 0 && page < pageCount, "page \(page) outside the region of \(pageCount) pages")
        return UnsafeMutableRawBufferPointer(start: systemView + page * pageSize, count: pageSize)
    }

    /// The page holding `address`, or nil if the address is outside the region.
    public func page(containing address: UInt) -> Int? {
        guard address >= applicationBase, address < applicationBase + UInt(size) else { return nil }
        return Int(address - applicationBase) / pageSize
    }

    /// Touches every page of `bytes` bytes at `address` (application view)
    /// for reading or writing, so that each is accessible when this returns
    /// (see `cfault_touch`). The caller checks the range is in the region.
    public func touch(_ address: UInt, bytes: Int, forWriting: Bool) {
        precondition(bytes >= 0 && address >= applicationBase && address - applicationBase <= UInt(size)
                     && bytes <= size - Int(address - applicationBase), "touch of \(bytes) bytes at 0x\(String(address, radix: 16)) outside the region")
        cfault_touch(UnsafeRawPointer(bitPattern: address), UInt64(bytes), UInt64(pageSize), forWriting)
    }

    /// Sets the protection of a run of pages in the application view with a
    /// single mprotect (one TLB shootdown for the whole run).
    public func setProtection(pages: Range<Int>, _ access: PageAccess) throws(MemoryError) {
        precondition(pages.lowerBound >= 0 && pages.upperBound <= pageCount, "pages \(pages) outside the region of \(pageCount) pages")
        guard !pages.isEmpty else { return }
        let code = cfault_protect(UnsafeMutableRawPointer(bitPattern: applicationAddress(ofPage: pages.lowerBound)),
                                  UInt64(pages.count * pageSize), access.cProtection)
        // EINVAL/EFAULT here would mean a Plexus bug (bad address or value).
        precondition(code != EINVAL && code != EFAULT, "mprotect rejected pages \(pages): \(errnoText(code))")
        if code == ENOMEM, let limit = MappingLimit.limit {
            throw .outOfMappings(pages: pages, access: access, limit: limit, inUse: MappingLimit.inUse, regionPages: pageCount)
        }
        if code != 0 { throw .protectionFailed(pages: pages, access: access, errno: code) }
    }

    /// Hands out `bytes` from the region, bump-allocated from the start, and
    /// returns the application address. This is the raw carve-out used by the
    /// allocators above; it never frees.
    public func allocate(bytes: Int, alignment: Int = 16) throws(MemoryError) -> UInt {
        precondition(bytes >= 0 && alignment > 0 && alignment & (alignment - 1) == 0, "bad allocation request")
        let size = self.size
        let result: Result<Int, MemoryError> = allocated.withLock { next in
            let start = (next + alignment - 1) & ~(alignment - 1)
            guard start <= size, bytes <= size - start else {
                return .failure(.outOfSharedMemory(askedBytes: bytes, leftBytes: max(0, size - next)))
            }
            next = start + bytes
            return .success(start)
        }
        return applicationBase + UInt(try result.get())
    }

    /// The line of /proc/self/maps overlapping [base, base+size), if any.
    public static func clashingMapping(base: UInt, size: Int) -> String? {
        guard let maps = readFile("/proc/self/maps") else { return nil }
        let end = base + UInt(size)
        for line in maps.split(separator: "\n") {
            let range = line.prefix(while: { $0 != " " }).split(separator: "-")
            guard range.count == 2, let lo = UInt(range[0], radix: 16), let hi = UInt(range[1], radix: 16) else { continue }
            if lo < end && base < hi { return String(line) }
        }
        return nil
    }

    private static func stepName(_ step: Int32) -> String {
        switch UInt32(step) {
        case CFAULT_STEP_MEMFD.rawValue: "memfd_create"
        case CFAULT_STEP_FTRUNCATE.rawValue: "ftruncate of the memfd"
        case CFAULT_STEP_MAP_APPLICATION.rawValue: "mmap of the application view"
        case CFAULT_STEP_MAP_SYSTEM.rawValue: "mmap of the system view"
        case CFAULT_STEP_MADVISE.rawValue: "madvise(MADV_DONTFORK) of the views"
        default: "mapping"
        }
    }
}

/// vm.max_map_count: how many mappings (VMAs) a process may have. Each run of
/// region pages with one protection is a mapping, so a region whose pages
/// alternate between accesses needs up to one per page; mprotect fails with
/// ENOMEM past the limit.
public enum MappingLimit {
    /// The limit, from /proc/sys/vm/max_map_count (nil if unreadable).
    public static var limit: Int? {
        readFile("/proc/sys/vm/max_map_count").flatMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }

    /// The mappings this process has now (lines of /proc/self/maps).
    public static var inUse: Int? {
        readFile("/proc/self/maps").map { $0.utf8.reduce(0) { $1 == 10 ? $0 + 1 : $0 } }
    }

    /// A limit that leaves room for one mapping per page of `regionPages`
    /// besides what the process has now: the present limit on top, rounded
    /// up to a multiple of 65536.
    public static func suggested(regionPages: Int, limit: Int) -> Int {
        (regionPages + limit + 65535) / 65536 * 65536
    }

    /// A warning when `pages` pages in use could need more mappings than
    /// the limit leaves (with what the process has now), else nil.
    public static func warning(pages: Int, pageSize: Int, regionPages: Int) -> String? {
        guard let limit, let used = inUse, pages + used > limit else { return nil }
        return "warning: shared allocations span \(pages) pages of \(pageSize) bytes; if neighbouring pages get different access "
            + "(strided or cyclic writes), each is a mapping, and this process may have \(limit) (vm.max_map_count; \(used) in use). "
            + "Past that, setting a page's access fails and the process stops. Raise it before the job: "
            + "sudo sysctl -w vm.max_map_count=\(suggested(regionPages: regionPages, limit: limit)), or use a larger --page-size"
    }
}

/// Reads a whole (small, procfs) file; nil if it cannot be opened.
func readFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}
