#if canImport(Glibc)
import Glibc
#endif
import Foundation
@testable import Cluster
import Testing
import TestSupport

extension LauncherTests {
    /// What a job's processes get from `plexus run`'s caller, as with
    /// `mpirun`: the environment it names, and its standard input.
    @Suite(.serialized) struct JobInput {
        /// `plexus run ARGS` with standard input from `input` (a shell
        /// redirection or pipeline source), run by /bin/sh.
        func runWithInput(_ input: String, _ args: [String], environment: [String: String] = [:],
                          timeout: Double = 60) throws -> (status: Int32, stdout: String, stderr: String) {
            let script = "\(input) \(quoted(try product("plexus"))) " + args.map(quoted).joined(separator: " ")
            let c = try Child("/bin/sh", ["-c", script], environment: environment)
            let s = try c.wait(timeout: timeout)
            return (s, c.stdout, c.stderr)
        }

        func lines(_ out: String, rank: Int) -> [String] {
            out.split(separator: "\n").filter { $0.hasPrefix("[\(rank)] ") }.map { String($0.dropFirst("[\(rank)] ".count)) }
        }

        @Test func standardInputGoesToRankZeroOnly() throws {
            let r = try runWithInput("echo data |", ["run", "-n", "2", "sh", "-c", "cat"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(lines(r.stdout, rank: 0) == ["data"], "\(r.stdout)")
            #expect(lines(r.stdout, rank: 1).isEmpty, "\(r.stdout)")
        }

        @Test func stdinAllGivesItToEveryRank() throws {
            let r = try runWithInput("echo data |", ["run", "-n", "2", "--stdin", "all", "sh", "-c", "cat"])
            #expect(r.status == 0, "\(r.stderr)")
            for rank in 0..<2 { #expect(lines(r.stdout, rank: rank) == ["data"], "\(r.stdout)") }
        }

        @Test func stdinNoneGivesEndOfFile() throws {
            let r = try runWithInput("echo data |", ["run", "-n", "2", "--stdin", "none", "sh", "-c", "cat; echo eof"])
            #expect(r.status == 0, "\(r.stderr)")
            for rank in 0..<2 { #expect(lines(r.stdout, rank: rank) == ["eof"], "\(r.stdout)") }
        }

        @Test func stdinRankChoosesTheReader() throws {
            let r = try runWithInput("echo data |", ["run", "-n", "3", "--stdin", "2", "sh", "-c", "cat"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(lines(r.stdout, rank: 2) == ["data"], "\(r.stdout)")
            #expect(lines(r.stdout, rank: 0).isEmpty && lines(r.stdout, rank: 1).isEmpty, "\(r.stdout)")
        }

        /// 10 MB, ten times the window between launcher and node: it arrives
        /// whole and in order (the same checksum as the file).
        @Test func largeInputArrivesIntact() throws {
            let file = try bigFile(bytes: 10 << 20)
            defer { unlink(file) }
            let expected = try checksum(of: file)
            let r = try runWithInput("<\(quoted(file))", ["run", "-n", "2", "sh", "-c",
                                                         "if [ $PLEXUS_RANK = 0 ]; then cksum; else cat; fi"], timeout: 120)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(lines(r.stdout, rank: 0) == [expected], "\(r.stdout)")
            #expect(lines(r.stdout, rank: 1).isEmpty, "\(r.stdout)")
        }

        /// A rank that never reads, or reads a little and exits, holds
        /// nothing up: the node drops what it cannot deliver.
        @Test(arguments: [["true"], ["head", "-c", "5"]])
        func aRankThatStopsReadingDoesNotHoldUpTheJob(program: [String]) throws {
            let file = try bigFile(bytes: 4 << 20)
            defer { unlink(file) }
            let r = try runWithInput("<\(quoted(file))", ["run", "-n", "2", "--stdin", "all"] + program, timeout: 60)
            #expect(r.status == 0, "\(r.stderr)")
        }

        @Test(arguments: [
            (["run", "-n", "2", "--stdin", "2", "true"], "--stdin 2 is not a rank of a job of 2 processes"),
            (["run", "-n", "2", "--stdin", "some", "true"], "--stdin 'some' is not a rank, all or none"),
            (["run", "-n", "2", "-x", "PLEXUS_TEST_SURELY_UNSET", "true"], "export it first, or give its value with --env"),
            (["run", "-n", "2", "--env", "1X=2", "true"], "is not NAME, NAME=VALUE or PREFIX*"),
        ])
        func badInputOptionsGetOneLine(args: [String], expected: String) throws {
            let r = try runPlexus(args, timeout: 20)
            #expect(r.status != 0)
            #expect(r.stderr.contains(expected), "\(r.stderr)")
            #expect(r.stderr.split(separator: "\n").count == 1, "expected one line, got: \(r.stderr)")
        }

        @Test(arguments: [
            (["run", "--help"], ["-x, --env <NAME[=VALUE]>", "--stdin <RANK|all|none>", "PATH, LD_LIBRARY_PATH, OMP_* and PLEXUS_*"]),
            (["cc", "--help"], ["--showme", "$PLEXUS_CC", "pkg-config --cflags --libs plexus"]),
            (["c++", "--help"], ["--showme", "$PLEXUS_CXX"]),
            (["--help"], ["Compile and link a C program against Plexus"]),
        ])
        func helpTeachesTheHabits(args: [String], mentions: [String]) throws {
            let r = try runPlexus(args, timeout: 20)
            #expect(r.status == 0)
            for m in mentions { #expect(r.stdout.contains(m), "help for \(args) lacks '\(m)'") }
        }

        /// The same environment on the embedded node and on `plexus node`
        /// daemons: the default set, -x and --env; not the caller's other
        /// variables, nor the nodes' own.
        @Test func environmentIsTheSameLocallyAndAcrossNodes() throws {
            let nodeEnv = ["HABITS_NODE_ONLY": "node"]
            let n1 = try Child(try product("plexus"), ["node", "--listen", "127.0.0.1:0"], environment: nodeEnv)
            let a1 = String(try n1.waitForLine(containing: "listening on").split(separator: " ").last!)
            let n2 = try Child(try product("plexus"), ["node", "--listen", "127.0.0.1:0"], environment: nodeEnv)
            let a2 = String(try n2.waitForLine(containing: "listening on").split(separator: " ").last!)
            defer {
                n1.signal(SIGTERM)
                n2.signal(SIGTERM)
            }
            let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
            let caller = ["FOO": "foo 1", "HABITS_UNLISTED": "secret", "OMP_NUM_THREADS": "3"]
            let script = "echo \"FOO=$FOO BAR=$BAR OMP=$OMP_NUM_THREADS UNLISTED=${HABITS_UNLISTED-unset} "
                + "NODE=${HABITS_NODE_ONLY-unset} RANK=$PLEXUS_RANK\"; echo \"PATH=$PATH\""
            for placement in [["--nodes", "\(a1),\(a2)"], []] {
                let c = try Child(try product("plexus"), ["run", "-n", "2"] + placement
                                  + ["-x", "FOO", "--env", "BAR=baz", "--env", "PLEXUS_RANK=9", "sh", "-c", script],
                                  environment: caller)
                let status = try c.wait(timeout: 60)
                #expect(status == 0, "\(placement): \(c.stderr)")
                for rank in 0..<2 {
                    let got = lines(c.stdout, rank: rank)
                    #expect(got.contains("FOO=foo 1 BAR=baz OMP=3 UNLISTED=unset NODE=unset RANK=\(rank)"), "\(placement): \(c.stdout)")
                    #expect(got.contains("PATH=\(path)"), "\(placement): \(c.stdout)")
                }
            }
            // Input reaches a rank on a remote node too.
            let r = try runWithInput("echo remote |", ["run", "-n", "2", "--nodes", "\(a1),\(a2)", "--stdin", "1", "sh", "-c", "cat"])
            #expect(r.status == 0, "\(r.stderr)")
            #expect(lines(r.stdout, rank: 1) == ["remote"] && lines(r.stdout, rank: 0).isEmpty, "\(r.stdout)")
        }
    }
}

@Suite struct JobEnvironmentTests {
    @Test func requestsAddToTheDefaultSet() throws {
        let caller = ["PATH": "/bin", "OMP_A": "1", "PLEXUS_X": "2", "HOME": "/root", "FOO": "f", "MY_1": "a", "MY_2": "b", "OTHER": "o"]
        let env = try JobEnvironment.inherited(from: caller, requests: ["FOO", "BAR=x=y", "MY_*", "EMPTY="])
        #expect(env == ["PATH": "/bin", "OMP_A": "1", "PLEXUS_X": "2", "FOO": "f", "BAR": "x=y", "MY_1": "a", "MY_2": "b", "EMPTY": ""])
        #expect(throws: EnvironmentError.unset("NOPE")) { try JobEnvironment.inherited(from: caller, requests: ["NOPE"]) }
        for bad in ["", "1A", "A-B", "=v", "A*B", "-*"] {
            #expect(throws: EnvironmentError.badName(bad)) { try JobEnvironment.inherited(from: caller, requests: [bad]) }
        }
        #expect(JobEnvironment.nodeBase(caller) == ["HOME": "/root"])
    }

    @Test func standardInputTargets() {
        #expect(StandardInputTarget(parsing: "all")?.ranks(size: 3) == [0, 1, 2])
        #expect(StandardInputTarget(parsing: "none")?.ranks(size: 3) == [])
        #expect(StandardInputTarget(parsing: "2")?.ranks(size: 3) == [2])
        #expect(StandardInputTarget(parsing: "-1") == nil && StandardInputTarget(parsing: "x") == nil)
    }
}

/// A file of `bytes` pseudo-random bytes in /tmp.
func bigFile(bytes: Int) throws -> String {
    let path = "/tmp/plexus-stdin-\(UInt32.random(in: 0...UInt32.max))"
    var state: UInt64 = 0x9E37_79B9_7F4A_7C15
    var data = [UInt8](repeating: 0, count: bytes)
    for i in 0..<bytes {
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        data[i] = UInt8(truncatingIfNeeded: state >> 33)
    }
    guard FileManager.default.createFile(atPath: path, contents: Data(data)) else { throw HarnessError("cannot write \(path)") }
    return path
}

/// `cksum`'s "CRC SIZE" of a file's contents.
func checksum(of file: String) throws -> String {
    let c = try Child("/bin/sh", ["-c", "cksum < \(quoted(file))"])
    guard try c.wait(timeout: 30) == 0 else { throw HarnessError("cksum failed: \(c.stderr)") }
    return c.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
}

/// A node's standard-input writer for one process: bounded by the window,
/// credits what the process took, and ends with an end-of-file.
@Suite struct InputFeederTests {
    /// Credits as they arrive, for a test to wait on.
    final class Credits: @unchecked Sendable {
        private let condition = NSCondition()
        private var total = 0
        func add(_ n: Int) {
            condition.lock()
            total += n
            condition.broadcast()
            condition.unlock()
        }
        /// Waits until `n` bytes in all were credited; false after 30 s.
        func wait(for n: Int) -> Bool {
            condition.lock()
            defer { condition.unlock() }
            let deadline = Date().addingTimeInterval(30)
            while total < n { if !condition.wait(until: deadline) { return false } }
            return true
        }
        var value: Int {
            condition.lock()
            defer { condition.unlock() }
            return total
        }
    }

    func readAll(_ fd: Int32) -> [UInt8] {
        var out: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return out }
            out.append(contentsOf: buf[0..<n])
        }
    }

    func nonBlockingPipe() -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        _ = pipe(&fds)
        _ = fcntl(fds[1], F_SETFL, fcntl(fds[1], F_GETFL) | O_NONBLOCK)
        return (fds[0], fds[1])
    }

    @Test func holdsNoMoreThanTheWindowAndCreditsWhatWasRead() {
        let p = nonBlockingPipe()
        defer { close(p.read) }
        let credits = Credits()
        let feeder = InputFeeder(fd: p.write, rank: 0) { credits.add($0) }
        let window = ControlMessage.inputWindow
        let data = (0..<window).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        #expect(feeder.put(data, end: false))
        // The pipe holds far less than the window: the chunk is still queued.
        #expect(!feeder.put([1], end: false), "a byte beyond the window was accepted")
        #expect(feeder.put([], end: true))
        #expect(readAll(p.read) == data, "the input arrived changed")
        #expect(credits.wait(for: window))
        #expect(credits.value == window)
    }

    @Test func inputForAProcessThatClosedItsStdinIsDroppedAndCredited() {
        let p = nonBlockingPipe()
        close(p.read)
        let credits = Credits()
        let feeder = InputFeeder(fd: p.write, rank: 0) { credits.add($0) }
        #expect(feeder.put([UInt8](repeating: 1, count: 4096), end: false))
        #expect(feeder.put([UInt8](repeating: 2, count: 4096), end: true))
        #expect(credits.wait(for: 8192))
    }

    @Test func stopDropsWhatAProcessDidNotRead() {
        let p = nonBlockingPipe()
        defer { close(p.read) }
        let credits = Credits()
        let feeder = InputFeeder(fd: p.write, rank: 0) { credits.add($0) }
        let window = ControlMessage.inputWindow
        #expect(feeder.put([UInt8](repeating: 3, count: window), end: false))
        feeder.stop()
        #expect(credits.wait(for: window))
        // The feeder closed its end: what the pipe held, then end-of-file.
        #expect(readAll(p.read).count < window)
    }
}
