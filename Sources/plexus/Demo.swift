import ArgumentParser
import Cluster
import Foundation
import Plexus

struct Demo: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the demonstration job on an embedded local cluster.",
        discussion: """
            Starts a 4-process job on this machine (embedded node on loopback) that passes a
            token around a ring of ranks over TCP: every hop is a real message between
            real processes. Each rank adds its rank to the token, so the final value
            proves every hop happened.
            """)

    @Option(name: .long, help: "Number of processes.")
    var processes: Int = 4

    @Option(name: .long, help: "Times the token goes around.")
    var laps: Int = 5

    @OptionGroup var common: CommonOptions

    func validate() throws {
        guard processes >= 2 else { throw ValidationError("--processes must be at least 2 for a ring") }
        guard laps >= 1 else { throw ValidationError("--laps must be at least 1") }
    }

    func run() throws {
        let logger = try common.makeLogger("plexus.demo")
        let spec = JobSpec(processes: processes, nodes: [], program: selfExecutable(),
                           arguments: ["_demo-ring", "--laps", "\(laps)"])
        let launcher = Launcher(spec: spec, logger: logger, trampoline: selfExecutable())
        let sources = onTerminationSignals { launcher.interrupt(signal: $0) }
        defer { for s in sources { s.cancel() } }
        let result = try launcher.run()
        if result.status != 0 { throw ExitCode(result.status) }
        writeAll(1, String(format: "demo finished in %.2f s\n", result.seconds))
    }
}

/// The demo's job process: one rank of the token ring.
struct DemoRing: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_demo-ring", shouldDisplay: false)

    @Option var laps: Int = 5

    func run() throws {
        let px = try Plexus.join()
        let next = (px.rank + 1) % px.size
        var token = 0
        var lapMicros: [Double] = []
        for _ in 0..<laps {
            let t0 = Date()
            if px.rank == 0 { try px.send(withUnsafeBytes(of: token) { Array($0) }, to: next) }
            let (_, bytes) = try px.receive()
            token = bytes.withUnsafeBytes { $0.loadUnaligned(as: Int.self) } + px.rank
            if px.rank != 0 { try px.send(withUnsafeBytes(of: token) { Array($0) }, to: next) }
            lapMicros.append(Date().timeIntervalSince(t0) * 1e6)
        }
        try px.barrier()
        if px.rank == 0 {
            let expected = laps * px.size * (px.size - 1) / 2
            let median = lapMicros.sorted()[lapMicros.count / 2]
            print("token went \(laps) times around \(px.size) processes: value \(token), expected \(expected)")
            print(String(format: "median lap %.0f µs (%d hops, %.0f µs per hop)", median, px.size, median / Double(px.size)))
            if token != expected { throw ExitCode(1) }
        }
        try px.finalize()
    }
}
