import Testing
@testable import Lincheck

/// Hand-made register histories. Times are explicit: op(id, client:, input, output, call, ret).
@Suite struct RegisterTests {
    typealias I = RegisterModel.Input
    typealias O = RegisterModel.Output
    let model = RegisterModel()

    @Test func sequentialHistoryIsLinearizable() throws {
        let result = try check(model, [
            op(0, I.read, O.value(nil), 0, 1),
            op(1, I.write(1), O.ok, 2, 3),
            op(2, I.read, O.value(1), 4, 5),
            op(3, I.cas(from: 1, to: 2), O.ok, 6, 7),
            op(4, I.cas(from: 1, to: 3), O.failed, 8, 9),
            op(5, I.read, O.value(2), 10, 11),
        ])
        #expect(result.verdict == .linearizable)
        #expect(result.partitions.first?.witness?.map(\.id) == [0, 1, 2, 3, 4, 5])
    }

    @Test func concurrentReadMaySeeOldOrNewValue() throws {
        for seen in [nil, 1] as [Int?] {
            let result = try check(model, [
                op(0, client: 0, I.write(1), O.ok, 0, 10),
                op(1, client: 1, I.read, O.value(seen), 2, 5),
            ])
            #expect(result.verdict == .linearizable, "read \(String(describing: seen)) during the write")
        }
    }

    /// A real-time order the search must honour even though each read alone is plausible:
    /// once a read saw the new value, a later read may not see the old one.
    @Test func newOldInversionIsNotLinearizable() throws {
        let result = try check(model, [
            op(0, client: 0, I.write(1), O.ok, 0, 10),
            op(1, client: 1, I.read, O.value(1), 1, 2),
            op(2, client: 2, I.read, O.value(nil), 3, 4),
        ])
        #expect(result.verdict == .notLinearizable)
        let c = try #require(result.counterexample)
        #expect(c.blocking.id == 2)
        #expect(c.state == 1)
    }

    /// The acknowledged write of 2 is lost: a later read sees the value it overwrote.
    @Test func lostAcknowledgedWriteIsNotLinearizable() throws {
        let result = try check(model, [
            op(0, client: 0, I.write(1), O.ok, 0, 1),
            op(1, client: 1, I.write(2), O.ok, 2, 3),
            op(2, client: 0, I.read, O.value(1), 4, 5),
        ])
        #expect(result.verdict == .notLinearizable)
        let c = try #require(result.counterexample)
        #expect(c.prefix.map(\.operation.id) == [0, 1])
        #expect(c.state == 2)
        #expect(c.blocking.id == 2)
        #expect(c.candidates.map(\.operation.id) == [2])
        #expect(c.candidates.first?.reason == .impossible)
        let report = result.report()
        #expect(report.contains("NOT LINEARIZABLE"))
        #expect(report.contains("#2 client 0 [t=4..5] read -> 1"))
        #expect(report.contains("impossible in this state"))
    }

    @Test func failedCasIsChecked() throws {
        // The cas claims the register did not hold 1, but it did.
        let result = try check(model, [
            op(0, I.write(1), O.ok, 0, 1),
            op(1, I.cas(from: 1, to: 2), O.failed, 2, 3),
        ])
        #expect(result.verdict == .notLinearizable)
    }

    /// An indefinite write may take effect long after it was invoked — or never.
    @Test func indefiniteWriteMayTakeEffectLateOrNever() throws {
        let late = try check(model, [
            op(0, client: 0, I.write(1), nil, 0, nil),
            op(1, client: 1, I.read, O.value(nil), 5, 6),
            op(2, client: 1, I.read, O.value(1), 10, 11),
        ])
        #expect(late.verdict == .linearizable)
        #expect(late.partitions[0].witness?.map(\.id) == [1, 0, 2])

        let never = try check(model, [
            op(0, client: 0, I.write(1), nil, 0, nil),
            op(1, client: 1, I.read, O.value(nil), 50, 60),
        ])
        #expect(never.verdict == .linearizable)
        #expect(never.partitions[0].witness?.map(\.id) == [1])
    }

    @Test func indefiniteWriteTakesEffectAtMostOnce() throws {
        // Seen, then unseen, then seen again: a single write cannot explain that.
        let result = try check(model, [
            op(0, client: 0, I.write(1), nil, 0, nil),
            op(1, client: 1, I.write(2), O.ok, 1, 2),
            op(2, client: 2, I.read, O.value(1), 3, 4),
            op(3, client: 2, I.read, O.value(2), 5, 6),
            op(4, client: 2, I.read, O.value(1), 7, 8),
        ])
        #expect(result.verdict == .notLinearizable)
        // Deepest attempt: write 2, then the indefinite write 1, read 1 — and read 2 is stuck.
        let c = try #require(result.counterexample)
        #expect(c.prefix.map(\.operation.id) == [1, 0, 2])
        #expect(c.blocking.id == 3)
    }

    @Test func indefiniteWriteCannotTakeEffectBeforeItsInvocation() throws {
        let result = try check(model, [
            op(0, client: 1, I.read, O.value(1), 0, 1),
            op(1, client: 0, I.write(1), nil, 2, nil),
        ])
        #expect(result.verdict == .notLinearizable)
        let c = try #require(result.counterexample)
        #expect(c.prefix.isEmpty)
        #expect(c.blocking.id == 0)
    }

    @Test func indefiniteCasTakesEffectOnlyIfItMatches() throws {
        let ok = try check(model, [
            op(0, I.write(1), O.ok, 0, 1),
            op(1, I.cas(from: 1, to: 5), nil, 2, nil),
            op(2, I.read, O.value(5), 3, 4),
        ])
        #expect(ok.verdict == .linearizable)
        let impossible = try check(model, [
            op(0, I.write(1), O.ok, 0, 1),
            op(1, I.cas(from: 2, to: 5), nil, 2, nil),
            op(2, I.read, O.value(5), 3, 4),
        ])
        #expect(impossible.verdict == .notLinearizable)
    }

    @Test func emptyAndAllIndefiniteHistoriesAreLinearizable() throws {
        #expect(try check(model, []).verdict == .linearizable)
        #expect(try check(model, [op(0, I.write(3), nil, 0, nil)]).verdict == .linearizable)
    }

    @Test func stateBoundGivesUnknown() throws {
        // Many concurrent writes and reads: more than 3 configurations are needed to decide.
        var ops: [HistoryOperation<I, O>] = []
        for i in 0..<6 { ops.append(op(i, client: i, I.write(i), O.ok, 0, 100)) }
        ops.append(op(6, client: 6, I.read, O.value(42), 101, 102))
        let result = try check(model, ops, options: CheckOptions(maxStates: 3))
        guard case .unknown = result.verdict else {
            Issue.record("expected unknown, got \(result.verdict)")
            return
        }
        #expect(result.report().hasPrefix("UNKNOWN (state limit): state limit reached"))
        // Unbounded, the same history is decided (42 was never written).
        #expect(try check(model, ops, options: CheckOptions(maxStates: nil)).verdict == .notLinearizable)
    }

    @Test func timeLimitGivesUnknown() throws {
        // 14 concurrent writes then an impossible read: the search must visit 2^14 subsets, far
        // more than the 1024 iterations between clock readings, so a zero timeout must trip.
        var ops: [HistoryOperation<I, O>] = []
        for i in 0..<14 { ops.append(op(i, client: i, I.write(i), O.ok, 0, 100)) }
        ops.append(op(14, client: 14, I.read, O.value(-1), 101, 102))
        let result = try check(model, ops, options: CheckOptions(maxStates: nil, timeout: .zero))
        guard case let .unknown(reason) = result.verdict else {
            Issue.record("expected unknown, got \(result.verdict)")
            return
        }
        #expect(reason.hasPrefix("time limit reached"))
        #expect(result.report().hasPrefix("UNKNOWN (time limit): time limit reached"))
    }

    /// The search is iterative: a long history (deep linearisation) must not exhaust the stack.
    @Test func longSequentialHistory() throws {
        var ops: [HistoryOperation<I, O>] = []
        for i in 0..<5_000 {
            ops.append(i % 2 == 0
                ? op(i, I.write(i), O.ok, 2 * i, 2 * i + 1)
                : op(i, I.read, O.value(i - 1), 2 * i, 2 * i + 1))
        }
        let result = try check(model, ops)
        #expect(result.verdict == .linearizable)
        #expect(result.statesExplored == 5_000)
    }
}
