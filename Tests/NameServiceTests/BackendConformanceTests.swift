#if canImport(Glibc)
import Glibc
#endif
import Foundation
import NameService
import Names
import Testing
import TestSupport

/// A running backend for one test: the replicated service (3 real replicas)
/// or etcd. For etcd it uses the cluster in $PLEXUS_ETCD_ENDPOINTS (.ci/run
/// starts one with Scripts/etcd-cluster.sh) under a fresh key prefix, else a
/// single etcd member it starts itself; it fails, never skips, without etcd.
final class BackendFixture: @unchecked Sendable {
    enum Kind: String, CaseIterable, Sendable, CustomStringConvertible {
        case replicated, etcd
        var description: String { rawValue }
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
                    throw HarnessError("etcd is not installed: apt-get install etcd-server (.ci/run does), "
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

    func client() throws -> any NameServiceBackend {
        switch kind {
        case .replicated: try NameClient(replicas: endpoints)
        case .etcd: try EtcdNameClient(endpoints: endpoints, prefix: prefix)
        }
    }
}

/// The same behaviour from both backends behind `NameServiceBackend`.
@Suite(.serialized) struct BackendConformanceTests {
    @Test(arguments: BackendFixture.Kind.allCases)
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

    @Test(arguments: BackendFixture.Kind.allCases)
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
}
