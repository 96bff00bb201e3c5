#if canImport(Glibc)
import Glibc
#endif
import Foundation
@_exported import Transport

/// The directory holding the built products (plexus, examples): the test
/// bundle lives there too.
public let productsDirectory: String = {
    let exe = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
    var dir = exe.deletingLastPathComponent()
    // On Linux the bundle is .build/<triple>/debug/PlexusPackageTests.xctest.
    if dir.lastPathComponent.hasSuffix(".xctest") { dir = dir.deletingLastPathComponent() }
    return dir.path
}()

public func product(_ name: String) throws -> String {
    let path = productsDirectory + "/" + name
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw HarnessError("\(path) is missing: build the package first (swift build)")
    }
    return path
}

public struct HarnessError: Error, CustomStringConvertible {
    public var description: String
    public init(_ d: String) { description = d }
}

/// A real child process (the plexus CLI) whose output the test reads line by
/// line. It is killed, with its whole process group, when the test ends, even
/// if the test failed.
public final class Child: @unchecked Sendable {
    public let process = Process()
    private let out = Locked<[UInt8]>([])
    private let err = Locked<[UInt8]>([])
    private let lines = Mailbox<String>(capacity: 100_000)
    private let outClosed = AtomicFlag()
    private let errClosed = AtomicFlag()

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { _, n in n }
        process.environment = env
        let o = Pipe(), e = Pipe()
        process.standardOutput = o
        process.standardError = e
        process.standardInput = FileHandle.nullDevice
        let partial = Locked<[UInt8]>([])
        let lines = self.lines
        let out = self.out, err = self.err
        let outClosed = self.outClosed, errClosed = self.errClosed
        o.fileHandleForReading.readabilityHandler = { h in
            let d = h.availableData
            if d.isEmpty { h.readabilityHandler = nil; outClosed.set(); return }
            out.withLock { $0.append(contentsOf: d) }
            let complete: [String] = partial.withLock { p in
                p.append(contentsOf: d)
                var ls: [String] = []
                while let nl = p.firstIndex(of: 10) {
                    ls.append(String(decoding: p[..<nl], as: UTF8.self))
                    p.removeSubrange(...nl)
                }
                return ls
            }
            for l in complete { lines.put(l) }
        }
        e.fileHandleForReading.readabilityHandler = { h in
            let d = h.availableData
            if d.isEmpty { h.readabilityHandler = nil; errClosed.set(); return }
            err.withLock { $0.append(contentsOf: d) }
        }
        try process.run()
    }

    /// Waits for a stdout line containing `text`.
    public func waitForLine(containing text: String, timeout: Double = 20) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0, let l = lines.take(timeout: left) else {
                throw HarnessError("no line containing '\(text)' within \(timeout) s; stdout: \(stdout) stderr: \(stderr)")
            }
            if l.contains(text) { return l }
        }
    }

    /// Waits for the process to exit; returns its status (128+N for signal N).
    public func wait(timeout: Double = 60) throws -> Int32 {
        let done = DispatchSemaphore(value: 0)
        let p = process
        DispatchQueue.global().async { p.waitUntilExit(); done.signal() }
        if done.wait(timeout: .now() + timeout) == .timedOut {
            kill()
            throw HarnessError("\(process.arguments ?? []) did not exit within \(timeout) s; stderr: \(stderr)")
        }
        // Let the pipe handlers drain what is left (bounded: a leftover
        // grandchild could hold the pipes open).
        let drainDeadline = Date().addingTimeInterval(3)
        while !(outClosed.isSet && errClosed.isSet) && Date() < drainDeadline { usleep(2_000) }
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }

    public var stdout: String { String(decoding: out.value, as: UTF8.self) }
    public var stderr: String { String(decoding: err.value, as: UTF8.self) }

    public func signal(_ sig: Int32) { Glibc.kill(process.processIdentifier, sig) }

    public func kill() {
        if process.isRunning { Glibc.kill(process.processIdentifier, SIGKILL) }
    }

    deinit { kill() }
}

/// Runs plexus with arguments to completion.
public func runPlexus(_ args: [String], timeout: Double = 60) throws -> (status: Int32, stdout: String, stderr: String) {
    let c = try Child(try product("plexus"), args)
    let s = try c.wait(timeout: timeout)
    return (s, c.stdout, c.stderr)
}

/// PIDs of live processes whose command line contains `marker`.
public func processes(containing marker: String) -> [Int32] {
    let me = getpid()
    var found: [Int32] = []
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    for e in entries {
        guard let pid = Int32(e), pid != me,
              let d = FileManager.default.contents(atPath: "/proc/\(e)/cmdline") else { continue }
        let cmd = String(decoding: d.map { $0 == 0 ? 32 : $0 }, as: UTF8.self)
        // Zombies have an empty cmdline and are no longer running.
        if cmd.contains(marker) { found.append(pid) }
    }
    return found
}

/// A marker unique to one test, put on every job process's command line.
public func uniqueMarker() -> String { "plexus-test-\(UInt32.random(in: 0...UInt32.max))" }
