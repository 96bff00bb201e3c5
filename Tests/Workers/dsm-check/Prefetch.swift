#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Memory
import Plexus

/// `prefetch [ROUNDS]` (2+ ranks): prefetch hints in a real job. Each round:
/// - rank 0 writes `pages` pages (placed on rank 0), then a barrier;
/// - the others hint they will read them, wait until their engine holds
///   every page, and read them: rank 0's values, with no fault taken;
/// - rank 1 hints it will write them and waits until it holds them
///   read-write; after a barrier no other rank holds a copy; rank 1
///   writes, and after a barrier every rank reads rank 1's values.
/// Then: one hint over more pages than may be in flight starts exactly the
/// bound; a hint outside shared memory allocated so far (a stack address, or
/// past the last collective allocation) throws without starting anything,
/// and the next allocation works; and a write hint given just before
/// `finalize` ends before the process leaves (its barrier waits for it), so
/// no rank sends to one that is gone. The checks assume `sc`, which honours
/// every hint.
func prefetchHints(_ px: Plexus, _ o: Options) throws -> Bool {
    let rounds = o.iterations ?? 20
    guard px.size >= 2, let m = px.memory else {
        say("FAIL prefetch: needs 2 or more ranks and shared memory")
        return false
    }
    let pageSize = px.pageSize!
    let words = pageSize / MemoryLayout<Int>.stride
    let pages = 16
    let array = try px.allocate(Int.self, count: pages * words, name: "hinted", alignment: pageSize, distribution: .on(rank: 0))
    let first = m.region.page(containing: array.address)!
    let range = first..<(first + pages)
    var failures = Failures()

    /// Waits until this rank holds every page of `range` with `access` at
    /// least (the hint's transactions have ended); false after 10 s.
    func waitHeld(_ range: Range<Int>, _ access: PageAccess) -> Bool {
        let deadline = nowNanos() + 10_000_000_000
        while nowNanos() < deadline {
            if range.allSatisfy({ m.access(ofPage: $0) >= access }) { return true }
            sched_yield()
        }
        return false
    }
    func value(_ round: Int, _ writer: Int, _ k: Int) -> Int { (round + 1) * 10_000_000 + writer * 1_000_000 + k }

    for round in 0..<rounds {
        if px.rank == 0 { for k in 0..<pages { store(array.base + k * words, value(round, 0, k)) } }
        try px.barrier()
        if px.rank != 0 {
            try px.prefetch(array, 0..<array.count, for: .read)
            if !waitHeld(range, .read) { failures.add("round \(round): read hint never completed") }
            let faults = m.handlerCounters.faults
            for k in 0..<pages where load(array.base + k * words) != value(round, 0, k) {
                failures.add("round \(round): page \(k) holds \(load(array.base + k * words)) after a read hint, expected \(value(round, 0, k))")
            }
            let taken = m.handlerCounters.faults - faults
            if taken != 0 { failures.add("round \(round): \(taken) fault(s) reading pages a completed hint fetched") }
        }
        try px.barrier()
        if px.rank == 1 {
            try px.prefetch(array.base, bytes: pages * pageSize, for: .write)
            if !waitHeld(range, .readWrite) { failures.add("round \(round): write hint never completed") }
        }
        try px.barrier()
        if px.rank != 1, let held = range.first(where: { m.access(ofPage: $0) != .none }) {
            failures.add("round \(round): page \(held - first) is still \(m.access(ofPage: held)) here after rank 1's write hint")
        }
        try px.barrier()
        if px.rank == 1 {
            let faults = m.handlerCounters.faults
            for k in 0..<pages { store(array.base + k * words, value(round, 1, k)) }
            let taken = m.handlerCounters.faults - faults
            if taken != 0 { failures.add("round \(round): \(taken) fault(s) writing pages a completed write hint took") }
        }
        try px.barrier()
        for k in 0..<pages where load(array.base + k * words) != value(round, 1, k) {
            failures.add("round \(round): page \(k) holds \(load(array.base + k * words)), expected rank 1's \(value(round, 1, k))")
        }
        try px.barrier()
    }

    // The bound: rank 1 hints at more pages than may be in flight, all of
    // them owned by rank 0 and none held here.
    let many = SCProtocol.maxPrefetchesInFlight + 36
    let big = try px.allocate(Int.self, count: many * words, name: "many", alignment: pageSize, distribution: .on(rank: 0))
    if px.rank == 1 {
        let bigFirst = m.region.page(containing: big.address)!
        let before = m.statistics.0.total.prefetches
        try px.prefetch(big, 0..<big.count)
        let started = m.statistics.0.total.prefetches - before
        if m.protocolName == "sc" && started != SCProtocol.maxPrefetchesInFlight {
            failures.add("a hint over \(many) pages started \(started), not the bound \(SCProtocol.maxPrefetchesInFlight)")
        }
        if !waitHeld(bigFirst..<(bigFirst + started), .read) { failures.add("the bounded hint never completed") }
        var sum = 0
        for k in 0..<many { sum &+= load(big.base + k * words) }
        if sum != 0 { failures.add("fresh pages read \(sum), not zeros") }
    }

    // Outside shared memory allocated so far: an error that says so, and
    // nothing started.
    let before = m.statistics.0.total.prefetches
    func expectRefused(_ what: String, _ hint: () throws -> Void) {
        do {
            try hint()
            failures.add("\(what) did not throw")
        } catch let e as PlexusError {
            if case .notShared = e {} else { failures.add("\(what) threw \(e), not notShared") }
            if !e.description.contains("not inside shared memory allocated so far") { failures.add("\(what): unclear message: \(e)") }
        } catch {
            failures.add("\(what) threw \(error)")
        }
    }
    var local = 0
    expectRefused("a hint on a stack address") { try withUnsafePointer(to: &local) { try px.prefetch(UnsafeRawPointer($0), bytes: 8) } }
    // Past the last allocation: pages a later allocation must find untouched.
    let end = big.base + big.count
    expectRefused("a hint past the last collective allocation") { try px.prefetch(UnsafeRawPointer(big.base), bytes: (big.count + 4 * words) * 8) }
    expectRefused("a hint just past the last collective allocation") { try px.prefetch(UnsafeRawPointer(end), bytes: 1) }
    expectRefused("a hint outside the array") { try px.prefetch(big, 0..<(big.count + 1)) }
    if m.statistics.0.total.prefetches != before { failures.add("a rejected hint started transactions") }
    // The pages after it are still pristine: the next allocation places them.
    let next = try px.allocate(Int.self, count: 4 * words, name: "after", alignment: pageSize)
    if px.rank == 0 { store(next.base, 7) }
    try px.barrier()
    if load(next.base) != 7 { failures.add("the allocation after the refused hints reads \(load(next.base)), not 7") }
    try px.barrier()

    // A write hint right before leaving: rank 1 asks for write access to
    // `big` (rank 0 owns it, rank 1 holds copies from its reads above), then
    // the verdict and finalize; finalize's barrier waits for the hint's
    // transactions, so no rank has left while they still need it.
    if px.rank == 1 { try px.prefetch(big, 0..<big.count, for: .write) }

    return try verdict(px, "prefetch", failures,
                       detail: "\(rounds) rounds x \(pages) pages: hinted reads and writes took no fault and saw the last writes; a hint starts at most \(SCProtocol.maxPrefetchesInFlight) pages; hints outside allocated shared memory throw")
}
