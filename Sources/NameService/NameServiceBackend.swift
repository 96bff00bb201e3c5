// NameService is the shell around the pure cores in NamesCore: replicas, storage, clients, membership and the etcd backend, with all their I/O.

import Foundation
import NamesCore
import Transport

/// The whole name service as Plexus uses it, whatever runs it: the replicated
/// service (`NameClient`, talking to `plexus node` replicas) or an external
/// etcd v3 cluster (`EtcdNameClient`). Pick one from configuration with
/// `makeNameServiceBackend(_:timeoutMillis:)`.
///
/// Every call is linearizable; a write that fails with
/// `mayHaveTakenEffect == false` certainly did not happen. Errors the service
/// decided (a missing name, a version mismatch, an unknown lease or PID, a
/// forbidden process-state change, a compacted watch revision) are
/// `.rejected(NameError)` with the same `NameError` on both backends.
///
/// Process lifecycle: `starting` (at allocation) → `running` → `exited`
/// (with a status), or `running` ⇄ `migrating`; a process allocated with a
/// lease becomes `lost` when that lease ends (expiry or revocation) while it
/// is not yet exited. Exited and lost are final.
public protocol NameServiceBackend: AnyObject, Sendable {
    // MARK: Names

    /// Creates `name`; fails with `.rejected(.nameExists)` if it exists.
    func create(_ name: String, value: [UInt8]) throws(NameServiceError) -> NameEntry
    /// Creates or overwrites `name`.
    func put(_ name: String, value: [UInt8]) throws(NameServiceError) -> NameEntry
    /// Overwrites `name` only if its version is `expectedVersion`.
    func compareAndSet(_ name: String, expectedVersion: UInt64, value: [UInt8]) throws(NameServiceError) -> NameEntry
    /// Deletes `name` (only at `expectedVersion`, if given).
    func delete(_ name: String, expectedVersion: UInt64?) throws(NameServiceError)
    /// The entry, or `.rejected(.nameNotFound)`.
    func get(_ name: String) throws(NameServiceError) -> NameEntry
    /// Immediate children of a path ("/" for the top).
    func list(_ path: String) throws(NameServiceError) -> [ChildName]

    // MARK: Leases

    /// A lease that ends `ttlMillis` after its last keep-alive unless kept
    /// alive (etcd rounds the TTL up to whole seconds and to its minimum).
    /// `ttlMillis == 0` is rejected with `.rejected(.invalidArgument)`.
    func grantLease(ttlMillis: UInt64) throws(NameServiceError) -> LeaseID
    /// Restarts the lease's TTL; `.rejected(.leaseNotFound)` once it ended.
    func keepAlive(_ lease: LeaseID) throws(NameServiceError)
    /// Ends the lease now: its ephemeral names are deleted, its processes marked lost.
    func revokeLease(_ lease: LeaseID) throws(NameServiceError)
    /// Creates `name` (failing if it exists) so that it is deleted when `lease` ends.
    func createEphemeral(_ name: String, value: [UInt8], lease: LeaseID) throws(NameServiceError) -> NameEntry
    /// Creates `prefix` + the next number of the parent directory's sequence,
    /// ten digits zero-padded (`/queue/item-` → `/queue/item-0000000007`),
    /// ephemeral if `lease` is given. The sequence advances even when that
    /// name exists (then `.rejected(.nameExists)`), as in ZooKeeper.
    func createSequential(_ prefix: String, value: [UInt8], lease: LeaseID?) throws(NameServiceError) -> NameEntry

    // MARK: Processes

    /// Issues a fresh global PID (never issued before) and registers the
    /// process as `starting`; with a lease, the process is marked `lost` when
    /// the lease ends.
    func allocatePID(node: String, address: String, parent: GlobalPID?, lease: LeaseID?) throws(NameServiceError) -> GlobalPID
    /// Records where a started process can be reached and marks it running
    /// (from `starting` or `migrating`).
    func reportRunning(pid: UInt64, node: String, address: String) throws(NameServiceError)
    /// Records a new node and address for a live process, leaving its state
    /// as it is (a process that registered its address; one that migrated).
    func rebindProcess(_ pid: GlobalPID, node: String, address: String) throws(NameServiceError) -> ProcessRecord
    /// Moves a process to `running`, `migrating` or `lost` (see the protocol's
    /// lifecycle); returns the record as written.
    func setProcessState(_ pid: GlobalPID, to state: ProcessState) throws(NameServiceError) -> ProcessRecord
    /// Records a process's exit status (128+N for signal N); it becomes `exited`.
    func reportExit(pid: UInt64, status: Int32) throws(NameServiceError)
    /// The whole process table, in PID order.
    func processes() throws(NameServiceError) -> [ProcessRecord]
    /// One process, or `.rejected(.processNotFound)`.
    func process(_ pid: GlobalPID) throws(NameServiceError) -> ProcessRecord

    // MARK: Watch

    /// Changes with revision >= `fromRevision`, in revision order, at most
    /// about `limit` (see the backend for how it cuts a batch). With a
    /// `prefix`, only name events for that name and the names below it
    /// (process and lease events are left out). Resume from
    /// `batch.nextRevision`: nothing in between is missed. A revision the
    /// service no longer keeps fails with `.rejected(.compacted)`, which
    /// names the oldest revision to resume from (after re-reading the state).
    func watch(fromRevision: UInt64, prefix: String?, limit: Int) throws(NameServiceError) -> WatchBatch
}

extension NameServiceBackend {
    /// A PID for a process that is bound to no lease.
    public func allocatePID(node: String, address: String, parent: GlobalPID?) throws(NameServiceError) -> GlobalPID {
        try allocatePID(node: node, address: address, parent: parent, lease: nil)
    }

    /// Allocates a global PID for a process about to start on `node` (for the
    /// launcher, which deals in raw PIDs).
    public func allocateGlobalPID(node: String) throws(NameServiceError) -> UInt64 {
        try allocatePID(node: node, address: "", parent: nil, lease: nil).rawValue
    }

    public func watch(fromRevision: UInt64, prefix: String? = nil) throws(NameServiceError) -> WatchBatch {
        try watch(fromRevision: fromRevision, prefix: prefix, limit: 256)
    }
}

/// Where the name service is, as written in configuration (`--names`,
/// `$PLEXUS_NAMES`):
///  - `IP:PORT,IP:PORT,...` — Plexus name-service replicas (`plexus node`);
///  - `etcd://HOST:PORT,HOST:PORT[/PREFIX]` — an etcd v3 cluster's client
///    endpoints (IPv4 addresses), keys under PREFIX (default `/plexus`).
public enum NameServiceSpec: Equatable, Sendable, CustomStringConvertible {
    case replicas([String])
    case etcd(endpoints: [String], prefix: String)

    public static let etcdScheme = "etcd://"
    public static let defaultEtcdPrefix = "/plexus"

    /// Parses a spec; the error says what a valid one looks like.
    public init(parsing spec: String) throws(NameServiceError) {
        let text = spec.trimmingCharacters(in: .whitespaces)
        func addresses(_ list: Substring, what: String) throws(NameServiceError) -> [String] {
            let parts = list.split(separator: ",", omittingEmptySubsequences: false)
                .map { $0.trimmingCharacters(in: .whitespaces) }
            guard !parts.isEmpty, !parts.contains(where: \.isEmpty) else {
                throw .invalidArgument("\(what): empty address in '\(spec)'; write IP:PORT[,IP:PORT...]")
            }
            for p in parts {
                do { _ = try SocketAddress(parsing: p) } catch {
                    throw .invalidArgument("\(what): '\(p)' is not IP:PORT (\(error))")
                }
            }
            return parts
        }
        if text.lowercased().hasPrefix(Self.etcdScheme) {
            let rest = text.dropFirst(Self.etcdScheme.count)
            let hostPart: Substring
            var prefix = Self.defaultEtcdPrefix
            if let slash = rest.firstIndex(of: "/") {
                hostPart = rest[..<slash]
                prefix = String(rest[slash...])
                while prefix.count > 1 && prefix.hasSuffix("/") { prefix.removeLast() }
                if prefix == "/" {
                    throw .invalidArgument("etcd key prefix must not be '/': use e.g. etcd://HOST:PORT/plexus")
                }
                if case .failure(let error) = NameServiceState().get(prefix), case .invalidName(_, let reason) = error {
                    throw .invalidArgument("etcd key prefix '\(prefix)': \(reason)")
                }
            } else {
                hostPart = rest
            }
            guard !hostPart.isEmpty else {
                throw .invalidArgument("no etcd endpoint in '\(spec)': write etcd://HOST:PORT[,HOST:PORT...][/PREFIX]")
            }
            self = .etcd(endpoints: try addresses(hostPart, what: "etcd endpoint"), prefix: prefix)
        } else if text.contains("://") {
            throw .invalidArgument("unknown name-service scheme in '\(spec)': use IP:PORT,... (Plexus replicas) "
                + "or etcd://HOST:PORT,...[/PREFIX]")
        } else {
            guard !text.isEmpty else {
                throw .invalidArgument("no name service given: use IP:PORT,... (Plexus replicas) or etcd://HOST:PORT,...")
            }
            self = .replicas(try addresses(Substring(text), what: "name-service replica"))
        }
    }

    public var description: String {
        switch self {
        case .replicas(let list): list.joined(separator: ",")
        case .etcd(let endpoints, let prefix): Self.etcdScheme + endpoints.joined(separator: ",") + prefix
        }
    }
}

/// The backend a spec names (see `NameServiceSpec`), with a whole-call
/// deadline of `timeoutMillis` (retries included).
public func makeNameServiceBackend(_ spec: String, timeoutMillis: Int = 5000) throws(NameServiceError) -> any NameServiceBackend {
    try makeNameServiceBackend(NameServiceSpec(parsing: spec), timeoutMillis: timeoutMillis)
}

public func makeNameServiceBackend(_ spec: NameServiceSpec, timeoutMillis: Int = 5000) throws(NameServiceError) -> any NameServiceBackend {
    guard timeoutMillis >= 1 else { throw .invalidArgument("timeout must be at least 1 ms") }
    switch spec {
    case .replicas(let list):
        return try NameClient(replicas: list, options: NameClient.Options(timeoutMillis: timeoutMillis))
    case .etcd(let endpoints, let prefix):
        return try EtcdNameClient(endpoints: endpoints, prefix: prefix, timeoutMillis: timeoutMillis)
    }
}
