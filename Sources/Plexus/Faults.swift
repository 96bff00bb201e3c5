import Memory

extension Plexus {
    /// Gives the calling thread an alternate signal stack, if it has none,
    /// so that a stack overflow on it ends in the previous SIGSEGV handler's
    /// report (Swift's backtracer, say) rather than a silent SIGSEGV. The
    /// thread that called `join()` has one already; call this first thing on
    /// threads you create that might overflow. Threads without one still
    /// work: Plexus's fault handler then runs on their own stack. The stack
    /// (256 KiB) is freed when the thread exits.
    public static func installAlternateSignalStack() throws(PlexusError) {
        let code = FaultChannel.ensureAlternateStack()
        if code != 0 { throw .memory(.alternateStackFailed(errno: code)) }
    }
}

extension Plexus {
    /// Makes shared memory accessible to system calls: touches every page of
    /// the range (a load each, or for `.write` a write that changes nothing)
    /// so that its faults are served now, and returns once they are.
    ///
    /// The kernel does not fault pages in for a system call: `read(2)`,
    /// `write(2)`, `recv(2)` and the like on shared memory this process has
    /// no access to fail with EFAULT (a short `fread`), they do not fault.
    /// Touch the buffer first: `.write` for memory a call writes into
    /// (`read`, `recv`, `fread`), `.read` for memory it reads (`write`,
    /// `send`). The access lasts until the protocol takes the page back:
    /// under `sc`, when another rank writes it (or, for `.write`, reads it),
    /// so touch, call and use the data while no other rank touches those
    /// pages (between barriers in an owner-computes program, or under a
    /// lock); under release-consistency protocols until this process's next
    /// acquire. Throws, touching nothing, if the range is not inside shared
    /// memory allocated so far (see `prefetch`).
    public func touch(_ address: UnsafeRawPointer, bytes: Int, for intent: PrefetchIntent) throws(PlexusError) {
        try touch(PrefetchRange(address, bytes: bytes, for: intent))
    }

    /// Touches one range (see `touch(_:bytes:for:)`); address 0 is refused
    /// like any address outside shared memory.
    public func touch(_ range: PrefetchRange) throws(PlexusError) {
        guard let m = memory, let h = heap else { throw .noSharedMemory }
        if isFinalized.isSet { throw .finalized }
        let pages = try sharedPages(range, m, h)
        if pages.isEmpty { return }
        m.region.touch(range.address, bytes: range.bytes, forWriting: range.intent == .write)
    }

    /// Touches `elements` of `array` (see `touch(_:bytes:for:)`).
    public func touch<T>(_ array: SharedArray<T>, _ elements: Range<Int>, for intent: PrefetchIntent) throws(PlexusError) {
        try touch(PrefetchRange.checked(array, elements, for: intent))
    }
}
