@testable import Cluster
import Foundation
import Logging
import NameService
import NamesCore
import Testing
import Transport

/// The launcher's registry of a job's processes in a real 3-replica service.
@Suite(.serialized) struct ProcessRegistryTests {
    /// PIDs allocated from several threads at once are all bound to one
    /// lease (the job's), and ending the job marks every one of them lost.
    @Test func concurrentAllocationsShareTheJobsLease() throws {
        let cluster = try NameCluster(size: 3)
        try cluster.waitForLeader()
        let registry = try ProcessRegistry(names: cluster.addresses.joined(separator: ","), ttlMillis: 10_000,
                                           logger: Logger(label: "test.registry"))
        let threads = 8
        let go = DispatchSemaphore(value: 0)
        let done = DispatchGroup()
        let pids = Locked<[UInt64]>([])
        let errors = Locked<[String]>([])
        for _ in 0..<threads {
            done.enter()
            Thread {
                go.wait()
                do { let p = try registry.allocate(node: "n1"); pids.withLock { $0.append(p) } } catch {
                    errors.withLock { $0.append("\(error)") }
                }
                done.leave()
            }.start()
        }
        for _ in 0..<threads { go.signal() }
        done.wait()
        #expect(errors.value.isEmpty, "\(errors.value)")
        #expect(Set(pids.value).count == threads, "\(pids.value)")
        let client = try cluster.client()
        let leases = try Set(pids.value.map { try client.process(GlobalPID($0)).lease })
        #expect(leases.count == 1 && leases.first! != nil, "PIDs bound to leases \(leases)")
        registry.finish()
        for p in pids.value { #expect(try client.process(GlobalPID(p)).state == .lost) }
    }
}
