import Testing
@testable import Lincheck

@Suite struct NamesTests {
    typealias I = NamesModel.Input
    typealias O = NamesModel.Output
    let model = NamesModel()

    @Test func sequentialMapOperations() throws {
        let result = try check(model, [
            op(0, I.get(path: "/a"), O.notFound, 0, 1),
            op(1, I.create(path: "/a", value: "x"), O.ok(version: 1), 2, 3),
            op(2, I.create(path: "/a", value: "y"), O.exists, 4, 5),
            op(3, I.put(path: "/a", value: "z"), O.ok(version: 2), 6, 7),
            op(4, I.cas(path: "/a", expectedVersion: 1, value: "w"), O.versionMismatch, 8, 9),
            op(5, I.cas(path: "/a", expectedVersion: 2, value: "w"), O.ok(version: 3), 10, 11),
            op(6, I.get(path: "/a"), O.value("w", version: 3), 12, 13),
            op(7, I.get(path: "/a"), O.value("w", version: nil), 14, 15),  // version not recorded
            op(8, I.delete(path: "/a"), O.ok(version: nil), 16, 17),
            op(9, I.delete(path: "/a"), O.notFound, 18, 19),
            op(10, I.cas(path: "/a", expectedVersion: 3, value: "v"), O.notFound, 20, 21),
            op(11, I.create(path: "/a", value: "again"), O.ok(version: 1), 22, 23),  // versions restart
        ])
        #expect(result.verdict == .linearizable)
    }

    @Test func wrongVersionIsNotLinearizable() throws {
        let result = try check(model, [
            op(0, I.create(path: "/a", value: "x"), O.ok(version: 1), 0, 1),
            op(1, I.put(path: "/a", value: "y"), O.ok(version: 3), 2, 3),
        ])
        #expect(result.verdict == .notLinearizable)
    }

    @Test func concurrentCreatesCannotBothSucceed() throws {
        let both = try check(model, [
            op(0, client: 0, I.create(path: "/lock", value: "a"), O.ok(version: 1), 0, 10),
            op(1, client: 1, I.create(path: "/lock", value: "b"), O.ok(version: 1), 1, 9),
        ])
        #expect(both.verdict == .notLinearizable)
        let one = try check(model, [
            op(0, client: 0, I.create(path: "/lock", value: "a"), O.ok(version: 1), 0, 10),
            op(1, client: 1, I.create(path: "/lock", value: "b"), O.exists, 1, 9),
            op(2, client: 1, I.get(path: "/lock"), O.value("a", version: 1), 11, 12),
        ])
        #expect(one.verdict == .linearizable)
    }

    /// The acknowledged put is lost: a later get misses it.
    @Test func lostAcknowledgedPut() throws {
        let result = try check(model, [
            op(0, client: 0, I.put(path: "/svc/db", value: "10.0.0.1"), O.ok(version: nil), 0, 1),
            op(1, client: 1, I.get(path: "/svc"), O.notFound, 2, 3),
            op(2, client: 1, I.get(path: "/svc/db"), O.notFound, 4, 5),
        ])
        // Hierarchical: /svc does not exist, so the put itself could only have failed.
        #expect(result.verdict == .notLinearizable)
        let flat = try check(NamesModel(hierarchical: false), [
            op(0, client: 0, I.put(path: "/svc/db", value: "10.0.0.1"), O.ok(version: nil), 0, 1),
            op(2, client: 1, I.get(path: "/svc/db"), O.notFound, 4, 5),
        ])
        #expect(flat.verdict == .notLinearizable)
        #expect(flat.counterexample?.blocking.id == 2)
    }

    @Test func hierarchyRules() throws {
        let ok = try check(model, [
            op(0, I.create(path: "/a/b", value: "x"), O.noParent, 0, 1),
            op(1, I.create(path: "/a", value: ""), O.ok(version: 1), 2, 3),
            op(2, I.create(path: "/a/b", value: "x"), O.ok(version: 1), 4, 5),
            op(3, I.delete(path: "/a"), O.notEmpty, 6, 7),
            op(4, I.delete(path: "/a/b"), O.ok(version: nil), 8, 9),
            op(5, I.delete(path: "/a"), O.ok(version: nil), 10, 11),
        ])
        #expect(ok.verdict == .linearizable)
        // Deleting a parent while its child exists: the violation spans two paths, so it is only
        // found if the partition keeps them together.
        let bad = try check(model, [
            op(0, I.create(path: "/a", value: ""), O.ok(version: 1), 0, 1),
            op(1, I.create(path: "/a/b", value: "x"), O.ok(version: 1), 2, 3),
            op(2, I.delete(path: "/a"), O.ok(version: nil), 4, 5),
        ])
        #expect(bad.verdict == .notLinearizable)
    }

    @Test func partitionsByKeyKeepingParentsWithChildren() throws {
        let ops: [HistoryOperation<I, O>] = [
            op(0, I.create(path: "/a", value: ""), O.ok(version: 1), 0, 1),
            op(1, I.allocatePID, O.pid(1), 0, 1),
            op(2, I.create(path: "/c", value: ""), O.ok(version: 1), 0, 1),
            op(3, I.create(path: "/a/b", value: ""), O.ok(version: 1), 2, 3),
            op(4, I.get(path: "/a/b/c/d"), O.notFound, 2, 3),   // its parent never occurs
            op(5, I.allocatePID, O.pid(2), 2, 3),
        ]
        let groups = model.partition(ops).map { $0.map(\.id) }
        #expect(groups == [[0, 3], [2], [4], [1, 5]])
        let flatGroups = NamesModel(hierarchical: false).partition(ops).map { $0.map(\.id) }
        #expect(flatGroups == [[0], [2], [3], [4], [1, 5]])
    }

    @Test func duplicatePIDIsNotLinearizable() throws {
        // Even fully concurrent allocations must not hand out the same PID.
        let result = try check(model, [
            op(0, client: 0, I.allocatePID, O.pid(7), 0, 10),
            op(1, client: 1, I.allocatePID, O.pid(7), 1, 11),
            op(2, client: 2, I.allocatePID, O.pid(8), 2, 12),
        ])
        #expect(result.verdict == .notLinearizable)
        let report = result.report()
        #expect(report.contains("allocate-pid -> pid 7"))
        #expect(report.contains("last-pid=7"))
    }

    @Test func pidsIncreaseInRealTimeButConcurrentOnesMayBeReordered() throws {
        let concurrent = try check(model, [
            op(0, client: 0, I.allocatePID, O.pid(5), 0, 10),
            op(1, client: 1, I.allocatePID, O.pid(3), 1, 11),
        ])
        #expect(concurrent.verdict == .linearizable)
        #expect(concurrent.partitions[0].witness?.map(\.id) == [1, 0])
        let sequential = try check(model, [
            op(0, client: 0, I.allocatePID, O.pid(5), 0, 1),
            op(1, client: 1, I.allocatePID, O.pid(3), 2, 3),
        ])
        #expect(sequential.verdict == .notLinearizable)
    }

    @Test func indefiniteAllocationsMayConsumePIDs() throws {
        let result = try check(model, [
            op(0, client: 0, I.allocatePID, O.pid(1), 0, 1),
            op(1, client: 1, I.allocatePID, nil, 2, nil),    // timed out; may have used 2
            op(2, client: 2, I.allocatePID, O.pid(3), 3, 4),
            op(3, client: 2, I.allocatePID, O.pid(4), 5, 6),
        ])
        #expect(result.verdict == .linearizable)
    }

    @Test func indefiniteCreateMayOrMayNotHaveHappened() throws {
        let happened = try check(model, [
            op(0, client: 0, I.create(path: "/x", value: "a"), nil, 0, nil),
            op(1, client: 1, I.get(path: "/x"), O.notFound, 1, 2),
            op(2, client: 1, I.get(path: "/x"), O.value("a", version: 1), 3, 4),
            op(3, client: 1, I.create(path: "/x", value: "b"), O.exists, 5, 6),
        ])
        #expect(happened.verdict == .linearizable)
        let flipFlop = try check(model, [
            op(0, client: 0, I.create(path: "/x", value: "a"), nil, 0, nil),
            op(1, client: 1, I.get(path: "/x"), O.value("a", version: 1), 3, 4),
            op(2, client: 1, I.get(path: "/x"), O.notFound, 5, 6),
        ])
        #expect(flipFlop.verdict == .notLinearizable)
    }
}
