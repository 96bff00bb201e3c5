// NamesCore is the pure core of the name service (Raft and the replicated state machine: values in, effects out, no I/O); NameService is its shell.

/// NameServiceState — the deterministic state machine replicated by `RaftCore`.
///
/// Models: the replicated state machine of Raft §2 and the client sessions of
/// the Raft dissertation §6.3 (exactly-once semantics: each client numbers its
/// requests; the state machine keeps the latest request id and its result per
/// client and answers a retry with the saved result instead of executing it
/// again). The namespace follows ZooKeeper (Hunt et al., USENIX ATC 2010) for
/// versions, sequential and ephemeral names, and etcd v3 for the single global
/// revision, the revision-ordered event log and leases.
///
/// Terminology: ZooKeeper's znode `version`/`cversion` → `NameEntry.version`;
/// etcd's `revision`/`mod_revision`/`create_revision` → `revision`,
/// `modRevision`, `createRevision`; etcd "compacted" watch error →
/// `NameError.compacted`; dissertation "session" → `Session`.
///
/// Deviations and why:
///  - Every change (name or process) is one event with its own revision, so a
///    watcher resumes from a single number; etcd groups a transaction's
///    changes under one revision.
///  - Directories are implicit (etcd style): creating "/a/b/c" needs no "/a/b",
///    and `children(of:)` derives the listing from stored names. This keeps
///    sequential-name counters per parent path without parent nodes.
///  - Sessions are bounded (`Limits.maxSessions`), evicting the least recently
///    used. A client evicted and then retrying its last request would execute
///    it twice; the dissertation expires sessions the same way and relies on
///    the bound exceeding the number of live clients. Client id 0 means "no
///    session": such commands (the leader's own lease maintenance) are never
///    deduplicated.
///
/// Clock assumption: the state machine never reads a clock. Times arrive in
/// commands: the proposer's clock for process start times, the LEADER's
/// monotonic clock (milliseconds) for lease grants, keep-alives and expiry. The
/// leader proposes `expireLeases(now)` when its clock passes a deadline, so a
/// lease ends at least TTL after its last keep-alive as measured by the leader,
/// and possibly later (replication delay, failover). Because a new leader's
/// clock is unrelated to the old one's, a new leader must propose
/// `renewAllLeases(now)` before its first `expireLeases` (etcd's lessor does the
/// same on promotion); this can only lengthen leases, never cut one short.
///
/// Not thread-safe; a value owned by the engine that applies committed entries.
public struct NameServiceState: Equatable, Sendable {
    public struct Limits: Equatable, Sendable {
        public var maxSessions: Int
        public var eventLogCapacity: Int
        public var maxNameBytes: Int
        public var maxValueBytes: Int

        public init(maxSessions: Int = 4096, eventLogCapacity: Int = 4096, maxNameBytes: Int = 1024, maxValueBytes: Int = 65536) {
            precondition(maxSessions > 0 && eventLogCapacity > 0 && maxNameBytes > 1 && maxValueBytes >= 0)
            self.maxSessions = maxSessions
            self.eventLogCapacity = eventLogCapacity
            self.maxNameBytes = maxNameBytes
            self.maxValueBytes = maxValueBytes
        }
    }

    struct Session: Equatable, Sendable {
        var lastRequestID: UInt64
        var result: NameResult
        var lastUsed: UInt64
    }

    public internal(set) var limits: Limits
    /// Next PID to issue; PIDs are never reused, even after reaping.
    var nextPID: UInt64 = 1
    var processes: [GlobalPID: ProcessRecord] = [:]
    var names: [String: NameEntry] = [:]
    /// Global revision: the revision of the latest event.
    var revision: UInt64 = 0
    /// The newest events; `events[i].revision == compactedRevision + 1 + i`.
    var events: [WatchEvent] = []
    /// Events at or below this revision have been dropped.
    var compactedRevision: UInt64 = 0
    /// Sequential-name counters, per parent path.
    var sequenceCounters: [String: UInt64] = [:]
    var leases: [LeaseID: Lease] = [:]
    var nextLeaseID: UInt64 = 1
    var sessions: [UInt64: Session] = [:]
    /// Count of applied commands; orders sessions for eviction.
    var appliedCommands: UInt64 = 0

    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    // MARK: - Applying commands

    /// Applies a committed command from `clientID` with the client's request
    /// number. A retry of the client's latest request returns the saved result.
    public mutating func apply(_ command: NameCommand, clientID: UInt64, requestID: UInt64) -> NameResult {
        appliedCommands += 1
        if clientID != 0, let session = sessions[clientID] {
            if requestID == session.lastRequestID {
                sessions[clientID]!.lastUsed = appliedCommands
                return session.result
            }
            if requestID < session.lastRequestID {
                return .failure(.staleRequest(clientID: clientID, requestID: requestID, latest: session.lastRequestID))
            }
        }
        let result = execute(command)
        if clientID != 0 {
            sessions[clientID] = Session(lastRequestID: requestID, result: result, lastUsed: appliedCommands)
            if sessions.count > limits.maxSessions {
                let oldest = sessions.min { ($0.value.lastUsed, $0.key) < ($1.value.lastUsed, $1.key) }!
                sessions[oldest.key] = nil
            }
        }
        return result
    }

    /// Applies the bytes of a committed log entry. Undecodable bytes yield a
    /// deterministic `malformedCommand` failure on every replica.
    public mutating func apply(encoded bytes: [UInt8], clientID: UInt64, requestID: UInt64) -> NameResult {
        do {
            let command = try NameCommand(decoding: bytes)
            return apply(command, clientID: clientID, requestID: requestID)
        } catch {
            appliedCommands += 1
            return .failure(.malformedCommand(error.description))
        }
    }

    mutating func execute(_ command: NameCommand) -> NameResult {
        switch command {
        case .allocatePID(let node, let address, let parent, let start, let lease):
            return allocatePID(node: node, address: address, parent: parent, startTimeMillis: start, lease: lease)
        case .setProcessState(let pid, let state):
            return setProcessState(pid: pid, to: state)
        case .rebindProcess(let pid, let node, let address):
            return rebindProcess(pid: pid, node: node, address: address)
        case .exitProcess(let pid, let status):
            return exitProcess(pid: pid, status: status)
        case .reapProcess(let pid):
            return reapProcess(pid: pid)
        case .create(let name, let value, let lease):
            return create(name: name, value: value, lease: lease)
        case .createSequential(let prefix, let value, let lease):
            return createSequential(prefix: prefix, value: value, lease: lease)
        case .put(let name, let value, let lease):
            return put(name: name, value: value, lease: lease)
        case .compareAndSet(let name, let expected, let value):
            return compareAndSet(name: name, expectedVersion: expected, value: value)
        case .delete(let name, let expected):
            return delete(name: name, expectedVersion: expected)
        case .grantLease(let ttl, let now):
            return grantLease(ttlMillis: ttl, nowMillis: now)
        case .keepAlive(let lease, let now):
            return keepAlive(lease: lease, nowMillis: now)
        case .revokeLease(let lease):
            guard leases[lease] != nil else { return .failure(.leaseNotFound(lease)) }
            endLease(lease, expired: false)
            return .success(.leaseRevoked(lease))
        case .expireLeases(let now):
            let due = leases.values.filter { $0.expiresAtMillis <= now }.map(\.id).sorted()
            for lease in due { endLease(lease, expired: true) }
            return .success(.leasesExpired(due))
        case .renewAllLeases(let now):
            for id in leases.keys {
                leases[id]!.expiresAtMillis = Self.deadline(now, plus: leases[id]!.ttlMillis)
            }
            return .success(.leasesRenewed(count: UInt64(leases.count)))
        }
    }

    // MARK: Processes

    mutating func allocatePID(node: String, address: String, parent: GlobalPID?, startTimeMillis: UInt64, lease: LeaseID?) -> NameResult {
        if let error = validateLabel(node, "node") ?? validateLabel(address, "address") { return .failure(error) }
        if let parent, parent.rawValue == 0 || parent.rawValue >= nextPID {
            return .failure(.processNotFound(parent))
        }
        if let lease, leases[lease] == nil { return .failure(.leaseNotFound(lease)) }
        let pid = GlobalPID(nextPID)
        nextPID += 1
        let record = ProcessRecord(
            pid: pid, node: node, address: address, state: .starting, parent: parent,
            startTimeMillis: startTimeMillis, exitStatus: nil, lease: lease)
        processes[pid] = record
        if let lease { leases[lease]!.pids.insert(pid) }
        appendEvent(.processChanged(record))
        return .success(.allocated(pid))
    }

    static func isAllowed(from: ProcessState, to: ProcessState) -> Bool {
        switch (from, to) {
        case (.starting, .running), (.running, .migrating), (.migrating, .running): true
        case (.starting, .lost), (.running, .lost), (.migrating, .lost): true
        default: false
        }
    }

    mutating func setProcessState(pid: GlobalPID, to state: ProcessState) -> NameResult {
        guard var record = processes[pid] else { return .failure(.processNotFound(pid)) }
        guard Self.isAllowed(from: record.state, to: state) else {
            return .failure(.invalidTransition(pid: pid, from: record.state, to: state))
        }
        record.state = state
        processes[pid] = record
        appendEvent(.processChanged(record))
        return .success(.process(record))
    }

    mutating func rebindProcess(pid: GlobalPID, node: String, address: String) -> NameResult {
        if let error = validateLabel(node, "node") ?? validateLabel(address, "address") { return .failure(error) }
        guard var record = processes[pid] else { return .failure(.processNotFound(pid)) }
        guard !record.state.isTerminal else {
            return .failure(.invalidTransition(pid: pid, from: record.state, to: record.state))
        }
        record.node = node
        record.address = address
        processes[pid] = record
        appendEvent(.processChanged(record))
        return .success(.process(record))
    }

    mutating func exitProcess(pid: GlobalPID, status: Int32) -> NameResult {
        guard var record = processes[pid] else { return .failure(.processNotFound(pid)) }
        guard !record.state.isTerminal else {
            return .failure(.invalidTransition(pid: pid, from: record.state, to: .exited))
        }
        record.state = .exited
        record.exitStatus = status
        processes[pid] = record
        appendEvent(.processChanged(record))
        return .success(.process(record))
    }

    mutating func reapProcess(pid: GlobalPID) -> NameResult {
        guard let record = processes[pid] else { return .failure(.processNotFound(pid)) }
        guard record.state.isTerminal else {
            return .failure(.invalidArgument("\(pid) is \(record.state); only exited or lost processes can be reaped"))
        }
        processes[pid] = nil
        if let lease = record.lease { leases[lease]?.pids.remove(pid) }
        appendEvent(.processReaped(pid))
        return .success(.reaped(pid))
    }

    // MARK: Namespace

    mutating func create(name: String, value: [UInt8], lease: LeaseID?) -> NameResult {
        if let error = validateName(name) ?? validateValue(value) { return .failure(error) }
        if names[name] != nil { return .failure(.nameExists(name)) }
        if let lease, leases[lease] == nil { return .failure(.leaseNotFound(lease)) }
        return .success(.written(store(name: name, value: value, lease: lease, previous: nil)))
    }

    mutating func createSequential(prefix: String, value: [UInt8], lease: LeaseID?) -> NameResult {
        guard prefix.hasPrefix("/") else { return .failure(.invalidName(prefix, reason: "must start with /")) }
        let parent = Self.parentPath(of: prefix + "0")
        let counter = sequenceCounters[parent, default: 0]
        let digits = String(counter)
        let name = prefix + String(repeating: "0", count: Swift.max(0, 10 - digits.count)) + digits
        if let error = validateName(name) ?? validateValue(value) { return .failure(error) }
        if let lease, leases[lease] == nil { return .failure(.leaseNotFound(lease)) }
        // The counter advances even if the name exists (ZooKeeper behaviour), so
        // a retry after an external create of that name makes progress.
        sequenceCounters[parent] = counter + 1
        if names[name] != nil { return .failure(.nameExists(name)) }
        return .success(.written(store(name: name, value: value, lease: lease, previous: nil)))
    }

    mutating func put(name: String, value: [UInt8], lease: LeaseID?) -> NameResult {
        if let error = validateName(name) ?? validateValue(value) { return .failure(error) }
        if let lease, leases[lease] == nil { return .failure(.leaseNotFound(lease)) }
        return .success(.written(store(name: name, value: value, lease: lease, previous: names[name])))
    }

    mutating func compareAndSet(name: String, expectedVersion: UInt64, value: [UInt8]) -> NameResult {
        if let error = validateName(name) ?? validateValue(value) { return .failure(error) }
        guard let current = names[name] else { return .failure(.nameNotFound(name)) }
        guard current.version == expectedVersion else {
            return .failure(.versionMismatch(name: name, expected: expectedVersion, found: current.version))
        }
        return .success(.written(store(name: name, value: value, lease: current.lease, previous: current)))
    }

    mutating func delete(name: String, expectedVersion: UInt64?) -> NameResult {
        if let error = validateName(name) { return .failure(error) }
        guard let current = names[name] else { return .failure(.nameNotFound(name)) }
        if let expectedVersion, expectedVersion != current.version {
            return .failure(.versionMismatch(name: name, expected: expectedVersion, found: current.version))
        }
        removeName(name, leaseCause: nil)
        return .success(.deleted(name: name, revision: revision))
    }

    /// Writes a name (new or replacing `previous`), keeping lease bindings in step.
    mutating func store(name: String, value: [UInt8], lease: LeaseID?, previous: NameEntry?) -> NameEntry {
        let newRevision = revision + 1
        let entry = NameEntry(
            name: name, value: value, version: (previous?.version ?? 0) + 1,
            createRevision: previous?.createRevision ?? newRevision, modRevision: newRevision, lease: lease)
        if let old = previous?.lease, old != lease { leases[old]?.names.remove(name) }
        if let lease { leases[lease]!.names.insert(name) }
        names[name] = entry
        appendEvent(previous == nil ? .nameCreated(entry) : .nameUpdated(entry))
        return entry
    }

    mutating func removeName(_ name: String, leaseCause: LeaseID?) {
        guard let entry = names.removeValue(forKey: name) else { return }
        if let lease = entry.lease { leases[lease]?.names.remove(name) }
        appendEvent(.nameDeleted(name: name, lease: leaseCause))
    }

    // MARK: Leases

    static func deadline(_ now: UInt64, plus ttl: UInt64) -> UInt64 {
        let (sum, overflow) = now.addingReportingOverflow(ttl)
        return overflow ? UInt64.max : sum
    }

    mutating func grantLease(ttlMillis: UInt64, nowMillis: UInt64) -> NameResult {
        guard ttlMillis > 0 else { return .failure(.invalidArgument("lease TTL must be positive")) }
        let id = LeaseID(nextLeaseID)
        nextLeaseID += 1
        let lease = Lease(id: id, ttlMillis: ttlMillis, expiresAtMillis: Self.deadline(nowMillis, plus: ttlMillis))
        leases[id] = lease
        return .success(.lease(id: id, ttlMillis: ttlMillis, expiresAtMillis: lease.expiresAtMillis))
    }

    mutating func keepAlive(lease id: LeaseID, nowMillis: UInt64) -> NameResult {
        guard var lease = leases[id] else { return .failure(.leaseNotFound(id)) }
        lease.expiresAtMillis = Swift.max(lease.expiresAtMillis, Self.deadline(nowMillis, plus: lease.ttlMillis))
        leases[id] = lease
        return .success(.lease(id: id, ttlMillis: lease.ttlMillis, expiresAtMillis: lease.expiresAtMillis))
    }

    /// Ends a lease: its ephemeral names are deleted and its live processes
    /// marked lost, each as an event, then a `leaseEnded` event.
    mutating func endLease(_ id: LeaseID, expired: Bool) {
        guard let lease = leases[id] else { return }
        for name in lease.names.sorted() where names[name]?.lease == id {
            removeName(name, leaseCause: id)
        }
        for pid in lease.pids.sorted() {
            guard var process = processes[pid], !process.state.isTerminal else { continue }
            process.state = .lost
            processes[pid] = process
            appendEvent(.processChanged(process))
        }
        leases[id] = nil
        appendEvent(.leaseEnded(id, expired: expired))
    }

    // MARK: Events

    /// Appends an event at the next revision and trims the log in batches
    /// (deterministically, so every replica keeps the same window).
    mutating func appendEvent(_ kind: WatchEvent.Kind) {
        revision += 1
        events.append(WatchEvent(revision: revision, kind: kind))
        let slack = Swift.max(1, limits.eventLogCapacity / 8)
        if events.count > limits.eventLogCapacity + slack {
            let drop = events.count - limits.eventLogCapacity
            compactedRevision = events[drop - 1].revision
            events.removeFirst(drop)
        }
    }

    // MARK: Validation

    func validateName(_ name: String) -> NameError? {
        let bytes = name.utf8
        if bytes.count > limits.maxNameBytes {
            return .invalidName(String(name.prefix(64)) + "…", reason: "longer than \(limits.maxNameBytes) bytes")
        }
        guard name.hasPrefix("/") else { return .invalidName(name, reason: "must start with /") }
        guard name != "/" else { return .invalidName(name, reason: "the root cannot be written") }
        guard !name.hasSuffix("/") else { return .invalidName(name, reason: "must not end with /") }
        if bytes.contains(0) { return .invalidName(name, reason: "contains NUL") }
        for component in name.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            if component.isEmpty { return .invalidName(name, reason: "empty path component") }
            if component == "." || component == ".." { return .invalidName(name, reason: "'.' and '..' are not allowed") }
        }
        return nil
    }

    func validateValue(_ value: [UInt8]) -> NameError? {
        value.count > limits.maxValueBytes
            ? .invalidArgument("value of \(value.count) bytes exceeds \(limits.maxValueBytes)") : nil
    }

    func validateLabel(_ label: String, _ field: String) -> NameError? {
        label.utf8.count > limits.maxNameBytes
            ? .invalidArgument("\(field) longer than \(limits.maxNameBytes) bytes") : nil
    }

    static func parentPath(of name: String) -> String {
        guard let slash = name.lastIndex(of: "/"), slash != name.startIndex else { return "/" }
        return String(name[..<slash])
    }

    // MARK: - Queries

    public var currentRevision: UInt64 { revision }
    /// The PID the next allocation will return.
    public var nextUnallocatedPID: GlobalPID { GlobalPID(nextPID) }
    /// Oldest revision a watcher can still resume from.
    public var oldestWatchableRevision: UInt64 { compactedRevision + 1 }
    public var processTable: [GlobalPID: ProcessRecord] { processes }
    public var namespace: [String: NameEntry] { names }
    public var activeLeases: [LeaseID: Lease] { leases }

    public func process(_ pid: GlobalPID) -> Result<ProcessRecord, NameError> {
        processes[pid].map { .success($0) } ?? .failure(.processNotFound(pid))
    }

    public func get(_ name: String) -> Result<NameEntry, NameError> {
        if let error = validateName(name) { return .failure(error) }
        return names[name].map { .success($0) } ?? .failure(.nameNotFound(name))
    }

    public func lease(_ id: LeaseID) -> Result<Lease, NameError> {
        leases[id].map { .success($0) } ?? .failure(.leaseNotFound(id))
    }

    /// Immediate children of `path` ("/" for the top level), sorted by name.
    public func children(of path: String) -> Result<[ChildName], NameError> {
        if path != "/", let error = validateName(path) { return .failure(error) }
        let prefix = path == "/" ? "/" : path + "/"
        var found: [String: ChildName] = [:]
        for name in names.keys where name.hasPrefix(prefix) {
            let rest = name.dropFirst(prefix.count)
            if let slash = rest.firstIndex(of: "/") {
                let child = prefix + rest[..<slash]
                found[child, default: ChildName(name: child, isEntry: names[child] != nil, hasChildren: true)].hasChildren = true
            } else {
                let child = prefix + rest
                found[child, default: ChildName(name: child, isEntry: true, hasChildren: false)].isEntry = true
            }
        }
        return .success(found.keys.sorted().map { found[$0]! })
    }

    /// Events with revision >= `fromRevision`, optionally only for names under
    /// `prefix` (which excludes process and lease events), at most `limit`.
    /// Fails with `.compacted` if some of those events were already dropped: the
    /// watcher must re-read the state and resume from `oldestAvailable` or later.
    public func events(fromRevision: UInt64, prefix: String? = nil, limit: Int = Int.max) -> Result<WatchBatch, NameError> {
        let from = Swift.max(fromRevision, 1)
        if from <= compactedRevision {
            return .failure(.compacted(requested: fromRevision, oldestAvailable: compactedRevision + 1))
        }
        var selected: [WatchEvent] = []
        var next = revision + 1
        if from <= revision {
            let start = Int(from - compactedRevision - 1)
            for event in events[start...] {
                if let prefix {
                    guard let name = event.name, name == prefix || name.hasPrefix(prefix.hasSuffix("/") ? prefix : prefix + "/")
                    else { continue }
                }
                if selected.count == limit {
                    next = event.revision
                    break
                }
                selected.append(event)
            }
        } else {
            next = from
        }
        return .success(WatchBatch(events: selected, nextRevision: next))
    }

    public func answer(_ query: NameQuery) -> NameQueryResult {
        switch query {
        case .process(let pid): process(pid).map { .process($0) }
        case .get(let name): get(name).map { .entry($0) }
        case .children(let path): children(of: path).map { .children($0) }
        case .watch(let from, let prefix, let limit):
            events(fromRevision: from, prefix: prefix, limit: Int(clamping: limit)).map { .events($0) }
        case .lease(let id): lease(id).map { .lease($0) }
        case .processes(let after, let limit):
            .success(.processes(Array(processes.keys.filter { $0 > after }.sorted()
                .prefix(Int(clamping: limit)).map { processes[$0]! })))
        }
    }
}
