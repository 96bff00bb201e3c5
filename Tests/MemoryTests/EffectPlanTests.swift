import Memory
import Testing
import Transport

/// The engine's plan for a step's effects must look, to the application and
/// to every peer, like performing them in the listed order (see
/// `PlannedOperation`), while merging protection runs.
@Suite struct EffectPlanTests {
    static let pages = 6

    @Test func fourGrantsShareOneDowngradeAndTheirCopiesFollowIt() {
        var effects: [MemoryEffect] = []
        for p in 0..<4 {
            effects.append(.setProtection(pages: p..<p + 1, .read))
            effects.append(.sendWithPage(to: 1, page: p, .readGrant(page: p, contents: [])))
        }
        #expect(PlannedOperation.plan(effects) == [.protect(pages: 0..<4, .read, effects: [0, 2, 4, 6]),
                                                   .perform(1), .perform(3), .perform(5), .perform(7)])
    }

    @Test func fourInstalledPagesShareOneUpgradeAndWakeAfterIt() {
        var effects: [MemoryEffect] = []
        for p in 0..<4 {
            effects += [.installPage(page: p, contents: [1]), .setProtection(pages: p..<p + 1, .read), .completeFaults(page: p)]
        }
        #expect(PlannedOperation.plan(effects) == [.perform(0), .perform(3), .perform(6), .perform(9),
                                                   .protect(pages: 0..<4, .read, effects: [1, 4, 7, 10]),
                                                   .complete(2), .complete(5), .complete(8), .complete(11)])
    }

    @Test func aCopyIsMadeBeforeItsPageBecomesWritableOrIsOverwritten() {
        let plan1 = PlannedOperation.plan([.setProtection(pages: 2..<3, .read), .sendWithPage(to: 1, page: 2, .readGrant(page: 2, contents: [])),
                                           .setProtection(pages: 2..<3, .readWrite)])
        #expect(plan1 == [.protect(pages: 2..<3, .read, effects: [0]), .perform(1), .protect(pages: 2..<3, .readWrite, effects: [2])])
        let plan2 = PlannedOperation.plan([.setProtection(pages: 2..<3, .none), .sendWithPage(to: 1, page: 2, .readGrant(page: 2, contents: [])),
                                           .installPage(page: 2, contents: [9])])
        #expect(plan2 == [.protect(pages: 2..<3, .none, effects: [0]), .perform(1), .perform(2)])
    }

    /// Random effect lists over a few pages, each checked against the listed order.
    @Test func randomPlansLookLikeTheListedOrder() {
        var rng = SplitMix64(seed: 2026)
        var merged = 0
        for _ in 0..<20_000 {
            let effects = (0..<Int.random(in: 1...14, using: &rng)).map { _ in Self.randomEffect(using: &rng) }
            let plan = PlannedOperation.plan(effects)
            if let failure = Self.check(plan, of: effects) {
                Issue.record("\(failure)\neffects: \(effects)\nplan: \(plan)")
                return
            }
            merged += plan.filter { if case let .protect(_, _, e) = $0 { e.count > 1 } else { false } }.count
        }
        // The lists must also exercise merging, not only pass.
        #expect(merged > 1000)
    }

    static func randomEffect(using rng: inout SplitMix64) -> MemoryEffect {
        let page = Int.random(in: 0..<pages, using: &rng)
        switch Int.random(in: 0..<10, using: &rng) {
        case 0: return .send(to: 1, .invalidateAck(page: page))
        case 1, 2: return .sendWithPage(to: 1, page: page, .readGrant(page: page, contents: []))
        case 3: return .installPage(page: page, contents: [UInt8.random(in: 0...255, using: &rng)])
        case 4, 5, 6:
            let length = Int.random(in: 1...2, using: &rng)
            let access = [PageAccess.none, .read, .readWrite][Int.random(in: 0..<3, using: &rng)]
            return .setProtection(pages: page..<min(pages, page + length), access)
        case 7: return .completeFaults(page: page)
        case 8: return .syncReady(SyncTicket(UInt64(page)), payload: [])
        case 9: return .storeDiff(page: page, key: DiffKey(page: page, interval: 1, part: 0))
        case 10: return .sendStoredDiffs(to: 1, .diffReply(page: page, diffs: []))
        case 11: return .dropStoredDiffs(throughInterval: 1)
        default: return .record(.readFault(page: page))
        }
    }

    /// Runs the listed order and the plan side by side; returns what differs.
    static func check(_ plan: [PlannedOperation], of effects: [MemoryEffect]) -> String? {
        // In order: each page's access and contents version when each effect runs.
        var access = [PageAccess](repeating: .none, count: pages), version = [Int](repeating: 0, count: pages)
        var accessAt: [Int: PageAccess] = [:], versionAt: [Int: Int] = [:]
        for (i, e) in effects.enumerated() {
            switch e {
            case let .setProtection(r, a): for p in r { access[p] = a }
            case let .installPage(p, _), let .applyDiff(p, _): version[p] += 1
            case let .sendWithPage(_, p, _), let .sendDiff(_, p, _), let .storeDiff(p, _): accessAt[i] = access[p]; versionAt[i] = version[p]
            default: break
            }
        }
        // The plan.
        var applied = Set<Int>(), done = Set<Int>(), messageOrder: [Int] = []
        var planAccess = [PageAccess](repeating: .none, count: pages), planVersion = [Int](repeating: 0, count: pages)
        func protections(before i: Int, covering page: Int? = nil) -> [Int] {
            (0..<i).filter { j in
                guard case let .setProtection(r, _) = effects[j] else { return false }
                return page.map { r.contains($0) } ?? true
            }
        }
        for op in plan {
            switch op {
            case let .protect(r, a, merged):
                for j in merged {
                    guard case let .setProtection(rj, aj) = effects[j], aj == a, r.contains(rj.lowerBound), r.upperBound >= rj.upperBound else {
                        return "protect \(r) \(a) claims effect \(j), which it does not cover"
                    }
                    guard applied.insert(j).inserted else { return "protection \(j) applied twice" }
                }
                for p in r { planAccess[p] = a }
            case let .perform(i), let .complete(i):
                guard done.insert(i).inserted else { return "effect \(i) performed twice" }
                switch effects[i] {
                case .send, .sendStoredDiffs, .completeFaults:
                    if let j = protections(before: i).first(where: { !applied.contains($0) }) { return "effect \(i) before protection \(j)" }
                    if case .completeFaults = effects[i] {} else { messageOrder.append(i) }
                case .dropStoredDiffs:
                    // The replies listed before it read what it drops.
                    if let j = (0..<i).first(where: { j in
                        if case .sendStoredDiffs = effects[j] { return !done.contains(j) } else { return false }
                    }) { return "stored diffs dropped at \(i) before reply \(j) was sent" }
                case let .storeDiff(p, _):
                    if let j = protections(before: i, covering: p).first(where: { !applied.contains($0) }) { return "stored diff \(i) before protection \(j)" }
                    if planVersion[p] != versionAt[i] { return "stored diff \(i) of page \(p) holds version \(planVersion[p]), not \(versionAt[i]!)" }
                case let .sendWithPage(_, p, _):
                    if let j = protections(before: i).first(where: { !applied.contains($0) }) { return "copy \(i) before protection \(j)" }
                    if planVersion[p] != versionAt[i] { return "copy \(i) of page \(p) holds version \(planVersion[p]), not \(versionAt[i]!)" }
                    if planAccess[p] == .readWrite && accessAt[i] != .readWrite { return "copy \(i) of page \(p) made while writable" }
                    messageOrder.append(i)
                case let .sendDiff(_, p, _):
                    if let j = protections(before: i).first(where: { !applied.contains($0) }) { return "diff \(i) before protection \(j)" }
                    if planVersion[p] != versionAt[i] { return "diff \(i) of page \(p) holds version \(planVersion[p]), not \(versionAt[i]!)" }
                    messageOrder.append(i)
                case let .makeTwin(p):
                    if let j = protections(before: i, covering: p).first(where: { !applied.contains($0) }) { return "twin \(i) before protection \(j)" }
                case let .installPage(p, _), let .applyDiff(p, _):
                    if let j = protections(before: i, covering: p).first(where: { !applied.contains($0) }) { return "install \(i) before protection \(j)" }
                    if let j = applied.first(where: { $0 > i && protections(before: effects.count, covering: p).contains($0) }) {
                        return "install \(i) after the later protection \(j)"
                    }
                    planVersion[p] += 1
                case .syncReady:
                    if let j = (0..<i).first(where: { !done.contains($0) && !applied.contains($0) }) { return "hand-off \(i) before effect \(j)" }
                case .record:
                    break
                case .setProtection:
                    return "protection \(i) planned as a plain effect"
                }
            }
        }
        for i in effects.indices where !done.contains(i) && !applied.contains(i) { return "effect \(i) left out" }
        if messageOrder != messageOrder.sorted() { return "messages reordered: \(messageOrder)" }
        if planAccess != access { return "final access \(planAccess), not \(access)" }
        return nil
    }
}
