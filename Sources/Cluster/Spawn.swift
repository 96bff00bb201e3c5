#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Transport

/// Why a program cannot be started. The message says what to do.
public enum SpawnError: Error, Equatable, Sendable, CustomStringConvertible {
    case notFound(String)
    case notExecutable(String)
    case system(call: String, errno: Int32)

    public var description: String {
        switch self {
        case .notFound(let p):
            return p.contains("/") ? "program '\(p)' does not exist" : "program '\(p)' was not found on PATH"
        case .notExecutable(let p): return "program '\(p)' is not an executable file (check its permissions)"
        case .system(let call, let e): return "\(call) failed: \(String(cString: strerror(e)))"
        }
    }
}

/// Finds `program` the way a shell would: a name with a slash is a path
/// (relative to `directory`), anything else is searched on PATH.
public func resolveProgram(_ program: String, path: String?, directory: String) throws(SpawnError) -> String {
    func check(_ candidate: String) -> SpawnError? {
        var st = stat()
        guard stat(candidate, &st) == 0 else { return .notFound(program) }
        if (st.st_mode & S_IFMT) == S_IFDIR || access(candidate, X_OK) != 0 { return .notExecutable(program) }
        return nil
    }
    if program.isEmpty { throw .notFound(program) }
    if program.contains("/") {
        let full = program.hasPrefix("/") ? program : directory + "/" + program
        if let e = check(full) { throw e }
        return full
    }
    var sawNonExecutable = false
    for dir in (path ?? "/usr/local/bin:/usr/bin:/bin").split(separator: ":") {
        let candidate = "\(dir)/\(program)"
        switch check(candidate) {
        case nil: return candidate
        case .notExecutable?: sawNonExecutable = true
        default: continue
        }
    }
    throw sawNonExecutable ? .notExecutable(program) : .notFound(program)
}

/// A started child: its pid (also its process-group id), the read ends of
/// its stdout and stderr pipes, and the write end of its stdin pipe
/// (non-blocking; -1 when its stdin is /dev/null).
struct Child {
    var pid: pid_t
    var stdout: Int32
    var stderr: Int32
    var stdin: Int32 = -1
}

/// Starts `argv[0]` (an absolute path; normally the `plexus _exec`
/// trampoline, which changes directory and sets the parent-death signal
/// before it execs the program) in a new process group with stdin from a
/// fresh pipe (`standardInput`) or /dev/null, stdout and stderr to fresh pipes, default signal dispositions
/// and an empty signal mask, so the launcher's own signal set-up never leaks
/// into job processes.
func spawnChild(argv: [String], environment: [String: String], standardInput: Bool = false) throws(SpawnError) -> Child {
    // pipe2(O_CLOEXEC) is not exported to Swift; pipe + FD_CLOEXEC under one
    // lock held across the spawn keeps a concurrent spawn from inheriting
    // these pipes (which would hold them open and delay end-of-output).
    spawnLock.lock()
    defer { spawnLock.unlock() }
    return try spawnLocked(argv: argv, environment: environment, standardInput: standardInput)
}

private let spawnLock = NSLock()

private func spawnLocked(argv: [String], environment: [String: String], standardInput: Bool) throws(SpawnError) -> Child {
    var outPipe: [Int32] = [0, 0], errPipe: [Int32] = [0, 0], inPipe: [Int32] = [-1, -1]
    guard pipe(&outPipe) == 0 else { throw .system(call: "pipe", errno: errno) }
    guard pipe(&errPipe) == 0 else {
        let e = errno
        close(outPipe[0]); close(outPipe[1])
        throw .system(call: "pipe", errno: e)
    }
    if standardInput {
        guard pipe(&inPipe) == 0 else {
            let e = errno
            for fd in outPipe + errPipe { close(fd) }
            throw .system(call: "pipe", errno: e)
        }
        // Only the node's end: the writer never blocks (see `InputFeeder`).
        _ = fcntl(inPipe[1], F_SETFL, fcntl(inPipe[1], F_GETFL) | O_NONBLOCK)
    }
    for fd in outPipe + errPipe + inPipe where fd >= 0 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    if standardInput {
        posix_spawn_file_actions_adddup2(&actions, inPipe[0], 0)
    } else {
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    }
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)

    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
    posix_spawnattr_setpgroup(&attr, 0)
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attr, &empty)
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for s in [SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2, SIGTTIN] { sigaddset(&defaults, s) }
    posix_spawnattr_setsigdefault(&attr, &defaults)

    let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    let cEnv: [UnsafeMutablePointer<CChar>?] = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
    defer {
        for p in cArgs { free(p) }
        for p in cEnv { free(p) }
    }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, argv[0], &actions, &attr, cArgs, cEnv)
    close(outPipe[1])
    close(errPipe[1])
    if inPipe[0] >= 0 { close(inPipe[0]) }
    if rc != 0 {
        close(outPipe[0]); close(errPipe[0])
        if inPipe[1] >= 0 { close(inPipe[1]) }
        if rc == ENOENT { throw .notFound(argv[0]) }
        if rc == EACCES || rc == ENOEXEC { throw .notExecutable(argv[0]) }
        throw .system(call: "posix_spawn", errno: rc)
    }
    return Child(pid: pid, stdout: outPipe[0], stderr: errPipe[0], stdin: inPipe[1])
}

/// Decodes a waitpid status.
func exitStatus(fromWait status: Int32) -> ExitStatus {
    let sig = status & 0x7F
    if sig == 0 { return .exited((status >> 8) & 0xFF) }
    return .signaled(sig)
}

/// Starts `plexus _guard` (see `GroupGuard`) with its stdin on a fresh pipe
/// and returns its pid and the pipe's write end (close-on-exec, so no job
/// process inherits it and holds it open).
func spawnGuard(trampoline: String) throws(SpawnError) -> (pid: pid_t, control: Int32) {
    spawnLock.lock()
    defer { spawnLock.unlock() }
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { throw .system(call: "pipe", errno: errno) }
    for fd in fds { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_adddup2(&actions, fds[0], 0)
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    // Its own process group: a Ctrl-C at the terminal does not reach it.
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETPGROUP))
    posix_spawnattr_setpgroup(&attr, 0)
    let argv = [trampoline, "_guard"]
    let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { for p in cArgs { free(p) } }
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, trampoline, &actions, &attr, cArgs, environ)
    close(fds[0])
    if rc != 0 {
        close(fds[1])
        throw .system(call: "posix_spawn \(trampoline) _guard", errno: rc)
    }
    return (pid, fds[1])
}

/// Marks every descriptor above standard error close-on-exec, so the
/// program the `plexus _exec` trampoline becomes starts with 0, 1 and 2
/// only. posix_spawn passes on every descriptor its caller did not mark,
/// and the launcher cannot mark what the process that started it left
/// open: a test harness's pipe that reaches a job process keeps the harness
/// waiting for an end of file after the job has ended. Reads /proc/self/fd;
/// without /proc, tries every descriptor below the open-files limit.
public func closeInheritedDescriptorsOnExec() {
    var fds: [Int32] = []
    if let names = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") {
        fds = names.compactMap { Int32($0) }
    } else {
        var limit = rlimit()
        let top = getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 ? min(Int(limit.rlim_cur), 1 << 16) : 1024
        fds = (3..<Int32(top)).map { $0 }
    }
    // The directory's own descriptor is in the list and already closed,
    // which fcntl reports as EBADF: harmless.
    for fd in fds where fd > 2 { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
}
