import Foundation
import Synchronization
import Transport
import Wire

/// Collectives (barrier, allGather) by dissemination (D. Hensgen, R. Finkel
/// and U. Manber, "Two algorithms for barrier synchronization", IJPP 17(1),
/// 1988), carrying contributions so that every rank ends with all of them.
///
/// In round k (0 ≤ k < ⌈log2 size⌉) rank r sends what it knows to rank
/// r + 2^k and waits for what rank r - 2^k knows (mod size). After round k
/// rank r knows the contributions of ranks r, r-1, …, r-(2^(k+1)-1); after
/// the last round, all of them. No rank is a hot spot, and every rank waits
/// for one message per round: with 2 ranks a barrier costs one one-way
/// message, where gathering at rank 0 and releasing everyone cost a round
/// trip.
///
/// Epochs: every rank runs the same collectives in the same order, numbered
/// 1, 2, …; a message names its epoch and round. A rank can run at most one
/// epoch ahead of a slower one (it cannot finish an epoch before every rank
/// has started it), so messages for an epoch this rank has not reached yet
/// are kept, and the number kept is bounded (`maxPendingEpochs`).
final class Dissemination: @unchecked Sendable {
    let rank: Int
    let size: Int
    /// ⌈log2 size⌉.
    let rounds: Int
    static let maxPendingEpochs = 4

    private let cond = NSCondition()
    /// Contributions received, by epoch, then round, then contributing rank.
    private var received: [UInt64: [Int: [Int: [UInt8]]]] = [:]
    private var failure: String?
    /// Messages received so far, readable without the lock (for polling).
    private let arrivals = Atomic<Int>(0)
    private let spin: SpinWait
    /// Sends an encoded round message to rank `to`.
    private let send: @Sendable (_ to: Int, _ message: [UInt8]) throws(PlexusError) -> Void

    init(rank: Int, size: Int, spin: SpinWait = .replyImminent,
         send: @escaping @Sendable (_ to: Int, _ message: [UInt8]) throws(PlexusError) -> Void) {
        precondition(size >= 1 && (0..<size).contains(rank), "rank \(rank) of \(size)")
        self.rank = rank
        self.size = size
        var r = 0
        while 1 << r < size { r += 1 }
        rounds = r
        self.spin = spin
        self.send = send
    }

    /// Contributes `mine` to `epoch` and returns every rank's contribution,
    /// by rank. Throws what `send` throws, or `failed()` once a rank is gone
    /// (see `fail`).
    func run(epoch: UInt64, _ mine: [UInt8], failed: () -> PlexusError) throws(PlexusError) -> [[UInt8]] {
        var known: [Int: [UInt8]] = [rank: mine]
        for round in 0..<rounds {
            try send((rank + (1 << round)) % size, Self.encode(epoch: epoch, round: round, known))
            guard let got = wait(epoch: epoch, round: round) else { throw failed() }
            known.merge(got) { mine, _ in mine }
        }
        cond.withLock { _ = received.removeValue(forKey: epoch) }
        return (0..<size).map { known[$0]! }
    }

    /// The round's contributions, or nil once a rank is gone.
    private func wait(epoch: UInt64, round: Int) -> [Int: [UInt8]]? {
        func take() -> [Int: [UInt8]]? { received[epoch]?.removeValue(forKey: round) }
        let before = arrivals.load(ordering: .acquiring)
        cond.lock()
        if let got = take() {
            cond.unlock()
            return got
        }
        cond.unlock()
        _ = spin.poll { arrivals.load(ordering: .acquiring) != before }
        cond.lock()
        defer { cond.unlock() }
        while true {
            if let got = take() { return got }
            if failure != nil { return nil }
            cond.wait()
        }
    }

    /// A round message from `from` (a transport thread). Throws on one that
    /// breaks the algorithm: wrong sender for its round, a duplicate, a
    /// contribution from a rank the sender cannot know yet, too many epochs
    /// ahead.
    func receive(from: Int, _ message: [UInt8]) throws(WireError) {
        var rd = ByteReader(message)
        let epoch = try rd.u64("epoch")
        let round = Int(try rd.u8("round"))
        guard round < rounds else { throw .malformed("round \(round) of a \(rounds)-round collective") }
        // 2^round < size for every round, so the partners are other ranks.
        let distance = 1 << round
        let expected = (rank - distance + size) % size
        guard from == expected else {
            throw .malformed("round \(round) message from rank \(from), expected rank \(expected)")
        }
        // After round k-1 the sender knows exactly min(size, 2^k) contributions.
        let count = Int(try rd.u32("count"))
        guard count == min(size, distance) else {
            throw .malformed("\(count) contributions in round \(round) of \(size) ranks, expected \(min(size, distance))")
        }
        var got: [Int: [UInt8]] = [:]
        for _ in 0..<count {
            let r = Int(try rd.u32("rank"))
            // Those of ranks from - j, j < 2^k.
            guard r < size, (from - r + size) % size < distance, got[r] == nil else {
                throw .malformed("rank \(from) cannot know rank \(r)'s contribution in round \(round)")
            }
            got[r] = try rd.blob("contribution", limit: Frame.defaultMaxPayload)
        }
        guard rd.isAtEnd else { throw .malformed("trailing bytes in a collective message") }
        cond.lock()
        defer { cond.unlock() }
        guard received[epoch]?[round] == nil else { throw .malformed("a second round \(round) message for collective #\(epoch)") }
        guard received[epoch] != nil || received.count < Self.maxPendingEpochs else {
            throw .malformed("collective #\(epoch) is more than \(Self.maxPendingEpochs) epochs ahead")
        }
        received[epoch, default: [:]][round] = got
        arrivals.add(1, ordering: .releasing)
        cond.broadcast()
    }

    /// Wakes every waiting collective with an error (a rank is gone).
    func fail(_ reason: String) {
        cond.lock()
        if failure == nil { failure = reason }
        cond.broadcast()
        cond.unlock()
    }

    static func encode(epoch: UInt64, round: Int, _ known: [Int: [UInt8]]) -> [UInt8] {
        var w = ByteWriter()
        w.u64(epoch)
        w.u8(UInt8(round))
        w.u32(UInt32(known.count))
        for r in known.keys.sorted() {
            w.u32(UInt32(r))
            w.blob(known[r]!)
        }
        return w.bytes
    }
}
