#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NameService
import NamesCore
import Testing
import TestSupport

/// A running backend for one test: the replicated service (3 real replicas)
/// or etcd. For etcd it uses the cluster in $PLEXUS_ETCD_ENDPOINTS (.ci/run
/// starts one with Scripts/etcd-cluster.sh) under a fresh key prefix, else a
/// single etcd member it starts itself. Without etcd the etcd cases are not
/// run (`Kind.testable`); with PLEXUS_TEST_REQUIRE_ALL=1 they run and fail.
final class BackendFixture: @unchecked Sendable {
    enum Kind: String, CaseIterable, Sendable, CustomStringConvertible {
        case replicated, etcd
        var description: String { rawValue }

        /// The backends this run can test: etcd only where it is installed
        /// or given (`Requirement.etcd`; Scripts/test.sh names the skip).
        static var testable: [Kind] { Requirement.etcd ? allCases : [.replicated] }
    }

    let kind: Kind
    private var cluster: NameCluster?
    private var etcd: Child?
    private var etcdData: String?
    private let endpoints: [String]
    private let prefix = "/plexus-test-\(UInt32.random(in: 0...UInt32.max))"

    init(_ kind: Kind) throws {
        self.kind = kind
        switch kind {
        case .replicated:
            let c = try NameCluster(size: 3)
            try c.waitForLeader()
            cluster = c
            endpoints = c.addresses
        case .etcd:
            if let list = ProcessInfo.processInfo.environment["PLEXUS_ETCD_ENDPOINTS"], !list.isEmpty {
                endpoints = list.split(separator: ",").map(String.init)
            } else {
                guard FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") else {
                    throw HarnessError("etcd is not installed: run Scripts/test.sh as root (it installs etcd-server), "
                        + "or set PLEXUS_ETCD_ENDPOINTS to a running cluster")
                }
                let host = "127.\(Int.random(in: 1...254)).\(Int.random(in: 1...254)).1"
                let ports = try NameCluster.freePorts(host: host, count: 2)
                let data = NSTemporaryDirectory() + "plexus-etcd-\(UInt32.random(in: 0...UInt32.max))"
                etcdData = data
                etcd = try Child("/usr/bin/etcd", [
                    "--name", "solo", "--data-dir", data,
                    "--listen-client-urls", "http://\(host):\(ports[0])", "--advertise-client-urls", "http://\(host):\(ports[0])",
                    "--listen-peer-urls", "http://\(host):\(ports[1])", "--initial-advertise-peer-urls", "http://\(host):\(ports[1])",
                    "--initial-cluster", "solo=http://\(host):\(ports[1])",
                ])
                endpoints = ["\(host):\(ports[0])"]
            }
            let probe = try EtcdNameClient(endpoints: endpoints, prefix: prefix, timeoutMillis: 1000)
            try eventually(20, "etcd at \(endpoints) answers") { () -> Bool in
                do {
                    _ = try probe.get("/probe")
                    return true
                } catch let error as NameServiceError {
                    if case .rejected(.nameNotFound) = error { return true }
                    return false
                }
            }
        }
    }

    deinit {
        etcd?.kill()
        if let etcdData { try? FileManager.default.removeItem(atPath: etcdData) }
    }

    /// The configuration string that selects this backend (`--names`).
    var spec: String {
        switch kind {
        case .replicated: endpoints.joined(separator: ",")
        case .etcd: "etcd://" + endpoints.joined(separator: ",") + prefix
        }
    }

    func client(timeoutMillis: Int = 5000) throws -> any NameServiceBackend {
        try makeNameServiceBackend(spec, timeoutMillis: timeoutMillis)
    }

    /// Stops a majority of this backend's members (only for a cluster the
    /// fixture started: the replicated one, or its own 3-member etcd).
    func stopMajority() {
        cluster?.kill(2)
        cluster?.kill(3)
    }
}

/// A 3-member etcd cluster of this test's own (on random loopback ports),
/// for tests that stop members. Every member is killed at deinit.
final class EtcdTrio: @unchecked Sendable {
    let endpoints: [String]
    private var members: [Child] = []
    private let data = NSTemporaryDirectory() + "plexus-etcd3-\(UInt32.random(in: 0...UInt32.max))"

    init() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd") else {
            throw HarnessError("etcd is not installed: apt-get install etcd-server")
        }
        let host = "127.\(Int.random(in: 1...254)).\(Int.random(in: 1...254)).1"
        let ports = try NameCluster.freePorts(host: host, count: 6)
        let cluster = (0..<3).map { "e\($0)=http://\(host):\(ports[2 * $0 + 1])" }.joined(separator: ",")
        endpoints = (0..<3).map { "\(host):\(ports[2 * $0])" }
        for i in 0..<3 {
            members.append(try Child("/usr/bin/etcd", [
                "--name", "e\(i)", "--data-dir", "\(data)/e\(i)",
                "--listen-client-urls", "http://\(endpoints[i])", "--advertise-client-urls", "http://\(endpoints[i])",
                "--listen-peer-urls", "http://\(host):\(ports[2 * i + 1])",
                "--initial-advertise-peer-urls", "http://\(host):\(ports[2 * i + 1])",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
            ]))
        }
        let probe = try EtcdNameClient(endpoints: endpoints, prefix: "/probe", timeoutMillis: 1000)
        try eventually(30, "the etcd trio at \(endpoints) answers") { () -> Bool in
            _ = try probe.put("/up", value: [1])
            return true
        }
    }

    func kill(_ index: Int) {
        members[index].kill()
        _ = try? members[index].wait(timeout: 10)
    }

    deinit {
        for m in members { m.kill() }
        try? FileManager.default.removeItem(atPath: data)
    }
}

/// Reads a watch from `from` until it returns an empty batch (caught up),
/// resuming from each `nextRevision`, in batches of at most `limit`.
func drainWatch(_ ns: any NameServiceBackend, from: UInt64, prefix: String?, limit: Int = 256) throws
    -> (events: [WatchEvent], next: UInt64)
{
    var all: [WatchEvent] = []
    var next = from
    for _ in 0..<10_000 {
        let batch = try ns.watch(fromRevision: next, prefix: prefix, limit: limit)
        #expect(batch.events.count <= limit || Set(batch.events.map(\.revision)).count == 1)
        #expect(batch.nextRevision >= next)
        all += batch.events
        next = batch.nextRevision
        if batch.events.isEmpty { return (all, next) }
    }
    throw HarnessError("the watch did not catch up")
}

func isGone(_ ns: any NameServiceBackend, _ name: String) -> Bool {
    do {
        _ = try ns.get(name)
        return false
    } catch {
        return error == .rejected(.nameNotFound(name))
    }
}

/// The same behaviour from both backends behind `NameServiceBackend`.
@Suite(.serialized) struct BackendConformanceTests {
    @Test(arguments: BackendFixture.Kind.testable)
    func namesHaveVersionsAndTypedErrors(kind: BackendFixture.Kind) throws {
        let fixture = try BackendFixture(kind)
        let ns = try fixture.client()
        let created = try ns.create("/conf/a", value: Array("one".utf8))
        #expect(created.version == 1)
        #expect(throws: NameServiceError.rejected(.nameExists("/conf/a"))) { _ = try ns.create("/conf/a", value: [1]) }
        let updated = try ns.put("/conf/a", value: Array("two".utf8))
        #expect(updated.version == 2 && updated.createRevision == created.createRevision && updated.modRevision > created.modRevision)
        #expect(try ns.get("/conf/a").value == Array("two".utf8))
        #expect(throws: NameServiceError.rejected(.versionMismatch(name: "/conf/a", expected: 1, found: 2))) {
            _ = try ns.compareAndSet("/conf/a", expectedVersion: 1, value: [0])
        }
        let swapped = try ns.compareAndSet("/conf/a", expectedVersion: 2, value: Array("three".utf8))
        #expect(swapped.version == 3)
        #expect(throws: NameServiceError.rejected(.nameNotFound("/conf/none"))) {
            _ = try ns.compareAndSet("/conf/none", expectedVersion: 1, value: [0])
        }
        #expect(throws: NameServiceError.rejected(.nameNotFound("/conf/none"))) { _ = try ns.get("/conf/none") }
        #expect(throws: NameServiceError.self) { _ = try ns.put("relative", value: []) }
        _ = try ns.put("/conf/dir/x", value: [1])
        _ = try ns.put("/conf/b", value: [1])
        #expect(try ns.list("/conf").map(\.name) == ["/conf/a", "/conf/b", "/conf/dir"])
        #expect(try ns.list("/conf").first { $0.name == "/conf/dir" }?.hasChildren == true)
        #expect(throws: NameServiceError.rejected(.versionMismatch(name: "/conf/a", expected: 9, found: 3))) {
            try ns.delete("/conf/a", expectedVersion: 9)
        }
        try ns.delete("/conf/a", expectedVersion: 3)
        #expect(throws: NameServiceError.rejected(.nameNotFound("/conf/a"))) { try ns.delete("/conf/a", expectedVersion: nil) }
        // A name created again starts over at version 1.
        #expect(try ns.create("/conf/a", value: [2]).version == 1)
    }

    @Test(arguments: BackendFixture.Kind.testable)
    func concurrentClientsAreLinearizableAndNeverShareAPID(kind: BackendFixture.Kind) throws {
        let fixture = try BackendFixture(kind)
        let recorder = HistoryRecorder()
        let load = Workload(recorder: recorder)
        load.start(clients: try (0..<4).map { _ in try fixture.client() })
        defer { load.stop() }
        try eventually(30, "120 acknowledged operations") { (recorder.counts.value["ok"] ?? 0) >= 120 }
        load.stop()
        #expect(recorder.acknowledgedPIDs.value.count > 10)
        recorder.expectLinearizable("conformance-\(kind)")
    }

    @Test(arguments: BackendFixture.Kind.testable)
    func ephemeralNamesGoWhenTheirLeaseIsRevokedOrExpires(kind: BackendFixture.Kind) throws {
        let fixture = try BackendFixture(kind)
        let ns = try fixture.client()
        let start = try ns.put("/lease/marker", value: []).modRevision
        // Revoked: its name goes at once.
        let long = try ns.grantLease(ttlMillis: 60_000)
        let eph = try ns.createEphemeral("/lease/held", value: Array("up".utf8), lease: long)
        #expect(eph.lease == long && eph.version == 1)
        #expect(try ns.get("/lease/held").lease == long)
        #expect(throws: NameServiceError.rejected(.nameExists("/lease/held"))) {
            _ = try ns.createEphemeral("/lease/held", value: [], lease: long)
        }
        try ns.revokeLease(long)
        #expect(isGone(ns, "/lease/held"))
        #expect(throws: NameServiceError.rejected(.leaseNotFound(long))) { try ns.keepAlive(long) }
        #expect(throws: NameServiceError.rejected(.leaseNotFound(long))) { try ns.revokeLease(long) }
        // Abandoned: its name goes when the TTL runs out (etcd: at least its minimum TTL).
        let short = try ns.grantLease(ttlMillis: 500)
        _ = try ns.createEphemeral("/lease/abandoned", value: [1], lease: short)
        try eventually(15, "the abandoned lease expires and takes /lease/abandoned") { isGone(ns, "/lease/abandoned") }
        #expect(throws: NameServiceError.rejected(.leaseNotFound(short))) { try ns.keepAlive(short) }
        // Watchers see why each name went.
        let events = try drainWatch(ns, from: start, prefix: nil).events.map(\.kind)
        let revoked = events.firstIndex(of: .nameDeleted(name: "/lease/held", lease: long))
        let revokedEnd = events.firstIndex(of: .leaseEnded(long, expired: false))
        let expired = events.firstIndex(of: .nameDeleted(name: "/lease/abandoned", lease: short))
        let expiredEnd = events.firstIndex(of: .leaseEnded(short, expired: true))
        #expect(revoked != nil && revokedEnd != nil && expired != nil && expiredEnd != nil, "\(events)")
        if let revoked, let revokedEnd, let expired, let expiredEnd {
            #expect(revoked < revokedEnd && revokedEnd < expired && expired < expiredEnd, "\(events)")
        }
    }

    @Test(arguments: BackendFixture.Kind.testable)
    func keepAliveHoldsALeasePastItsTTL(kind: BackendFixture.Kind) throws {
        let fixture = try BackendFixture(kind)
        let ns = try fixture.client()
        let lease = try ns.grantLease(ttlMillis: 1000)
        _ = try ns.createEphemeral("/kept/worker", value: Array("up".utf8), lease: lease)
        // 3 s: three TTLs here, and past etcd's 2 s minimum TTL.
        let keepUntil = Date().addingTimeInterval(3)
        var renewals = 0
        while Date() < keepUntil {
            try ns.keepAlive(lease)
            renewals += 1
            #expect(try ns.get("/kept/worker").value == Array("up".utf8))
            usleep(200_000) // the holder's keep-alive period, not synchronisation
        }
        #expect(renewals >= 5)
        #expect(try ns.get("/kept/worker").lease == lease)
        try ns.revokeLease(lease)
        #expect(isGone(ns, "/kept/worker"))
    }

    @Test(arguments: BackendFixture.Kind.testable)
    func processesGoFromStartingToRunningToExited(kind: BackendFixture.Kind) throws {
        let fixture = try BackendFixture(kind)
        let ns = try fixture.client()
        let parent = try ns.allocatePID(node: "node-a", address: "", parent: nil)
        let pid = try ns.allocatePID(node: "node-a", address: "", parent: parent, lease: nil)
        #expect(pid > parent)
        let fresh = try ns.process(pid)
        #expect(fresh.state == .starting && fresh.node == "node-a" && fresh.parent == parent && fresh.lease == nil)
        try ns.reportRunning(pid: pid.rawValue, node: "node-b", address: "127.0.0.1:7000")
        let running = try ns.process(pid)
        #expect(running.state == .running && running.node == "node-b" && running.address == "127.0.0.1:7000")
        #expect(try ns.setProcessState(pid, to: .migrating).state == .migrating)
        let moved = try ns.rebindProcess(pid, node: "node-c", address: "127.0.0.1:7000")
        #expect(moved.state == .migrating && moved.node == "node-c", "a rebind keeps the state: \(moved)")
        #expect(try ns.setProcessState(pid, to: .running).state == .running)
        #expect(throws: NameServiceError.rejected(.processNotFound(GlobalPID(pid.rawValue + 1000)))) {
            _ = try ns.rebindProcess(GlobalPID(pid.rawValue + 1000), node: "node-c", address: "x:1")
        }
        try ns.reportExit(pid: pid.rawValue, status: 3)
        let exited = try ns.process(pid)
        #expect(exited.state == .exited && exited.exitStatus == 3 && exited.address == "127.0.0.1:7000")
        #expect(throws: NameServiceError.rejected(.invalidTransition(pid: pid, from: .exited, to: .exited))) {
            try ns.reportExit(pid: pid.rawValue, status: 0)
        }
        #expect(throws: NameServiceError.rejected(.invalidTransition(pid: pid, from: .exited, to: .running))) {
            _ = try ns.setProcessState(pid, to: .running)
        }
        #expect(throws: NameServiceError.rejected(.invalidTransition(pid: pid, from: .exited, to: .exited))) {
            _ = try ns.rebindProcess(pid, node: "node-d", address: "127.0.0.1:7000")
        }
        #expect(throws: NameServiceError.rejected(.invalidTransition(pid: parent, from: .starting, to: .migrating))) {
            _ = try ns.setProcessState(parent, to: .migrating)
        }
        let table = try ns.processes()
        #expect(table.map(\.pid) == table.map(\.pid).sorted())
        #expect(table.first { $0.pid == pid } == exited)
        #expect(table.first { $0.pid == parent }?.state == .starting)
    }

    @Test(arguments: BackendFixture.Kind.testable)
    func leaseExpiryMarksItsProcessesLostVisiblyToWatchers(kind: BackendFixture.Kind) throws {
        let fixture = try BackendFixture(kind)
        let ns = try fixture.client()
        let start = try ns.put("/lost/marker", value: []).modRevision
        let lease = try ns.grantLease(ttlMillis: 500)
        let worker = try ns.allocatePID(node: "node-a", address: "", parent: nil, lease: lease)
        let done = try ns.allocatePID(node: "node-a", address: "", parent: nil, lease: lease)
        try ns.reportRunning(pid: worker.rawValue, node: "node-a", address: "127.0.0.1:7001")
        try ns.reportExit(pid: done.rawValue, status: 0)
        #expect(try ns.process(worker).lease == lease)
        try eventually(15, "\(lease) expires and \(worker) is lost") { try ns.process(worker).state == .lost }
        let table = try ns.processes()
        #expect(table.first { $0.pid == worker }?.state == .lost)
        // An exited process stays exited.
        #expect(table.first { $0.pid == done }?.state == .exited)
        #expect(throws: NameServiceError.rejected(.invalidTransition(pid: worker, from: .lost, to: .exited))) {
            try ns.reportExit(pid: worker.rawValue, status: 0)
        }
        let events = try drainWatch(ns, from: start, prefix: nil).events.map(\.kind)
        let lost = events.firstIndex {
            if case .processChanged(let p) = $0 { return p.pid == worker && p.state == .lost && p.address == "127.0.0.1:7001" }
            return false
        }
        let ended = events.firstIndex(of: .leaseEnded(lease, expired: true))
        #expect(lost != nil && ended != nil && lost! < ended!, "\(events)")
        #expect(!events.contains {
            if case .processChanged(let p) = $0 { return p.pid == done && p.state == .lost }
            return false
        }, "\(events)")
    }

    @Test(arguments: BackendFixture.Kind.testable)
    func watchReportsChangesInOrderResumesAndFilters(kind: BackendFixture.Kind) throws {
        let fixture = try BackendFixture(kind)
        let ns = try fixture.client()
        let start = try ns.put("/wt-marker", value: []).modRevision + 1
        let a1 = try ns.create("/wt/a", value: [1])
        let a2 = try ns.put("/wt/a", value: [2])
        let b = try ns.create("/wt/dir/b", value: [3])
        _ = try ns.put("/other/x", value: [4])
        try ns.delete("/wt/a", expectedVersion: 2)
        let expected: [WatchEvent.Kind] = [.nameCreated(a1), .nameUpdated(a2), .nameCreated(b),
                                           .nameDeleted(name: "/wt/a", lease: nil)]
        // All at once, then in batches of one: the same events, in revision order.
        let whole = try drainWatch(ns, from: start, prefix: "/wt")
        #expect(whole.events.map(\.kind) == expected)
        #expect(whole.events.map(\.revision) == whole.events.map(\.revision).sorted())
        #expect(Set(whole.events.map(\.revision)).count == whole.events.count)
        let paged = try drainWatch(ns, from: start, prefix: "/wt", limit: 1)
        #expect(paged.events == whole.events)
        // Resuming from nextRevision shows exactly what happened after.
        let c = try ns.create("/wt/c", value: [5])
        let after = try drainWatch(ns, from: whole.next, prefix: "/wt")
        #expect(after.events.map(\.kind) == [.nameCreated(c)])
        #expect(after.events.first?.revision == c.modRevision)
        // Subtree filter: the name itself and the names below it, nothing else.
        #expect(try drainWatch(ns, from: start, prefix: "/wt/dir").events.map(\.kind) == [.nameCreated(b)])
        #expect(try drainWatch(ns, from: start, prefix: "/wt/di").events.isEmpty)
        #expect(try drainWatch(ns, from: start, prefix: "/other/x").events.count == 1)
        // Without a prefix, every kind of event is there too.
        let everything = try drainWatch(ns, from: start, prefix: nil).events.map(\.kind)
        #expect(everything.contains(.nameCreated(b)) && everything.contains { $0 == .nameCreated(c) })
        // A revision beyond the current one is an empty batch that resumes there.
        let future = try ns.watch(fromRevision: after.next + 1000, prefix: "/wt", limit: 10)
        #expect(future.events.isEmpty && future.nextRevision == after.next + 1000)
    }

    @Test(arguments: BackendFixture.Kind.testable)
    func badInputIsRefusedWithTypedErrors(kind: BackendFixture.Kind) throws {
        let fixture = try BackendFixture(kind)
        let ns = try fixture.client()
        let bogusLease = LeaseID(424_242)
        let bogusPID = GlobalPID(9_999_999)
        #expect(throws: NameServiceError.rejected(.invalidArgument("lease TTL must be positive"))) {
            _ = try ns.grantLease(ttlMillis: 0)
        }
        #expect(throws: NameServiceError.rejected(.leaseNotFound(bogusLease))) { try ns.keepAlive(bogusLease) }
        #expect(throws: NameServiceError.rejected(.leaseNotFound(bogusLease))) { try ns.revokeLease(bogusLease) }
        #expect(throws: NameServiceError.rejected(.leaseNotFound(bogusLease))) {
            _ = try ns.createEphemeral("/bad/eph", value: [], lease: bogusLease)
        }
        #expect(isGone(ns, "/bad/eph"))
        #expect(throws: NameServiceError.rejected(.leaseNotFound(bogusLease))) {
            _ = try ns.allocatePID(node: "n", address: "", parent: nil, lease: bogusLease)
        }
        #expect(throws: NameServiceError.rejected(.processNotFound(bogusPID))) {
            _ = try ns.allocatePID(node: "n", address: "", parent: bogusPID, lease: nil)
        }
        #expect(throws: NameServiceError.rejected(.processNotFound(bogusPID))) { _ = try ns.process(bogusPID) }
        #expect(throws: NameServiceError.rejected(.processNotFound(bogusPID))) {
            try ns.reportExit(pid: bogusPID.rawValue, status: 1)
        }
        #expect(throws: NameServiceError.rejected(.processNotFound(bogusPID))) {
            try ns.reportRunning(pid: bogusPID.rawValue, node: "n", address: "a")
        }
        #expect(throws: NameServiceError.rejected(.invalidArgument("node longer than 1024 bytes"))) {
            _ = try ns.allocatePID(node: String(repeating: "n", count: 2000), address: "", parent: nil)
        }
        for bad in ["relative", "/trailing/", "/a//b", "/a/../b", "/"] {
            #expect(throws: NameServiceError.self) { _ = try ns.put(bad, value: []) }
            #expect(throws: NameServiceError.self) { _ = try ns.get(bad) }
        }
        #expect(throws: NameServiceError.rejected(.invalidName("relative", reason: "must start with /"))) {
            _ = try ns.create("relative", value: [])
        }
        #expect(throws: NameServiceError.rejected(.invalidArgument("value of 65537 bytes exceeds 65536"))) {
            _ = try ns.put("/bad/big", value: [UInt8](repeating: 0, count: 65_537))
        }
        #expect(throws: NameServiceError.rejected(.invalidName("nope", reason: "must start with /"))) {
            _ = try ns.watch(fromRevision: 1, prefix: "nope", limit: 1)
        }
        #expect(throws: NameServiceError.rejected(.invalidArgument("watch limit must be at least 1"))) {
            _ = try ns.watch(fromRevision: 1, prefix: nil, limit: 0)
        }
        #expect(throws: NameServiceError.self) { _ = try makeNameServiceBackend("etcd://") }
        #expect(throws: NameServiceError.self) { _ = try makeNameServiceBackend("zk://127.0.0.1:2181") }
        #expect(throws: NameServiceError.self) { _ = try makeNameServiceBackend("127.0.0.1") }
        #expect(throws: NameServiceError.self) { _ = try makeNameServiceBackend("etcd://127.0.0.1:2379/") }
    }

    /// etcd only: the replicated service compacts its event log after 4096+
    /// events (NameServiceState.Limits), too many for a fast test; its
    /// `.compacted` is tested in NamesTests.
    @Test(.enabled(if: Requirement.etcd, Comment(rawValue: Requirement.etcdMissing)))
    func compactedEtcdRevisionIsTheSameTypedError() throws {
        let fixture = try BackendFixture(.etcd)
        let ns = try fixture.client()
        guard let etcd = ns as? EtcdNameClient else {
            Issue.record("etcd:// did not make an EtcdNameClient")
            return
        }
        let first = try ns.put("/compact/a", value: [1]).modRevision
        let second = try ns.put("/compact/a", value: [2]).modRevision
        try etcd.compactHistory(upTo: second)
        #expect(throws: NameServiceError.rejected(.compacted(requested: first, oldestAvailable: second))) {
            _ = try ns.watch(fromRevision: first, prefix: "/compact", limit: 10)
        }
        let resumed = try drainWatch(ns, from: second, prefix: "/compact")
        #expect(resumed.events.map(\.revision) == [second])
    }

    @Test(arguments: BackendFixture.Kind.testable)
    func aMinorityEndsCallsWithinTheTimeout(kind: BackendFixture.Kind) throws {
        let timeout = 1500
        let ns: any NameServiceBackend
        var trio: EtcdTrio?
        var fixture: BackendFixture?
        switch kind {
        case .replicated:
            fixture = try BackendFixture(.replicated)
            ns = try fixture!.client(timeoutMillis: timeout)
            _ = try ns.put("/minority/before", value: [1])
            fixture!.stopMajority()
        case .etcd:
            trio = try EtcdTrio()
            ns = try makeNameServiceBackend("etcd://" + trio!.endpoints.joined(separator: ",") + "/minority",
                                            timeoutMillis: timeout)
            _ = try ns.put("/minority/before", value: [1])
            trio!.kill(1)
            trio!.kill(2)
        }
        defer { _ = (trio, fixture) }
        for operation in ["get", "put"] {
            let began = Date()
            do {
                if operation == "get" { _ = try ns.get("/minority/before") } else { _ = try ns.put("/minority/after", value: [2]) }
                Issue.record("\(operation) succeeded without a quorum")
            } catch {
                let text = error.description
                #expect(text.contains("no quorum"), "\(operation): \(text)")
            }
            let elapsed = Date().timeIntervalSince(began)
            #expect(elapsed < Double(timeout) / 1000 + 1, "\(operation) took \(elapsed) s")
        }
    }

    @Test(arguments: BackendFixture.Kind.testable)
    func cliSelectsTheBackendFromNames(kind: BackendFixture.Kind) throws {
        let fixture = try BackendFixture(kind)
        func plexus(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
            try runPlexus(args + ["--names", fixture.spec], timeout: 30)
        }
        let put = try plexus(["ns", "put", "/cli/size", "1000"])
        #expect(put.status == 0 && put.stdout.contains("/cli/size version 1"), "\(put)")
        #expect(try plexus(["ns", "get", "/cli/size"]).stdout.contains("/cli/size = 1000  (version 1"))
        let mismatch = try plexus(["ns", "cas", "/cli/size", "--version", "7", "2000"])
        #expect(mismatch.status == 1 && mismatch.stderr.contains("version mismatch on /cli/size: expected 7 found 1"))
        #expect(try plexus(["ns", "ls", "/"]).stdout.contains("/cli/"))
        let pid = try fixture.client().allocatePID(node: "node-a", address: "127.0.0.1:9", parent: nil)
        #expect(try plexus(["ps"]).stdout.contains("\(pid.rawValue)".padding(toLength: 8, withPad: " ", startingAt: 0) + "starting   node-a"))
        #expect(try plexus(["ns", "rm", "/cli/size"]).status == 0)
        let missing = try plexus(["ns", "get", "/cli/size"])
        #expect(missing.status == 1 && missing.stderr.contains("not found: /cli/size"))
        if kind == .etcd {
            let status = try plexus(["cluster", "status"])
            #expect(status.status == 64 && status.stderr.contains("Plexus name-service replicas only"), "\(status)")
        }
    }

    /// `plexus run` on either backend: every process gets a PID bound to a
    /// lease, runs, and is recorded as exited with its status.
    @Test(arguments: BackendFixture.Kind.testable)
    func jobsRegisterTheirProcesses(kind: BackendFixture.Kind) throws {
        let fixture = try BackendFixture(kind)
        let r = try runPlexus(["run", "-n", "2", "--names", fixture.spec, "sh", "-c", "echo PID=$PLEXUS_PID"], timeout: 60)
        #expect(r.status == 0, "\(r.stderr)")
        let pids = r.stdout.split(separator: "\n").compactMap { line in
            line.range(of: "PID=").flatMap { UInt64(line[$0.upperBound...]) }
        }
        #expect(pids.count == 2, "\(r.stdout)")
        let ns = try fixture.client()
        let rows = try pids.map { try ns.process(GlobalPID($0)) }
        #expect(rows.allSatisfy { $0.state == .exited && $0.lease != nil }, "\(rows)")
        #expect(rows.allSatisfy { $0.exitStatus == 0 }, "\(rows)")
    }

    @Test(arguments: BackendFixture.Kind.testable)
    func sequentialNamesNumberEachDirectory(kind: BackendFixture.Kind) throws {
        let fixture = try BackendFixture(kind)
        let ns = try fixture.client()
        let a = try ns.createSequential("/seq/q/job-", value: Array("a".utf8), lease: nil)
        let b = try ns.createSequential("/seq/q/job-", value: Array("b".utf8), lease: nil)
        #expect(a.name == "/seq/q/job-0000000000" && b.name == "/seq/q/job-0000000001", "\(a.name) \(b.name)")
        #expect(try ns.get(b.name).value == Array("b".utf8))
        // One sequence per directory, whatever the prefix within it.
        #expect(try ns.createSequential("/seq/q/other-", value: [], lease: nil).name == "/seq/q/other-0000000002")
        #expect(try ns.createSequential("/seq/r/", value: [], lease: nil).name == "/seq/r/0000000000")
        // A name in the way: refused, and the sequence moves past it.
        _ = try ns.create("/seq/q/job-0000000003", value: [])
        #expect(throws: NameServiceError.rejected(.nameExists("/seq/q/job-0000000003"))) {
            _ = try ns.createSequential("/seq/q/job-", value: [], lease: nil)
        }
        #expect(try ns.createSequential("/seq/q/job-", value: [], lease: nil).name == "/seq/q/job-0000000004")
        // Ephemeral sequential names go with their lease.
        let lease = try ns.grantLease(ttlMillis: 5000)
        let e = try ns.createSequential("/seq/e/", value: [], lease: lease)
        #expect(e.lease == lease)
        try ns.revokeLease(lease)
        #expect(throws: NameServiceError.rejected(.nameNotFound(e.name))) { _ = try ns.get(e.name) }
        #expect(throws: NameServiceError.rejected(.leaseNotFound(lease))) {
            _ = try ns.createSequential("/seq/e/", value: [], lease: lease)
        }
        #expect(throws: NameServiceError.self) { _ = try ns.createSequential("relative-", value: [], lease: nil) }
        let cli = try runPlexus(["ns", "put", "--sequential", "/seq/cli/n-", "x", "--names", fixture.spec], timeout: 30)
        #expect(cli.status == 0 && cli.stdout.contains("/seq/cli/n-0000000000 version 1"), "\(cli)")
    }
}
