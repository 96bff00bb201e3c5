#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Memory
import Plexus

// Jobs that go wrong: a rank that leaves without finalize, a rank
// that fails after the others finalized, ranks stuck at a barrier, a lock or
// a page. Driven from Tests/MemoryIntegrationTests/FailureTests.swift.

func failureScenarios() -> [(name: String, ranks: String, run: (Plexus, Options) throws -> Bool)] { [
    ("leave", "2", leave),
    ("finalize-then-fail", "2", finalizeThenFail),
    ("stall-barrier", "3", stallBarrier),
    ("stall-lock", "2", stallLock),
    ("stall-page", "2", stallPage),
    ("flood", "2", flood),
] }

/// The value of `key=VALUE` on the command line, if any.
private func argument(_ key: String) -> String? {
    CommandLine.arguments.dropFirst().first { $0.hasPrefix(key + "=") }.map { String($0.dropFirst(key.count + 1)) }
}

/// One page of shared memory that rank 1 manages and owns (it wrote 42
/// there), so that no other rank can serve it without rank 1.
private func pageOfRank1(_ px: Plexus) throws -> (page: SharedArray<Int>, index: Int) {
    let pageSize = px.pageSize!
    let wordsPerPage = pageSize / MemoryLayout<Int>.stride
    let pages = try px.allocate(Int.self, count: px.size * wordsPerPage, name: "rank1-page", alignment: pageSize)
    let first = px.memory!.region.page(containing: pages.address)!
    let page = SharedArray(base: pages.base + ((1 - first % px.size + px.size) % px.size) * wordsPerPage,
                           count: wordsPerPage, name: "rank1-page")
    if px.rank == 1 { store(page.base, 42) }
    try px.barrier()
    return (page, px.memory!.region.page(containing: page.address)!)
}

/// Shuts down every socket of this process (its peers and the launcher
/// see the connections end, as when a network link breaks) without exiting.
private func cutAllConnections() {
    guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") else { return }
    for name in fds {
        guard let fd = Int32(name) else { continue }
        var st = stat()
        if fstat(fd, &st) == 0 && (st.st_mode & S_IFMT) == S_IFSOCK { _ = shutdown(fd, Int32(SHUT_RDWR)) }
    }
}

/// Runs `body`, expecting it to throw `.peerGone(rank: 1, ...)`; says what happened.
private func expectRank1Gone(_ px: Plexus, _ what: String, _ failures: inout Failures, _ body: () throws -> Void) {
    do {
        try body()
        failures.add("\(what) succeeded although rank 1 is gone")
    } catch let PlexusError.peerGone(rank, why) where rank == 1 {
        say("rank \(px.rank): \(what) failed: rank \(rank) is gone: \(why)")
    } catch {
        failures.add("\(what): expected 'rank 1 is gone', got: \(error)")
    }
}

/// `leave [at=exit|cut]`: rank 1 owns a page, then leaves without calling
/// finalize: `exit` exits with status 0, `cut` shuts down all its sockets and
/// waits (as if its link broke). Every other rank then meets each kind of
/// wait, which must fail naming rank 1 (not hang, not "connection refused"):
/// a barrier, a lock acquire (twice: the first failure must not leave the
/// lock busy), a lock this rank manages, a receive, a send; it prints
/// "rank R: ... failed: rank 1 is gone" for each and "PASS leave" or "FAIL
/// leave: ...". Then it reads rank 1's page, which can never be served: the
/// runtime must end the process naming rank 1 and the page.
func leave(_ px: Plexus, _ o: Options) throws -> Bool {
    guard px.size == 2 else {
        say("FAIL leave: needs exactly 2 ranks")
        return false
    }
    let (page, index) = try pageOfRank1(px)
    if px.rank == 1 {
        switch o.at ?? "exit" {
        case "cut":
            say("rank 1 cuts all its connections and waits")
            cutAllConnections()
            while true { _ = Glibc.pause() }
        default:
            say("rank 1 exits with status 0 without calling finalize")
            exit(0)
        }
    }
    var failures = Failures()
    expectRank1Gone(px, "barrier", &failures) { try px.barrier() }
    let managedByRank1 = px.lock(1)
    expectRank1Gone(px, "acquire of lock 1", &failures) { try managedByRank1.acquire() }
    // The lock must not stay busy after the failed acquire.
    expectRank1Gone(px, "second acquire of lock 1", &failures) { try managedByRank1.acquire() }
    expectRank1Gone(px, "acquire of lock 0", &failures) { try px.lock(0).acquire() }
    expectRank1Gone(px, "receive", &failures) { _ = try px.receive() }
    expectRank1Gone(px, "send to rank 1", &failures) { try px.send([1, 2, 3], to: 1) }
    if failures.isEmpty {
        say("PASS leave: every wait failed naming rank 1")
    } else {
        for f in failures.first { say("rank \(px.rank): \(f)") }
        say("FAIL leave: \(failures.count) wait(s) did not fail naming rank 1")
    }
    say("rank \(px.rank) reads page \(index), owned by rank 1")
    let v = load(page.base)
    say("FAIL leave: rank \(px.rank) read \(v) from a page whose owner is gone")
    exit(1)
}

/// `finalize-then-fail fifo=PATH`: every rank finalizes; then rank 1 exits
/// with status 3, while rank 0, done with the job, still has output to
/// write: it waits until the test closes its end of the FIFO at PATH (the
/// test does so once the launcher has reacted to rank 1's failure), then
/// prints five lines and exits 0. The launcher must leave rank 0 to exit and
/// report both ranks' fates.
func finalizeThenFail(_ px: Plexus, _ o: Options) throws -> Bool {
    guard let fifo = argument("fifo") else {
        say("FAIL finalize-then-fail: fifo=PATH is missing")
        return false
    }
    try px.finalize()
    if px.rank == 1 {
        say("rank 1 finalized and exits with status 3")
        exit(3)
    }
    say("rank 0 finalized and waits for the test")
    let fd = open(fifo, O_RDONLY)
    guard fd >= 0 else {
        say("FAIL finalize-then-fail: cannot open \(fifo): \(String(cString: strerror(errno)))")
        exit(1)
    }
    var byte: UInt8 = 0
    while read(fd, &byte, 1) > 0 {}
    close(fd)
    for i in 1...5 { say("rank 0 after finalize: line \(i) of 5") }
    exit(0)
}

/// `stall-barrier`: the last rank never reaches the barrier the others wait
/// at (it waits outside Plexus); the job must be reported as stuck.
func stallBarrier(_ px: Plexus, _ o: Options) throws -> Bool {
    if px.rank == px.size - 1 {
        say("rank \(px.rank) skips the barrier and waits")
        while true { _ = Glibc.pause() }
    }
    say("rank \(px.rank) waits at the barrier")
    try px.barrier()
    say("FAIL stall-barrier: rank \(px.rank) passed a barrier rank \(px.size - 1) never reached")
    return false
}

/// `stall-lock`: rank 1 takes lock 5 and calls finalize holding it; rank 0
/// then waits for lock 5 for good.
func stallLock(_ px: Plexus, _ o: Options) throws -> Bool {
    let lock = px.lock(5)
    if px.rank == 1 { try lock.acquire() }
    try px.barrier()
    if px.rank == 1 {
        say("rank 1 holds lock 5 and finalizes")
        try px.finalize()
        say("FAIL stall-lock: rank 1 finalized alone")
        exit(1)
    }
    say("rank 0 acquires lock 5")
    try lock.acquire()
    say("FAIL stall-lock: rank 0 got lock 5 while rank 1 holds it")
    exit(1)
}

/// `stall-page`: rank 1 owns a page and stops itself (SIGSTOP); rank 0 reads
/// the page and waits for it for good.
func stallPage(_ px: Plexus, _ o: Options) throws -> Bool {
    let (page, index) = try pageOfRank1(px)
    let osPIDs = try px.allGather(encode([Int(getpid())])).map { decode($0)[0] }
    if px.rank == 1 {
        say("rank 1 owns page \(index) and stops itself")
        kill(getpid(), SIGSTOP)
        while true { _ = Glibc.pause() }
    }
    // Read only once rank 1 is stopped (its threads would serve the page).
    while stoppedState(pid_t(osPIDs[1])) != "T" { usleep(1000) }
    say("rank 0 reads page \(index)")
    let v = load(page.base)
    say("FAIL stall-page: rank 0 read \(v) from a page whose owner is stopped")
    exit(1)
}

/// `flood [COUNT]`: rank 1 sends rank 0 COUNT user messages that rank 0
/// does not receive, then rank 0 reads a page rank 1 owns, and both ranks
/// use a lock and a barrier: protocol traffic must not wait behind the
/// unreceived messages. A send that finds rank 0's queue full must fail
/// saying so, never block. Prints "PASS flood: ..." on rank 0.
func flood(_ px: Plexus, _ o: Options) throws -> Bool {
    let count = o.iterations ?? 70_000
    let (page, _) = try pageOfRank1(px)
    var sent = 0
    var refusal = ""
    if px.rank == 1 {
        do {
            for i in 0..<count {
                try px.send(encode([i]), to: 0)
                sent += 1
            }
        } catch {
            refusal = "\(error)"
        }
        say("rank 1 sent \(sent) of \(count) messages\(refusal.isEmpty ? "" : "; then: \(refusal)")")
    }
    try px.barrier()
    var failures = Failures()
    if px.rank == 0 {
        let v = load(page.base)
        if v != 42 { failures.add("read \(v) from rank 1's page, expected 42") }
        store(page.base, 43)
    }
    try px.lock(1).withLock { if px.rank == 1 { store(page.base + 1, 7) } }
    try px.barrier()
    if load(page.base) != 43 || load(page.base + 1) != 7 { failures.add("page holds \(load(page.base)), \(load(page.base + 1)); expected 43, 7") }
    let info = try px.allGather(encode([sent]) + Array(refusal.utf8))
    let sentByRank1 = decode(Array(info[1].prefix(8)))[0]
    let refusalText = String(decoding: info[1].dropFirst(8), as: UTF8.self)
    if px.rank == 0 {
        // Everything rank 1 managed to send is still there, in order.
        var next = 0
        while next < sentByRank1 {
            let (from, bytes) = try px.receive()
            if from != 1 || decode(bytes) != [next] { failures.add("message \(next): got \(decode(bytes)) from rank \(from)"); break }
            next += 1
        }
        if sentByRank1 < count && !refusalText.contains("unreceived messages") {
            failures.add("rank 1 sent only \(sentByRank1) of \(count) messages and was not told why clearly: '\(refusalText)'")
        }
    }
    return try verdict(px, "flood", failures,
                       detail: "rank 1 sent \(sentByRank1) of \(count) messages; pages, locks and barriers worked meanwhile\(refusalText.isEmpty ? "" : "; the rest were refused: \(refusalText)")")
}

/// The state letter of a process in /proc/PID/stat ("R", "S", "T", ...).
private func stoppedState(_ pid: pid_t) -> String? {
    guard let d = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return nil }
    let s = String(decoding: d, as: UTF8.self)
    guard let close = s.lastIndex(of: ")") else { return nil }
    return s[s.index(after: close)...].split(separator: " ").first.map(String.init)
}
