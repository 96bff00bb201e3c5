#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Cluster
import Foundation
import NameService
import Transport

/// `plexus bench names`: global-PID allocation latency and throughput of the
/// replicated name service (real `plexus node` replicas on loopback, fsync on)
/// next to a local etcd cluster doing the same job the way an etcd user does
/// it (one put; the id is the response header's revision), measured in the
/// same run; ratios are what compare across machines. A second etcd row
/// shows the dense-counter way (read, compare-and-swap, retried).
struct NamesBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "names",
        abstract: "Measure PID allocation: p50/p99 latency and throughput, Raft replicas vs etcd.",
        discussion: """
            For each replica count and client count: start that many `plexus node` replicas
            on 127.0.0.1 (data in a temporary directory, every log append fsynced), let
            each of C clients (one session each) allocate PIDs back to back, and report
            p50, p99 and operations per second. Then the same against a local 3-member etcd
            (Debian's etcd-server), in two ways:

              etcd (put, header revision): one put of the process row; the PID is
                the revision in the response header, unique and increasing
                cluster-wide. One round trip, no retries: how an etcd user
                allocates unique ids.
              etcd (CAS counter, retried): dense PIDs from a counter key, as
                EtcdNameClient.allocatePID keeps them: a read, then a transaction
                that writes counter+1 if the counter is unchanged; a lost race
                backs off and retries, so many clients collapse.

            Both talk to etcd's HTTP/JSON gateway, as Plexus's etcd backend does. Native
            gRPC is a little faster: Scripts/etcd-grpc-vs-gateway.py measured its puts at
            9-13 % lower p50 and 4-15 % higher throughput on a 2-vCPU machine. The last
            lines give the ratios plexus / etcd (put, header revision) (latency: below 1.0
            is better for plexus; throughput: above 1.0 is better for plexus).

            Examples:
              plexus bench names
              plexus bench names --replicas 3 --clients 1,16 --ops 500 --json names.json
            """)

    @Option(name: .long, help: "Replica counts to measure, comma-separated.")
    var replicas: String = "3,5"

    @Option(name: .long, help: "Concurrent client counts, comma-separated.")
    var clients: String = "1,64"

    @Option(name: .long, help: "PID allocations per configuration (split among the clients).")
    var ops: Int = 2000

    @Flag(name: .long, help: "Leave out the etcd comparison (both etcd rows).")
    var skipEtcd = false

    @Option(name: .long, help: ArgumentHelp(
        "Also write the rows as a JSON array to this file, each row with the metadata of the run (\"run\"; processes is the row's replica count). Results kept in the repository go in Papers/data/YYYY-MM-DD-SHORTCOMMIT-names.json.",
        valueName: "file"))
    var json: String?

    func validate() throws {
        guard ops >= 10 else { throw ValidationError("--ops must be at least 10") }
        guard let r = Self.counts(replicas), r.allSatisfy({ $0 >= 1 && $0 <= 9 }) else {
            throw ValidationError("--replicas takes counts from 1 to 9, e.g. 3,5")
        }
        guard let c = Self.counts(clients), c.allSatisfy({ $0 >= 1 && $0 <= 1024 }) else {
            throw ValidationError("--clients takes counts from 1 to 1024, e.g. 1,64")
        }
        _ = r
        _ = c
        if let json { try OutputFile.validate(json, option: "--json") }
    }

    static func counts(_ text: String) -> [Int]? {
        let values = text.split(separator: ",").map { Int($0) }
        guard !values.isEmpty, values.allSatisfy({ $0 != nil }) else { return nil }
        return values.map { $0! }
    }

    struct Row: Codable {
        var backend: String
        /// How the backend allocates (etcd: "put, header revision" or "CAS counter, retried").
        var variant: String?
        var replicas: Int
        var clients: Int
        var operations: Int
        var p50Millis: Double
        var p99Millis: Double
        var operationsPerSecond: Double

        /// "etcd (put, header revision)", or the backend alone.
        var label: String { variant.map { "\(backend) (\($0))" } ?? backend }
    }

    func run() throws {
        let started = RunMetadata.now()
        var rows: [Row] = []
        let replicaCounts = Self.counts(replicas)!
        let clientCounts = Self.counts(clients)!
        print("backend                      replicas  clients  ops     p50 ms   p99 ms   ops/s")
        func show(_ row: Row) {
            rows.append(row)
            print([row.label.padding(28), "\(row.replicas)".padding(9), "\(row.clients)".padding(8),
                   "\(row.operations)".padding(7), String(format: "%.3f", row.p50Millis).padding(8),
                   String(format: "%.3f", row.p99Millis).padding(8), String(format: "%.0f", row.operationsPerSecond)]
                .joined(separator: " "))
        }
        for n in replicaCounts {
            let cluster = try LocalReplicas(count: n)
            defer { cluster.stop() }
            for c in clientCounts {
                show(try measure("plexus", replicas: n, clients: c) {
                    let client = try NameClient(replicas: cluster.addresses, options: NameClient.Options(timeoutMillis: 60_000))
                    return { _ = try client.allocatePID(node: "bench", address: "x", parent: nil) }
                })
            }
        }
        var etcdNote: String?
        if skipEtcd {
            etcdNote = "etcd: skipped (--skip-etcd)"
        } else if !FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") {
            etcdNote = "etcd: skipped, not installed (apt-get install etcd-server)"
        } else {
            let etcd = try LocalEtcd(members: 3)
            defer { etcd.stop() }
            // The fair row: one put of a process row (the same JSON the CAS
            // path writes), the PID being the put's revision.
            let row = Array(#"{"address":"x","node":"bench","start":0,"state":"starting"}"#.utf8)
            for c in clientCounts {
                show(try measure("etcd", variant: Self.etcdPut, replicas: 3, clients: c) {
                    let client = try EtcdNameClient(endpoints: etcd.endpoints, prefix: "/bench", timeoutMillis: 60_000)
                    let key = "/c\(UInt32.random(in: 0...UInt32.max))"
                    return { _ = try client.uniqueRevision(putting: row, at: key) }
                })
            }
            for c in clientCounts {
                show(try measure("etcd", variant: Self.etcdCAS, replicas: 3, clients: c) {
                    let client = try EtcdNameClient(endpoints: etcd.endpoints, prefix: "/bench", timeoutMillis: 60_000)
                    return { _ = try client.allocatePID(node: "bench", address: "x", parent: nil) }
                })
            }
        }
        print("")
        if let etcdNote { print(etcdNote) }
        for c in clientCounts {
            guard let etcd = rows.first(where: { $0.variant == Self.etcdPut && $0.clients == c }) else { continue }
            for row in rows where row.backend == "plexus" && row.clients == c {
                print("ratio plexus(\(row.replicas)) / etcd(3) (put, header revision), \(c) client(s): p50 "
                    + String(format: "%.2f", row.p50Millis / etcd.p50Millis) + "x, p99 "
                    + String(format: "%.2f", row.p99Millis / etcd.p99Millis) + "x, throughput "
                    + String(format: "%.2f", row.operationsPerSecond / etcd.operationsPerSecond) + "x")
            }
        }
        if let json {
            try OutputFile.write(rows.map { row in
                var run = started
                run.processes = row.replicas
                return StampedRow(row: row, run: run)
            }, to: json, option: "--json")
        }
        writeAll(2, "plexus bench names: to keep these figures in the repository, write them to \(started.suggestedPath(kind: "names"))\n")
    }

    static let etcdPut = "put, header revision"
    static let etcdCAS = "CAS counter, retried"

    /// One client's allocation: one PID per call.
    typealias Allocate = @Sendable () throws -> Void

    /// Each client allocates PIDs back to back; latencies of every call.
    func measure(_ backend: String, variant: String? = nil, replicas: Int, clients: Int,
                 make: () throws -> Allocate) throws -> Row {
        let backends = try (0..<clients).map { _ in try make() }
        let perClient = max(1, ops / clients)
        for allocate in backends { try allocate() }
        let latencies = Locked<[UInt64]>([])
        let failures = Locked<[String]>([])
        let group = DispatchGroup()
        let start = DispatchTime.now().uptimeNanoseconds
        for b in backends {
            group.enter()
            Thread {
                var mine: [UInt64] = []
                mine.reserveCapacity(perClient)
                for _ in 0..<perClient {
                    let t0 = DispatchTime.now().uptimeNanoseconds
                    do { try b() } catch {
                        failures.withLock { $0.append("\(error)") }
                        break
                    }
                    mine.append(DispatchTime.now().uptimeNanoseconds - t0)
                }
                latencies.withLock { $0 += mine }
                group.leave()
            }.start()
        }
        group.wait()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        let label = variant.map { "\(backend) (\($0))" } ?? backend
        if let first = failures.value.first {
            throw ValidationError("\(label) with \(replicas) replicas and \(clients) clients failed: \(first)")
        }
        let sorted = latencies.value.sorted()
        func percentile(_ p: Double) -> Double {
            Double(sorted[min(sorted.count - 1, Int(Double(sorted.count) * p))]) / 1e6
        }
        return Row(backend: backend, variant: variant, replicas: replicas, clients: clients, operations: sorted.count,
                   p50Millis: percentile(0.5), p99Millis: percentile(0.99),
                   operationsPerSecond: Double(sorted.count) / elapsed)
    }
}

/// `count` free ports on 127.0.0.1, chosen below the ephemeral range and
/// checked by binding: a replica dialling a peer that is not up yet gets an
/// ephemeral source port, which must not be one picked for a listener.
func freeLoopbackPorts(_ count: Int) throws -> [UInt16] {
    var ports: [UInt16] = []
    for _ in 0..<1000 where ports.count < count {
        let port = UInt16.random(in: 10_000...32_000)
        if ports.contains(port) { continue }
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ValidationError("socket failed: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr)
        let bound = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        if bound { ports.append(port) }
    }
    guard ports.count == count else { throw ValidationError("cannot find \(count) free loopback ports") }
    return ports
}

/// Child processes of a benchmark, with their scratch directory; `stop`
/// kills them all and removes the directory.
final class LocalProcesses {
    let data: String
    private var processes: [Process] = []

    init(prefix: String) {
        data = NSTemporaryDirectory() + "\(prefix)-\(UInt32.random(in: 0...UInt32.max))"
    }

    /// Starts `path` with `arguments`, output discarded.
    func start(_ path: String, _ arguments: [String]) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = arguments
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        processes.append(p)
    }

    func stop() {
        for p in processes where p.isRunning { kill(p.processIdentifier, SIGKILL) }
        for p in processes { p.waitUntilExit() }
        processes = []
        try? FileManager.default.removeItem(atPath: data)
    }
}

/// `count` replicas as child `plexus node` processes, killed by `stop`.
final class LocalReplicas {
    let addresses: [String]
    private let children = LocalProcesses(prefix: "plexus-bench")

    init(count: Int) throws {
        addresses = try freeLoopbackPorts(count).map { "127.0.0.1:\($0)" }
        let list = addresses.enumerated().map { "\($0.offset + 1)=\($0.element)" }.joined(separator: ",")
        do {
            for id in 1...count {
                try children.start(selfExecutable(), ["node", "--listen", "127.0.0.1:0", "--replica-id", "\(id)", "--replicas", list,
                                                      "--data-dir", "\(children.data)/r\(id)"])
            }
            let probe = try NameClient(replicas: addresses, options: NameClient.Options(timeoutMillis: 15_000))
            _ = try probe.allocatePID(node: "bench", address: "probe", parent: nil)
        } catch {
            stop()
            throw ValidationError("cannot start \(count) local replicas: \(error)")
        }
    }

    func stop() { children.stop() }
}

/// A local etcd cluster of child processes, killed by `stop`.
final class LocalEtcd {
    let endpoints: [String]
    private let children = LocalProcesses(prefix: "plexus-bench-etcd")

    init(members: Int) throws {
        let ports = try freeLoopbackPorts(2 * members)
        endpoints = (0..<members).map { "127.0.0.1:\(ports[2 * $0])" }
        let cluster = (0..<members).map { "e\($0)=http://127.0.0.1:\(ports[2 * $0 + 1])" }.joined(separator: ",")
        do {
            for i in 0..<members {
                try children.start("/usr/bin/etcd", [
                    "--name", "e\(i)", "--data-dir", "\(children.data)/e\(i)",
                    "--listen-client-urls", "http://\(endpoints[i])", "--advertise-client-urls", "http://\(endpoints[i])",
                    "--listen-peer-urls", "http://127.0.0.1:\(ports[2 * i + 1])",
                    "--initial-advertise-peer-urls", "http://127.0.0.1:\(ports[2 * i + 1])",
                    "--initial-cluster", cluster, "--initial-cluster-state", "new"])
            }
            let probe = try EtcdNameClient(endpoints: endpoints, prefix: "/bench", timeoutMillis: 15_000)
            _ = try probe.allocatePID(node: "bench", address: "probe", parent: nil)
        } catch {
            stop()
            throw ValidationError("cannot start a local \(members)-member etcd: \(error)")
        }
    }

    func stop() { children.stop() }
}
