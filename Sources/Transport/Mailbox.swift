import Foundation
import Synchronization

/// A bounded blocking FIFO queue. `put` waits while the queue is full (so a
/// slow consumer slows its producer instead of growing memory without bound);
/// `take` waits, up to a deadline, while it is empty, polling first for
/// `spin`'s budget if the mailbox has one (for answers that are imminent).
public final class Mailbox<Element: Sendable>: @unchecked Sendable {
    private var items: [Element] = []
    private var head = 0
    private var closedReason: String?
    private let cond = NSCondition()
    /// Elements queued, readable without the lock (for polling only; the
    /// locked state decides).
    private let queued = Atomic<Int>(0)
    public let capacity: Int
    private let spin: SpinWait?

    public init(capacity: Int, spin: SpinWait? = nil) {
        precondition(capacity > 0)
        self.capacity = capacity
        self.spin = spin
    }

    /// Appends; waits while full. Returns false if the mailbox was closed.
    @discardableResult
    public func put(_ e: Element) -> Bool {
        cond.lock()
        defer { cond.unlock() }
        while items.count - head >= capacity && closedReason == nil { cond.wait() }
        if closedReason != nil { return false }
        items.append(e)
        queued.add(1, ordering: .releasing)
        cond.broadcast()
        return true
    }

    /// Removes the oldest element, waiting up to `timeout` seconds (nil: forever).
    /// Returns nil on timeout or once the mailbox is closed and drained.
    public func take(timeout: Double? = nil) -> Element? {
        let deadline = timeout.map { Date().addingTimeInterval($0) }
        // Poll only when the caller would wait at least as long as the poll.
        if let spin, timeout.map({ $0 * 1e9 >= Double(spin.nanoseconds) }) ?? true {
            _ = spin.poll { queued.load(ordering: .acquiring) > 0 }
        }
        cond.lock()
        defer { cond.unlock() }
        while items.count == head {
            if closedReason != nil { return nil }
            if let d = deadline {
                if !cond.wait(until: d) && items.count == head { return nil }
            } else {
                cond.wait()
            }
        }
        let e = items[head]
        head += 1
        queued.subtract(1, ordering: .relaxed)
        if head > 1024 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        cond.broadcast()
        return e
    }

    public var count: Int {
        cond.lock()
        defer { cond.unlock() }
        return items.count - head
    }

    /// Wakes every waiter; later puts fail and takes drain what is left.
    public func close(reason: String) {
        cond.lock()
        if closedReason == nil { closedReason = reason }
        cond.broadcast()
        cond.unlock()
    }

    public var closeReason: String? {
        cond.lock()
        defer { cond.unlock() }
        return closedReason
    }
}
