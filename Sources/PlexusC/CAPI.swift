import Plexus

// The C API (include/plexus.h). One runtime per process; every function that
// can fail returns -1 and leaves a message for plexus_last_error().

nonisolated(unsafe) private var runtime: Plexus?
private let lastError = Locked<[CChar]>([0])

import Transport

private func fail(_ error: Error) -> Int32 {
    lastError.withLock { $0 = Array("\(error)".utf8CString) }
    return -1
}

@_cdecl("plexus_init")
public func plexus_init() -> Int32 {
    if runtime != nil { return 0 }
    do {
        runtime = try Plexus.join()
        return 0
    } catch { return fail(error) }
}

@_cdecl("plexus_rank")
public func plexus_rank() -> Int32 { Int32(runtime?.rank ?? -1) }

@_cdecl("plexus_size")
public func plexus_size() -> Int32 { Int32(runtime?.size ?? -1) }

@_cdecl("plexus_pid")
public func plexus_pid() -> UInt64 { runtime?.pid ?? 0 }

@_cdecl("plexus_barrier")
public func plexus_barrier() -> Int32 {
    guard let r = runtime else { return fail(PlexusError.notLaunched(missing: "plexus_init()")) }
    do { try r.barrier(); return 0 } catch { return fail(error) }
}

@_cdecl("plexus_finalize")
public func plexus_finalize() -> Int32 {
    guard let r = runtime else { return 0 }
    do { try r.finalize(); return 0 } catch { return fail(error) }
}

/// Collective: every rank calls it in the same order with the same size and
/// name, and gets the same pointer (valid in every process), zeroed. Blocks
/// of a page or more are page-aligned, smaller ones 64-byte aligned.
@_cdecl("plexus_alloc")
public func plexus_alloc(_ bytes: Int, _ name: UnsafePointer<CChar>?) -> UnsafeMutableRawPointer? {
    guard let r = runtime else { _ = fail(PlexusError.notLaunched(missing: "plexus_init()")); return nil }
    let label = name.map { String(cString: $0) } ?? "c_alloc"
    let page = r.pageSize ?? 4096
    do { return try r.allocateBytes(bytes, alignment: bytes >= page ? page : 64, name: label) } catch {
        _ = fail(error)
        return nil
    }
}

/// Per-process: allocates in this rank's part of the shared heap without
/// talking to anyone; the pointer is valid in every process.
@_cdecl("plexus_alloc_local")
public func plexus_alloc_local(_ bytes: Int, _ name: UnsafePointer<CChar>?) -> UnsafeMutableRawPointer? {
    guard let r = runtime else { _ = fail(PlexusError.notLaunched(missing: "plexus_init()")); return nil }
    let label = name.map { String(cString: $0) } ?? "c_alloc_local"
    do { return UnsafeMutableRawPointer(try r.allocateLocal(UInt8.self, count: bytes, name: label).base) } catch {
        _ = fail(error)
        return nil
    }
}

@_cdecl("plexus_prefetch")
public func plexus_prefetch(_ address: UnsafeRawPointer?, _ bytes: Int, _ forWrite: Int32) -> Int32 {
    guard let r = runtime else { return fail(PlexusError.notLaunched(missing: "plexus_init()")) }
    // NULL is refused like any address outside shared memory.
    let range = PrefetchRange(address: address.map { UInt(bitPattern: $0) } ?? 0, bytes: bytes, for: forWrite != 0 ? .write : .read)
    do { try r.prefetch([range]); return 0 } catch { return fail(error) }
}

@_cdecl("plexus_touch")
public func plexus_touch(_ address: UnsafeRawPointer?, _ bytes: Int, _ forWrite: Int32) -> Int32 {
    guard let r = runtime else { return fail(PlexusError.notLaunched(missing: "plexus_init()")) }
    // NULL is refused like any address outside shared memory.
    let range = PrefetchRange(address: address.map { UInt(bitPattern: $0) } ?? 0, bytes: bytes, for: forWrite != 0 ? .write : .read)
    do { try r.touch(range); return 0 } catch { return fail(error) }
}

@_cdecl("plexus_install_signal_stack")
public func plexus_install_signal_stack() -> Int32 {
    do { try Plexus.installAlternateSignalStack(); return 0 } catch { return fail(error) }
}

@_cdecl("plexus_lock_acquire")
public func plexus_lock_acquire(_ id: Int32) -> Int32 {
    guard let r = runtime else { return fail(PlexusError.notLaunched(missing: "plexus_init()")) }
    guard id >= 0 else { return fail(PlexusError.lockMisuse("lock id \(id) is negative: lock ids are >= 0")) }
    do { try r.lock(Int(id)).acquire(); return 0 } catch { return fail(error) }
}

@_cdecl("plexus_lock_release")
public func plexus_lock_release(_ id: Int32) -> Int32 {
    guard let r = runtime else { return fail(PlexusError.notLaunched(missing: "plexus_init()")) }
    guard id >= 0 else { return fail(PlexusError.lockMisuse("lock id \(id) is negative: lock ids are >= 0")) }
    do { try r.lock(Int(id)).release(); return 0 } catch { return fail(error) }
}

/// The fencing token of this process's hold of lock `id`, 0 when it does
/// not hold it (tokens start at 1).
@_cdecl("plexus_lock_token")
public func plexus_lock_token(_ id: Int32) -> UInt64 {
    guard let r = runtime, id >= 0 else { return 0 }
    return r.lock(Int(id)).token ?? 0
}

/// The returned pointer stays valid until the next error (the buffer is kept).
@_cdecl("plexus_last_error")
public func plexus_last_error() -> UnsafePointer<CChar> {
    lastErrorPointer()
}

nonisolated(unsafe) private var errorCopy: UnsafeMutablePointer<CChar>?

private func lastErrorPointer() -> UnsafePointer<CChar> {
    let bytes = lastError.value
    let p = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
    p.initialize(from: bytes, count: bytes.count)
    let old = errorCopy
    errorCopy = p
    old?.deallocate()
    return UnsafePointer(p)
}
