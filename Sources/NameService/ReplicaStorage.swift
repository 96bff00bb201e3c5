#if canImport(Glibc)
import Glibc
#endif
import NamesCore
import Transport

/// Durable state of one replica: the Raft hard state (term, vote), the log and
/// the latest snapshot, in a data directory:
///
///     wal        append-only records, each
///                  u32 LE  payload length (<= maxRecordBytes)
///                  u32 LE  CRC-32C of the payload
///                  payload: varint kind (0 entry, 1 truncate-from, 2 hard state) + encoding
///     snapshot   u32 LE length, u32 LE CRC-32C, then a `RaftSnapshot` encoding;
///                written to snapshot.tmp, fsynced, renamed over, directory fsynced
///
/// `persist` performs the persist part of a `RaftReady` and returns only when
/// it is on disk (fdatasync), which is what lets the engine send the batch's
/// messages afterwards (Raft Figure 2: "respond after persisting").
///
/// Recovery (`load`) replays the wal. The first record that is short, too long
/// or fails its checksum ends the log: it and everything after it are cut off
/// (ftruncate + fsync) and reported, never applied. Such a tail is a write that
/// was never acknowledged, because nothing is sent before fdatasync returns.
/// (Corruption in the middle of acknowledged records would be cut too; Raft
/// survives that on a minority of replicas, which then catch up from the
/// leader.) A corrupt snapshot is not repairable and stops start-up.
///
/// Taking a snapshot rewrites the wal (hard state + entries after the
/// snapshot) to wal.tmp and renames it over, so the log stays bounded.
///
/// Not thread-safe: owned by the replica's engine thread.
public final class ReplicaStorage {
    public let directory: String
    /// What `load` found; the mirror that wal rewrites start from.
    private var mirror = RaftPersistentState()
    private var walFD: Int32 = -1
    /// Test hook: fails every write/fsync with this errno once set.
    let faults: StorageFaults

    public static let maxRecordBytes = ByteCodecLimits.maxMessageBytes

    public struct Recovery: Sendable {
        public var state: RaftPersistentState
        /// Bytes cut off the end of the wal (0 if it was clean).
        public var discardedBytes: Int
        /// Why the tail was cut (nil if clean).
        public var discardReason: String?
    }

    public init(directory: String, faults: StorageFaults = StorageFaults()) throws(StorageError) {
        self.directory = directory
        self.faults = faults
        try Self.makeDirectory(directory)
    }

    deinit { if walFD >= 0 { close(walFD) } }

    var walPath: String { directory + "/wal" }
    var snapshotPath: String { directory + "/snapshot" }

    // MARK: Recovery

    /// Reads the snapshot and replays the wal, truncating a torn or corrupt tail.
    public func load() throws(StorageError) -> Recovery {
        var state = RaftPersistentState()
        if let bytes = try readFile(snapshotPath) {
            guard let payload = Self.unframe(bytes, at: 0, limit: ByteCodecLimits.maxSnapshotBytes),
                  payload.end == bytes.count else {
                throw .corrupt(path: snapshotPath, reason: "length or checksum mismatch")
            }
            do { state.snapshot = try RaftSnapshot(decoding: payload.bytes, limit: ByteCodecLimits.maxSnapshotBytes) } catch {
                throw .corrupt(path: snapshotPath, reason: "\(error)")
            }
        }
        let wal = try readFile(walPath) ?? []
        var offset = 0
        var reason: String?
        let snapshotIndex = state.snapshot?.lastIncludedIndex ?? 0
        replay: while offset < wal.count {
            guard let record = Self.unframe(wal, at: offset) else {
                reason = wal.count - offset < 8 ? "torn record header" : "torn record or checksum mismatch"
                break
            }
            var reader = NamesCore.ByteReader(record.bytes)
            do {
                switch try reader.readVarint() {
                case 0:
                    let entry = try LogEntry.read(from: &reader)
                    try reader.expectEnd()
                    if entry.index <= snapshotIndex { break }
                    let expected = state.entries.last.map { $0.index + 1 } ?? snapshotIndex + 1
                    guard entry.index == expected else {
                        reason = "entry \(entry.index) where \(expected) was expected"
                        break replay
                    }
                    state.entries.append(entry)
                case 1:
                    let from = try reader.readVarint()
                    try reader.expectEnd()
                    state.entries.removeAll { $0.index >= from }
                case 2:
                    state.hardState = try HardState.read(from: &reader)
                    try reader.expectEnd()
                case let kind:
                    reason = "unknown record kind \(kind)"
                    break replay
                }
            } catch {
                reason = "undecodable record: \(error)"
                break
            }
            offset = record.end
        }
        let fd = try openWal()
        if offset < wal.count {
            try check(ftruncate(fd, off_t(offset)), "ftruncate", walPath)
            try check(fsync(fd), "fsync", walPath)
        }
        walFD = fd
        _ = lseek(fd, 0, SEEK_END)
        mirror = state
        return Recovery(state: state, discardedBytes: wal.count - offset, discardReason: offset < wal.count ? reason : nil)
    }

    // MARK: Persisting

    /// Makes the persist part of `ready` durable. After a throw the replica
    /// must stop (its in-memory Raft state is ahead of the disk).
    public func persist(_ ready: RaftReady) throws(StorageError) {
        precondition(walFD >= 0, "persist before load")
        guard ready.mustPersist else { return }
        mirror.persist(ready)
        if let snapshot = ready.snapshot {
            try writeSnapshot(snapshot)
            try rewriteWal()
            return
        }
        var out: [UInt8] = []
        if let from = ready.logTruncateFrom { Self.record(1, into: &out) { $0.writeVarint(from) } }
        for entry in ready.entriesToAppend { Self.record(0, into: &out) { entry.write(to: &$0) } }
        if let hard = ready.hardState { Self.record(2, into: &out) { hard.write(to: &$0) } }
        try writeAll(walFD, out, walPath)
        try sync(walFD, walPath)
    }

    private func writeSnapshot(_ snapshot: RaftSnapshot) throws(StorageError) {
        var bytes: [UInt8] = []
        Self.frame(snapshot.encoded(), into: &bytes)
        try replaceFile(snapshotPath, with: bytes)
    }

    /// Rewrites the wal from the mirror: hard state, then the retained entries.
    private func rewriteWal() throws(StorageError) {
        var out: [UInt8] = []
        Self.record(2, into: &out) { mirror.hardState.write(to: &$0) }
        for entry in mirror.entries { Self.record(0, into: &out) { entry.write(to: &$0) } }
        try replaceFile(walPath, with: out)
        close(walFD)
        walFD = try openWal()
        _ = lseek(walFD, 0, SEEK_END)
    }

    // MARK: Records

    /// Appends one wal record: its kind (0 entry, 1 truncate-from, 2 hard
    /// state) and body, framed with length and checksum.
    static func record(_ kind: UInt64, into out: inout [UInt8], _ body: (inout NamesCore.ByteWriter) -> Void) {
        var w = NamesCore.ByteWriter()
        w.writeVarint(kind)
        body(&w)
        frame(w.bytes, into: &out)
    }

    static func frame(_ payload: [UInt8], into out: inout [UInt8]) {
        let length = UInt32(payload.count)
        let crc = CRC32C.checksum(payload)
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: length >> UInt32(shift))) }
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: crc >> UInt32(shift))) }
        out.append(contentsOf: payload)
    }

    /// The record at `offset`, or nil if it is torn, oversized or corrupt.
    static func unframe(_ bytes: [UInt8], at offset: Int, limit: Int = maxRecordBytes) -> (bytes: [UInt8], end: Int)? {
        guard bytes.count - offset >= 8 else { return nil }
        func u32(_ at: Int) -> UInt32 {
            (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << UInt32(8 * $1) }
        }
        let length = Int(u32(offset))
        let crc = u32(offset + 4)
        guard length <= limit, length <= bytes.count - offset - 8 else { return nil }
        let payload = Array(bytes[(offset + 8)..<(offset + 8 + length)])
        guard CRC32C.checksum(payload) == crc else { return nil }
        return (payload, offset + 8 + length)
    }

    // MARK: System calls (each checks errno once, retries EINTR)

    private func check(_ result: Int32, _ call: String, _ path: String) throws(StorageError) {
        if result < 0 { throw .system(call: call, path: path, errno: errno) }
    }

    private func openWal() throws(StorageError) -> Int32 {
        let fd = open(walPath, O_RDWR | O_CREAT | O_CLOEXEC | O_APPEND, 0o644)
        if fd < 0 { throw .system(call: "open", path: walPath, errno: errno) }
        return fd
    }

    private func writeAll(_ fd: Int32, _ bytes: [UInt8], _ path: String) throws(StorageError) {
        if let e = faults.injected() { throw .system(call: "write", path: path, errno: e) }
        var done = 0
        while done < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .system(call: "write", path: path, errno: errno)
            }
            done += n
        }
    }

    private func sync(_ fd: Int32, _ path: String) throws(StorageError) {
        if let e = faults.injected() { throw .system(call: "fdatasync", path: path, errno: e) }
        while fdatasync(fd) < 0 {
            if errno != EINTR { throw .system(call: "fdatasync", path: path, errno: errno) }
        }
    }

    /// Atomically replaces `path`: write path.tmp, fsync, rename, fsync the directory.
    private func replaceFile(_ path: String, with bytes: [UInt8]) throws(StorageError) {
        let tmp = path + ".tmp"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw .system(call: "open", path: tmp, errno: errno) }
        do {
            try writeAll(fd, bytes, tmp)
            try sync(fd, tmp)
        } catch {
            close(fd)
            throw error
        }
        close(fd)
        try check(rename(tmp, path), "rename", path)
        let dir = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dir < 0 { throw .system(call: "open", path: directory, errno: errno) }
        defer { close(dir) }
        try check(fsync(dir), "fsync", directory)
    }

    private func readFile(_ path: String) throws(StorageError) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return nil }
            throw .system(call: "open", path: path, errno: errno)
        }
        defer { close(fd) }
        var out: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .system(call: "read", path: path, errno: errno)
            }
            if n == 0 { return out }
            out.append(contentsOf: buffer[0..<n])
        }
    }

    /// Creates the directory (and parents); checks it is writable so that a
    /// read-only or full disk is reported at start-up, not at the first write.
    static func makeDirectory(_ path: String) throws(StorageError) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            prefix += "/" + component
            if mkdir(prefix, 0o755) < 0 && errno != EEXIST {
                throw .system(call: "mkdir", path: prefix, errno: errno)
            }
        }
        let probe = path + "/.probe"
        let fd = open(probe, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if fd < 0 { throw .system(call: "open", path: probe, errno: errno) }
        let byte: [UInt8] = [0]
        let written = byte.withUnsafeBytes { write(fd, $0.baseAddress, 1) }
        let e = errno
        close(fd)
        unlink(probe)
        if written != 1 { throw .system(call: "write", path: probe, errno: e) }
    }
}

/// Test hook that makes storage writes fail as a full or read-only disk would
/// (compare swift-system's syscall mocking). Thread-safe.
public final class StorageFaults: Sendable {
    private struct Plan: Sendable {
        var failWith: Int32?
        var writesBeforeFailure = 0
    }
    private let plan = Locked(Plan())

    public init() {}

    /// After `after` more successful writes/syncs, every write fails with `errno`.
    public func failWrites(with errno: Int32, after: Int = 0) {
        plan.withLock { $0 = Plan(failWith: errno, writesBeforeFailure: after) }
    }

    func injected() -> Int32? {
        plan.withLock { p -> Int32? in
            guard let e = p.failWith else { return nil }
            if p.writesBeforeFailure > 0 {
                p.writesBeforeFailure -= 1
                return nil
            }
            return e
        }
    }
}

/// CRC-32C (Castagnoli), the checksum of every record on disk.
enum CRC32C {
    static let table: [UInt32] = (0..<256).map { i -> UInt32 in
        var c = UInt32(i)
        for _ in 0..<8 { c = c & 1 != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
        return c
    }

    static func checksum(_ bytes: [UInt8]) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for b in bytes { crc = table[Int((crc ^ UInt32(b)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
