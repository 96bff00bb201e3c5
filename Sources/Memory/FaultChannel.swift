import CFault

#if canImport(Glibc)
import Glibc
#endif

/// One fault taken from the C fault path: `page` needs read (or, if
/// `isWrite`, read-write) access before the waiting threads can go on.
public struct Fault: Sendable, Equatable {
    public var page: Int
    public var isWrite: Bool
    public init(page: Int, isWrite: Bool) {
        self.page = page
        self.isWrite = isWrite
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
        var page: UInt64 = 0
        var isWrite = false
        guard cfault_next_fault(&page, &isWrite) else { return nil }
        return Fault(page: Int(page), isWrite: isWrite)
    }

    /// Wakes every thread waiting on `page`.
    public func complete(page: Int) { cfault_complete_page(UInt64(page)) }

    /// Process-wide counters of the fault path.
    public static var statistics: cfault_statistics {
        var out = cfault_statistics()
        cfault_get_statistics(&out)
        return out
    }
}
