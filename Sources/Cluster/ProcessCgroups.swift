#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization

/// One cgroup (v2) per job process, so that everything the process starts is
/// killed with it, also what left its process group (`setsid`, a daemon that
/// double-forks): a process cannot leave its cgroup by itself.
///
/// The node daemon makes a directory of its own under the cgroup2 mount
/// (`/sys/fs/cgroup` on a unified hierarchy, `/sys/fs/cgroup/unified` on a
/// hybrid one), and one below it per process; the `plexus _exec` trampoline
/// moves itself into that cgroup before it execs the program, so every
/// descendant starts inside. Ending a process writes `1` to `cgroup.kill`
/// (Linux 5.14+), waits until `cgroup.events` says nothing is left, and
/// removes the directory. No controller is enabled: this only groups.
///
/// Needs write access to the cgroup2 mount (root, or a delegated
/// subtree); without it `make` says why and the node falls back to process
/// groups alone.
final class ProcessCgroups: Sendable {
    /// This daemon's directory, e.g. /sys/fs/cgroup/unified/plexus-node-1234-1.
    let root: String
    private let counter = Mutex(0)

    private init(root: String) { self.root = root }

    /// The daemon's cgroups, or why there are none.
    static func make() -> Result<ProcessCgroups, CgroupUnavailable> {
        guard let mount = cgroup2Mount() else { return .failure(CgroupUnavailable("no cgroup2 file system is mounted")) }
        guard FileManager.default.fileExists(atPath: mount + "/cgroup.procs") else {
            return .failure(CgroupUnavailable("\(mount) has no cgroup.procs"))
        }
        removeStale(in: mount)
        // Unique per daemon object: a process may host more than one node.
        let root = "\(mount)/\(prefix)\(getpid())-\(instances.withLock { n -> Int in n += 1; return n })"
        if mkdir(root, 0o755) != 0 && errno != EEXIST {
            return .failure(CgroupUnavailable("cannot create \(root): \(String(cString: strerror(errno)))"))
        }
        // cgroup.kill appeared in Linux 5.14; without it nothing could be killed.
        guard FileManager.default.fileExists(atPath: root + "/cgroup.kill") else {
            rmdir(root)
            return .failure(CgroupUnavailable("this kernel has no cgroup.kill (Linux 5.14 or later is needed)"))
        }
        return .success(ProcessCgroups(root: root))
    }

    /// Directory names are `plexus-node-PID-N`: the daemon's process and
    /// which of its nodes.
    static let prefix = "plexus-node-"
    private static let instances = Mutex(0)

    /// Removes the directories of node daemons that died without removing
    /// their own (SIGKILLed, with their guard killed too): a directory whose
    /// daemon's pid no longer exists, after killing what is still in it.
    private static func removeStale(in mount: String) {
        for name in (try? FileManager.default.contentsOfDirectory(atPath: mount)) ?? [] where name.hasPrefix(prefix) {
            guard let pid = name.dropFirst(prefix.count).split(separator: "-").first.flatMap({ pid_t($0) }), pid != getpid(),
                  Glibc.kill(pid, 0) != 0 && errno == ESRCH else { continue }
            removeTree("\(mount)/\(name)")
        }
    }

    /// Kills and removes every process cgroup in a node's directory `dir`,
    /// then `dir` itself.
    private static func removeTree(_ dir: String) {
        for child in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? [] where isDirectory("\(dir)/\(child)") {
            kill("\(dir)/\(child)")
        }
        rmdir(dir)
    }

    private static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }

    /// Creates the cgroup for one process about to start; its path, or nil.
    func create(label: String) -> String? {
        let n = counter.withLock { c -> Int in c += 1; return c }
        let safe = String(label.map { $0.isLetter || $0.isNumber || $0 == "-" ? $0 : "_" }.prefix(64))
        let path = "\(root)/\(safe)-\(n)"
        return mkdir(path, 0o755) == 0 ? path : nil
    }

    /// SIGKILLs every process in `path` without waiting for them.
    static func signalKill(_ path: String) { _ = write("1", to: path + "/cgroup.kill") }

    /// Kills every process in `path`, waits (at most `timeoutMillis`) until
    /// it is empty and removes it. Returns false if something was still
    /// there at the deadline (the directory is then left for `removeAll`).
    @discardableResult
    static func kill(_ path: String, timeoutMillis: Int = 2000) -> Bool {
        guard write("1", to: path + "/cgroup.kill") else { return !FileManager.default.fileExists(atPath: path) }
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(timeoutMillis) * 1_000_000
        while isPopulated(path) {
            if DispatchTime.now().uptimeNanoseconds > deadline { return false }
            var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
            nanosleep(&pause, nil)
        }
        return rmdir(path) == 0 || errno == ENOENT
    }

    /// Kills and removes every process cgroup of this daemon, then its own
    /// directory (when the daemon stops).
    func removeAll() { Self.removeTree(root) }

    private static func isPopulated(_ path: String) -> Bool {
        guard let events = try? String(contentsOfFile: path + "/cgroup.events", encoding: .utf8) else { return false }
        return events.split(separator: "\n").contains { $0 == "populated 1" }
    }

    fileprivate static func write(_ value: String, to file: String) -> Bool {
        let fd = open(file, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let bytes = Array(value.utf8)
        return bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) } == bytes.count
    }

    /// Where cgroup2 is mounted, from /proc/self/mounts (the first one).
    static func cgroup2Mount() -> String? {
        guard let mounts = try? String(contentsOfFile: "/proc/self/mounts", encoding: .utf8) else { return nil }
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count > 2 && fields[2] == "cgroup2" { return String(fields[1]) }
        }
        return nil
    }
}

/// Why a node has no per-process cgroups.
struct CgroupUnavailable: Error, CustomStringConvertible {
    let description: String
    init(_ why: String) { description = why }
}

/// Moves the calling process into the cgroup at `path` (the `plexus _exec`
/// trampoline, before it execs a job program; see `ProcessCgroups`).
public func enterProcessCgroup(_ path: String) -> Bool { ProcessCgroups.write("0", to: path + "/cgroup.procs") }
