import Testing
@testable import Deadlock

/// A few detectors wired by a FIFO mailbox the test drains by hand.
struct Network {
    var detectors: [UInt64: DeadlockDetector] = [:]
    var inFlight: [(to: UInt64, message: DeadlockMessage)] = []
    var declared: [(pid: UInt64, cycle: DeadlockCycle)] = []
    var aborted: [(pid: UInt64, sequence: UInt64, error: DeadlockError)] = []

    init(_ pids: [UInt64], policy: DeadlockPolicy = .abort, maxPath: Int = 4096) {
        for pid in pids {
            detectors[pid] = DeadlockDetector(configuration: DeadlockConfiguration(
                pid: pid, node: "n\(pid % 2)", policy: policy, maxPath: maxPath))
        }
    }

    mutating func apply(_ effects: [DeadlockEffect], of pid: UInt64) {
        for effect in effects {
            switch effect {
            case .send(let message, let to): inFlight.append((to, message))
            case .deadlock(let cycle): declared.append((pid, cycle))
            case .abortWait(let sequence, let error): aborted.append((pid, sequence, error))
            }
        }
    }

    mutating func wait(_ pid: UInt64, _ sequence: UInt64, for set: Set<UInt64>, on resource: Resource, at ms: Int = 0) {
        let effects = detectors[pid]!.waitStarted(Wait(waiter: pid, sequence: sequence, waitingFor: set, resource: resource), now: .milliseconds(ms))
        apply(effects, of: pid)
    }

    mutating func tick(_ ms: Int) {
        for pid in detectors.keys.sorted() { apply(detectors[pid]!.tick(now: .milliseconds(ms)), of: pid) }
    }

    /// Delivers the oldest message; returns it.
    @discardableResult
    mutating func deliverOne(at ms: Int = 0) -> (to: UInt64, message: DeadlockMessage)? {
        guard !inFlight.isEmpty else { return nil }
        let m = inFlight.removeFirst()
        apply(detectors[m.to]!.receive(m.message, now: .milliseconds(ms)), of: m.to)
        return m
    }

    mutating func drain(at ms: Int = 0, limit: Int = 10_000) {
        var n = 0
        while deliverOne(at: ms) != nil { n += 1; precondition(n < limit, "no quiescence") }
    }
}

@Suite struct DeadlockDetectorTests {
    @Test func twoProcessCycleAbortsTheHighestPIDOnly() throws {
        var net = Network([3, 7])
        net.wait(3, 1, for: [7], on: .lock(1))
        net.wait(7, 1, for: [3], on: .receive(from: 3))
        net.tick(99)
        #expect(net.inFlight.isEmpty, "no probe before the threshold")
        net.tick(100)
        net.drain(at: 100)
        #expect(net.declared.map(\.pid) == [7])
        let cycle = try #require(net.declared.first?.cycle)
        #expect(cycle.processes == [7, 3])
        #expect(cycle.victim == 7)
        #expect(net.aborted.count == 1)
        #expect(net.aborted.first?.pid == 7 && net.aborted.first?.sequence == 1)
        let text = "\(net.aborted[0].error)"
        #expect(text.contains("pid 7@n1") && text.contains("pid 3@n1") && text.contains("lock 1") && text.contains("receive from pid 3"))
    }

    @Test func aLongerCycleOfMixedPrimitivesIsFoundOnceWhenAllInitiate() {
        let pids: [UInt64] = [5, 12, 2, 9, 4]
        var net = Network(pids)
        let resources: [Resource] = [.lock(1), .barrier(2), .receive(from: 2), .exit(of: 9), .other(kind: "condition", id: 3)]
        for (i, pid) in pids.enumerated() { net.wait(pid, 1, for: [pids[(i + 1) % pids.count]], on: resources[i]) }
        for t in stride(from: 100, through: 2000, by: 100) {
            net.tick(t)
            net.drain(at: t)
        }
        #expect(net.declared.count == 1)
        #expect(net.declared.first?.cycle.processes == [12, 2, 9, 4, 5])
        #expect(net.aborted.map(\.pid) == [12])
    }

    @Test func aChainIntoACycleIsNotItselfDeclared() {
        var net = Network([9, 3, 7])
        net.wait(9, 1, for: [3], on: .lock(1))
        net.wait(3, 1, for: [7], on: .lock(2))
        net.wait(7, 1, for: [3], on: .lock(3))
        net.tick(100)
        net.drain(at: 100)
        #expect(net.declared.map(\.pid) == [7])
        #expect(net.declared.first?.cycle.processes == [7, 3])
    }

    @Test func convergingChainsAreNoDeadlock() {
        var net = Network([1, 2, 5, 6])
        net.wait(1, 1, for: [5], on: .lock(1))
        net.wait(2, 1, for: [5], on: .lock(1))
        net.wait(6, 1, for: [1, 2], on: .barrier(1))
        for t in stride(from: 100, through: 3000, by: 100) {
            net.tick(t)
            net.drain(at: t)
        }
        #expect(net.declared.isEmpty && net.aborted.isEmpty)
    }

    @Test func aProbeOfAnEndedWaitIsDropped() {
        var net = Network([3, 7])
        net.wait(7, 1, for: [3], on: .lock(1))
        net.wait(3, 1, for: [7], on: .lock(2))
        net.tick(100)
        // 7's probe reaches 3, which forwards it back; 7's wait ends first.
        while let m = net.inFlight.first, m.to != 7 { net.deliverOne() }
        net.detectors[7]!.waitEnded(sequence: 1)
        net.wait(7, 2, for: [3], on: .lock(1), at: 100)
        net.drain(at: 100)
        #expect(net.declared.isEmpty)
    }

    /// The probe went round while 3 waited for 7; then 3 got its lock and
    /// blocked again (a new wait) for 7: the confirm finds the old wait gone.
    @Test func theConfirmationRejectsAMemberThatMovedOn() {
        var net = Network([3, 7])
        net.wait(7, 1, for: [3], on: .lock(1))
        net.wait(3, 1, for: [7], on: .lock(2))
        net.apply(net.detectors[7]!.tick(now: .milliseconds(100)), of: 7)
        net.deliverOne()  // probe 7 -> 3, forwarded to 7
        net.deliverOne()  // back at 7: confirm to 3
        guard case .confirm? = net.inFlight.first?.message else {
            Issue.record("expected a confirm in flight, got \(net.inFlight)")
            return
        }
        net.detectors[3]!.waitEnded(sequence: 1)
        net.wait(3, 2, for: [7], on: .lock(2), at: 100)
        net.drain(at: 100)
        #expect(net.declared.isEmpty && net.aborted.isEmpty)
        #expect(net.detectors[3]!.statistics.confirmsDropped == 1)
    }

    @Test func aChangedWaitSetInvalidatesThePathThroughIt() {
        var net = Network([3, 7, 8])
        net.wait(7, 1, for: [3], on: .barrier(1))
        net.wait(3, 1, for: [7], on: .lock(2))
        net.apply(net.detectors[7]!.tick(now: .milliseconds(100)), of: 7)
        net.deliverOne()  // 7's probe at 3, forwarded to 7
        #expect(net.inFlight.map(\.to) == [7])
        // 3's lock changes hands: it now waits for 8, not 7 (same wait).
        _ = net.detectors[3]!.waitChanged(sequence: 1, waitingFor: [8], now: .milliseconds(100))
        net.drain(at: 100)
        #expect(net.declared.isEmpty)
        #expect(net.detectors[3]!.statistics.confirmsDropped == 1)
    }

    @Test func aSelfEdgeIsDropped() {
        var net = Network([4, 6])
        // A lock manager that names the waiter itself as holder (its grant
        // reply was lost) must not make a self-cycle.
        net.wait(4, 1, for: [4], on: .lock(1))
        net.wait(6, 1, for: [4], on: .lock(1))
        #expect(net.detectors[4]!.wait?.waitingFor == [])
        #expect(net.detectors[4]!.nextDeadline == nil)
        for t in stride(from: 100, through: 1000, by: 100) {
            net.tick(t)
            net.drain(at: t)
        }
        #expect(net.declared.isEmpty)
    }

    @Test func duplicatedProbesAndConfirmsDeclareOnce() {
        var net = Network([3, 7])
        net.wait(3, 1, for: [7], on: .lock(1))
        net.wait(7, 1, for: [3], on: .lock(2))
        net.tick(100)
        var steps = 0
        while let m = net.inFlight.first, steps < 100 {
            net.inFlight.append(m)  // every message arrives twice
            net.deliverOne()
            steps += 1
        }
        net.drain()
        #expect(net.declared.count == 1)
        #expect(net.aborted.count == 1)
    }

    @Test func aLostRoundIsMadeUpByTheNext() {
        var net = Network([3, 7])
        net.wait(3, 1, for: [7], on: .lock(1))
        net.wait(7, 1, for: [3], on: .lock(2))
        net.tick(100)
        net.inFlight.removeAll()
        #expect(net.detectors[7]!.nextDeadline == .milliseconds(200))
        net.tick(200)
        net.drain(at: 200)
        #expect(net.declared.map(\.pid) == [7])
    }

    @Test func probeRoundsBackOffToTheirBound() {
        var d = DeadlockDetector(configuration: DeadlockConfiguration(pid: 1, node: "a", maxReprobeInterval: .milliseconds(400)))
        _ = d.waitStarted(Wait(waiter: 1, sequence: 1, waitingFor: [2], resource: .lock(1)), now: .zero)
        var rounds: [Duration] = []
        for ms in stride(from: 0, through: 2000, by: 10) where !d.tick(now: .milliseconds(ms)).isEmpty {
            rounds.append(.milliseconds(ms))
        }
        #expect(rounds == [100, 200, 400, 800, 1200, 1600, 2000].map { .milliseconds($0) })
    }

    @Test func reportPolicyReportsWithoutAborting() {
        var net = Network([3, 7], policy: .report)
        net.wait(3, 1, for: [7], on: .lock(1))
        net.wait(7, 1, for: [3], on: .lock(2))
        for t in stride(from: 100, through: 3000, by: 100) {
            net.tick(t)
            net.drain(at: t)
        }
        #expect(net.declared.map(\.pid) == [7])
        #expect(net.aborted.isEmpty)
    }

    @Test func offPolicyNeitherProbesNorForwards() {
        var net = Network([3, 7], policy: .off)
        net.wait(3, 1, for: [7], on: .lock(1))
        net.wait(7, 1, for: [3], on: .lock(2))
        net.tick(1000)
        #expect(net.inFlight.isEmpty)
        let probe = Probe(initiator: 9, sequence: 1, round: 1, path: [Hop(pid: 9, sequence: 1, version: 0, node: "x", resource: .lock(1))])
        #expect(net.detectors[3]!.receive(.probe(probe), now: .zero).isEmpty)
    }

    @Test func probesAreNotForwardedPastThePathBound() {
        var d = DeadlockDetector(configuration: DeadlockConfiguration(pid: 1, node: "a", maxPath: 3))
        _ = d.waitStarted(Wait(waiter: 1, sequence: 1, waitingFor: [0], resource: .lock(1)), now: .zero)
        let hops = [9, 8, 7].map { Hop(pid: UInt64($0), sequence: 1, version: 0, node: "x", resource: .lock(1)) }
        #expect(d.receive(.probe(Probe(initiator: 9, sequence: 1, round: 1, path: hops)), now: .zero).isEmpty)
        #expect(d.receive(.probe(Probe(initiator: 9, sequence: 1, round: 1, path: Array(hops.prefix(2)))), now: .zero).count == 1)
    }

    @Test func aProbeFromALowerInitiatorIsNotForwarded() {
        var d = DeadlockDetector(configuration: DeadlockConfiguration(pid: 5, node: "a"))
        _ = d.waitStarted(Wait(waiter: 5, sequence: 1, waitingFor: [1], resource: .lock(1)), now: .zero)
        let hop = Hop(pid: 2, sequence: 1, version: 0, node: "x", resource: .lock(1))
        #expect(d.receive(.probe(Probe(initiator: 2, sequence: 1, round: 1, path: [hop])), now: .zero).isEmpty)
        // The same round again, or an older one, from a higher initiator: once.
        let high = Hop(pid: 8, sequence: 4, version: 0, node: "x", resource: .lock(1))
        let probe = Probe(initiator: 8, sequence: 4, round: 2, path: [high])
        #expect(d.receive(.probe(probe), now: .zero).count == 1)
        #expect(d.receive(.probe(probe), now: .zero).isEmpty)
        #expect(d.receive(.probe(Probe(initiator: 8, sequence: 4, round: 1, path: [high])), now: .zero).isEmpty)
        #expect(d.receive(.probe(Probe(initiator: 8, sequence: 4, round: 3, path: [high])), now: .zero).count == 1)
    }
}
