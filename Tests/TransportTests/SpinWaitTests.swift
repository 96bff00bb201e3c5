import Foundation
import Synchronization
import Testing
@testable import Transport

private func monotonicNanos() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// Sets `flag` from another thread once `gate` opens; the caller opens the
/// gate from inside its poll, so the answer really arrives while it polls.
private final class Answer: @unchecked Sendable {
    let flag = Atomic<Bool>(false)
    let gate = DispatchSemaphore(value: 0)
    init() {
        Thread { [self] in
            gate.wait()
            flag.store(true, ordering: .releasing)
        }.start()
    }
}

@Suite("SpinWait: polling briefly for an imminent answer")
struct SpinWaitTests {
    @Test("an answer that arrives while polling ends the poll with true")
    func answerWhilePolling() {
        let answer = Answer()
        var checks = 0
        let got = SpinWait(nanoseconds: 10_000_000_000).poll {
            checks += 1
            if checks == 2 { answer.gate.signal() }
            return answer.flag.load(ordering: .acquiring)
        }
        #expect(got)
        // The flag can only be set after the gate opened, during check 2: the
        // poll went on after a first false answer and saw the other thread's.
        #expect(checks >= 2)
    }

    @Test("no answer: the poll gives up after its budget and says false")
    func budgetSpent() {
        let budget: UInt64 = 2_000_000
        let t0 = monotonicNanos()
        var checks = 0
        let got = SpinWait(nanoseconds: budget, yieldEvery: 3).poll { checks += 1; return false }
        let elapsed = monotonicNanos() - t0
        #expect(!got)
        #expect(elapsed >= budget, "gave up after \(elapsed) ns, before the \(budget) ns budget")
        #expect(checks > 3)
    }

    @Test("a zero budget checks once and never loops")
    func zeroBudget() {
        var checks = 0
        #expect(!SpinWait(nanoseconds: 0).poll { checks += 1; return false })
        #expect(checks == 1)
        #expect(SpinWait(nanoseconds: 0).poll { true })
    }

    @Test("a polling mailbox hands over elements in order, one of them put by another thread")
    func pollingMailbox() {
        let box = Mailbox<Int>(capacity: 4, spin: SpinWait(nanoseconds: 10_000_000_000))
        Thread { box.put(7) }.start()
        #expect(box.take() == 7)
        box.put(8)
        box.put(9)
        #expect(box.take() == 8)
        #expect(box.take() == 9)
        #expect(box.count == 0)
    }

    @Test("a polling mailbox still times out and still reports closing")
    func pollingMailboxTimeoutAndClose() {
        let box = Mailbox<Int>(capacity: 4, spin: SpinWait(nanoseconds: 1_000_000))
        #expect(box.take(timeout: 0.01) == nil)
        box.put(1)
        box.close(reason: "test over")
        #expect(box.take() == 1, "what was queued before closing is still delivered")
        #expect(box.take() == nil)
        #expect(box.closeReason == "test over")
    }
}
