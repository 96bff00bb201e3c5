import Testing
@testable import NamesCore

/// Applies commands as client 1 with increasing request ids.
private struct Driver {
    var state = NameServiceState()
    var request: UInt64 = 0
    var client: UInt64 = 1

    init(limits: NameServiceState.Limits = .init()) { state = NameServiceState(limits: limits) }

    @discardableResult
    mutating func run(_ command: NameCommand) -> NameResult {
        request += 1
        return state.apply(command, clientID: client, requestID: request)
    }

    mutating func pid(node: String = "n1", parent: GlobalPID? = nil, lease: LeaseID? = nil) -> GlobalPID {
        guard case .success(.allocated(let pid)) = run(.allocatePID(node: node, address: "\(node):7000", parent: parent, startTimeMillis: 1000, lease: lease)) else {
            Issue.record("allocation failed")
            return GlobalPID(0)
        }
        return pid
    }

    mutating func lease(ttl: UInt64, now: UInt64) -> LeaseID {
        guard case .success(.lease(let id, _, _)) = run(.grantLease(ttlMillis: ttl, nowMillis: now)) else {
            Issue.record("grant failed")
            return LeaseID(0)
        }
        return id
    }
}

private func written(_ result: NameResult) -> NameEntry? {
    if case .success(.written(let entry)) = result { entry } else { nil }
}

@Suite("NameServiceState")
struct NameServiceStateTests {
    // MARK: PIDs and the process table

    @Test("PIDs are issued once, increase monotonically, and are not reused after reaping")
    func pidAllocation() {
        var d = Driver()
        let a = d.pid()
        let b = d.pid(parent: a)
        #expect(a == GlobalPID(1) && b == GlobalPID(2))
        #expect(d.state.process(b) == .success(ProcessRecord(
            pid: b, node: "n1", address: "n1:7000", state: .starting, parent: a,
            startTimeMillis: 1000, exitStatus: nil, lease: nil)))
        d.run(.exitProcess(pid: a, status: 3))
        #expect(d.run(.reapProcess(pid: a)) == .success(.reaped(a)))
        #expect(d.state.process(a) == .failure(.processNotFound(a)))
        #expect(d.pid() == GlobalPID(3))
        #expect(d.run(.allocatePID(node: "n", address: "a", parent: GlobalPID(99), startTimeMillis: 0, lease: nil))
                == .failure(.processNotFound(GlobalPID(99))))
    }

    @Test("process states follow starting → running ⇄ migrating → exited | lost, and nothing else")
    func processTransitions() {
        var d = Driver()
        let p = d.pid()
        #expect(d.run(.setProcessState(pid: p, state: .migrating)) == .failure(.invalidTransition(pid: p, from: .starting, to: .migrating)))
        guard case .success(.process(let running)) = d.run(.setProcessState(pid: p, state: .running)) else {
            Issue.record("running refused")
            return
        }
        #expect(running.state == .running)
        #expect(d.run(.setProcessState(pid: p, state: .migrating)).isSuccess)
        guard case .success(.process(let moved)) = d.run(.rebindProcess(pid: p, node: "n2", address: "n2:7001")) else {
            Issue.record("rebind refused")
            return
        }
        #expect(moved.node == "n2" && moved.address == "n2:7001" && moved.state == .migrating)
        #expect(d.run(.setProcessState(pid: p, state: .running)).isSuccess)
        guard case .success(.process(let exited)) = d.run(.exitProcess(pid: p, status: -9)) else {
            Issue.record("exit refused")
            return
        }
        #expect(exited.state == .exited && exited.exitStatus == -9)
        #expect(d.run(.setProcessState(pid: p, state: .lost)) == .failure(.invalidTransition(pid: p, from: .exited, to: .lost)))
        #expect(d.run(.exitProcess(pid: p, status: 0)) == .failure(.invalidTransition(pid: p, from: .exited, to: .exited)))
        #expect(d.run(.reapProcess(pid: GlobalPID(77))) == .failure(.processNotFound(GlobalPID(77))))
        let live = d.pid()
        #expect(d.run(.reapProcess(pid: live)) == .failure(.invalidArgument("\(live) is starting; only exited or lost processes can be reaped")))
    }

    // MARK: Namespace

    @Test("create fails if the name exists; get returns value, version and revisions")
    func createAndGet() {
        var d = Driver()
        let entry = written(d.run(.create(name: "/a/b", value: [1], lease: nil)))
        #expect(entry == NameEntry(name: "/a/b", value: [1], version: 1, createRevision: 1, modRevision: 1, lease: nil))
        #expect(d.run(.create(name: "/a/b", value: [2], lease: nil)) == .failure(.nameExists("/a/b")))
        #expect(d.state.get("/a/b") == .success(entry!))
        #expect(d.state.get("/a/c") == .failure(.nameNotFound("/a/c")))
        #expect(NameError.nameExists("/a/b").description == "name exists: /a/b")
    }

    @Test("put creates or overwrites; compare-and-set succeeds only on the expected version")
    func putAndCompareAndSet() {
        var d = Driver()
        #expect(written(d.run(.put(name: "/k", value: [1], lease: nil)))?.version == 1)
        #expect(written(d.run(.put(name: "/k", value: [2], lease: nil)))?.version == 2)
        let mismatch = d.run(.compareAndSet(name: "/k", expectedVersion: 1, value: [3]))
        #expect(mismatch == .failure(.versionMismatch(name: "/k", expected: 1, found: 2)))
        if case .failure(let error) = mismatch {
            #expect(error.description == "version mismatch on /k: expected 1 found 2")
        }
        let swapped = written(d.run(.compareAndSet(name: "/k", expectedVersion: 2, value: [3])))
        #expect(swapped?.version == 3 && swapped?.value == [3] && swapped?.createRevision == 1)
        #expect(d.run(.compareAndSet(name: "/missing", expectedVersion: 1, value: [])) == .failure(.nameNotFound("/missing")))
    }

    @Test("delete, optionally conditional on the version")
    func delete() {
        var d = Driver()
        d.run(.create(name: "/x", value: [], lease: nil))
        #expect(d.run(.delete(name: "/x", expectedVersion: 5)) == .failure(.versionMismatch(name: "/x", expected: 5, found: 1)))
        #expect(d.run(.delete(name: "/x", expectedVersion: 1)) == .success(.deleted(name: "/x", revision: 2)))
        #expect(d.run(.delete(name: "/x", expectedVersion: nil)) == .failure(.nameNotFound("/x")))
    }

    @Test("names must be absolute paths without empty, '.' or '..' components", arguments: [
        "", "a", "/", "/a/", "//a", "/a//b", "/a/./b", "/a/../b", "/a\u{0}b",
    ])
    func invalidNames(name: String) {
        var d = Driver()
        guard case .failure(.invalidName) = d.run(.create(name: name, value: [], lease: nil)) else {
            Issue.record("\(name.debugDescription) accepted")
            return
        }
    }

    @Test("oversized names and values are refused")
    func limits() {
        var d = Driver(limits: .init(maxNameBytes: 16, maxValueBytes: 4))
        guard case .failure(.invalidName) = d.run(.create(name: "/" + String(repeating: "x", count: 16), value: [], lease: nil)) else {
            Issue.record("long name accepted")
            return
        }
        #expect(d.run(.put(name: "/v", value: [1, 2, 3, 4, 5], lease: nil)) == .failure(.invalidArgument("value of 5 bytes exceeds 4")))
    }

    @Test("children lists immediate children, with implicit directories")
    func children() {
        var d = Driver()
        for name in ["/jobs/1/rank-0", "/jobs/1/rank-1", "/jobs/2", "/jobs/2/x", "/other"] {
            d.run(.create(name: name, value: [], lease: nil))
        }
        #expect(d.state.children(of: "/jobs") == .success([
            ChildName(name: "/jobs/1", isEntry: false, hasChildren: true),
            ChildName(name: "/jobs/2", isEntry: true, hasChildren: true),
        ]))
        #expect(d.state.children(of: "/") == .success([
            ChildName(name: "/jobs", isEntry: false, hasChildren: true),
            ChildName(name: "/other", isEntry: true, hasChildren: false),
        ]))
        #expect(d.state.children(of: "/jobs/1/rank-0") == .success([]))
    }

    @Test("sequential names get a 10-digit counter per parent, surviving deletes")
    func sequentialNames() {
        var d = Driver()
        var made: [String] = []
        for _ in 0..<8 {
            made.append(written(d.run(.createSequential(prefix: "/queue/item-", value: [], lease: nil)))!.name)
        }
        #expect(made.first == "/queue/item-0000000000")
        #expect(made.last == "/queue/item-0000000007")
        d.run(.delete(name: "/queue/item-0000000007", expectedVersion: nil))
        #expect(written(d.run(.createSequential(prefix: "/queue/item-", value: [], lease: nil)))?.name == "/queue/item-0000000008")
        #expect(written(d.run(.createSequential(prefix: "/other/", value: [], lease: nil)))?.name == "/other/0000000000")
    }

    // MARK: Sessions

    @Test("a retried request returns the same result and does not execute again (dissertation §6.3)")
    func deduplication() {
        var state = NameServiceState()
        let command = NameCommand.allocatePID(node: "n", address: "a", parent: nil, startTimeMillis: 5, lease: nil)
        let first = state.apply(command, clientID: 7, requestID: 1)
        let retry = state.apply(command, clientID: 7, requestID: 1)
        #expect(first == .success(.allocated(GlobalPID(1))))
        #expect(retry == first)
        #expect(state.nextUnallocatedPID == GlobalPID(2))
        // A failing request is deduplicated too.
        let create = NameCommand.create(name: "/dup", value: [], lease: nil)
        #expect(state.apply(create, clientID: 8, requestID: 1).isSuccess)
        #expect(state.apply(create, clientID: 8, requestID: 2) == .failure(.nameExists("/dup")))
        #expect(state.apply(create, clientID: 8, requestID: 2) == .failure(.nameExists("/dup")))
        #expect(state.currentRevision == 2)
        // Older than the latest: refused, not re-executed.
        #expect(state.apply(command, clientID: 7, requestID: 0) == .failure(.staleRequest(clientID: 7, requestID: 0, latest: 1)))
        #expect(state.apply(command, clientID: 7, requestID: 2) == .success(.allocated(GlobalPID(2))))
        // Client 0 has no session.
        #expect(state.apply(command, clientID: 0, requestID: 1) == .success(.allocated(GlobalPID(3))))
        #expect(state.apply(command, clientID: 0, requestID: 1) == .success(.allocated(GlobalPID(4))))
    }

    @Test("the session table is bounded, evicting the least recently used client")
    func sessionBound() {
        var state = NameServiceState(limits: .init(maxSessions: 2))
        let command = NameCommand.allocatePID(node: "n", address: "a", parent: nil, startTimeMillis: 0, lease: nil)
        _ = state.apply(command, clientID: 1, requestID: 1)
        _ = state.apply(command, clientID: 2, requestID: 1)
        _ = state.apply(command, clientID: 1, requestID: 1)  // touch client 1
        _ = state.apply(command, clientID: 3, requestID: 1)
        #expect(state.sessions.keys.sorted() == [1, 3])
    }

    // MARK: Watch

    @Test("watch resumes from a revision, filters by prefix, and reports compaction with where to restart")
    func watch() {
        var d = Driver(limits: .init(eventLogCapacity: 8))
        for i in 0..<5 { d.run(.put(name: "/w/\(i)", value: [UInt8(i)], lease: nil)) }
        d.run(.put(name: "/elsewhere", value: [], lease: nil))
        guard case .success(let batch) = d.state.events(fromRevision: 3, prefix: "/w") else {
            Issue.record("watch failed")
            return
        }
        #expect(batch.events.map(\.revision) == [3, 4, 5])
        #expect(batch.nextRevision == 7)
        guard case .success(let limited) = d.state.events(fromRevision: 1, limit: 2) else {
            Issue.record("watch failed")
            return
        }
        #expect(limited.events.map(\.revision) == [1, 2] && limited.nextRevision == 3)
        #expect(d.state.events(fromRevision: 7) == .success(WatchBatch(events: [], nextRevision: 7)))
        // Push the log past its bound.
        for i in 0..<10 { d.run(.put(name: "/w/more", value: [UInt8(i)], lease: nil)) }
        let oldest = d.state.oldestWatchableRevision
        #expect(oldest > 1)
        #expect(d.state.events.count <= 8 + 1)
        let compacted = d.state.events(fromRevision: 2)
        #expect(compacted == .failure(.compacted(requested: 2, oldestAvailable: oldest)))
        if case .failure(let error) = compacted {
            #expect(error.description == "revision 2 compacted, restart from \(oldest)")
        }
        guard case .success(let resumed) = d.state.events(fromRevision: oldest) else {
            Issue.record("resume failed")
            return
        }
        #expect(resumed.events.first?.revision == oldest)
        #expect(resumed.events.last?.revision == d.state.currentRevision)
    }

    // MARK: Leases

    @Test("lease expiry deletes its ephemeral names and marks its processes lost, visibly in the event log")
    func leaseExpiry() throws {
        var d = Driver()
        let lease = d.lease(ttl: 100, now: 1000)
        let p = d.pid(lease: lease)
        let q = d.pid()
        d.run(.create(name: "/eph/a", value: [], lease: lease))
        d.run(.createSequential(prefix: "/eph/s-", value: [], lease: lease))
        d.run(.create(name: "/durable", value: [], lease: nil))
        #expect(d.run(.create(name: "/x", value: [], lease: LeaseID(99))) == .failure(.leaseNotFound(LeaseID(99))))
        // Keep-alive extends the deadline; expiry before it does nothing.
        #expect(d.run(.keepAlive(lease: lease, nowMillis: 1050)) == .success(.lease(id: lease, ttlMillis: 100, expiresAtMillis: 1150)))
        #expect(d.run(.expireLeases(nowMillis: 1149)) == .success(.leasesExpired([])))
        let before = d.state.currentRevision
        #expect(d.run(.expireLeases(nowMillis: 1150)) == .success(.leasesExpired([lease])))
        #expect(d.state.get("/eph/a") == .failure(.nameNotFound("/eph/a")))
        #expect(d.state.namespace.keys.sorted() == ["/durable"])
        #expect(try d.state.process(p).get().state == .lost)
        #expect(try d.state.process(q).get().state == .starting)
        #expect(d.state.lease(lease) == .failure(.leaseNotFound(lease)))
        guard case .success(let batch) = d.state.events(fromRevision: before + 1) else {
            Issue.record("watch failed")
            return
        }
        let kinds = batch.events.map(\.kind)
        #expect(kinds.contains(.nameDeleted(name: "/eph/a", lease: lease)))
        #expect(kinds.contains(.nameDeleted(name: "/eph/s-0000000000", lease: lease)))
        #expect(kinds.contains { if case .processChanged(let r) = $0 { r.pid == p && r.state == .lost } else { false } })
        #expect(kinds.last == .leaseEnded(lease, expired: true))
        #expect(d.run(.keepAlive(lease: lease, nowMillis: 2000)) == .failure(.leaseNotFound(lease)))
    }

    @Test("revoke ends a lease at once; renewAllLeases resets deadlines for a new leader's clock")
    func revokeAndRenew() throws {
        var d = Driver()
        let a = d.lease(ttl: 50, now: 0)
        let b = d.lease(ttl: 70, now: 0)
        d.run(.put(name: "/e", value: [], lease: a))
        #expect(d.run(.revokeLease(lease: a)) == .success(.leaseRevoked(a)))
        #expect(d.state.get("/e") == .failure(.nameNotFound("/e")))
        #expect(d.run(.renewAllLeases(nowMillis: 5000)) == .success(.leasesRenewed(count: 1)))
        #expect(try d.state.lease(b).get().expiresAtMillis == 5070)
        #expect(d.run(.grantLease(ttlMillis: 0, nowMillis: 0)) == .failure(.invalidArgument("lease TTL must be positive")))
    }

    @Test("put moves a name between leases; the old lease's expiry no longer deletes it")
    func rebindLease() throws {
        var d = Driver()
        let a = d.lease(ttl: 10, now: 0)
        let b = d.lease(ttl: 1000, now: 0)
        d.run(.put(name: "/n", value: [1], lease: a))
        d.run(.put(name: "/n", value: [2], lease: b))
        d.run(.expireLeases(nowMillis: 20))
        #expect(try d.state.get("/n").get().lease == b)
    }

    // MARK: Snapshots

    @Test("snapshot round-trip: equal state, identical bytes, identical future behaviour")
    func snapshotRoundTrip() throws {
        var d = Driver(limits: .init(eventLogCapacity: 16))
        let lease = d.lease(ttl: 100, now: 0)
        for i in 0..<30 {
            d.run(.put(name: "/s/\(i % 7)", value: [UInt8(i)], lease: i % 3 == 0 ? lease : nil))
            if i % 4 == 0 { _ = d.pid(lease: i % 8 == 0 ? lease : nil) }
        }
        d.run(.createSequential(prefix: "/q/", value: [], lease: nil))
        d.run(.exitProcess(pid: GlobalPID(2), status: 1))
        let bytes = d.state.snapshotBytes()
        var restored = try NameServiceState(snapshotBytes: bytes)
        #expect(restored == d.state)
        #expect(restored.snapshotBytes() == bytes)
        // Deduplication and PID allocation continue identically.
        let retry = NameCommand.put(name: "/s/1", value: [0], lease: nil)
        #expect(restored.apply(retry, clientID: 1, requestID: d.request) == d.state.apply(retry, clientID: 1, requestID: d.request))
        let next = NameCommand.allocatePID(node: "n", address: "a", parent: nil, startTimeMillis: 0, lease: nil)
        #expect(restored.apply(next, clientID: 2, requestID: 1) == d.state.apply(next, clientID: 2, requestID: 1))
        #expect(restored == d.state)
    }

    @Test("a corrupt snapshot is refused")
    func corruptSnapshot() {
        var d = Driver()
        d.run(.put(name: "/a", value: [1], lease: nil))
        var bytes = d.state.snapshotBytes()
        #expect(throws: DecodeError.badHeader) { try NameServiceState(snapshotBytes: [UInt8]("XXXX".utf8) + bytes.dropFirst(4)) }
        bytes.removeLast()
        #expect(throws: DecodeError.self) { try NameServiceState(snapshotBytes: bytes) }
    }
}

extension Result {
    var isSuccess: Bool {
        if case .success = self { true } else { false }
    }
}
