import Foundation
import Synchronization
import Transport

/// Rank 0's side of a collective (barrier, allGather): it counts arrivals on
/// whichever thread delivers the last one and sends the release from that
/// thread at once. When rank 0's own application thread arrives first, the
/// last arrival comes in on a transport reader thread, which releases every
/// rank without first waking rank 0's application thread: one thread hand-off
/// fewer on the barrier's critical path.
///
/// Rank 0's application thread polls briefly for the last arrival before it
/// sleeps (`spin`), which saves its wake-up when the others are close behind.
///
/// Bounded: arrivals are kept per epoch, and ranks cannot run more than one
/// collective ahead of rank 0 (they wait for its release).
final class Gatherer: @unchecked Sendable {
    private let size: Int
    private let cond = NSCondition()
    private var pending: [UInt64: [Int: [UInt8]]] = [:]
    private var complete: [UInt64: [[UInt8]]] = [:]
    private var failure: String?
    /// The latest epoch completed, readable without the lock (for polling).
    private let completedEpoch = Atomic<UInt64>(0)
    private let spin: SpinWait
    /// Sends the release for an epoch to every other rank.
    private let release: @Sendable (UInt64, [[UInt8]]) -> Void

    init(size: Int, spin: SpinWait = .replyImminent, release: @escaping @Sendable (UInt64, [[UInt8]]) -> Void) {
        self.size = size
        self.spin = spin
        self.release = release
    }

    /// Records `rank`'s contribution to `epoch`; the arrival that completes
    /// the epoch sends the release, under the lock so releases leave in
    /// epoch order. Returns false for a duplicate arrival (a protocol error).
    @discardableResult
    func arrive(rank: Int, epoch: UInt64, _ contribution: [UInt8]) -> Bool {
        cond.lock()
        defer { cond.unlock() }
        guard pending[epoch]?[rank] == nil, complete[epoch] == nil else { return false }
        pending[epoch, default: [:]][rank] = contribution
        if pending[epoch]!.count == size {
            let got = pending.removeValue(forKey: epoch)!
            let all = (0..<size).map { got[$0]! }
            complete[epoch] = all
            if epoch > completedEpoch.load(ordering: .relaxed) { completedEpoch.store(epoch, ordering: .releasing) }
            release(epoch, all)
            cond.broadcast()
        }
        return true
    }

    /// Rank 0's application thread: contributes and waits for the epoch.
    func gather(epoch: UInt64, _ mine: [UInt8]) -> Result<[[UInt8]], GatherFailure> {
        arrive(rank: 0, epoch: epoch, mine)
        _ = spin.poll { completedEpoch.load(ordering: .acquiring) >= epoch }
        cond.lock()
        defer { cond.unlock() }
        while complete[epoch] == nil {
            if let f = failure { return .failure(GatherFailure(reason: f)) }
            cond.wait()
        }
        return .success(complete.removeValue(forKey: epoch)!)
    }

    /// Wakes a waiting gather with an error (a rank is gone).
    func fail(_ reason: String) {
        cond.lock()
        if failure == nil { failure = reason }
        cond.broadcast()
        cond.unlock()
    }
}

struct GatherFailure: Error {
    var reason: String
}
