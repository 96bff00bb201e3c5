import Foundation
import Synchronization
@testable import Plexus
import Testing
import Wire

/// The dissemination collective in one process: ranks are threads, and a
/// send hands the message straight to the receiver (the integration tests
/// run barriers and allGather between real processes).
struct DisseminationTests {
    /// `size` collectives wired together; a send may be delayed by a random
    /// sleep so that ranks run at different speeds and messages for a later
    /// epoch arrive before the receiver has finished the current one.
    final class Ring: @unchecked Sendable {
        var members: [Dissemination] = []
        let sent = Atomic<Int>(0)

        init(size: Int, jitter: Bool) {
            members = (0..<size).map { rank in
                Dissemination(rank: rank, size: size, send: { [unowned self] to, message throws(PlexusError) in
                    self.sent.add(1, ordering: .relaxed)
                    if jitter, Int.random(in: 0..<4) == 0 { usleep(UInt32.random(in: 0...200)) }
                    do { try self.members[to].receive(from: rank, message) } catch {
                        Issue.record("rank \(to) refused rank \(rank)'s message: \(error)")
                    }
                })
            }
        }
    }

    static func contribution(rank: Int, epoch: UInt64) -> [UInt8] { Array("r\(rank)e\(epoch)".utf8) }

    @Test(arguments: [1, 2, 3, 4, 5, 8])
    func everyRankGetsEveryContributionInEveryEpoch(size: Int) throws {
        let ring = Ring(size: size, jitter: true)
        let epochs: UInt64 = 200
        let failures = Mutex<[String]>([])
        // One thread per rank (concurrentPerform may run fewer at once,
        // and a rank waiting for one that has not started waits forever).
        let group = DispatchGroup()
        for rank in 0..<size {
            group.enter()
            Thread {
                defer { group.leave() }
                for epoch in 1...epochs {
                do {
                    let all = try ring.members[rank].run(epoch: epoch, Self.contribution(rank: rank, epoch: epoch),
                                                         failed: { .finalized })
                    let expected = (0..<size).map { Self.contribution(rank: $0, epoch: epoch) }
                    if all != expected { failures.withLock { $0.append("rank \(rank) epoch \(epoch): \(all)") } }
                } catch {
                    failures.withLock { $0.append("rank \(rank) epoch \(epoch): \(error)") }
                }
                }
            }.start()
        }
        #expect(group.wait(timeout: .now() + 60) == .success, "the ranks did not finish: a collective is stuck")
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0.prefix(5) })")
        // ⌈log2 size⌉ messages per rank and epoch, none more.
        let rounds = size <= 1 ? 0 : Int((log2(Double(size))).rounded(.up))
        #expect(ring.sent.load(ordering: .relaxed) == size * rounds * Int(epochs))
        #expect(ring.members.allSatisfy { $0.rounds == rounds })
    }

    @Test func aFailureWakesAWaitingRankWithTheCallersError() throws {
        let lonely = Dissemination(rank: 0, size: 2, send: { _, _ throws(PlexusError) in })
        let done = Mutex<String?>(nil)
        let finished = DispatchSemaphore(value: 0)
        let t = Thread {
            do {
                _ = try lonely.run(epoch: 1, [1], failed: { .peerGone(rank: 1, reason: "killed") })
                done.withLock { $0 = "returned" }
            } catch {
                done.withLock { $0 = "\(error)" }
            }
            finished.signal()
        }
        t.start()
        // The waiter is either asleep or about to check; failing wakes it either way.
        lonely.fail("rank 1 is gone")
        #expect(finished.wait(timeout: .now() + 10) == .success, "the waiting rank was not woken")
        let outcome = try #require(done.withLock { $0 })
        #expect(outcome.contains("killed"), "\(outcome)")
    }

    @Test func messagesThatBreakTheAlgorithmAreRefused() {
        // Rank 1 of 4: round 0 comes from rank 0 with 1 contribution, round 1
        // from rank 3 with 2 (ranks 3 and 2).
        let d = Dissemination(rank: 1, size: 4, send: { _, _ throws(PlexusError) in })
        func refused(from: Int, _ message: [UInt8]) -> Bool {
            do { try d.receive(from: from, message); return false } catch { return true }
        }
        let ok0 = Dissemination.encode(epoch: 1, round: 0, [0: [7]])
        #expect(refused(from: 2, ok0), "round 0 must come from rank 0")
        #expect(!refused(from: 0, ok0))
        #expect(refused(from: 0, ok0), "a second round 0 of the same epoch")
        #expect(refused(from: 3, Dissemination.encode(epoch: 1, round: 1, [3: [1]])), "round 1 carries two contributions")
        #expect(refused(from: 3, Dissemination.encode(epoch: 1, round: 1, [3: [1], 1: [2]])), "rank 3 cannot know rank 1's yet")
        #expect(!refused(from: 3, Dissemination.encode(epoch: 1, round: 1, [3: [1], 2: [2]])))
        #expect(refused(from: 3, Dissemination.encode(epoch: 1, round: 2, [3: [1]])), "a 4-rank collective has 2 rounds")
        var truncated = Dissemination.encode(epoch: 2, round: 0, [0: [1, 2, 3]])
        truncated.removeLast()
        #expect(refused(from: 0, truncated))
        #expect(refused(from: 0, Dissemination.encode(epoch: 2, round: 0, [0: [1]]) + [0]), "trailing bytes")
        for epoch: UInt64 in 3...5 { #expect(!refused(from: 0, Dissemination.encode(epoch: epoch, round: 0, [0: []]))) }
        #expect(refused(from: 0, Dissemination.encode(epoch: 6, round: 0, [0: []])), "more epochs ahead than the bound")
        for n in 0..<64 { _ = refused(from: 0, (0..<n).map { _ in UInt8.random(in: 0...255) }) }
    }
}
