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
