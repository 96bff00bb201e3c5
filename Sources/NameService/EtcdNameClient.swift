#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NamesCore
import Transport

/// The name service on an external etcd v3 cluster (Debian's etcd-server),
/// for sites that already run one. Select it with `etcd://HOST:PORT,...[/PREFIX]`
/// (see `NameServiceSpec`).
///
/// Talks to etcd's HTTP/JSON gateway over plain HTTP/1.1 sockets
/// (`/v3/kv/range|put|txn|deleterange`, `/v3/lease/grant|revoke|keepalive`,
/// `/v3/watch`, `/v3/maintenance/status`; keys and values base64).
///
/// Keys under PREFIX:
///  - `names/N` — the name N; `version`, `create_revision`, `mod_revision`
///    and `lease` are etcd's own (etcd's per-key version has exactly the
///    semantics of `NameEntry.version`). create / CAS / conditional delete are
///    transactions comparing the key's version (0 = absent); CAS keeps the
///    name's lease (`ignore_lease`), put replaces it (as ours does).
///  - `pid` — the PID counter: a transaction "if its mod_revision is unchanged,
///    put counter+1 and the process row"; a lost race retries. (Dense PIDs
///    need a counter; `uniqueRevision` gives sparse unique ids in one put.)
///  - `ids/N` — written by `uniqueRevision`, whose id is the put's revision.
///  - `proc/<20-digit PID>` — the process row (JSON: state, node, address,
///    parent, start, exit, lease), updated by transactions that compare its
///    mod_revision, so state changes are atomic read-check-writes.
///  - `alive/<PID>` — for a process allocated with a lease, a liveness key
///    attached to that lease, holding a copy of the row. etcd can only delete
///    keys when a lease ends, so a row that says starting/running/migrating
///    whose liveness key is gone is reported `lost` (by `process`, `processes`
///    and `watch`), and further changes to it are refused as from `lost`.
///  - `lease/<lease ID>` — an anchor key attached to each lease granted here,
///    so that a lease's end is visible in the revision history; its value is
///    set to "revoked" just before `revokeLease` revokes it.
///
/// Leases: etcd's TTL is in whole seconds, so `ttlMillis` is rounded up to
/// seconds, and etcd raises it to its minimum (1.5 × election timeout,
/// 2 s with default settings). `keepAlive` sends one request on the
/// keep-alive stream and reads its first result (a real renewal).
///
/// Watch: reads etcd's MVCC history with a `/v3/watch` stream over the whole
/// key space from `fromRevision` (with `prev_kv`), filtered here to PREFIX.
/// It first reads the current revision R linearizably; the batch ends when
/// the events of R arrived (every revision > 1 has at least one event), when
/// about `limit` events were collected, or when 8 MiB were read — always at a
/// revision boundary, so resuming from `nextRevision` misses nothing. Mapping
/// of one etcd revision's events: put of `names/N` → `nameCreated` (version
/// 1) or `nameUpdated`; delete of `names/N` → `nameDeleted` (with the lease if
/// that lease's anchor went in the same revision); put of `proc/P` →
/// `processChanged`; delete of `alive/P` whose row was not final →
/// `processChanged` (state lost); delete of `lease/L` → `leaseEnded` (expired
/// unless revoked here). A compacted start revision fails with
/// `.rejected(.compacted)` naming etcd's compaction revision.
///
/// Deviations from the replicated service:
///  - Revisions are etcd's: several events of one transaction (a lease's end:
///    its names, its processes, `leaseEnded`) share one revision, in that order;
///    ours gives each event its own revision. `limit` is honoured at revision
///    boundaries (a single revision is never split).
///  - A watch reads every key's history (other prefixes' too), so it costs in
///    proportion to all traffic on the etcd cluster since `fromRevision`.
///  - `reportRunning` records the address and state in one transaction (ours
///    takes two commands).
///  - Writes are not deduplicated (etcd has no client sessions): a write whose
///    reply was lost is reported with `mayHaveTakenEffect` and not retried.
///  - A process becomes `lost` through its liveness key, not by a write to its
///    row: the row keeps its last state, and readers apply the rule above.
///
/// Availability: every call ends by its deadline. A member without a leader
/// (a minority, no quorum) makes the call fail with "etcd cluster unavailable:
/// … no leader (no quorum) …".
///
/// Thread safety: each call takes a pooled connection; safe from any thread.
public final class EtcdNameClient: NameServiceBackend, @unchecked Sendable {
    public let endpoints: [String]
    public let prefix: String
    public let timeoutMillis: Int
    private let pool = Locked<[HTTPConnection]>([])
    private let preferred = Locked(0)

    /// `endpoints`: etcd client URLs' host:port (e.g. 127.0.0.1:2379);
    /// `prefix`: where the keys live (absolute, no trailing slash).
    public init(endpoints: [String], prefix: String = "/plexus", timeoutMillis: Int = 5000) throws(NameServiceError) {
        guard !endpoints.isEmpty else { throw .invalidArgument("no etcd endpoint given") }
        for e in endpoints {
            do { _ = try SocketAddress(parsing: e) } catch { throw .invalidArgument("etcd endpoint: \(error)") }
        }
        guard prefix.hasPrefix("/"), !prefix.hasSuffix("/") else {
            throw .invalidArgument("etcd key prefix '\(prefix)' must start with / and not end with /")
        }
        guard timeoutMillis >= 1 else { throw .invalidArgument("timeout must be at least 1 ms") }
        self.endpoints = endpoints
        self.prefix = prefix
        self.timeoutMillis = timeoutMillis
    }

    deinit { for c in pool.value { c.close() } }

    // MARK: - Keys

    private var namesBase: String { prefix + "/names" }
    private var counterKey: String { prefix + "/pid" }
    private func procKey(_ pid: UInt64) -> String { prefix + "/proc/" + Self.padded(pid) }
    private func aliveKey(_ pid: UInt64) -> String { prefix + "/alive/" + Self.padded(pid) }
    private func leaseKey(_ lease: LeaseID) -> String { prefix + "/lease/" + Self.padded(lease.rawValue) }

    static func padded(_ n: UInt64) -> String {
        let digits = String(n)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    private static func leaseJSON(_ lease: LeaseID) -> String { String(Int64(bitPattern: lease.rawValue)) }
    private static func leaseID(_ raw: Int64) -> LeaseID? { raw == 0 ? nil : LeaseID(UInt64(bitPattern: raw)) }

    // MARK: - Names

    public func create(_ name: String, value: [UInt8]) throws(NameServiceError) -> NameEntry {
        try createName(name, value: value, lease: nil)
    }

    public func createEphemeral(_ name: String, value: [UInt8], lease: LeaseID) throws(NameServiceError) -> NameEntry {
        try createName(name, value: value, lease: lease)
    }

    private func createName(_ name: String, value: [UInt8], lease: LeaseID?) throws(NameServiceError) -> NameEntry {
        try validate(name, value)
        let key = namesBase + name
        var put: [String: Any] = ["key": b64(key), "value": b64(value)]
        if let lease { put["lease"] = Self.leaseJSON(lease) }
        let response = try txn(compare: [versionEquals(key, 0)], success: [["request_put": put]], failure: [],
                               write: true, lease: lease)
        guard response.succeeded == true else { throw .rejected(.nameExists(name)) }
        let revision = try EtcdJSON.revision(response.header, what: "create")
        return NameEntry(name: name, value: value, version: 1, createRevision: revision, modRevision: revision, lease: lease)
    }

    /// The sequence of a directory D is the counter key `<prefix>/seq` + D,
    /// outside the names subtree (so neither `list` nor `watch` shows it).
    /// One transaction checks the counter is unchanged and the name absent
    /// (and the lease alive), then writes both; on a lost race it re-reads.
    public func createSequential(_ prefix: String, value: [UInt8], lease: LeaseID?) throws(NameServiceError) -> NameEntry {
        guard prefix.hasPrefix("/") else { throw .rejected(.invalidName(prefix, reason: "must start with /")) }
        let probe = prefix + "0"
        let parent = probe.lastIndex(of: "/").map { $0 == probe.startIndex ? "/" : String(probe[..<$0]) } ?? "/"
        let counter = self.prefix + "/seq" + (parent == "/" ? "/" : parent + "/")
        let deadline = monotonicMillis() + UInt64(timeoutMillis)
        var conflicts = 0
        while monotonicMillis() < deadline {
            let (current, next) = try readCounter(counter, what: "a sequence counter")
            let digits = String(next)
            let name = prefix + String(repeating: "0", count: max(0, 10 - digits.count)) + digits
            try validate(name, value)
            let key = namesBase + name
            let unchanged: [String: Any] = current.map {
                ["key": b64(counter), "target": "MOD", "result": "EQUAL", "mod_revision": "\($0.modRevision)"]
            } ?? versionEquals(counter, 0)
            var compare: [[String: Any]] = [unchanged, versionEquals(key, 0)]
            var put: [String: Any] = ["key": b64(key), "value": b64(value)]
            if let lease {
                compare.append(["key": b64(leaseKey(lease)), "target": "VERSION", "result": "GREATER", "version": "0"])
                put["lease"] = Self.leaseJSON(lease)
            }
            var failure: [[String: Any]] = [["request_range": ["key": b64(counter)]], ["request_range": ["key": b64(key)]]]
            if let lease { failure.append(["request_range": ["key": b64(leaseKey(lease))]]) }
            let response = try txn(compare: compare,
                                   success: [["request_put": ["key": b64(counter), "value": b64("\(next + 1)")]], ["request_put": put]],
                                   failure: failure, write: true, lease: lease)
            if response.succeeded == true {
                let revision = try EtcdJSON.revision(response.header, what: "create")
                return NameEntry(name: name, value: value, version: 1, createRevision: revision, modRevision: revision, lease: lease)
            }
            let ranges = (response.responses ?? []).map { $0.response_range?.kvs ?? [] }
            guard ranges.count == failure.count else { throw .protocolViolation("etcd answered a failed transaction without its reads") }
            var counterNow: UInt64?
            if let raw = ranges[0].first { counterNow = try EtcdJSON.KV(raw).modRevision }
            if counterNow == current?.modRevision {
                if let lease, ranges[2].isEmpty { throw .rejected(.leaseNotFound(lease)) }
                if !ranges[1].isEmpty {
                    // The name exists: the sequence still advances (once; a
                    // concurrent creator may already have moved it).
                    _ = try txn(compare: [unchanged],
                                success: [["request_put": ["key": b64(counter), "value": b64("\(next + 1)")]]],
                                failure: [], write: true, lease: nil)
                    throw .rejected(.nameExists(name))
                }
            }
            conflicts += 1
            usleep(useconds_t(UInt64.random(in: 0...(1000 << min(conflicts, 6)))))
        }
        throw .timedOut("etcd sequence \(counter) contended for \(timeoutMillis) ms", mayHaveTakenEffect: false)
    }

    public func put(_ name: String, value: [UInt8]) throws(NameServiceError) -> NameEntry {
        try validate(name, value)
        let key = namesBase + name
        let response = try call("/v3/kv/put", ["key": b64(key), "value": b64(value), "prev_kv": true], write: true,
                                as: EtcdJSON.PutResponse.self)
        let revision = try EtcdJSON.revision(response.header, what: "put")
        if let raw = response.prev_kv {
            let prev = try EtcdJSON.KV(raw)
            return NameEntry(name: name, value: value, version: prev.version + 1, createRevision: prev.createRevision,
                             modRevision: revision, lease: nil)
        }
        return NameEntry(name: name, value: value, version: 1, createRevision: revision, modRevision: revision, lease: nil)
    }

    public func compareAndSet(_ name: String, expectedVersion: UInt64, value: [UInt8]) throws(NameServiceError) -> NameEntry {
        try validate(name, value)
        let key = namesBase + name
        let response = try txn(
            compare: [versionEquals(key, expectedVersion)],
            success: [["request_put": ["key": b64(key), "value": b64(value), "prev_kv": true, "ignore_lease": true]]],
            failure: [["request_range": ["key": b64(key)]]], write: true)
        let revision = try EtcdJSON.revision(response.header, what: "compare-and-set")
        let first = response.responses?.first
        guard response.succeeded == true else {
            guard let raw = first?.response_range?.kvs?.first else { throw .rejected(.nameNotFound(name)) }
            throw .rejected(.versionMismatch(name: name, expected: expectedVersion, found: try EtcdJSON.KV(raw).version))
        }
        guard let rawPrev = first?.response_put?.prev_kv else {
            // Version 0 compares equal for an absent key: etcd's put with
            // ignore_lease then refuses, so this cannot succeed without one.
            throw .protocolViolation("etcd compare-and-set succeeded without the previous value")
        }
        let prev = try EtcdJSON.KV(rawPrev)
        return NameEntry(name: name, value: value, version: prev.version + 1, createRevision: prev.createRevision,
                         modRevision: revision, lease: Self.leaseID(prev.lease))
    }

    public func delete(_ name: String, expectedVersion: UInt64?) throws(NameServiceError) {
        try validate(name, [])
        let key = namesBase + name
        let compare = expectedVersion.map { versionEquals(key, $0) }
            ?? ["key": b64(key), "target": "VERSION", "result": "GREATER", "version": "0"]
        let response = try txn(compare: [compare], success: [["request_delete_range": ["key": b64(key)]]],
                               failure: [["request_range": ["key": b64(key)]]], write: true)
        guard response.succeeded == true else {
            guard let raw = response.responses?.first?.response_range?.kvs?.first, let expectedVersion else {
                throw .rejected(.nameNotFound(name))
            }
            throw .rejected(.versionMismatch(name: name, expected: expectedVersion, found: try EtcdJSON.KV(raw).version))
        }
    }

    public func get(_ name: String) throws(NameServiceError) -> NameEntry {
        try validate(name, [])
        guard let kv = try range(namesBase + name).first else { throw .rejected(.nameNotFound(name)) }
        return entry(name, kv)
    }

    public func list(_ path: String) throws(NameServiceError) -> [ChildName] {
        if path != "/" { try validate(path, []) }
        let scan = namesBase + (path == "/" ? "/" : path + "/")
        var state = NameServiceState()
        for kv in try range(scan, prefix: true, keysOnly: true) {
            let name = String(kv.key.dropFirst(namesBase.count))
            _ = state.apply(.put(name: name, value: [], lease: nil), clientID: 0, requestID: 0)
        }
        switch state.children(of: path) {
        case .success(let children): return children
        case .failure(let error): throw .rejected(error)
        }
    }

    private func entry(_ name: String, _ kv: EtcdJSON.KV) -> NameEntry {
        NameEntry(name: name, value: kv.value, version: kv.version, createRevision: kv.createRevision,
                  modRevision: kv.modRevision, lease: Self.leaseID(kv.lease))
    }

    // MARK: - Leases

    /// etcd's largest TTL (9,000,000,000 s).
    static let maxTTLSeconds: UInt64 = 9_000_000_000

    public func grantLease(ttlMillis: UInt64) throws(NameServiceError) -> LeaseID {
        guard ttlMillis > 0 else { throw .rejected(.invalidArgument("lease TTL must be positive")) }
        let seconds = min(ttlMillis / 1000 + (ttlMillis % 1000 == 0 ? 0 : 1), Self.maxTTLSeconds)
        let response = try call("/v3/lease/grant", ["TTL": "\(seconds)"], write: true, as: EtcdJSON.LeaseGrantResponse.self)
        if let error = response.error, !error.isEmpty { throw .protocolViolation("etcd refused a lease grant: \(error)") }
        guard let raw = response.ID?.value, let lease = Self.leaseID(raw) else {
            throw .protocolViolation("etcd granted a lease without an ID")
        }
        // The anchor key makes the lease's end visible to watchers.
        do {
            _ = try call("/v3/kv/put", ["key": b64(leaseKey(lease)), "value": b64("live"), "lease": Self.leaseJSON(lease)],
                         write: true, as: EtcdJSON.PutResponse.self, lease: lease)
        } catch {
            _ = try? call("/v3/lease/revoke", ["ID": Self.leaseJSON(lease)], write: true, as: EtcdJSON.LeaseRevokeResponse.self)
            throw error
        }
        return lease
    }

    public func keepAlive(_ lease: LeaseID) throws(NameServiceError) {
        // One message on the keep-alive stream: etcd renews, answers with the
        // new TTL (0 = no such lease), then ends the stream at our body's end.
        let body = try encode(["ID": Self.leaseJSON(lease)])
        let (_, bytes) = try request("/v3/lease/keepalive", body, write: false)
        let text = bytes.split(separator: 10, omittingEmptySubsequences: true).first.map(Array.init) ?? []
        let message = try EtcdJSON.decode(EtcdJSON.KeepAliveMessage.self, text, what: "keepalive")
        if let error = message.error {
            throw .protocolViolation("etcd refused a keep-alive: \(error.message ?? "unknown error")")
        }
        guard let result = message.result else { throw .protocolViolation("etcd answered a keep-alive without a result") }
        guard let ttl = result.TTL?.value, ttl > 0 else { throw .rejected(.leaseNotFound(lease)) }
    }

    public func revokeLease(_ lease: LeaseID) throws(NameServiceError) {
        // Mark the anchor first, so watchers can tell a revocation from an
        // expiry. Absent anchor: the lease is gone (or was not granted here).
        let mark = try txn(
            compare: [["key": b64(leaseKey(lease)), "target": "VERSION", "result": "GREATER", "version": "0"]],
            success: [["request_put": ["key": b64(leaseKey(lease)), "value": b64("revoked"), "ignore_lease": true]]],
            failure: [], write: true, lease: lease)
        _ = mark
        _ = try call("/v3/lease/revoke", ["ID": Self.leaseJSON(lease)], write: true, as: EtcdJSON.LeaseRevokeResponse.self,
                     lease: lease)
    }

    // MARK: - Processes

    /// The process row as stored (JSON).
    struct Row: Codable, Equatable {
        var state: String
        var node: String
        var address: String
        var parent: UInt64?
        var start: UInt64
        var exit: Int32?
        var lease: UInt64?

        init(_ r: ProcessRecord) {
            state = r.state.description
            node = r.node
            address = r.address
            parent = r.parent?.rawValue
            start = r.startTimeMillis
            exit = r.exitStatus
            lease = r.lease?.rawValue
        }

        func record(pid: UInt64) throws(NameServiceError) -> ProcessRecord {
            guard let s = ProcessState.allCases.first(where: { $0.description == state }) else {
                throw .protocolViolation("etcd process row for pid \(pid) has unknown state '\(state.prefix(32))'")
            }
            return ProcessRecord(pid: GlobalPID(pid), node: node, address: address, state: s, parent: parent.map(GlobalPID.init),
                                 startTimeMillis: start, exitStatus: exit, lease: lease.map(LeaseID.init))
        }
    }

    private func rowJSON(_ record: ProcessRecord) throws(NameServiceError) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        do { return [UInt8](try encoder.encode(Row(record))) } catch {
            throw .invalidArgument("cannot encode the process row: \(error)")
        }
    }

    static func decodeRow(_ bytes: [UInt8], pid: UInt64) throws(NameServiceError) -> ProcessRecord {
        let row: Row
        do { row = try JSONDecoder().decode(Row.self, from: Data(bytes)) } catch {
            throw .protocolViolation("etcd key for pid \(pid) is not a Plexus process row; remove it with etcdctl del")
        }
        return try row.record(pid: pid)
    }

    private func pid(fromKey key: String, under base: String) throws(NameServiceError) -> UInt64 {
        let tail = key.dropFirst(base.count)
        guard tail.count == 20, tail.allSatisfy(\.isASCII), let pid = UInt64(tail) else {
            throw .protocolViolation("etcd key '\(key.prefix(128))' is not a Plexus process key; remove it with etcdctl del")
        }
        return pid
    }

    /// A row as readers see it: not final, bound to a lease, liveness key gone → lost.
    private func effective(_ record: ProcessRecord, alive: Bool) -> ProcessRecord {
        var r = record
        if !r.state.isTerminal && r.lease != nil && !alive { r.state = .lost }
        return r
    }

    public func allocatePID(node: String, address: String, parent: GlobalPID?, lease: LeaseID?)
        throws(NameServiceError) -> GlobalPID
    {
        try validateLabel(node, "node")
        try validateLabel(address, "address")
        let deadline = monotonicMillis() + UInt64(timeoutMillis)
        var conflicts = 0
        while monotonicMillis() < deadline {
            let (current, last) = try readCounter(counterKey, what: "a PID counter")
            if let parent, parent.rawValue == 0 || parent.rawValue > last { throw .rejected(.processNotFound(parent)) }
            let pid = last + 1
            let record = ProcessRecord(pid: GlobalPID(pid), node: node, address: address, state: .starting, parent: parent,
                                       startTimeMillis: UInt64(Date().timeIntervalSince1970 * 1000), exitStatus: nil,
                                       lease: lease)
            let row = try rowJSON(record)
            var compare: [[String: Any]] = [current.map {
                ["key": b64(counterKey), "target": "MOD", "result": "EQUAL", "mod_revision": "\($0.modRevision)"]
            } ?? versionEquals(counterKey, 0)]
            var success: [[String: Any]] = [
                ["request_put": ["key": b64(counterKey), "value": b64("\(pid)")]],
                ["request_put": ["key": b64(procKey(pid)), "value": b64(row)]],
            ]
            if let lease {
                compare.append(["key": b64(leaseKey(lease)), "target": "VERSION", "result": "GREATER", "version": "0"])
                success.append(["request_put": ["key": b64(aliveKey(pid)), "value": b64(row), "lease": Self.leaseJSON(lease)]])
            }
            let response = try txn(compare: compare, success: success,
                                   failure: lease.map { [["request_range": ["key": b64(leaseKey($0))]]] } ?? [],
                                   write: true, lease: lease)
            if response.succeeded == true { return GlobalPID(pid) }
            if lease != nil, response.responses?.first?.response_range?.kvs?.isEmpty ?? true {
                throw .rejected(.leaseNotFound(lease!))
            }
            // Lost the race for the counter: back off (jittered, exponential,
            // bounded) so that many allocators do not livelock.
            conflicts += 1
            usleep(useconds_t(UInt64.random(in: 0...(1000 << min(conflicts, 6)))))
        }
        throw .timedOut("etcd PID counter contended for \(timeoutMillis) ms", mayHaveTakenEffect: false)
    }

    /// Reads a row and its liveness, applies `change`, and writes it back if
    /// neither changed meanwhile (else re-reads).
    private func updateProcess(_ pid: GlobalPID, _ change: (ProcessRecord) throws(NameServiceError) -> ProcessRecord)
        throws(NameServiceError) -> ProcessRecord
    {
        let deadline = monotonicMillis() + UInt64(timeoutMillis)
        while monotonicMillis() < deadline {
            let (current, modRevision, alive) = try readProcess(pid)
            let updated = try change(current)
            let row = try rowJSON(updated)
            var compare: [[String: Any]] = [
                ["key": b64(procKey(pid.rawValue)), "target": "MOD", "result": "EQUAL", "mod_revision": "\(modRevision)"],
            ]
            var success: [[String: Any]] = [["request_put": ["key": b64(procKey(pid.rawValue)), "value": b64(row)]]]
            if alive {
                compare.append(["key": b64(aliveKey(pid.rawValue)), "target": "VERSION", "result": "GREATER", "version": "0"])
                success.append(["request_put": ["key": b64(aliveKey(pid.rawValue)), "value": b64(row), "ignore_lease": true]])
            }
            if try txn(compare: compare, success: success, failure: [], write: true).succeeded == true { return updated }
        }
        throw .timedOut("\(pid) changed concurrently for \(timeoutMillis) ms", mayHaveTakenEffect: false)
    }

    /// (effective record, row mod_revision, liveness key present).
    private func readProcess(_ pid: GlobalPID) throws(NameServiceError) -> (ProcessRecord, UInt64, Bool) {
        let response = try txn(compare: [], success: [
            ["request_range": ["key": b64(procKey(pid.rawValue))]],
            ["request_range": ["key": b64(aliveKey(pid.rawValue)), "keys_only": true]],
        ], failure: [], write: false)
        let ops = response.responses ?? []
        guard ops.count == 2 else { throw .protocolViolation("etcd answered a 2-range transaction with \(ops.count) results") }
        guard let raw = ops[0].response_range?.kvs?.first else { throw .rejected(.processNotFound(pid)) }
        let kv = try EtcdJSON.KV(raw)
        let alive = !(ops[1].response_range?.kvs?.isEmpty ?? true)
        return (effective(try Self.decodeRow(kv.value, pid: pid.rawValue), alive: alive), kv.modRevision, alive)
    }

    static func isAllowed(from: ProcessState, to: ProcessState) -> Bool {
        switch (from, to) {
        case (.starting, .running), (.running, .migrating), (.migrating, .running): true
        case (.starting, .lost), (.running, .lost), (.migrating, .lost): true
        default: false
        }
    }

    public func reportRunning(pid: UInt64, node: String, address: String) throws(NameServiceError) {
        try validateLabel(node, "node")
        try validateLabel(address, "address")
        _ = try updateProcess(GlobalPID(pid)) { (r: ProcessRecord) throws(NameServiceError) -> ProcessRecord in
            guard Self.isAllowed(from: r.state, to: .running) else {
                throw .rejected(.invalidTransition(pid: r.pid, from: r.state, to: .running))
            }
            var updated = r
            updated.node = node
            updated.address = address
            updated.state = .running
            return updated
        }
    }

    public func rebindProcess(_ pid: GlobalPID, node: String, address: String) throws(NameServiceError) -> ProcessRecord {
        try validateLabel(node, "node")
        try validateLabel(address, "address")
        return try updateProcess(pid) { (r: ProcessRecord) throws(NameServiceError) -> ProcessRecord in
            guard !r.state.isTerminal else { throw .rejected(.invalidTransition(pid: r.pid, from: r.state, to: r.state)) }
            var updated = r
            updated.node = node
            updated.address = address
            return updated
        }
    }

    public func setProcessState(_ pid: GlobalPID, to state: ProcessState) throws(NameServiceError) -> ProcessRecord {
        try updateProcess(pid) { (r: ProcessRecord) throws(NameServiceError) -> ProcessRecord in
            guard Self.isAllowed(from: r.state, to: state) else {
                throw .rejected(.invalidTransition(pid: r.pid, from: r.state, to: state))
            }
            var updated = r
            updated.state = state
            return updated
        }
    }

    public func reportExit(pid: UInt64, status: Int32) throws(NameServiceError) {
        _ = try updateProcess(GlobalPID(pid)) { (r: ProcessRecord) throws(NameServiceError) -> ProcessRecord in
            guard !r.state.isTerminal else { throw .rejected(.invalidTransition(pid: r.pid, from: r.state, to: .exited)) }
            var updated = r
            updated.state = .exited
            updated.exitStatus = status
            return updated
        }
    }

    public func process(_ pid: GlobalPID) throws(NameServiceError) -> ProcessRecord {
        try readProcess(pid).0
    }

    /// The whole table in PID order, in pages of 512 rows (each page one
    /// consistent snapshot of rows and liveness keys).
    public func processes() throws(NameServiceError) -> [ProcessRecord] {
        let page = 512
        let procBase = prefix + "/proc/"
        let aliveBase = prefix + "/alive/"
        var all: [ProcessRecord] = []
        var after: UInt64 = 0
        while true {
            let response = try txn(compare: [], success: [
                ["request_range": ["key": b64(procKey(after + 1)), "range_end": rangeEnd(procBase), "limit": "\(page)"]],
                ["request_range": ["key": b64(aliveKey(after + 1)), "range_end": rangeEnd(aliveBase), "limit": "\(page)",
                                   "keys_only": true]],
            ], failure: [], write: false)
            let ops = response.responses ?? []
            guard ops.count == 2 else { throw .protocolViolation("etcd answered a 2-range transaction with \(ops.count) results") }
            var alive = Set<UInt64>()
            for raw in ops[1].response_range?.kvs ?? [] {
                alive.insert(try pid(fromKey: try EtcdJSON.KV(raw).key, under: aliveBase))
            }
            let rows = ops[0].response_range?.kvs ?? []
            for raw in rows {
                let kv = try EtcdJSON.KV(raw)
                let p = try pid(fromKey: kv.key, under: procBase)
                all.append(effective(try Self.decodeRow(kv.value, pid: p), alive: alive.contains(p)))
                after = p
            }
            if rows.count < page || ops[0].response_range?.more != true { return all }
        }
    }

    // MARK: - Watch

    public func watch(fromRevision: UInt64, prefix filter: String?, limit: Int) throws(NameServiceError) -> WatchBatch {
        guard limit >= 1 else { throw .rejected(.invalidArgument("watch limit must be at least 1")) }
        if let filter, filter != "/" { try validate(filter, []) }
        let from = max(fromRevision, 1)
        let deadline = monotonicMillis() + UInt64(timeoutMillis)
        // The linearizable "now": the batch is complete once R's events arrived.
        let now = try EtcdJSON.revision(call("/v3/kv/range", ["key": b64(counterKey), "count_only": true], write: false,
                                             as: EtcdJSON.RangeResponse.self).header, what: "range")
        if from > now || now <= 1 { return WatchBatch(events: [], nextRevision: max(from, now + 1)) }

        let body = try encode(["create_request": [
            "key": "AA==", "range_end": "AA==", "start_revision": "\(from)", "prev_kv": true,
        ] as [String: Any]])
        var lastProblem = "no endpoint tried"
        while monotonicMillis() < deadline {
            let endpoint = endpoints[preferred.value % endpoints.count]
            let connection: HTTPConnection
            do {
                connection = try HTTPConnection(endpoint: endpoint, deadline: min(deadline, monotonicMillis() + 1000))
            } catch {
                lastProblem = error.description
                rotate()
                pause(10, deadline)
                continue
            }
            defer { connection.close() }
            return try readWatch(connection, body: body, from: from, until: now, filter: filter, limit: limit,
                                 deadline: deadline)
        }
        throw .unreachable("etcd cluster unavailable: cannot open a watch (\(lastProblem)); check the etcd endpoints \(endpoints)")
    }

    private func readWatch(_ connection: HTTPConnection, body: [UInt8], from: UInt64, until now: UInt64, filter: String?,
                           limit: Int, deadline: UInt64) throws(NameServiceError) -> WatchBatch
    {
        try connection.sendRequest(path: "/v3/watch", body: body, deadline: deadline)
        var parser = HTTPResponseParser(maxBodyBytes: 64 << 20)
        var selected: [WatchEvent] = []
        var next = from
        var created = false
        let softLimit = 8 << 20
        var bytesRead = 0
        while true {
            while let line = parser.takeLine() {
                if line.allSatisfy({ $0 == 32 || $0 == 13 }) { continue }
                bytesRead += line.count
                let message = try EtcdJSON.decode(EtcdJSON.WatchMessage.self, line, what: "watch")
                if let error = message.error {
                    throw .protocolViolation("etcd ended the watch: \(error.message ?? "unknown error")")
                }
                guard let result = message.result else { throw .protocolViolation("etcd sent a watch message without a result") }
                if let compact = result.compact_revision?.value, compact > 0 {
                    throw .rejected(.compacted(requested: from, oldestAvailable: UInt64(compact)))
                }
                if result.canceled == true {
                    throw .protocolViolation("etcd canceled the watch: \(result.cancel_reason ?? "no reason given")")
                }
                if result.created == true { created = true }
                guard created else { throw .protocolViolation("etcd sent watch events before confirming the watch") }
                // Events come in whole revisions, in order.
                var groups: [(UInt64, [EtcdJSON.Event])] = []
                for event in result.events ?? [] {
                    guard let raw = event.kv else { throw .protocolViolation("etcd sent a watch event without a key") }
                    let revision = try raw.mod_revision?.unsigned("mod_revision") ?? 0
                    guard revision >= next else {
                        throw .protocolViolation("etcd sent watch events out of order (\(revision) after \(next))")
                    }
                    if let last = groups.last, last.0 == revision { groups[groups.count - 1].1.append(event) } else {
                        groups.append((revision, [event]))
                    }
                }
                for (revision, events) in groups {
                    let kinds = try translate(events, filter: filter)
                    if !selected.isEmpty && selected.count + kinds.count > limit {
                        return WatchBatch(events: selected, nextRevision: revision)
                    }
                    selected += kinds.map { WatchEvent(revision: revision, kind: $0) }
                    next = revision + 1
                    if revision >= now || selected.count >= limit { return WatchBatch(events: selected, nextRevision: next) }
                }
                if bytesRead >= softLimit && next > from { return WatchBatch(events: selected, nextRevision: next) }
            }
            guard parser.body.count <= 32 << 20 else { throw .protocolViolation("etcd sent a watch message over 32 MiB") }
            if parser.headComplete && parser.status != 200 {
                throw .protocolViolation("etcd refused the watch (HTTP \(parser.status))")
            }
            let more: Bool
            do { more = try connection.read(into: &parser, deadline: deadline) } catch {
                if case .timedOut = error {
                    throw .timedOut("etcd cluster unavailable: the watch did not reach revision \(now) within "
                        + "\(timeoutMillis) ms (the member may have no quorum)", mayHaveTakenEffect: false)
                }
                throw error
            }
            if !more { throw .connectionLost("etcd at \(connection.endpoint) ended the watch stream early") }
        }
    }

    /// Plexus events for one etcd revision (see the type's doc comment).
    private func translate(_ events: [EtcdJSON.Event], filter: String?) throws(NameServiceError) -> [WatchEvent.Kind] {
        let procBase = prefix + "/proc/"
        let aliveBase = prefix + "/alive/"
        let leaseBase = prefix + "/lease/"
        var decoded: [(delete: Bool, kv: EtcdJSON.KV, prev: EtcdJSON.KV?)] = []
        for event in events {
            guard let raw = event.kv else { continue }
            let kv = try EtcdJSON.KV(raw)
            guard kv.key.hasPrefix(prefix + "/") else { continue }
            let delete: Bool
            switch event.type ?? "PUT" {
            case "PUT": delete = false
            case "DELETE": delete = true
            default: throw .protocolViolation("etcd sent a watch event of unknown type '\(event.type!.prefix(16))'")
            }
            decoded.append((delete, kv, try event.prev_kv.map(EtcdJSON.KV.init)))
        }
        var endedLeases: [LeaseID: Bool] = [:] // lease → expired
        for e in decoded where e.delete && e.kv.key.hasPrefix(leaseBase) {
            let id = try pid(fromKey: e.kv.key, under: leaseBase)
            endedLeases[LeaseID(id)] = e.prev.map { String(decoding: $0.value, as: UTF8.self) != "revoked" } ?? true
        }
        var names: [WatchEvent.Kind] = []
        var processes: [WatchEvent.Kind] = []
        var ends: [WatchEvent.Kind] = []
        for e in decoded {
            let key = e.kv.key
            if key.hasPrefix(namesBase + "/") {
                let name = String(key.dropFirst(namesBase.count))
                if let filter, !(filter == "/" || name == filter || name.hasPrefix(filter + "/")) { continue }
                if e.delete {
                    let lease = e.prev.flatMap { Self.leaseID($0.lease) }.flatMap { endedLeases[$0] != nil ? $0 : nil }
                    names.append(.nameDeleted(name: name, lease: lease))
                } else {
                    names.append(e.kv.version == 1 ? .nameCreated(entry(name, e.kv)) : .nameUpdated(entry(name, e.kv)))
                }
            } else if filter != nil {
                continue
            } else if key.hasPrefix(procBase) {
                let p = try pid(fromKey: key, under: procBase)
                processes.append(e.delete ? .processReaped(GlobalPID(p)) : .processChanged(try Self.decodeRow(e.kv.value, pid: p)))
            } else if key.hasPrefix(aliveBase), e.delete, let prev = e.prev {
                let p = try pid(fromKey: key, under: aliveBase)
                var record = try Self.decodeRow(prev.value, pid: p)
                if !record.state.isTerminal {
                    record.state = .lost
                    processes.append(.processChanged(record))
                }
            } else if key.hasPrefix(leaseBase), e.delete {
                let id = LeaseID(try pid(fromKey: key, under: leaseBase))
                ends.append(.leaseEnded(id, expired: endedLeases[id] ?? true))
            }
        }
        return names + processes + ends
    }

    // MARK: - Unique numbers in one round trip

    /// A number that is unique and strictly increasing across the etcd
    /// cluster, in one round trip and without retries: a put of `value` under
    /// `<prefix>/ids` + `name`, answered with the response header's revision
    /// (etcd gives every write transaction its own revision, which is then that
    /// key's `mod_revision`). This is how an etcd user allocates unique ids;
    /// `allocatePID` instead keeps PIDs dense (1, 2, 3, ...) in a counter key,
    /// which costs a read and a compare-and-swap, retried when concurrent
    /// allocators race. Numbers are not dense: every other write to the etcd
    /// cluster, under any prefix, takes a revision too.
    public func uniqueRevision(putting value: [UInt8], at name: String) throws(NameServiceError) -> UInt64 {
        try validate(name, value)
        let response = try call("/v3/kv/put", ["key": b64(prefix + "/ids" + name), "value": b64(value)], write: true,
                                as: EtcdJSON.PutResponse.self)
        return try EtcdJSON.revision(response.header, what: "put")
    }

    // MARK: - Test and administration hooks

    /// Compacts etcd's history up to `revision` (etcd-wide: affects every
    /// prefix); watches from older revisions then fail with `.compacted`.
    public func compactHistory(upTo revision: UInt64) throws(NameServiceError) {
        _ = try call("/v3/kv/compaction", ["revision": "\(revision)", "physical": true], write: true,
                     as: EtcdJSON.Header.self)
    }

    /// The current etcd revision (linearizable).
    public func currentRevision() throws(NameServiceError) -> UInt64 {
        try EtcdJSON.revision(call("/v3/kv/range", ["key": b64(counterKey), "count_only": true], write: false,
                                   as: EtcdJSON.RangeResponse.self).header, what: "range")
    }

    // MARK: - Validation and encoding

    private func validate(_ name: String, _ value: [UInt8]) throws(NameServiceError) {
        if case .failure(let error) = NameServiceState().get(name), case .invalidName = error { throw .rejected(error) }
        if value.count > NameServiceState.Limits().maxValueBytes {
            throw .rejected(.invalidArgument("value of \(value.count) bytes exceeds \(NameServiceState.Limits().maxValueBytes)"))
        }
    }

    private func validateLabel(_ label: String, _ field: String) throws(NameServiceError) {
        let max = NameServiceState.Limits().maxNameBytes
        if label.utf8.count > max { throw .rejected(.invalidArgument("\(field) longer than \(max) bytes")) }
    }

    private func versionEquals(_ key: String, _ version: UInt64) -> [String: Any] {
        ["key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "\(version)"]
    }

    private func rangeEnd(_ keyPrefix: String) -> String {
        var end = Array(keyPrefix.utf8)
        end[end.count - 1] += 1 // prefixes end in "/", never 0xff
        return Data(end).base64EncodedString()
    }

    private func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }
    private func b64(_ b: [UInt8]) -> String { Data(b).base64EncodedString() }

    private func encode(_ body: [String: Any]) throws(NameServiceError) -> [UInt8] {
        do { return [UInt8](try JSONSerialization.data(withJSONObject: body)) } catch {
            throw .invalidArgument("cannot encode an etcd request: \(error)")
        }
    }

    /// A counter key and its value (0 if the key is absent).
    private func readCounter(_ key: String, what: String) throws(NameServiceError) -> (EtcdJSON.KV?, UInt64) {
        guard let current = try range(key).first else { return (nil, 0) }
        guard let n = UInt64(String(decoding: current.value, as: UTF8.self)) else {
            throw .protocolViolation("etcd key \(key) is not \(what); it must hold a decimal number")
        }
        return (current, n)
    }

    private func range(_ key: String, prefix isPrefix: Bool = false, keysOnly: Bool = false) throws(NameServiceError)
        -> [EtcdJSON.KV]
    {
        var body: [String: Any] = ["key": b64(key)]
        if isPrefix { body["range_end"] = rangeEnd(key) }
        if keysOnly { body["keys_only"] = true }
        let response = try call("/v3/kv/range", body, write: false, as: EtcdJSON.RangeResponse.self)
        var result: [EtcdJSON.KV] = []
        for raw in response.kvs ?? [] { result.append(try EtcdJSON.KV(raw)) }
        return result
    }

    private func txn(compare: [[String: Any]], success: [[String: Any]], failure: [[String: Any]], write: Bool,
                     lease: LeaseID? = nil) throws(NameServiceError) -> EtcdJSON.TxnResponse
    {
        try call("/v3/kv/txn", ["compare": compare, "success": success, "failure": failure], write: write,
                 as: EtcdJSON.TxnResponse.self, lease: lease)
    }

    // MARK: - Calls, retries, availability

    private func call<T: Decodable>(_ path: String, _ body: [String: Any], write: Bool, as type: T.Type,
                                    lease: LeaseID? = nil) throws(NameServiceError) -> T
    {
        let (_, bytes) = try request(path, try encode(body), write: write, lease: lease)
        return try EtcdJSON.decode(T.self, bytes, what: path)
    }

    private func rotate() { preferred.withLock { $0 = ($0 + 1) % endpoints.count } }

    private func pause(_ millis: Int, _ deadline: UInt64) {
        let left = Int(deadline) - Int(monotonicMillis())
        if left > 0 { usleep(useconds_t(min(millis, left) * 1000)) }
    }

    /// Errors after which a request certainly did not take effect and may go
    /// to another member.
    private static func isRetryableRefusal(_ message: String) -> Bool {
        ["no leader", "not capable", "too many requests", "unhealthy cluster", "leader changed", "server is stopping",
         "stopped"].contains { message.contains($0) }
    }

    /// Errors after which the outcome is unknown (the proposal may still commit).
    private static func isUncertainTimeout(_ message: String) -> Bool {
        ["request timed out", "deadline exceeded", "connection lost", "timed out"].contains { message.contains($0) }
    }

    /// POSTs to the preferred member until a definite answer or the deadline.
    /// Reads go to another member after a failure; writes do so only when the
    /// request certainly did not take effect (etcd has no deduplication).
    /// Returns (HTTP status 200, body).
    private func request(_ path: String, _ body: [UInt8], write: Bool, lease: LeaseID? = nil) throws(NameServiceError)
        -> (Int, [UInt8])
    {
        let start = monotonicMillis()
        let deadline = start + UInt64(timeoutMillis)
        // Time kept back to ask a silent member whether it has a leader.
        let reserve = UInt64(min(300, timeoutMillis / 5))
        var problems: [String: String] = [:]
        var mayHaveTakenEffect = false
        var connectedOnce = false
        var backoff = 10
        var failuresThisRound = 0

        func giveUp(_ why: String? = nil) -> NameServiceError {
            let detail = endpoints.compactMap { e in problems[e].map { "\(e): \($0)" } }.joined(separator: "; ")
            let down = endpoints.filter { problems[$0]?.hasPrefix("unreachable") ?? false }.count
            var why = why
            if endpoints.count > 1 && down > endpoints.count / 2 {
                why = "no quorum: \(down) of \(endpoints.count) etcd endpoints unreachable" + (why.map { ", \($0)" } ?? "")
            }
            let text = "etcd cluster unavailable: " + (why.map { $0 + "; " } ?? "")
                + (detail.isEmpty ? "no answer within \(timeoutMillis) ms" : detail)
                + "; check that a majority of the etcd members is up and connected (etcdctl endpoint status)"
            if !connectedOnce && !mayHaveTakenEffect { return .unreachable(text) }
            return .timedOut(text, mayHaveTakenEffect: mayHaveTakenEffect)
        }
        func noteFailure(_ endpoint: String, _ problem: String) {
            problems[endpoint] = problem
            rotate()
            failuresThisRound += 1
            if failuresThisRound >= endpoints.count {
                failuresThisRound = 0
                pause(backoff, deadline)
                backoff = min(backoff * 2, 200)
            }
        }

        while monotonicMillis() < deadline {
            let endpoint = endpoints[preferred.value % endpoints.count]
            var connection = pool.withLock { p -> HTTPConnection? in
                guard let i = p.firstIndex(where: { $0.endpoint == endpoint }) else { return nil }
                return p.remove(at: i)
            }
            if connection == nil {
                do {
                    connection = try HTTPConnection(endpoint: endpoint, deadline: min(deadline, monotonicMillis() + 1000))
                } catch {
                    if case .invalidArgument = error { throw error }
                    var why = error.description
                    if case .unreachable(let inner) = error { why = inner }
                    noteFailure(endpoint, "unreachable (\(why))")
                    continue
                }
            }
            guard let c = connection else { continue }
            connectedOnce = true
            let now = monotonicMillis()
            let attemptDeadline = write ? max(now + 1, deadline - reserve)
                : min(deadline, now + UInt64(max(1000, timeoutMillis / 3)))
            let status: Int
            let reply: [UInt8]
            do {
                (status, reply) = try c.post(path: path, body: body, deadline: attemptDeadline)
            } catch {
                c.close()
                switch error {
                case .unreachable(let why):
                    noteFailure(endpoint, "unreachable (\(why))")
                    continue
                case .timedOut, .connectionLost:
                    let silent = "no answer within \(attemptDeadline - now) ms" + leaderProblem(endpoint, deadline)
                    if write {
                        mayHaveTakenEffect = true
                        problems[endpoint] = silent
                        throw giveUp()
                    }
                    noteFailure(endpoint, silent)
                    continue
                default:
                    throw error
                }
            }
            if c.reusable { pool.withLock { p in if p.count < 64 { p.append(c) } else { c.close() } } } else { c.close() }
            if status == 200 { return (status, reply) }
            let error = try? EtcdJSON.decode(EtcdJSON.ErrorResponse.self, reply, what: path)
            let message = error?.message ?? error?.error ?? "HTTP \(status)"
            if message.contains("requested lease not found"), let lease { throw .rejected(.leaseNotFound(lease)) }
            if message.contains("lease not found") || message.contains("lease is not found") {
                throw .rejected(.leaseNotFound(lease ?? LeaseID(0)))
            }
            if message.contains("compacted") {
                throw .rejected(.compacted(requested: 0, oldestAvailable: 0))
            }
            if Self.isRetryableRefusal(message) {
                noteFailure(endpoint, message + (message.contains("no leader") ? " (no quorum)" : ""))
                continue
            }
            if Self.isUncertainTimeout(message) {
                let problem = message + leaderProblem(endpoint, deadline)
                if write {
                    mayHaveTakenEffect = true
                    problems[endpoint] = problem
                    throw giveUp()
                }
                noteFailure(endpoint, problem)
                continue
            }
            throw .protocolViolation("etcd at \(endpoint) refused \(path): \(message)")
        }
        throw giveUp()
    }

    /// ", member reports no leader (no quorum)" if the member says so within
    /// the time left; "" otherwise.
    private func leaderProblem(_ endpoint: String, _ deadline: UInt64) -> String {
        let probeDeadline = min(deadline, monotonicMillis() + 300)
        guard probeDeadline > monotonicMillis(),
              let c = try? HTTPConnection(endpoint: endpoint, deadline: probeDeadline) else { return "" }
        defer { c.close() }
        guard let (status, bytes) = try? c.post(path: "/v3/maintenance/status", body: Array("{}".utf8), deadline: probeDeadline),
              status == 200, let s = try? EtcdJSON.decode(EtcdJSON.StatusResponse.self, bytes, what: "status")
        else { return "" }
        if (s.leader?.value ?? 0) == 0 || (s.errors ?? []).contains(where: { $0.contains("no leader") }) {
            return ", and it reports no leader (no quorum: it cannot reach a majority of the etcd members)"
        }
        return ""
    }
}
