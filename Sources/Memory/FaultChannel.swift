import CFault

#if canImport(Glibc)
import Glibc
#endif

/// One fault taken from the C fault path: `page` needs read (or, if
/// `isWrite`, read-write) access before the waiting threads can go on.
public struct Fault: Sendable, Equatable {
    public var page: Int
    public var isWrite: Bool
    /// Where the access that opened the request came from.
    public var origin: FaultOrigin
    public init(page: Int, isWrite: Bool, origin: FaultOrigin = FaultOrigin()) {
        self.page = page
        self.isWrite = isWrite
        self.origin = origin
    }
}

/// The access behind a fault, for statistics and the false-sharing report:
/// only the thread that opened a request is described (threads that joined it
/// are not), and only its first access to the page since the page was taken
/// away, so an element missing from the faults may still be touched.
public struct FaultOrigin: Sendable, Hashable {
    /// Byte offset of the faulting address within its page.
    public var offset: Int
    /// Address of the faulting instruction in this process (0 if unknown).
    public var instruction: UInt
    /// Kernel thread id of the faulting thread (0 if unknown).
    public var thread: Int32
    public init(offset: Int = 0, instruction: UInt = 0, thread: Int32 = 0) {
        self.offset = offset
        self.instruction = instruction
        self.thread = thread
    }
}

/// The engine's side of the SIGSEGV fault path of one `SharedRegion`.
///
/// Application threads that touch an inaccessible page sleep in the C handler;
/// the engine polls `doorbell`, calls `drainDoorbell()` then `nextFault()`
/// until nil, runs the coherence protocol, and calls `complete(page:)` once the
/// page's protection is raised. A fault can be reported more than once per
/// page (see `cfault_next_fault`).
///
/// One channel per process (the signal handler is process-wide). Thread
/// safety: every method may be called from any thread; meant for one engine.
public final class FaultChannel: Sendable {
    public let region: SharedRegion

    /// Installs the handler for `region`. Throws `.faultHandlerBusy` if
    /// another region already takes faults in this process.
    public init(region: SharedRegion) throws(MemoryError) {
        let code = cfault_install(region.applicationBase, UInt64(region.size), UInt64(region.pageSize))
        switch code {
        case 0: break
        case EBUSY: throw .faultHandlerBusy
        default: throw .faultHandlerFailed(errno: code)
        }
        self.region = region
    }

    /// Restores the previous SIGSEGV handler. Throws `.faultHandlerBusy` while
    /// a thread still waits on a page (complete it first). Call it only once
    /// no application thread touches the region any more.
    public func uninstall() throws(MemoryError) {
        let code = cfault_uninstall()
        if code == EBUSY { throw .faultHandlerBusy }
        if code != 0 { throw .faultHandlerFailed(errno: code) }
    }

    /// An eventfd that is readable when faults are pending; poll it with the sockets.
    public var doorbell: Int32 { cfault_doorbell_fd() }

    /// Resets the doorbell; call before draining `nextFault()`.
    public func drainDoorbell() { cfault_doorbell_drain() }

    /// The next pending fault, now in service, or nil.
    public func nextFault() -> Fault? {
        var f = cfault_fault()
        guard cfault_next_fault(&f) else { return nil }
        return Fault(page: Int(f.page_index), isWrite: f.is_write,
                     origin: FaultOrigin(offset: Int(f.offset), instruction: UInt(f.instruction), thread: f.thread))
    }

    /// Wakes every thread waiting on `page`. Returns the CPU on which one of
    /// them was last seen spinning for it (rather than sleeping), if any:
    /// see `cfault_complete_page`.
    @discardableResult
    public func complete(page: Int) -> Int32? {
        let cpu = cfault_complete_page(UInt64(page))
        return cpu >= 0 ? cpu : nil
    }

    /// From now on, faults on pages outside `pages` are refused: the
    /// handler prints the address and `allocations` (what is allocated, in
    /// words) to stderr and passes the fault on as a crash (SIGSEGV), so a
    /// stray access fails where it happens. Ranges may only grow between
    /// calls (a thread may be faulting on one meanwhile). At most
    /// `CFAULT_SERVED_RANGES` ranges.
    public func serveOnly(_ pages: [Range<Int>], allocations: String) {
        precondition(pages.count <= Int(CFAULT_SERVED_RANGES), "at most \(CFAULT_SERVED_RANGES) served ranges, got \(pages.count)")
        var bytes = Array(allocations.utf8)
        if bytes.isEmpty { bytes = Array("nothing yet".utf8) }
        bytes.withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: CChar.self) { cfault_describe_allocations($0.baseAddress, UInt64($0.count)) }
        }
        for i in 0..<Int(CFAULT_SERVED_RANGES) {
            let r = i < pages.count ? pages[i] : 0..<0
            _ = cfault_serve_pages(UInt32(i), UInt64(r.lowerBound), UInt64(r.upperBound))
        }
    }

    /// Gives the calling thread an alternate signal stack unless it has one
    /// (see `cfault_ensure_alternate_stack`): a stack overflow on it then
    /// still reaches the previous SIGSEGV handler. `init` does it for the
    /// thread that installs the handler. Returns the errno on failure.
    public static func ensureAlternateStack() -> Int32 {
        cfault_ensure_alternate_stack()
    }

    /// Process-wide counters of the fault path.
    public static var statistics: cfault_statistics {
        var out = cfault_statistics()
        cfault_get_statistics(&out)
        return out
    }
}
