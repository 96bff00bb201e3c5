#if canImport(Glibc)
import Glibc
#endif

/// Errors of the memory layer. Each message says what happened, with the
/// numbers involved, and what to change.
public enum MemoryError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The fixed virtual range of the region overlaps an existing mapping of
    /// this process (heap, a library, another runtime's segment). `clash` is
    /// the overlapping line of /proc/self/maps, if it could be read. Choose
    /// another base address (every process of the job must use the same one).
    case fixedRangeTaken(base: UInt, size: Int, clash: String?)
    /// A system call creating or mapping the region failed (`step` names it).
    /// ENOMEM/ENOSPC usually mean the size is more than the machine allows.
    case mappingFailed(step: String, errno: Int32, askedBytes: Int)
    /// An allocation in the region does not fit in what is left.
    case outOfSharedMemory(askedBytes: Int, leftBytes: Int)
    /// base/size/page size do not fit together; `reason` says which.
    case invalidLayout(reason: String)
    /// Changing page protections failed, usually ENOMEM because the process
    /// has more mappings than vm.max_map_count allows.
    case protectionFailed(pages: Range<Int>, access: PageAccess, errno: Int32)
    /// Changing page protections failed with ENOMEM at vm.max_map_count:
    /// each run of pages with one access is a mapping, and strided or cyclic
    /// access can make one per page. `limit` is vm.max_map_count, `inUse`
    /// the mappings of the process (nil if /proc could not be read),
    /// `regionPages` the pages of the region. Raise the limit (the message
    /// says to what) or use a larger page size.
    case outOfMappings(pages: Range<Int>, access: PageAccess, limit: Int, inUse: Int?, regionPages: Int)
    /// Only one region per process can take faults; uninstall the other first.
    case faultHandlerBusy
    /// Installing the SIGSEGV handler or its doorbell failed.
    case faultHandlerFailed(errno: Int32)
    /// Giving a thread an alternate signal stack failed (mmap or
    /// sigaltstack); usually ENOMEM. The thread still works, but a stack
    /// overflow on it kills the process without a report.
    case alternateStackFailed(errno: Int32)
    /// `--protocol` named a protocol that is not registered.
    case unknownProtocol(name: String, known: [String])
    /// A peer is gone (exited, crashed or cut off without finalize) while
    /// this process waited for the coherence protocol.
    case peerGone(rank: Int, reason: String)

    public var description: String {
        switch self {
        case let .fixedRangeTaken(base, size, clash):
            let range = "0x\(String(base, radix: 16))-0x\(String(base + UInt(size), radix: 16))"
            let what = clash.map { "it overlaps '\($0)' in /proc/self/maps" } ?? "something is already mapped there"
            return "cannot map the shared region at \(range) (\(size) bytes): \(what). "
                + "Choose another base address for the job (the same one on every node), e.g. a higher one away from the heap and libraries."
        case let .mappingFailed(step, code, asked):
            return "\(step) failed for a shared region of \(asked) bytes: \(errnoText(code)). "
                + "Ask for a smaller region, or free memory (tmpfs/memfd pages count against RAM and swap)."
        case let .outOfSharedMemory(asked, left):
            return "out of shared memory: asked \(asked) bytes, \(left) left in the region. Start the job with a larger region."
        case let .invalidLayout(reason):
            return "invalid shared region layout: \(reason)"
        case let .protectionFailed(pages, access, code):
            let hint = code == ENOMEM ? " The process has too many mappings; raise vm.max_map_count (sysctl) or use a larger coherence unit." : ""
            return "cannot set pages \(pages.lowerBound)..<\(pages.upperBound) to \(access): \(errnoText(code)).\(hint)"
        case let .outOfMappings(pages, access, limit, inUse, regionPages):
            let used = inUse.map { ", \($0) in use" } ?? ""
            return "cannot set pages \(pages.lowerBound)..<\(pages.upperBound) to \(access): this process has reached vm.max_map_count "
                + "(\(limit) mappings\(used)); every run of pages with one access is a mapping, and strided or cyclic access makes one per page. "
                + "Raise the limit on every node before the job: sudo sysctl -w vm.max_map_count=\(MappingLimit.suggested(regionPages: regionPages, limit: limit)) "
                + "(one mapping per page of the \(regionPages)-page region, plus the present limit), or use a larger --page-size"
        case .faultHandlerBusy:
            return "a shared region already takes faults in this process; uninstall it (with no thread waiting on a page) before installing another"
        case let .faultHandlerFailed(code):
            return "cannot install the SIGSEGV handler for the shared region: \(errnoText(code))"
        case let .alternateStackFailed(code):
            return "cannot give this thread an alternate signal stack: \(errnoText(code)); a stack overflow on it will end the process without a report. Free memory, or raise the process's limits"
        case let .unknownProtocol(name, known):
            return "unknown coherence protocol '\(name)'; use one of: \(known.joined(separator: ", "))"
        case let .peerGone(rank, reason):
            return "rank \(rank) is gone (\(reason)); shared memory cannot stay coherent without it, so the job cannot go on"
        }
    }
}

/// "Cannot allocate memory (errno 12)".
func errnoText(_ code: Int32) -> String {
    "\(String(cString: strerror(code))) (errno \(code))"
}
