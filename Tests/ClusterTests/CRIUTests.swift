#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport

/// Checkpoint and restore with CRIU, the base of process migration:
/// Scripts/criu-smoke.sh dumps a C and a Swift program (two threads, 100 MiB
/// of memory with a known pattern, each the init of its own PID namespace and
/// leader of its own session), restores them, and checks that they go on
/// where they stopped with their memory intact.
@Suite struct CRIUTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Scripts/criu-smoke.sh").path

    @Test(.enabled(if: Requirement.criu, Comment(rawValue: Requirement.criuMissing)))
    func dumpedProgramsGoOnWhereTheyStoppedAfterRestore() throws {
        let (status, output) = try Self.runBounded(["/bin/bash", Self.script], seconds: 300)
        #expect(status == 0, "\(output)")
        #expect(output.contains("criu-smoke: c ok"), "\(output)")
        if !output.contains("swiftc is not on PATH") {
            #expect(output.contains("criu-smoke: swift ok"), "\(output)")
        }
        #expect(output.contains("criu-smoke: all round trips passed"), "\(output)")
    }

    /// Runs `argv` under coreutils' `timeout` (so it ends within `seconds`
    /// plus 10) with its standard output and error in a file, and waits for it
    /// with waitpid: the bound holds whatever the script's children do with
    /// inherited pipes, and no dispatch thread is needed to see the exit.
    static func runBounded(_ argv: [String], seconds: Int) throws -> (status: Int32, output: String) {
        let log = FileManager.default.temporaryDirectory
            .appendingPathComponent("criu-smoke-\(getpid())-\(UInt32.random(in: 0...UInt32.max)).log").path
        defer { unlink(log) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for s in [SIGINT, SIGTERM, SIGPIPE, SIGHUP, SIGQUIT, SIGCHLD, SIGUSR1, SIGUSR2] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigdefault(&attr, &defaults)

        let full = ["/usr/bin/timeout", "--kill-after=10", "\(seconds)"] + argv
        let cArgs: [UnsafeMutablePointer<CChar>?] = full.map { strdup($0) } + [nil]
        defer { for p in cArgs { free(p) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, full[0], &actions, &attr, cArgs, environ)
        guard rc == 0 else { throw HarnessError("posix_spawn \(full[0]): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
        let signal = status & 0x7F
        return (signal == 0 ? (status >> 8) & 0xFF : 128 + signal, output)
    }
}
