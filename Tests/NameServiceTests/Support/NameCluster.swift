#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NameService
import NamesCore
import TestSupport

/// A cluster of real `plexus node` daemons, each hosting one name-service
/// replica, on a random loopback address (127.a.b.1) and random free ports
/// (see `freePorts` for why not ephemeral ones).
/// Every process it started is SIGKILLed when it is deinitialised, also when
/// the test failed; its data directories are removed.
final class NameCluster: @unchecked Sendable {
    static let tickMillis = 20
    static let electionTicks = 10
    /// The base election timeout (each wait is drawn from [T, 2T)).
    static var electionTimeoutMillis: Int { tickMillis * electionTicks }

    let size: Int
    let host: String
    /// Ports of replicas 1...size, then of the replicas started with `startJoiner`.
    private(set) var ports: [UInt16]
    /// Replicas started with --join-existing (ids above `size`).
    private(set) var joiners: Set<Int> = []
    let dataRoot: String
    let extraArguments: [String]
    private(set) var nodes: [Child?]

    var addresses: [String] { ports.map { "\(host):\($0)" } }
    var replicasArgument: String { (1...size).map { "\($0)=\(addresses[$0 - 1])" }.joined(separator: ",") }
    /// Every replica started so far, founders and joiners.
    var allReplicas: [Int] { Array(1...ports.count) }
    /// What a joiner gets as --replicas: every replica known when it starts.
    var allReplicasArgument: String { allReplicas.map { "\($0)=\(addresses[$0 - 1])" }.joined(separator: ",") }
    func address(_ replica: Int) -> String { addresses[replica - 1] }
    func isRunning(_ replica: Int) -> Bool { nodes[replica - 1] != nil }

    /// Nodes register themselves under /nodes only with `registerNodes`, so
    /// that other tests see exactly the writes they make.
    init(size: Int, extraArguments: [String] = [], registerNodes: Bool = false) throws {
        self.size = size
        self.extraArguments = extraArguments + (registerNodes ? [] : ["--no-register"])
        host = "127.\(Int.random(in: 1...254)).\(Int.random(in: 1...254)).1"
        ports = try Self.freePorts(host: host, count: size)
        dataRoot = NSTemporaryDirectory() + "plexus-names-\(UInt32.random(in: 0...UInt32.max))"
        nodes = Array(repeating: nil, count: size)
        for replica in 1...size { try start(replica) }
    }

    deinit {
        for node in nodes { node?.kill() }
        try? FileManager.default.removeItem(atPath: dataRoot)
    }

    func dataDirectory(_ replica: Int) -> String { "\(dataRoot)/r\(replica)" }

    /// Starts (or restarts) replica `replica` (1-based) and waits until it serves.
    func start(_ replica: Int) throws {
        nodes[replica - 1]?.kill()
        // Founders keep the founding list on restarts (they learn later
        // replicas from their log); a joiner lists everyone known at its start.
        let joining = joiners.contains(replica)
        let child = try Child(try product("plexus"), [
            "node", "--listen", "\(host):0", "--replica-id", "\(replica)",
            "--replicas", joining ? allReplicasArgument : replicasArgument,
            "--data-dir", dataDirectory(replica), "--tick-ms", "\(Self.tickMillis)",
            "--election-ticks", "\(Self.electionTicks)",
        ] + (joining ? ["--join-existing"] : []) + extraArguments)
        nodes[replica - 1] = child
        _ = try child.waitForLine(containing: "name-service replica \(replica) serving")
    }

    /// Starts the next replica (id `allReplicas.count + 1`) on a new port with
    /// --join-existing, so that it waits to be added; returns its id.
    func startJoiner() throws -> Int {
        var port: UInt16
        repeat { port = try Self.freePorts(host: host, count: 1)[0] } while ports.contains(port)
        ports.append(port)
        nodes.append(nil)
        let replica = ports.count
        joiners.insert(replica)
        try start(replica)
        return replica
    }

    func kill(_ replica: Int) {
        guard let node = nodes[replica - 1] else { return }
        node.kill()
        _ = try? node.wait(timeout: 10)
        nodes[replica - 1] = nil
    }

    /// The node-daemon address (`plexus run --nodes`) of replica `replica`'s node.
    func nodeAddress(_ replica: Int) throws -> String {
        let out = nodes[replica - 1]?.stdout ?? ""
        guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix("plexus node listening on ") }) else {
            throw HarnessError("replica \(replica)'s node has not printed its address: \(out)")
        }
        return String(line.dropFirst("plexus node listening on ".count))
    }

    func stderr(_ replica: Int) -> String { nodes[replica - 1]?.stderr ?? "" }

    func client(_ replicas: [Int]? = nil, timeoutMillis: Int = 5000, followRedirects: Bool = true) throws -> NameClient {
        let chosen = (replicas ?? Array(1...size)).map { addresses[$0 - 1] }
        return try NameClient(replicas: chosen, options: NameClient.Options(
            timeoutMillis: timeoutMillis, attemptTimeoutMillis: 1000, followRedirects: followRedirects))
    }

    func status(_ replica: Int) -> ReplicaStatus? {
        guard let client = try? self.client([replica], timeoutMillis: 500) else { return nil }
        return try? client.status(of: addresses[replica - 1])
    }

    /// Polls until a live replica leads with a quorum and the others alive agree.
    @discardableResult
    func waitForLeader(among live: [Int]? = nil, everyoneAgrees: Bool = false, timeout: Double = 10) throws -> Int {
        let candidates = live ?? allReplicas.filter { nodes[$0 - 1] != nil }
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let statuses = candidates.compactMap { status($0) }
            // A majority of the leader's configuration (`size` unless replicas
            // were added or removed) follows it.
            if let leader = statuses.first(where: { $0.role == "leader" && $0.quorum.hasPrefix("leading") }),
               statuses.filter({ $0.leader == leader.id && leader.members.contains($0.id) }).count * 2 > leader.members.count,
               !everyoneAgrees || statuses.count == candidates.count && statuses.allSatisfy({ $0.leader == leader.id }) {
                return Int(leader.id.rawValue)
            }
            usleep(20_000)
        }
        throw HarnessError("no leader among replicas \(candidates) within \(timeout) s: "
            + candidates.map { "r\($0): \(status($0).map { "\($0.role) \($0.quorum)" } ?? "no answer")" }.joined(separator: "; "))
    }

    /// Cuts the Raft links between `group` and everyone else (fault injection).
    func partition(_ group: [Int]) throws {
        let others = (1...size).filter { !group.contains($0) }
        let client = try self.client()
        for r in group where nodes[r - 1] != nil {
            try client.isolate(addresses[r - 1], from: others.map { ReplicaID(UInt64($0)) })
        }
        for r in others where nodes[r - 1] != nil {
            try client.isolate(addresses[r - 1], from: group.map { ReplicaID(UInt64($0)) })
        }
    }

    func heal() throws {
        let client = try self.client()
        for r in 1...size where nodes[r - 1] != nil { try client.isolate(addresses[r - 1], from: []) }
    }

    /// Free ports on `host`, chosen at random BELOW the kernel's ephemeral
    /// range and checked by binding. Not ephemeral ports on purpose: replicas
    /// dial peers that are not listening yet, and the source port of such a
    /// connection (on the same 127.a.b.1 address) comes from the ephemeral
    /// range, so a port picked there could be taken before its replica binds it.
    static func freePorts(host: String, count: Int) throws -> [UInt16] {
        var ports: [UInt16] = []
        var attempts = 0
        while ports.count < count {
            attempts += 1
            guard attempts < 1000 else { throw HarnessError("no free port on \(host) after 1000 tries") }
            let port = UInt16.random(in: 10_000...32_000)
            if ports.contains(port) { continue }
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw HarnessError("socket: \(errno)") }
            defer { close(fd) }
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &sa.sin_addr)
            let r = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if r == 0 { ports.append(port) }
        }
        return ports
    }
}
