#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Transport

/// Makes sure no job process outlives the process that started it, even when
/// that process is SIGKILLed.
///
/// The kernel's parent-death signal reaches only a job's direct child; what
/// that child started (a shell's `sleep`, a program's helpers) would survive.
/// So each node daemon keeps a guard: a small `plexus _guard` process that
/// learns every job process group the node starts (`+PGID` lines on its
/// stdin) and ends (`-PGID`). When its stdin reaches end-of-file — the node
/// stopped, or died in any way, since the kernel closes a dead process's
/// descriptors — it SIGKILLs every group it still knows and exits.
/// Where the node has per-process cgroups (`ProcessCgroups`), it is told
/// those too (`+/PATH`, `-/PATH`) and kills them as well, which also catches
/// a process that left its group (`setsid`); without them, such a process
/// escapes.
final class GroupGuard: @unchecked Sendable {
    private let lock = NSLock()
    private var control: Int32
    let pid: pid_t

    init(trampoline: String) throws(SpawnError) {
        // A dead guard must not kill the node with SIGPIPE.
        signal(SIGPIPE, SIG_IGN)
        (pid, control) = try spawnGuard(trampoline: trampoline)
    }

    func add(_ group: pid_t, cgroup: String? = nil) {
        send("+\(group)\n" + (cgroup.map { "+\($0)\n" } ?? ""))
    }
    func add(cgroup: String) { send("+\(cgroup)\n") }
    func remove(_ group: pid_t, cgroup: String? = nil) {
        send("-\(group)\n" + (cgroup.map { "-\($0)\n" } ?? ""))
    }

    /// Closes the pipe; the guard kills what is left and exits, and is reaped here.
    func close() {
        let fd: Int32 = lock.withLock { let f = control; control = -1; return f }
        guard fd >= 0 else { return }
        Glibc.close(fd)
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    }

    private func send(_ line: String) {
        lock.withLock {
            guard control >= 0 else { return }
            var bytes = Array(line.utf8)
            _ = bytes.withUnsafeMutableBytes { write(control, $0.baseAddress, $0.count) }
        }
    }
}

/// The body of `plexus _guard`: reads `+PGID` / `-PGID` and `+/CGROUP` /
/// `-/CGROUP` lines from stdin until end-of-file, then SIGKILLs every
/// process group and cgroup still listed. Ignores the signals a terminal or
/// a job stop sends; only EOF ends it.
public func runProcessGroupGuard() -> Never {
    for s in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE] { signal(s, SIG_IGN) }
    var groups = Set<pid_t>()
    var cgroups = Set<String>()
    var line: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
        if n < 0 && errno == EINTR { continue }
        if n <= 0 { break }
        for b in buffer[0..<n] {
            guard b == 10 else {
                if line.count <= Int(PATH_MAX) { line.append(b) }
                continue
            }
            let rest = String(decoding: line.dropFirst(), as: UTF8.self)
            if line.count <= Int(PATH_MAX), let sign = line.first {
                if rest.hasPrefix("/") {
                    if sign == UInt8(ascii: "+"), cgroups.count < 1 << 16 { cgroups.insert(rest) }
                    if sign == UInt8(ascii: "-") { cgroups.remove(rest) }
                } else if let group = pid_t(rest), group > 1 {
                    if sign == UInt8(ascii: "+"), groups.count < 1 << 20 { groups.insert(group) }
                    if sign == UInt8(ascii: "-") { groups.remove(group) }
                }
            }
            line.removeAll(keepingCapacity: true)
        }
    }
    for g in groups { kill(-g, SIGKILL) }
    // Deepest first: the node's own directory (ProcessCgroups.root, also
    // listed) can only go once the processes' directories below it have.
    for c in cgroups.sorted(by: { $0.count > $1.count }) { ProcessCgroups.kill(c) }
    exit(0)
}
