import Foundation
import NamesCore
import Transport
import Wire

/// Client of the replicated name service.
///
/// Finds the leader (following "not leader" redirects), retries with bounded
/// exponential backoff until a per-call deadline, and numbers its writes
/// (client id + request id) so that a retried write takes effect once — a
/// retried PID allocation returns the PID of the first attempt.
///
/// Thread safety: calls may come from any thread; writes are serialised (one
/// outstanding write per client id, as the session rule of the Raft
/// dissertation §6.3 requires). Use one client per concurrent writer.
public final class NameClient: NameServiceBackend, @unchecked Sendable {
    public struct Options: Sendable {
        /// Whole-call deadline.
        public var timeoutMillis: Int
        /// Per-attempt wait for a reply.
        public var attemptTimeoutMillis: Int
        public var connectTimeoutMillis: Int32
        /// Backoff between rounds starts here and doubles up to `maxBackoffMillis`.
        public var initialBackoffMillis: Int
        public var maxBackoffMillis: Int
        /// Follow "not leader" redirects to addresses outside the given list.
        public var followRedirects: Bool

        public init(timeoutMillis: Int = 5000, attemptTimeoutMillis: Int = 1500, connectTimeoutMillis: Int32 = 300,
                    initialBackoffMillis: Int = 10, maxBackoffMillis: Int = 200, followRedirects: Bool = true) {
            self.timeoutMillis = timeoutMillis
            self.attemptTimeoutMillis = attemptTimeoutMillis
            self.connectTimeoutMillis = connectTimeoutMillis
            self.initialBackoffMillis = initialBackoffMillis
            self.maxBackoffMillis = maxBackoffMillis
            self.followRedirects = followRedirects
        }
    }

    public let clientID: UInt64
    public let options: Options
    private let lock = NSLock()
    private let writeLock = NSLock()
    private var addresses: [String]
    private var preferred = 0
    private var nextRequestID: UInt64 = 0
    private var connections: [String: ClientConnection] = [:]

    public init(replicas: [String], clientID: UInt64 = UInt64.random(in: 1...(1 << 62)), options: Options = Options())
        throws(NameServiceError)
    {
        guard !replicas.isEmpty else { throw .invalidArgument("no name-service address given") }
        for r in replicas {
            do { _ = try SocketAddress(parsing: r) } catch { throw .invalidArgument("\(error)") }
        }
        self.addresses = replicas
        self.clientID = clientID
        self.options = options
    }

    /// Parses "IP:PORT,IP:PORT" (as given to --names).
    public convenience init(addressList: String, options: Options = Options()) throws(NameServiceError) {
        try self.init(replicas: addressList.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) },
                      options: options)
    }

    deinit { for c in connections.values { c.close() } }

    // MARK: - Operations

    /// Applies a command exactly once; returns the state machine's result.
    public func execute(_ command: NameCommand) throws(NameServiceError) -> NameOutput {
        writeLock.lock()
        defer { writeLock.unlock() }
        let requestID = lock.withLock { () -> UInt64 in
            nextRequestID += 1
            return nextRequestID
        }
        let response = try call(isWrite: true) { timeout in
            .command(clientID: clientID, requestID: requestID, command: command, timeoutMillis: timeout)
        }
        guard case .result(let result) = response else { throw .protocolViolation("expected a command result, got \(response)") }
        switch result {
        case .success(let output): return output
        case .failure(let error): throw .rejected(error)
        }
    }

    /// A linearizable read.
    public func query(_ query: NameQuery) throws(NameServiceError) -> NameQueryOutput {
        let response = try call(isWrite: false) { timeout in .query(query, timeoutMillis: timeout) }
        guard case .queryResult(let result) = response else { throw .protocolViolation("expected a query result, got \(response)") }
        switch result {
        case .success(let output): return output
        case .failure(let error): throw .rejected(error)
        }
    }

    /// The status of the replica at `address` (no leader needed).
    public func status(of address: String) throws(NameServiceError) -> ReplicaStatus {
        let response = try attempt(address, .status, timeoutMillis: options.attemptTimeoutMillis)
        guard case .status(let status) = response else { throw .protocolViolation("expected a status, got \(response)") }
        return status
    }

    /// Test hook: tells the replica at `address` to drop Raft traffic with `peers`.
    public func isolate(_ address: String, from peers: [ReplicaID]) throws(NameServiceError) {
        let response = try attempt(address, .isolate(peers), timeoutMillis: options.attemptTimeoutMillis)
        switch response {
        case .done: return
        case .unavailable(let reason, _, _): throw .invalidArgument(reason)
        default: throw .protocolViolation("expected done, got \(response)")
        }
    }

    public var replicaAddresses: [String] { lock.withLock { addresses } }

    public func allocatePID(node: String, address: String, parent: GlobalPID?, lease: LeaseID?)
        throws(NameServiceError) -> GlobalPID
    {
        let start = UInt64(Date().timeIntervalSince1970 * 1000)
        guard case .allocated(let pid) = try execute(.allocatePID(node: node, address: address, parent: parent,
                                                                 startTimeMillis: start, lease: lease))
        else { throw .protocolViolation("allocatePID did not return a PID") }
        return pid
    }

    public func create(_ name: String, value: [UInt8]) throws(NameServiceError) -> NameEntry {
        try checkName(name)
        return try written(execute(.create(name: name, value: value, lease: nil)))
    }

    public func put(_ name: String, value: [UInt8]) throws(NameServiceError) -> NameEntry {
        try checkName(name)
        return try written(execute(.put(name: name, value: value, lease: nil)))
    }

    public func compareAndSet(_ name: String, expectedVersion: UInt64, value: [UInt8]) throws(NameServiceError) -> NameEntry {
        try checkName(name)
        return try written(execute(.compareAndSet(name: name, expectedVersion: expectedVersion, value: value)))
    }

    public func delete(_ name: String, expectedVersion: UInt64?) throws(NameServiceError) {
        try checkName(name)
        _ = try execute(.delete(name: name, expectedVersion: expectedVersion))
    }

    public func get(_ name: String) throws(NameServiceError) -> NameEntry {
        try checkName(name)
        guard case .entry(let entry) = try query(.get(name: name)) else { throw .protocolViolation("get did not return an entry") }
        return entry
    }

    public func list(_ path: String) throws(NameServiceError) -> [ChildName] {
        guard case .children(let children) = try query(.children(of: path)) else {
            throw .protocolViolation("list did not return children")
        }
        return children
    }

    /// The whole process table, in PID order (paged reads; each page is linearizable).
    public func processes() throws(NameServiceError) -> [ProcessRecord] {
        var all: [ProcessRecord] = []
        var after = GlobalPID(0)
        while true {
            guard case .processes(let page) = try query(.processes(after: after, limit: 512)) else {
                throw .protocolViolation("processes did not return records")
            }
            all += page
            guard page.count == 512, let last = page.last else { return all }
            after = last.pid
        }
    }

    public func process(_ pid: GlobalPID) throws(NameServiceError) -> ProcessRecord {
        guard case .process(let record) = try query(.process(pid)) else { throw .protocolViolation("expected a process record") }
        return record
    }

    // MARK: - Leases and ephemeral names

    /// A lease that ends `ttlMillis` after its last keep-alive (in the
    /// leader's clock, possibly later after a failover, never earlier).
    public func grantLease(ttlMillis: UInt64) throws(NameServiceError) -> LeaseID {
        guard case .lease(let id, _, _) = try execute(.grantLease(ttlMillis: ttlMillis, nowMillis: 0)) else {
            throw .protocolViolation("grantLease did not return a lease")
        }
        return id
    }

    public func keepAlive(_ lease: LeaseID) throws(NameServiceError) {
        _ = try execute(.keepAlive(lease: lease, nowMillis: 0))
    }

    /// Ends the lease now: its ephemeral names are deleted, its processes marked lost.
    public func revokeLease(_ lease: LeaseID) throws(NameServiceError) {
        _ = try execute(.revokeLease(lease: lease))
    }

    public func createSequential(_ prefix: String, value: [UInt8], lease: LeaseID?) throws(NameServiceError) -> NameEntry {
        guard prefix.hasPrefix("/") else { throw .rejected(.invalidName(prefix, reason: "must start with /")) }
        return try written(execute(.createSequential(prefix: prefix, value: value, lease: lease)))
    }

    /// Creates a name that is deleted when `lease` ends.
    public func createEphemeral(_ name: String, value: [UInt8], lease: LeaseID) throws(NameServiceError) -> NameEntry {
        try written(execute(.create(name: name, value: value, lease: lease)))
    }

    // MARK: - Process lifecycle (for the launcher, which sees only raw PIDs)

    /// Records where a started process can be reached and marks it running.
    public func reportRunning(pid: UInt64, node: String, address: String) throws(NameServiceError) {
        _ = try execute(.rebindProcess(pid: GlobalPID(pid), node: node, address: address))
        _ = try execute(.setProcessState(pid: GlobalPID(pid), state: .running))
    }

    public func rebindProcess(_ pid: GlobalPID, node: String, address: String) throws(NameServiceError) -> ProcessRecord {
        guard case .process(let record) = try execute(.rebindProcess(pid: pid, node: node, address: address)) else {
            throw .protocolViolation("rebindProcess did not return the process")
        }
        return record
    }

    /// Records a process's exit status (128+N for signal N).
    public func reportExit(pid: UInt64, status: Int32) throws(NameServiceError) {
        _ = try execute(.exitProcess(pid: GlobalPID(pid), status: status))
    }

    public func setProcessState(_ pid: GlobalPID, to state: ProcessState) throws(NameServiceError) -> ProcessRecord {
        guard case .process(let record) = try execute(.setProcessState(pid: pid, state: state)) else {
            throw .protocolViolation("setProcessState did not return the process")
        }
        return record
    }

    // MARK: - Watch

    public func watch(fromRevision: UInt64, prefix: String?, limit: Int) throws(NameServiceError) -> WatchBatch {
        guard limit >= 1 else { throw .rejected(.invalidArgument("watch limit must be at least 1")) }
        if let prefix, prefix != "/" { try checkName(prefix) }
        guard case .events(let batch) = try query(.watch(fromRevision: fromRevision, prefix: prefix, limit: UInt64(limit)))
        else { throw .protocolViolation("watch did not return events") }
        return batch
    }

    /// Refuses a malformed name locally, with the service's own message,
    /// instead of a round trip (or a timeout when the service is down).
    private func checkName(_ name: String) throws(NameServiceError) {
        if case .failure(let error) = NameServiceState().get(name), case .invalidName = error { throw .rejected(error) }
    }

    private func written(_ output: NameOutput) throws(NameServiceError) -> NameEntry {
        guard case .written(let entry) = output else { throw .protocolViolation("expected a written entry, got \(output)") }
        return entry
    }

    // MARK: - Leader finding and retries

    /// Sends the request to the presumed leader until one answers definitely
    /// or the deadline passes.
    private func call(isWrite: Bool, _ make: (UInt64) -> ClientRequest) throws(NameServiceError) -> ClientResponse {
        let deadline = monotonicMillis() + UInt64(options.timeoutMillis)
        var mayHaveTakenEffect = false
        var backoff = options.initialBackoffMillis
        var refusedThisRound: Set<String> = [] // answered no-quorum or unreachable
        var lastNoQuorum: (Int, Int, Int)?
        var lastProblem = "no replica answered"
        var anyAnswer = false
        var target = lock.withLock { addresses[preferred % addresses.count] }

        func rotate() {
            target = lock.withLock { () -> String in
                preferred = (preferred + 1) % addresses.count
                return addresses[preferred]
            }
        }
        func endOfRound() -> Bool {
            let all = lock.withLock { Set(addresses) }
            return all.isSubset(of: refusedThisRound)
        }
        func pause() {
            let left = Int(deadline) - Int(monotonicMillis())
            if left > 0 { usleep(useconds_t(min(backoff, left) * 1000)) }
            backoff = min(backoff * 2, options.maxBackoffMillis)
        }

        var notMembers = Set<String>()
        while monotonicMillis() < deadline {
            let left = Int(deadline - monotonicMillis())
            let attemptTimeout = min(options.attemptTimeoutMillis, left)
            let response: ClientResponse
            do {
                response = try attempt(target, make(UInt64(attemptTimeout)), timeoutMillis: attemptTimeout)
            } catch let error {
                switch error {
                case .timedOut:
                    if isWrite { mayHaveTakenEffect = true }
                    lastProblem = "\(target) did not answer within \(attemptTimeout) ms"
                case .unreachable(let why):
                    lastProblem = why
                case .connectionLost(let why):
                    if isWrite { mayHaveTakenEffect = true }
                    lastProblem = why
                default:
                    throw error
                }
                if case .timedOut = error { anyAnswer = true }
                refusedThisRound.insert(target)
                if endOfRound(), let (r, m, n) = lastNoQuorum {
                    throw .noQuorum(reachable: r, members: m, needed: n, mayHaveTakenEffect: mayHaveTakenEffect)
                }
                if endOfRound() { refusedThisRound = []; pause() }
                rotate()
                continue
            }
            anyAnswer = true
            switch response {
            case .notLeader(let hint, let address):
                refusedThisRound.remove(target)
                if let address, address != target, options.followRedirects || lock.withLock({ addresses.contains(address) }) {
                    lock.withLock {
                        if let i = addresses.firstIndex(of: address) { preferred = i } else {
                            addresses.append(address)
                            preferred = addresses.count - 1
                        }
                    }
                    target = address
                    lastProblem = "redirected to leader \(hint.map { "\($0)" } ?? "?") at \(address)"
                } else {
                    lastProblem = "no leader elected yet"
                    pause()
                    rotate()
                }
            case .noQuorum(let reachable, let members, let needed):
                lastNoQuorum = (reachable, members, needed)
                refusedThisRound.insert(target)
                if endOfRound() {
                    throw .noQuorum(reachable: reachable, members: members, needed: needed, mayHaveTakenEffect: mayHaveTakenEffect)
                }
                rotate()
            case .notMember(let reason):
                lastProblem = reason
                notMembers.insert(target)
                // Every address this client knows is a removed (or not yet
                // added) replica: waiting cannot help; say so now.
                if !mayHaveTakenEffect && lock.withLock({ Set(addresses).isSubset(of: notMembers) }) {
                    throw .unreachable("no replica this client was given is a member of the name service: \(reason)")
                }
                refusedThisRound.insert(target)
                if endOfRound() { refusedThisRound = []; pause() }
                rotate()
            case .unavailable(let reason, let maybe, let storage):
                if maybe && isWrite { mayHaveTakenEffect = true }
                if storage { throw .storage(reason) }
                lastProblem = reason
                pause()
            default:
                return response
            }
        }
        if let (r, m, n) = lastNoQuorum {
            throw .noQuorum(reachable: r, members: m, needed: n, mayHaveTakenEffect: mayHaveTakenEffect)
        }
        if !anyAnswer && !mayHaveTakenEffect {
            throw .unreachable("no replica could be reached within \(options.timeoutMillis) ms (last: \(lastProblem))")
        }
        throw .timedOut("no answer from the name service within \(options.timeoutMillis) ms (\(lastProblem))",
                        mayHaveTakenEffect: mayHaveTakenEffect)
    }

    /// One request to one replica.
    private func attempt(_ address: String, _ request: ClientRequest, timeoutMillis: Int) throws(NameServiceError) -> ClientResponse {
        let connection: ClientConnection
        if let existing = lock.withLock({ connections[address] }), !existing.isClosed {
            connection = existing
        } else {
            let socket: SocketAddress
            do { socket = try SocketAddress(parsing: address) } catch { throw .invalidArgument("\(error)") }
            connection = try ClientConnection.open(socket, timeoutMillis: min(options.connectTimeoutMillis, Int32(max(timeoutMillis, 1))))
            lock.withLock { connections[address] = connection }
        }
        do {
            return try connection.call(request, timeoutMillis: timeoutMillis)
        } catch {
            if case .timedOut = error {} else { lock.withLock { _ = connections.removeValue(forKey: address) } }
            throw error
        }
    }
}

/// One connection to a replica with a reader thread that matches replies to
/// waiting calls by correlation id. Thread-safe.
final class ClientConnection: @unchecked Sendable {
    private let connection: Connection
    private let condition = NSCondition()
    private var waiting: [UInt64: ClientResponse?] = [:]
    private var closedReason: String?
    private var nextCorrelation: UInt64 = 0
    let address: String

    private init(_ connection: Connection, address: String) {
        self.connection = connection
        self.address = address
    }

    static func open(_ address: SocketAddress, timeoutMillis: Int32) throws(NameServiceError) -> ClientConnection {
        // A fresh id per connection: the replica addresses replies by it.
        let id = UInt64.random(in: (1 << 63)...UInt64.max)
        let c: Connection
        do {
            c = try Connection.dial(address, hello: Hello(job: namesJob, sender: id, role: "client"),
                                    timeoutMillis: timeoutMillis, maxPayload: maxClientPayload)
        } catch {
            throw .unreachable("\(error)")
        }
        let client = ClientConnection(c, address: address.description)
        c.startReader(name: "plexus-names-client", onFrame: { [weak client] frame in
            client?.onFrame(frame)
        }, onClose: { [weak client] reason in
            client?.onClose(reason)
        })
        return client
    }

    var isClosed: Bool {
        condition.lock()
        defer { condition.unlock() }
        return closedReason != nil
    }

    func close() { connection.shutdown() }

    private func onFrame(_ frame: Frame) {
        guard frame.kind == .names else { return }
        let response = try? ClientResponse(decoding: frame.payload, limit: maxClientPayload)
        condition.lock()
        defer { condition.unlock() }
        guard waiting[frame.requestID] != nil else { return }
        waiting[frame.requestID] = .some(response ?? .unavailable(
            reason: "undecodable reply from \(address)", mayHaveTakenEffect: true, storageFailure: false))
        condition.broadcast()
    }

    private func onClose(_ reason: String) {
        condition.lock()
        closedReason = reason
        condition.broadcast()
        condition.unlock()
    }

    func call(_ request: ClientRequest, timeoutMillis: Int) throws(NameServiceError) -> ClientResponse {
        condition.lock()
        nextCorrelation += 1
        let id = nextCorrelation
        waiting[id] = .some(nil)
        condition.unlock()
        defer {
            condition.lock()
            waiting[id] = nil
            condition.unlock()
        }
        do { try connection.send(Frame(.names, requestID: id, payload: request.encoded())) } catch {
            connection.shutdown()
            throw .unreachable("\(address): \(error)")
        }
        let deadline = Date().addingTimeInterval(Double(timeoutMillis) / 1000)
        condition.lock()
        defer { condition.unlock() }
        while true {
            if case .some(.some(let response)) = waiting[id] { return response }
            if let closedReason { throw .connectionLost("\(address): \(closedReason)") }
            if !condition.wait(until: deadline) {
                if case .some(.some(let response)) = waiting[id] { return response }
                throw .timedOut("\(address) did not answer within \(timeoutMillis) ms", mayHaveTakenEffect: true)
            }
        }
    }
}
