#if canImport(Glibc)
import Glibc
#endif
import Foundation
@testable import Cluster
import Memory
import Testing
import TestSupport

/// `plexus run` with real processes on the embedded local node.
@Suite(.serialized) struct LauncherTests {
    @Test func ringOfFourPrintsEveryRankAndSucceeds() throws {
        let r = try runPlexus(["run", "-n", "4", try product("ring"), "3"])
        #expect(r.status == 0, "\(r.stderr)")
        for rank in 0..<4 { #expect(r.stdout.contains("[\(rank)] rank \(rank) of 4"), "\(r.stdout)") }
        #expect(r.stdout.contains("[0] ring ok: 18 == 18"))
    }

    @Test func environmentNamesRankAndSize() throws {
        let r = try runPlexus(["run", "-n", "3", "sh", "-c", "echo R=$PLEXUS_RANK S=$PLEXUS_SIZE"])
        #expect(r.status == 0)
        for rank in 0..<3 { #expect(r.stdout.contains("[\(rank)] R=\(rank) S=3")) }
    }

    /// A job process starts with standard input, output and error only:
    /// no descriptor of the launcher, the node, or whoever started them
    /// (a test harness's pipes held by a job process keep the harness
    /// waiting for an end of file after the job has finished).
    @Test func jobProcessesInheritNoStrayDescriptors() throws {
        let r = try runPlexus(["run", "-n", "2", "ls", "/proc/self/fd"])
        #expect(r.status == 0, "\(r.stderr)")
        for rank in 0..<2 {
            // ls itself opens fd 3 to read the directory.
            let fds = r.stdout.split(separator: "\n").filter { $0.hasPrefix("[\(rank)] ") }.map { $0.dropFirst(4) }
            #expect(fds.sorted() == ["0", "1", "2", "3"], "rank \(rank) has descriptors \(fds)")
        }
    }

    @Test func failingRankEndsTheJobWithItsStatus() throws {
        let marker = uniqueMarker()
        let r = try runPlexus(["run", "-n", "3", "sh", "-c",
                               "if [ $PLEXUS_RANK = 1 ]; then exit 3; fi; exec sleep 60", marker])
        #expect(r.status == 3)
        #expect(r.stderr.contains("rank 1") && r.stderr.contains("exited with status 3"), "\(r.stderr)")
        #expect(processes(containing: marker).isEmpty)
    }

    @Test func crashingRankIsReportedWithItsSignal() throws {
        let r = try runPlexus(["run", "-n", "2", "sh", "-c", "if [ $PLEXUS_RANK = 0 ]; then kill -SEGV $$; fi; exec sleep 60"])
        #expect(r.status == 128 + SIGSEGV)
        #expect(r.stderr.contains("rank 0") && r.stderr.contains("SIGSEGV"), "\(r.stderr)")
    }

    /// The acceptance point: SIGKILL one rank; the job ends within 2 s with a
    /// report naming it, and no process of the job is left.
    @Test func killedRankEndsTheJobPromptlyWithoutOrphans() throws {
        let marker = uniqueMarker()
        let job = try Child(try product("plexus"), ["run", "-n", "4", "sh", "-c",
                                                    "echo ready pid $$; exec sleep 60", marker])
        var pids: [Int32] = []
        for _ in 0..<4 {
            let line = try job.waitForLine(containing: "ready pid")
            pids.append(Int32(line.split(separator: " ").last!)!)
        }
        let victim = pids[2]
        let t0 = Date()
        kill(victim, SIGKILL)
        let status = try job.wait(timeout: 10)
        let elapsed = Date().timeIntervalSince(t0)
        #expect(elapsed < 2, "job took \(elapsed) s to end")
        #expect(status == 128 + SIGKILL)
        #expect(job.stderr.contains("pid \(victim)") && job.stderr.contains("SIGKILL"), "\(job.stderr)")
        #expect(processes(containing: marker).isEmpty, "leftover processes")
    }

    @Test(arguments: [SIGINT, SIGTERM])
    func interruptStopsEveryProcess(signal: Int32) throws {
        let marker = uniqueMarker()
        // The ranks ignore SIGTERM, so the launcher has to escalate to SIGKILL.
        let job = try Child(try product("plexus"), ["run", "-n", "3", "--grace", "300", "sh", "-c",
                                                    "trap '' TERM; echo ready; sleep 60; echo never", marker])
        for _ in 0..<3 { _ = try job.waitForLine(containing: "ready") }
        job.signal(signal)
        let status = try job.wait(timeout: 10)
        #expect(status == 128 + signal)
        #expect(job.stderr.contains("interrupted"), "\(job.stderr)")
        #expect(!job.stdout.contains("never"))
        #expect(processes(containing: marker).isEmpty, "leftover processes")
    }

    /// `plexus run` itself SIGKILLed: its embedded node dies with it, the
    /// ranks get their parent-death signal, and what the ranks started (here
    /// a second shell, in the rank's process group) is killed by the node's
    /// process-group guard. Nothing of the job is left.
    @Test func killedLauncherLeavesNoProcessOfTheJob() throws {
        let marker = uniqueMarker()
        let job = try Child(try product("plexus"), ["run", "-n", "2", "sh", "-c",
                                                    "sh -c 'sleep 60; true' \(marker)-child & echo ready; wait", marker])
        for _ in 0..<2 { _ = try job.waitForLine(containing: "ready") }
        let deadline = Date().addingTimeInterval(10)
        // The inner shells' command lines (the outer ones quote the script).
        // An inner shell's fork for `sleep` briefly shares its command line,
        // so there may be more than two for a moment.
        let inner = "-c sleep 60; true \(marker)-child"
        while processes(containing: inner).count < 2 && Date() < deadline { usleep(10_000) }
        #expect(processes(containing: inner).count >= 2, "the ranks' children did not start")
        job.kill()
        _ = try job.wait(timeout: 10)
        while !processes(containing: marker).isEmpty && Date() < deadline { usleep(10_000) }
        #expect(processes(containing: marker).isEmpty, "leftover processes")
    }

    /// A rank starts a process that leaves its process group and session
    /// (`setsid`), and the rank exits. The node's per-process cgroup still
    /// holds it: the job ends only once it and its child are gone.
    @Test(.enabled(if: cgroupsWritable(), "needs write access to a cgroup2 mount (root)"))
    func aProcessThatLeftItsGroupEndsWithTheJob() throws {
        let marker = uniqueMarker()
        let job = try Child(try product("plexus"), ["run", "-n", "1", "sh", "-c", escapingScript(marker, then: ""), marker])
        let status = try job.wait(timeout: 20)
        #expect(status == 0, "\(job.stderr)")
        let line = try #require(job.stdout.split(separator: "\n").first { $0.contains("escaped ") }, "\(job.stdout)")
        let session = try #require(Int32(line.split(separator: " ").last!), "\(line)")
        #expect(runningProcesses(inSession: session).isEmpty, "processes of session \(session) outlived the job")
        #expect(processes(containing: marker).isEmpty, "leftover processes")
    }

    /// The same escaped process, but `plexus run` is SIGKILLed: the node's
    /// guard kills the rank's cgroup, and the escaped process goes too.
    @Test(.enabled(if: cgroupsWritable(), "needs write access to a cgroup2 mount (root)"))
    func aProcessThatLeftItsGroupDiesWithAKilledLauncher() throws {
        let marker = uniqueMarker()
        let job = try Child(try product("plexus"), ["run", "-n", "1", "sh", "-c", escapingScript(marker, then: "; wait"), marker])
        let line = try job.waitForLine(containing: "escaped ")
        let session = try #require(Int32(line.split(separator: " ").last!), "\(line)")
        #expect(!runningProcesses(inSession: session).isEmpty, "the escaped process is not running")
        job.kill()
        _ = try job.wait(timeout: 10)
        let deadline = Date().addingTimeInterval(10)
        while !runningProcesses(inSession: session).isEmpty && Date() < deadline { usleep(10_000) }
        #expect(runningProcesses(inSession: session).isEmpty, "processes of session \(session) outlived the launcher")
        #expect(processes(containing: marker).isEmpty, "leftover processes")
    }

    @Test(arguments: [
        (["run", "-n", "2"], "no program given"),
        (["run", "-n", "0", "true"], "-n must be a positive number of processes"),
        (["run", "-n", "2", "no-such-program-xyz"], "was not found on PATH"),
        (["run", "-n", "2", "/etc/os-release"], "is not an executable"),
        (["run", "-n", "2", "./no/such/path"], "does not exist"),
        (["run", "-n", "2", "--nodes", "127.0.0.1:1", "true"], "cannot reach 127.0.0.1:1"),
        (["run", "-n", "2", "--nodes", "300.1.1.1:80", "true"], "not an IPv4 address"),
        (["run", "-n", "2", "--nodes", "10.0.0.1", "true"], "no ':' before the port"),
        (["node", "--listen", "nonsense"], "bad address"),
    ])
    func badInputGetsOneLineAndNonZeroExit(args: [String], expected: String) throws {
        let r = try runPlexus(args, timeout: 20)
        #expect(r.status != 0)
        #expect(r.stderr.contains(expected), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "expected one line, got: \(r.stderr)")
    }
}

/// Jobs across separate `plexus node` daemons.
@Suite(.serialized) struct NodeTests {
    @Test func jobAcrossTwoNodeDaemons() throws {
        let n1 = try Child(try product("plexus"), ["node", "--listen", "127.0.0.1:0"])
        let a1 = String(try n1.waitForLine(containing: "listening on").split(separator: " ").last!)
        let n2 = try Child(try product("plexus"), ["node", "--listen", "127.0.0.1:0", "--join", a1])
        let a2 = String(try n2.waitForLine(containing: "listening on").split(separator: " ").last!)
        let r = try runPlexus(["run", "-n", "4", "--nodes", "\(a1),\(a2)", try product("ring"), "2"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("ring ok: 12 == 12"))
        n1.signal(SIGTERM)
        n2.signal(SIGTERM)
        #expect(try n1.wait(timeout: 10) == 0)
        #expect(try n2.wait(timeout: 10) == 0)
    }

    @Test func lostNodeFailsTheJobAndItsProcessesDie() throws {
        let marker = uniqueMarker()
        let n1 = try Child(try product("plexus"), ["node", "--listen", "127.0.0.1:0"])
        let a1 = String(try n1.waitForLine(containing: "listening on").split(separator: " ").last!)
        let job = try Child(try product("plexus"), ["run", "-n", "2", "--nodes", a1, "sh", "-c", "echo ready; exec sleep 60", marker])
        for _ in 0..<2 { _ = try job.waitForLine(containing: "ready") }
        n1.kill()
        let status = try job.wait(timeout: 10)
        #expect(status != 0)
        #expect(job.stderr.contains("lost node \(a1)"), "\(job.stderr)")
        // The node's children die with it (parent-death signal).
        let deadline = Date().addingTimeInterval(5)
        while !processes(containing: marker).isEmpty && Date() < deadline { usleep(20_000) }
        #expect(processes(containing: marker).isEmpty, "leftover processes")
    }

    /// A job across network namespaces: each node runs in its own namespace
    /// with its own IP, as on separate hosts (Scripts/netns-cluster.sh).
    @Test(.enabled(if: Requirement.root, Comment(rawValue: Requirement.rootMissing)))
    func jobAcrossNetworkNamespaces() throws {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Scripts/netns-cluster.sh").path
        let env = ["PLEXUS_NETNS_PREFIX": "plxt", "PLEXUS_NETNS_NET": "78"]
        defer { _ = try? Child("/bin/bash", [script, "down"], environment: env).wait(timeout: 60) }
        let up = try Child("/bin/bash", [script, "up", "3", try product("plexus")], environment: env)
        let upStatus = try up.wait(timeout: 60)
        #expect(upStatus == 0, "\(up.stderr)")
        let nodes = up.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(nodes.split(separator: ",").count == 3)
        let r = try runPlexus(["run", "-n", "3", "--nodes", nodes, "sh", "-c", "echo rank $PLEXUS_RANK at $PLEXUS_NODE"])
        #expect(r.status == 0, "\(r.stderr)")
        for i in 0..<3 { #expect(r.stdout.contains("[\(i)] rank \(i) at 10.78.0.\(11 + i)"), "\(r.stdout)") }
        let ring = try runPlexus(["run", "-n", "6", "--nodes", nodes, try product("ring"), "2"])
        #expect(ring.status == 0, "\(ring.stderr)")
        #expect(ring.stdout.contains("ring ok: 30 == 30"))
        // Shared memory across the hosts: increments under one lock from 4 ranks on 3 hosts.
        let dsm = try runPlexus(["run", "-n", "4", "--nodes", nodes, try product("dsm-check"), "lock-counter"])
        #expect(dsm.status == 0, "\(dsm.stderr)")
        #expect(dsm.stdout.contains("PASS lock-counter"), "\(dsm.stdout)")
    }
}

@Suite struct CExampleTests {
    @Test func cProgramRunsUnderPlexus() throws {
        let r = try runPlexus(["run", "-n", "3", try product("c-hello")])
        #expect(r.status == 0, "\(r.stderr)")
        for rank in 0..<3 { #expect(r.stdout.contains("[\(rank)] hello from rank \(rank) of 3")) }
    }

    /// The C API's shared memory: a collective allocation, a counter
    /// incremented under a lock by every rank, a barrier, a prefetch hint,
    /// the exact total; a hint outside shared memory is refused with a reason.
    @Test func cProgramSharesMemory() throws {
        let r = try runPlexus(["run", "-n", "4", try product("c-dsm")])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("PASS"), "\(r.stdout)")
        #expect(r.stdout.contains("a prefetch outside shared memory is refused:") && r.stdout.contains("not inside shared memory allocated so far"), "\(r.stdout)")
        #expect(!r.stdout.contains("FAIL"), "\(r.stdout)")
    }

    @Test func cProgramOutsidePlexusExplains() throws {
        let c = try Child(try product("c-hello"), [])
        #expect(try c.wait(timeout: 20) == 1)
        #expect(c.stderr.contains("plexus run"), "\(c.stderr)")
    }
}

@Suite struct DemoTests {
    @Test func demoRunsTheRing() throws {
        let r = try runPlexus(["demo", "ring", "--iterations", "3"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("value 18, expected 18"), "\(r.stdout)")
    }

    /// A lock-order inversion between two processes: the cycle as text and
    /// DOT, exactly one victim, the other finishes, exit 0, in seconds.
    @Test func demoFindsAndResolvesADeadlock() throws {
        let t0 = Date()
        let r = try runPlexus(["demo", "deadlock"], timeout: 30)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(Date().timeIntervalSince(t0) < 10, "the demo took \(Date().timeIntervalSince(t0)) s")
        #expect(r.stdout.contains("deadlock detected: rank "), "\(r.stdout)")
        #expect(r.stdout.contains("waits for lock 1, held by rank 0") && r.stdout.contains("waits for lock 2, held by rank 1"), "\(r.stdout)")
        #expect(r.stdout.contains("digraph \"deadlock\" {") && r.stdout.contains("(victim)"), "\(r.stdout)")
        let lines = r.stdout.split(separator: "\n")
        #expect(lines.filter { $0.contains("was the victim (global PID") }.count == 1, "\(r.stdout)")
        #expect(lines.filter { $0.contains(" finished: it got lock ") }.count == 1, "\(r.stdout)")
        #expect(r.stdout.contains("demo finished in"), "\(r.stdout)")
    }

    /// --svg FILE: the victim draws the cycle as well-formed SVG, both
    /// ranks as nodes, the victim marked.
    @Test func demoDrawsTheCycleAsSVG() throws {
        let file = NSTemporaryDirectory() + "plexus-demo-\(UInt32.random(in: 0...UInt32.max)).svg"
        defer { try? FileManager.default.removeItem(atPath: file) }
        let r = try runPlexus(["demo", "deadlock", "--svg", file], timeout: 30)
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        #expect(r.stdout.contains("the cycle's wait-for graph is drawn in \(file)"), "\(r.stdout)")
        let svg = try String(contentsOfFile: file, encoding: .utf8)
        #expect(svg.hasPrefix("<?xml") && svg.contains("<svg "), "\(svg)")
        #expect(svg.components(separatedBy: "<g class=\"node").count - 1 == 2, "\(svg)")
        #expect(svg.contains("class=\"node victim\"") && svg.contains("rank 0 / pid ") && svg.contains("rank 1 / pid "), "\(svg)")
        #expect(svg.contains("held by rank"), "\(svg)")
        // --svg belongs to the deadlock demo.
        let wrong = try runPlexus(["demo", "ring", "--svg", file])
        #expect(wrong.status != 0 && wrong.stderr.contains("plexus demo deadlock"), "\(wrong.stderr)")
    }

    /// The README's first command: the false-sharing table, both layouts,
    /// counters exact, and the same-page layout moving the page many times
    /// under sc (the first protocol); then every protocol side by side.
    @Test func demoShowsFalseSharing() throws {
        let r = try runPlexus(["demo", "--iterations", "2000000"], timeout: 60)
        #expect(r.status == 0, "\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        let same = try #require(lines.first { $0.contains("] same page ") })
        let separate = try #require(lines.first { $0.contains("] separate pages ") })
        #expect(same.hasSuffix("2000000,2000000") && separate.hasSuffix("2000000,2000000"))
        func transfers(_ l: String) -> Int { Int(l.split(separator: " ").reversed()[2]) ?? -1 }
        // A page each, placed on the rank that writes it: no transfer at all.
        #expect(transfers(separate) == 0, "\(separate)")
        #expect(transfers(same) > transfers(separate), "\(same)")
        // The false-sharing report names the page and its verdict (it lists
        // pages that moved at least twice).
        if transfers(same) >= 2 {
            #expect(r.stdout.contains(" (counters[0...1]): moved "), "\(r.stdout)")
            #expect(r.stdout.contains("-> FALSE SHARING: each element here is faulted on by one rank only"), "\(r.stdout)")
        }
        #expect(r.stdout.contains("false sharing under each protocol"), "\(r.stdout)")
        for name in ProtocolRegistry.names {
            #expect(lines.contains { $0.hasPrefix(name + " ") && $0.contains("x ") }, "no side-by-side row for \(name):\n\(r.stdout)")
            #expect(r.stdout.contains("== protocol \(name) "), "\(r.stdout)")
        }
        // Every protocol's job checked its counters: both layouts exact.
        let exact = lines.filter { $0.hasSuffix(" 2000000,2000000") }.count
        #expect(exact == 2 * ProtocolRegistry.names.count, "\(r.stdout)")
    }
}

/// Help is output people read: it must teach, and exit 0.
@Suite struct HelpTests {
    @Test(arguments: [
        (["--help"], ["plexus demo", "plexus run -n 4", "plexus node --listen"]),
        (["run", "--help"], ["--nodes", "--shared-memory", "--protocol", "--stats", "--deadlock", "--deadlock-threshold-ms", "Examples:"]),
        (["node", "--help"], ["--listen", "--join", "Example"]),
        (["demo", "--help"], ["false-sharing", "ring", "deadlock"]),
    ])
    func helpTeaches(args: [String], mentions: [String]) throws {
        let r = try runPlexus(args, timeout: 20)
        #expect(r.status == 0)
        for m in mentions { #expect(r.stdout.contains(m), "help for \(args) lacks '\(m)'") }
    }

    /// Mistakes are reported as what they are, with what to do, and exit 64
    /// (usage); nothing runs.
    @Test(arguments: [
        (["run", "--bogus", "true"], "unknown option '--bogus'"),
        (["run", "true"], "-n is required"),
        (["run", "-n", "-1", "true"], "-n must be a positive number of processes (got -1)"),
        (["run", "-n", "four", "true"], "-n 'four' is not a number"),
        (["run", "-n", "2", "--page-size", "5000", "true"], "--page-size 5000 is not a power of two"),
        (["run", "-n", "2", "--page-size", "2048", "true"], "smaller than this system's page"),
        (["rnu", "-n", "2", "true"], "did you mean 'run'?"),
        (["compar"], "did you mean 'compare'?"),
    ])
    func mistakesAreNamedForWhatTheyAre(args: [String], says: String) throws {
        let r = try runPlexus(args, timeout: 20)
        #expect(r.status == 64, "\(args): status \(r.status)\n\(r.stderr)")
        #expect(r.stderr.contains(says), "\(args): \(r.stderr)")
        #expect(r.stdout.isEmpty, "\(args) ran something: \(r.stdout)")
    }

    @Test func versionIsPrinted() throws {
        let r = try runPlexus(["--version"], timeout: 20)
        #expect(r.status == 0 && r.stdout.split(separator: ".").count == 3, "\(r.stdout)\(r.stderr)")
    }

    /// Every example answers --help (exit 0, a usage line) instead of running.
    @Test(arguments: ["ring", "jacobi", "matmul", "false-sharing", "c-hello", "c-dsm", "c-deadlock"])
    func examplesAnswerHelp(example: String) throws {
        let c = try Child(try product(example), ["--help"])
        let status = try c.wait(timeout: 20)
        #expect(status == 0 && c.stdout.hasPrefix("usage:"), "\(example): \(status)\n\(c.stdout)\(c.stderr)")
    }
}


/// A rank's script that starts `sleep 60` in a new session (setsid), waits
/// until it runs (a fifo: so after setsid(2)), prints "escaped SID", then
/// runs `rest`.
func escapingScript(_ marker: String, then rest: String) -> String {
    "f=/tmp/\(marker).fifo; mkfifo $f; setsid sh -c 'echo $$ > '$f'; sleep 60; true' \(marker)-escaped & "
        + "read p < $f; rm -f $f; echo escaped $p" + rest
}

/// Whether this process may create a cgroup under the cgroup2 mount (what a
/// node needs for per-process cgroups).
func cgroupsWritable() -> Bool {
    guard let mount = ProcessCgroups.cgroup2Mount() else { return false }
    let probe = "\(mount)/plexus-probe-\(getpid())"
    guard mkdir(probe, 0o755) == 0 else { return false }
    rmdir(probe)
    return true
}

/// Processes (not zombies) whose session id is `session`.
func runningProcesses(inSession session: Int32) -> [Int32] {
    let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
    return entries.compactMap { e -> Int32? in
        guard let pid = Int32(e), let stat = try? String(contentsOfFile: "/proc/\(e)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        // After the command name: state, ppid, pgrp, session, ...
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 3, fields[0] != "Z", Int32(fields[3]) == session else { return nil }
        return pid
    }
}
