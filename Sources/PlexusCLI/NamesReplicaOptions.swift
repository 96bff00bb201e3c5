import ArgumentParser
import Cluster
import Foundation
import Logging
import NameService
import NamesCore
import Transport

/// The options of `plexus node` that make it host a name-service replica.
struct ReplicaOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "Host name-service replica N (a member of --replicas).",
        discussion: "Without it the node hosts no replica.", valueName: "N"))
    var replicaId: UInt64?

    @Option(name: .long, help: ArgumentHelp(
        "Every replica of the name service as ID=IP:PORT, comma-separated; the same list on every replica.",
        valueName: "ID=IP:PORT,..."))
    var replicas: String?

    @Option(name: .long, help: ArgumentHelp(
        "Directory for this replica's log and snapshots (created if missing). Keep it across restarts.",
        valueName: "DIR"))
    var dataDir: String?

    @Option(name: .long, help: "Raft tick in milliseconds (election timeout = --election-ticks ticks, randomised up to twice that).")
    var tickMs: Int = 25

    @Option(name: .long, help: "Election timeout in ticks.")
    var electionTicks: Int = 12

    @Option(name: .long, help: "Snapshot the state and compact the log every N applied entries.")
    var snapshotEvery: UInt64 = 1000

    @Flag(name: .long, help: ArgumentHelp(
        "Join a running name service instead of founding one: wait, without campaigning, until `plexus cluster add` adds this replica.",
        discussion: "--replicas then lists the current members and this replica. Keep the flag on restarts; a replica that has been added knows its membership from its data directory."))
    var joinExisting = false

    @Flag(name: .long, help: .hidden)
    var namesFaultInjection = false

    /// Test hook: after N more disk writes, every write fails with ENOSPC.
    @Option(name: .long, help: .hidden)
    var namesFailWritesAfter: Int?

    var hostsReplica: Bool { replicaId != nil }

    func validate() throws {
        guard let id = replicaId else {
            if replicas != nil || dataDir != nil || joinExisting {
                throw ValidationError("--replicas, --data-dir and --join-existing need --replica-id N (which replica this node hosts)")
            }
            return
        }
        guard replicas != nil else {
            throw ValidationError("--replica-id \(id) needs --replicas, e.g. --replicas 1=10.0.0.1:7401,2=10.0.0.2:7401,3=10.0.0.3:7401")
        }
        guard dataDir != nil else {
            throw ValidationError("--replica-id \(id) needs --data-dir DIR, where the replica keeps its log across restarts")
        }
        guard tickMs >= 1, tickMs <= 10_000 else { throw ValidationError("--tick-ms must be between 1 and 10000") }
        guard electionTicks >= 4 else { throw ValidationError("--election-ticks must be at least 4") }
        guard snapshotEvery >= 1 else { throw ValidationError("--snapshot-every must be at least 1") }
    }

    /// Starts the replica, or returns nil if this node hosts none.
    func start(logger: Logger) throws -> NameReplica? {
        guard let id = replicaId, let replicas, let dataDir else { return nil }
        let map: [ReplicaID: SocketAddress]
        do { map = try ReplicaConfiguration.parseReplicas(replicas) } catch {
            throw ValidationError("--replicas: \(error)")
        }
        let faults = StorageFaults()
        if let n = namesFailWritesAfter { faults.failWrites(with: ENOSPC, after: n) }
        let configuration = ReplicaConfiguration(
            id: ReplicaID(id), replicas: map, dataDirectory: dataDir, tickMillis: tickMs, electionTicks: electionTicks,
            heartbeatTicks: max(1, electionTicks / 4), snapshotEvery: snapshotEvery, faultInjection: namesFaultInjection,
            storageFaults: faults, joinExisting: joinExisting)
        let replica = try NameReplica(configuration: configuration, logger: logger)
        if replica.recovery.discardedBytes > 0 {
            writeAll(2, "plexus node: replica \(id): discarded \(replica.recovery.discardedBytes) bytes at the end of "
                + "\(dataDir)/wal (\(replica.recovery.discardReason ?? "corrupt")); they were never acknowledged\n")
        }
        return replica
    }
}
