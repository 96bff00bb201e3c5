import Foundation

/// A bounded FIFO that never blocks its producers: `offer` returns false when
/// full (the caller drops or refuses), `take` waits up to a timeout. Used for
/// the replica's input queue, per-peer send queues and client replies, so that
/// a slow peer or client costs dropped messages (which Raft retransmits) or a
/// "busy" answer, never unbounded memory or a blocked engine.
/// Thread-safe.
final class BoundedQueue<Element: Sendable>: @unchecked Sendable {
    private var items: [Element] = []
    private var head = 0
    private var closed = false
    private let condition = NSCondition()
    let capacity: Int

    init(capacity: Int) {
        precondition(capacity > 0)
        self.capacity = capacity
    }

    /// Appends unless full or closed; never waits.
    @discardableResult
    func offer(_ element: Element) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !closed, items.count - head < capacity else { return false }
        items.append(element)
        condition.signal()
        return true
    }

    /// The oldest element, waiting up to `timeout` seconds; nil on timeout or
    /// once closed.
    func take(timeout: Double) -> Element? {
        let deadline = Date().addingTimeInterval(timeout)
        condition.lock()
        defer { condition.unlock() }
        while items.count == head {
            if closed { return nil }
            if !condition.wait(until: deadline) && items.count == head { return nil }
        }
        if closed { return nil }
        return removeOldest()
    }

    /// The oldest element if one is queued; never waits.
    func poll() -> Element? {
        condition.lock()
        defer { condition.unlock() }
        guard !closed, items.count > head else { return nil }
        return removeOldest()
    }

    /// Takes the element at `head`; compacts the storage once half of it is
    /// consumed. Caller holds `condition` and has checked one is queued.
    private func removeOldest() -> Element {
        let element = items[head]
        head += 1
        if head >= 256 && head * 2 >= items.count {
            items.removeFirst(head)
            head = 0
        }
        return element
    }

    /// Removes everything queued.
    func drain() {
        condition.lock()
        items.removeAll()
        head = 0
        condition.unlock()
    }

    func close() {
        condition.lock()
        closed = true
        condition.broadcast()
        condition.unlock()
    }
}

/// Milliseconds of CLOCK_MONOTONIC: deadlines that wall-clock jumps cannot move.
public func monotonicMillis() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
}
