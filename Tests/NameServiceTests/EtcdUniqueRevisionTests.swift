import Foundation
import NameService
import NamesCore
import Testing
import TestSupport
import Transport

/// `EtcdNameClient.uniqueRevision`: the etcd way to allocate unique ids (one
/// put, the response header's revision), which `plexus bench names` measures
/// as its etcd row.
@Suite(.serialized) struct EtcdUniqueRevisionTests {
    @Test(.enabled(if: Requirement.etcd, Comment(rawValue: Requirement.etcdMissing)))
    func concurrentClientsGetUniqueStrictlyIncreasingIDs() throws {
        let fixture = try BackendFixture(.etcd)
        let clients = 8
        let perClient = 40
        let made = try (0..<clients).map { _ in try fixture.client() }
        let etcds = made.compactMap { $0 as? EtcdNameClient }
        try #require(etcds.count == clients, "etcd:// did not make an EtcdNameClient")

        let before = try etcds[0].currentRevision()
        let ids = Locked<[[UInt64]]>(Array(repeating: [], count: clients))
        let failures = Locked<[String]>([])
        let group = DispatchGroup()
        for (i, etcd) in etcds.enumerated() {
            group.enter()
            Thread {
                defer { group.leave() }
                var mine: [UInt64] = []
                for n in 0..<perClient {
                    do {
                        // Half the clients share one key: ids must not depend on the key.
                        mine.append(try etcd.uniqueRevision(putting: Array("\(i).\(n)".utf8), at: "/k\(i % (clients / 2))"))
                    } catch {
                        failures.withLock { $0.append("client \(i): \(error)") }
                        break
                    }
                }
                ids.withLock { $0[i] = mine }
            }.start()
        }
        #expect(group.wait(timeout: .now() + 120) == .success, "the clients did not finish within 120 s")
        #expect(failures.value.isEmpty, "\(failures.value.prefix(3))")
        let after = try etcds[0].currentRevision()

        let perThread = ids.value
        for (i, mine) in perThread.enumerated() {
            #expect(mine.count == perClient, "client \(i) got \(mine.count) ids")
            #expect(zip(mine, mine.dropFirst()).allSatisfy { $0 < $1 }, "client \(i)'s ids do not increase: \(mine)")
        }
        let all = perThread.flatMap { $0 }
        #expect(Set(all).count == all.count, "an id was given twice")
        #expect(all.allSatisfy { $0 > before && $0 <= after }, "ids outside (\(before), \(after)]")
        // Every put is one etcd revision, nothing else wrote under this prefix:
        // the ids are exactly the revisions between the two reads (if no other
        // prefix's writer shared the cluster, as with the fixture's own etcd).
        if ProcessInfo.processInfo.environment["PLEXUS_ETCD_ENDPOINTS"] == nil {
            #expect(Set(all) == Set((before + 1)...after))
        }

        // Real-time order across clients: an id taken after another one was
        // returned is larger, whichever client takes it.
        var last = try etcds[0].uniqueRevision(putting: [], at: "/order")
        for round in 0..<20 {
            let next = try etcds[round % clients].uniqueRevision(putting: [], at: "/order")
            #expect(next > last)
            last = next
        }
    }

    @Test(.enabled(if: Requirement.etcd, Comment(rawValue: Requirement.etcdMissing)))
    func invalidKeysAreRefusedBeforeAnyWrite() throws {
        let fixture = try BackendFixture(.etcd)
        let etcd = try #require(try fixture.client() as? EtcdNameClient)
        #expect(throws: NameServiceError.self) { _ = try etcd.uniqueRevision(putting: [], at: "relative") }
    }
}
