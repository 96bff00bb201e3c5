import NamesCore
import Testing
import Transport
@testable import Lincheck

@Suite struct NamesTests {
    typealias I = NamesModel.Input
    typealias O = NamesModel.Output
    let model = NamesModel()

    /// The false alarm of the hierarchical model: the service needs no parent for /dir1/leaf.
    @Test func leafWithoutParentIsFine() throws {
        let text = """
            {"client":1,"type":"invoke","op":"put","key":"/dir1/leaf","value":"v"}
            {"client":1,"type":"ok","op":"put","version":1}
            {"client":1,"type":"invoke","op":"get","key":"/dir1/leaf"}
            {"client":1,"type":"ok","op":"get","value":"v","version":1}
            """
        let (report, ok) = try checkText(text, model: "names")
        #expect(ok, "\(report)")
        #expect(report.hasPrefix("model: names") && report.contains("\nLINEARIZABLE"))
    }

    @Test func everyOperationKindWithItsFailures() throws {
        let result = try check(model, [
            op(0, I.get(path: "/a"), O.notFound, 0, 1),
            op(1, I.create(path: "/a", value: "x"), O.ok(version: 1), 2, 3),
            op(2, I.create(path: "/a", value: "y"), O.exists, 4, 5),
            op(3, I.put(path: "/a", value: "z"), O.ok(version: 2), 6, 7),
            op(4, I.cas(path: "/a", expectedVersion: 1, value: "w"), O.versionMismatch, 8, 9),
            op(5, I.cas(path: "/a", expectedVersion: 2, value: "w"), O.ok(version: 3), 10, 11),
            op(6, I.get(path: "/a"), O.value("w", version: 3), 12, 13),
            op(7, I.get(path: "/a"), O.value("w", version: nil), 14, 15),  // version not recorded
            op(8, I.delete(path: "/a", expectedVersion: 2), O.versionMismatch, 16, 17),
            op(9, I.delete(path: "/a", expectedVersion: 3), O.ok(version: nil), 18, 19),
            op(10, I.delete(path: "/a"), O.notFound, 20, 21),
            op(11, I.cas(path: "/a", expectedVersion: 3, value: "v"), O.notFound, 22, 23),
            op(12, I.create(path: "/a", value: "again"), O.ok(version: 1), 24, 25),  // versions restart
            op(13, I.put(path: "/new/deep/name", value: "p"), O.ok(version: 1), 26, 27),  // upsert, no parents
            op(14, I.list(path: "/"), O.children([
                .init(name: "/a", isEntry: true, hasChildren: false),
                .init(name: "/new", isEntry: false, hasChildren: true),
            ]), 28, 29),
            op(15, I.list(path: "/new/deep"), O.children([.init(name: "/new/deep/name", isEntry: true, hasChildren: false)]), 30, 31),
            op(16, I.list(path: "/nothing"), O.children([]), 32, 33),
            op(17, I.put(path: "/a/", value: "x"), O.invalidName, 34, 35),
            op(18, I.get(path: "/a//b"), O.invalidName, 36, 37),
            op(19, I.create(path: "/a/../b", value: "x"), O.invalidName, 38, 39),
            op(20, I.put(path: "/big", value: String(repeating: "x", count: 65537)), O.valueTooLarge, 40, 41),
            op(21, I.list(path: "/a/"), O.invalidName, 42, 43),
        ])
        #expect(result.verdict == .linearizable)
    }

    /// Each wrong answer the service cannot give is caught.
    @Test(arguments: [
        (I.get(path: "/k"), O.notFound),                                  // it exists
        (I.create(path: "/k", value: "y"), O.ok(version: 1)),             // exists
        (I.put(path: "/k", value: "y"), O.ok(version: 1)),                // an update: version 2
        (I.cas(path: "/k", expectedVersion: 2, value: "y"), O.ok(version: 3)),  // version is 1
        (I.cas(path: "/k", expectedVersion: 1, value: "y"), O.versionMismatch),
        (I.delete(path: "/k", expectedVersion: 1), O.notFound),
        (I.delete(path: "/k", expectedVersion: 2), O.ok(version: nil)),
        (I.list(path: "/"), O.children([])),
        (I.get(path: "/k/child"), O.value("x", version: 1)),
        (I.put(path: "/k/sub", value: "y"), O.invalidName),               // a valid name
    ])
    func impossibleAnswersAreViolations(input: I, output: O) throws {
        let result = try check(model, [
            op(0, I.create(path: "/k", value: "x"), O.ok(version: 1), 0, 1),
            op(1, input, output, 2, 3),
        ])
        #expect(result.verdict == .notLinearizable, "\(model.describe(input, output))")
    }

    @Test func sequentialNamesUseAPerDirectoryCounter() throws {
        let result = try check(model, [
            op(0, I.createSequential(prefix: "/q/job-", value: "a"), O.created(name: "/q/job-0000000000"), 0, 1),
            op(1, I.createSequential(prefix: "/q/task-", value: "b"), O.created(name: "/q/task-0000000001"), 2, 3),
            op(2, I.createSequential(prefix: "/r/job-", value: "c"), O.created(name: "/r/job-0000000000"), 4, 5),
            op(3, I.create(path: "/q/job-0000000003", value: "x"), O.ok(version: 1), 6, 7),
            op(4, I.createSequential(prefix: "/q/job-", value: "d"), O.created(name: nil), 8, 9),
            // The counter advances although the name exists.
            op(5, I.createSequential(prefix: "/q/job-", value: "e"), O.exists, 10, 11),
            op(6, I.createSequential(prefix: "/q/job-", value: "f"), O.created(name: "/q/job-0000000004"), 12, 13),
            op(7, I.get(path: "/q/job-0000000002"), O.value("d", version: 1), 14, 15),
            op(8, I.createSequential(prefix: "q", value: "g"), O.invalidName, 16, 17),
        ])
        #expect(result.verdict == .linearizable)
        let reused = try check(model, [
            op(0, I.createSequential(prefix: "/q/n", value: "a"), O.created(name: "/q/n0000000000"), 0, 1),
            op(1, I.createSequential(prefix: "/q/n", value: "b"), O.created(name: "/q/n0000000000"), 2, 3),
        ])
        #expect(reused.verdict == .notLinearizable)
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
            op(2, client: 1, I.get(path: "/svc/db"), O.notFound, 4, 5),
        ])
        #expect(result.verdict == .notLinearizable)
        #expect(result.counterexample?.blocking.id == 2)
    }

    /// A listing ties the names below it together: it must agree with one moment of all of them.
    @Test func listingSeesOneMoment() throws {
        let ops: [HistoryOperation<I, O>] = [
            op(0, client: 0, I.put(path: "/d/x", value: "1"), O.ok(version: 1), 0, 1),
            op(1, client: 0, I.delete(path: "/d/x"), O.ok(version: nil), 2, 3),
            op(2, client: 0, I.put(path: "/d/y", value: "1"), O.ok(version: 1), 4, 5),
            // Concurrent with all of it, the listing sees both: never the case at one moment.
            op(3, client: 1, I.list(path: "/d"), O.children([
                .init(name: "/d/x", isEntry: true, hasChildren: false),
                .init(name: "/d/y", isEntry: true, hasChildren: false),
            ]), 0, 6),
        ]
        #expect(try check(model, ops).verdict == .notLinearizable)
        #expect(model.partition(ops).count == 1)
    }

    @Test func partitionsByWhatOperationsCanObserve() throws {
        let ops: [HistoryOperation<I, O>] = [
            op(0, I.create(path: "/a", value: ""), O.ok(version: 1), 0, 1),
            op(1, I.allocatePID, O.pid(1), 0, 1),
            op(2, I.create(path: "/c", value: ""), O.ok(version: 1), 0, 1),
            op(3, I.create(path: "/a/b", value: ""), O.ok(version: 1), 2, 3),   // independent of /a
            op(4, I.list(path: "/a"), O.children([]), 2, 3),                    // with /a/b
            op(5, I.allocatePID, O.pid(2), 2, 3),
            op(6, I.createSequential(prefix: "/c/s", value: ""), O.created(name: nil), 4, 5),
            op(7, I.get(path: "/c/s0000000000"), O.notFound, 4, 5),             // it may generate this
            op(8, I.list(path: "/c"), O.children([]), 6, 7),                    // with what /c/s may create
        ]
        let groups = model.partition(ops).map { $0.map(\.id) }
        #expect(groups == [[0], [2], [3, 4], [6, 7, 8], [1, 5]])
        // A listing of the top level depends on every name.
        let top = ops + [op(9, I.list(path: "/"), O.children([]), 8, 9)]
        #expect(model.partition(top).map { $0.map(\.id) } == [[0, 2, 3, 4, 6, 7, 8, 9], [1, 5]])
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

    @Test func pidsAreConsecutiveInLinearisationOrder() throws {
        let concurrent = try check(model, [
            op(0, client: 0, I.allocatePID, O.pid(4), 0, 10),
            op(1, client: 1, I.allocatePID, O.pid(3), 1, 11),
        ])
        #expect(concurrent.verdict == .linearizable)
        #expect(concurrent.partitions[0].witness?.map(\.id) == [1, 0])
        let sequential = try check(model, [
            op(0, client: 0, I.allocatePID, O.pid(4), 0, 1),
            op(1, client: 1, I.allocatePID, O.pid(3), 2, 3),
        ])
        #expect(sequential.verdict == .notLinearizable)
        // The service never skips a PID: a gap needs an allocation that could have used it.
        let gap = try check(model, [
            op(0, client: 0, I.allocatePID, O.pid(1), 0, 1),
            op(1, client: 0, I.allocatePID, O.pid(3), 2, 3),
        ])
        #expect(gap.verdict == .notLinearizable)
        // A fresh service starts at 1; unknown, the first PID seen fixes the start.
        let late = [op(0, I.allocatePID, O.pid(41), 0, 1), op(1, I.allocatePID, O.pid(42), 2, 3)] as [HistoryOperation<I, O>]
        #expect(try check(model, late).verdict == .linearizable)
        #expect(try check(NamesModel(firstPID: 1), late).verdict == .notLinearizable)
    }

    @Test func unknownAllocationsMayConsumePIDs() throws {
        let result = try check(model, [
            op(0, client: 0, I.allocatePID, O.pid(1), 0, 1),
            op(1, client: 1, I.allocatePID, nil, 2, nil),    // timed out; may have used 2
            op(2, client: 2, I.allocatePID, O.pid(3), 3, 4),
            op(3, client: 2, I.allocatePID, O.pid(4), 5, 6),
        ])
        #expect(result.verdict == .linearizable)
        // ... but only after their invocation.
        let tooEarly = try check(model, [
            op(0, client: 0, I.allocatePID, O.pid(1), 0, 1),
            op(1, client: 0, I.allocatePID, O.pid(3), 2, 3),
            op(2, client: 1, I.allocatePID, nil, 4, nil),
        ])
        #expect(tooEarly.verdict == .notLinearizable)
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

    /// The model against the service's own state machine: random operations (valid and invalid
    /// names, oversized values, sequential names, listings, allocations) applied to both must
    /// give the same answers, so the model accepts exactly what the service does.
    @Test func modelMatchesTheServiceStateMachine() throws {
        let limits = NameServiceState.Limits(maxNameBytes: 16, maxValueBytes: 4)
        let model = NamesModel(maxNameBytes: 16, maxValueBytes: 4, firstPID: 1)
        let paths = ["/a", "/a/b", "/a/b/c", "/b", "/q/s0000000001", "a", "/", "/a/", "//a", "/a/../b", "/./a",
                     "/a\u{0}", "/this-is-too-long-a-name"]
        let prefixes = ["/q/s", "/a/b/", "/q/", "q", "/very-long-prefix-"]
        let values = ["", "v", "vv", "toolong"]
        var rng = SplitMix64(seed: 0xC0FFEE)
        for run in 0..<40 {
            var service = NameServiceState(limits: limits)
            var state = model.initial
            for n in 0..<60 {
                let path = paths.randomElement(using: &rng)!
                let value = values.randomElement(using: &rng)!
                let input: I
                switch Int.random(in: 0..<9, using: &rng) {
                case 0: input = .create(path: path, value: value)
                case 1: input = .createSequential(prefix: prefixes.randomElement(using: &rng)!, value: value)
                case 2: input = .get(path: path)
                case 3: input = .put(path: path, value: value)
                case 4: input = .cas(path: path, expectedVersion: UInt64.random(in: 1...3, using: &rng), value: value)
                case 5: input = .delete(path: path, expectedVersion: Bool.random(using: &rng) ? nil : UInt64.random(in: 1...3, using: &rng))
                case 6: input = .list(path: ["/", "/a", "/q", "/a/b", "a", "/a/"].randomElement(using: &rng)!)
                default: input = .allocatePID
                }
                let answer = Self.serviceAnswer(&service, input, n)
                let next = try #require(model.step(state, input, answer),
                                        "run \(run) step \(n): the model rejects the service's \(model.describe(input, answer)) in \(model.describe(state: state))")
                state = next
            }
            #expect(state.entries.mapValues(\.value) == service.namespace.mapValues { String(decoding: $0.value, as: UTF8.self) })
            #expect(state.entries.mapValues(\.version) == service.namespace.mapValues(\.version))
        }
    }

    /// What the service answers to `input`, as a model output.
    static func serviceAnswer(_ service: inout NameServiceState, _ input: I, _ request: Int) -> O {
        func output(_ error: NameError) -> O {
            switch error {
            case .nameExists: return .exists
            case .nameNotFound: return .notFound
            case .versionMismatch: return .versionMismatch
            case .invalidName: return .invalidName
            case .invalidArgument: return .valueTooLarge
            default: fatalError("unexpected \(error)")
            }
        }
        func command(_ c: NameCommand) -> O {
            switch service.apply(c, clientID: 1, requestID: UInt64(request + 1)) {
            case let .success(.written(entry)):
                if case .createSequential = c { return .created(name: entry.name) }
                return .ok(version: entry.version)
            case .success(.deleted): return .ok(version: nil)
            case let .success(.allocated(pid)): return .pid(pid.rawValue)
            case let .success(other): fatalError("unexpected \(other)")
            case let .failure(error): return output(error)
            }
        }
        switch input {
        case let .create(path, value): return command(.create(name: path, value: Array(value.utf8), lease: nil))
        case let .createSequential(prefix, value): return command(.createSequential(prefix: prefix, value: Array(value.utf8), lease: nil))
        case let .put(path, value): return command(.put(name: path, value: Array(value.utf8), lease: nil))
        case let .cas(path, version, value): return command(.compareAndSet(name: path, expectedVersion: version, value: Array(value.utf8)))
        case let .delete(path, version): return command(.delete(name: path, expectedVersion: version))
        case .allocatePID:
            return command(.allocatePID(node: "n", address: "a", parent: nil, startTimeMillis: 0, lease: nil))
        case let .get(path):
            switch service.get(path) {
            case let .success(entry): return .value(String(decoding: entry.value, as: UTF8.self), version: entry.version)
            case let .failure(error): return output(error)
            }
        case let .list(path):
            switch service.children(of: path) {
            case let .success(children):
                return .children(children.map { .init(name: $0.name, isEntry: $0.isEntry, hasChildren: $0.hasChildren) })
            case let .failure(error): return output(error)
            }
        }
    }
}
