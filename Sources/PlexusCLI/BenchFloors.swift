#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import CFault
import Cluster
import Foundation
import Plexus
import Workloads

/// The floors of `plexus bench memory`'s limits, measured between two plain
/// processes the bench starts (`_floor-peer serve` and `_floor-peer
/// measure`): no runtime, no serving threads, nothing but the exchange.
struct FloorMeasurement: Codable {
    /// Busy-poll 16 B -> 4 KiB round trips, microseconds.
    var pageRoundTrips: [Double] = []
    /// Busy-poll 16 B -> 16 B round trips, microseconds.
    var roundTrips: [Double] = []
    /// Faults served by one mprotect: the mean of each round of
    /// `FloorPeer.faultPages` faults, microseconds.
    var faults: [Double] = []
    /// Where the two processes ran ("client: CPU 0; server: CPU 1").
    var binding = ""

    mutating func pool(_ other: FloorMeasurement) {
        pageRoundTrips += other.pageRoundTrips
        roundTrips += other.roundTrips
        faults += other.faults
        if binding != other.binding { binding += " / " + other.binding }
    }

    var medians: PhysicalFloors {
        PhysicalFloors(pageRoundTrip: Summary(pageRoundTrips).median, roundTrip: Summary(roundTrips).median,
                       fault: Summary(faults).median)
    }

    /// The floors as rows of the table (they have no floor of their own).
    func rows() -> [BenchmarkRow] {
        [BenchmarkRow(name: "busy-poll TCP round trip 16 B -> 4 KiB, plain processes", unit: "us", samples: pageRoundTrips, floor: .nan),
         BenchmarkRow(name: "same, 16 B -> 16 B", unit: "us", samples: roundTrips, floor: .nan),
         BenchmarkRow(name: "fault served by one mprotect (mean of \(FloorPeer.faultPages) per sample)", unit: "us",
                      samples: faults, floor: .nan)]
    }
}

enum FloorPeers {
    /// Starts a server and a client `_floor-peer` and returns what the
    /// client measured: `samples` round trips of each size and the fault
    /// cost. With `bind` auto and two CPUs or more, the two processes are
    /// bound to the first two CPUs this process may use, as the job's ranks are.
    static func measure(samples: Int, bind: CPUBindingMode) throws -> FloorMeasurement {
        var cpus = [Int32](repeating: 0, count: 1024)
        let allowed = bind == .auto ? Int(cfault_allowed_cpus(&cpus, Int32(cpus.count))) : 0
        func cpu(_ i: Int) -> [String] { allowed >= 2 ? ["--cpu", "\(cpus[i])"] : [] }
        let server = Process(), client = Process()
        defer {
            for p in [client, server] where p.isRunning { kill(p.processIdentifier, SIGKILL) }
            for p in [client, server] where p.processIdentifier != 0 { p.waitUntilExit() }
        }
        server.executableURL = URL(fileURLWithPath: selfExecutable())
        server.arguments = ["bench", "_floor-peer", "serve"] + cpu(1)
        let serverOut = Pipe()
        server.standardOutput = serverOut
        try server.run()
        // The server prints its port once it listens.
        var line = Data()
        while !line.contains(10) {
            let d = serverOut.fileHandleForReading.availableData
            if d.isEmpty { break }
            line += d
        }
        let text = String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.hasPrefix("port "), let port = UInt16(text.dropFirst(5)) else {
            throw FloorPeerError("the floor server did not report its port (it printed '\(text)')")
        }
        client.executableURL = URL(fileURLWithPath: selfExecutable())
        client.arguments = ["bench", "_floor-peer", "measure", "--port", "\(port)", "--samples", "\(samples)"] + cpu(0)
        let clientOut = Pipe()
        client.standardOutput = clientOut
        try client.run()
        let data = clientOut.fileHandleForReading.readDataToEndOfFile()
        client.waitUntilExit()
        guard client.terminationReason == .exit, client.terminationStatus == 0 else {
            throw FloorPeerError("the floor client failed (status \(client.terminationStatus))")
        }
        do {
            var m = try JSONDecoder().decode(FloorMeasurement.self, from: data)
            m.binding = allowed >= 2 ? "client: CPU \(cpus[0]); server: CPU \(cpus[1])" : "none"
            return m
        } catch {
            throw FloorPeerError("the floor client wrote no measurement: \(error)")
        }
    }
}

struct FloorPeerError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = "plexus bench: \(d)" }
}

/// `plexus bench _floor-peer serve|measure`: one of the two plain processes
/// whose round trip and fault cost make `plexus bench`'s limits.
struct FloorPeer: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "_floor-peer", shouldDisplay: false)

    /// Faults per sample of the fault cost, and samples.
    static let faultPages: UInt32 = 512
    static let faultRounds: UInt32 = 15

    @Argument var role: String
    @Option var port: UInt16?
    @Option var samples: Int = 1000
    @Option var cpu: Int32?

    func validate() throws {
        guard ["serve", "measure"].contains(role) else { throw ValidationError("_floor-peer takes serve or measure") }
        guard role == "serve" || port != nil else { throw ValidationError("_floor-peer measure needs --port") }
        guard samples >= 1 else { throw ValidationError("--samples must be at least 1") }
    }

    func run() throws {
        // Never outlive the bench: the server spins.
        _ = cfaultSetParentDeathSignal()
        if role == "serve" {
            if let cpu { try bindTo(cpu) }
            let (fd, port) = try BusyPollFloor.listen()
            writeAll(1, "port \(port)\n")
            try BusyPollFloor.serve(listener: fd)
            return
        }
        // The fault cost first, unbound, so that the second thread it runs
        // takes another CPU than the faulting one.
        var rounds = [Double](repeating: 0, count: Int(Self.faultRounds))
        let error = cfault_measure_fault_cost(Self.faultPages, Self.faultRounds, &rounds)
        guard error == 0 else { throw FloorPeerError("measuring the fault cost failed: \(String(cString: strerror(error)))") }
        if let cpu { try bindTo(cpu) }
        let (page, small) = try BusyPollFloor.measure(port: port!, samples: samples)
        let m = FloorMeasurement(pageRoundTrips: page, roundTrips: small, faults: rounds.map { $0 / 1000 })
        writeAll(1, String(decoding: try JSONEncoder().encode(m), as: UTF8.self))
    }

    private func bindTo(_ cpu: Int32) throws {
        guard cfault_bind_current_thread(cpu) == 0 else {
            throw FloorPeerError("cannot bind to CPU \(cpu): \(String(cString: strerror(errno)))")
        }
    }
}
