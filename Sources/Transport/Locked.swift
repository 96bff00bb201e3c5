import Synchronization

/// A shareable box around a `Mutex`, for state that escaping closures on
/// several threads capture (a `Mutex` itself cannot be captured by copy).
public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    public init(_ value: Value) { mutex = Mutex(value) }
    @discardableResult
    public func withLock<R: Sendable>(_ body: (inout Value) throws -> R) rethrows -> R {
        try mutex.withLock { try body(&$0) }
    }
    public var value: Value { mutex.withLock { $0 } }
}

/// A shareable atomic flag.
public final class AtomicFlag: Sendable {
    private let a: Atomic<Bool>
    public init(_ v: Bool = false) { a = Atomic(v) }
    public var isSet: Bool { a.load(ordering: .acquiring) }
    /// Sets the flag; returns whether it was already set.
    @discardableResult
    public func set() -> Bool { a.exchange(true, ordering: .acquiringAndReleasing) }
}
