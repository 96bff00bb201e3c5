#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Memory
import Plexus

/// `misuse`: wrong uses of the API get clear errors, and the job carries on
/// afterwards. Checks, on every rank:
/// - releasing a lock this process does not hold, acquiring a lock twice
///   from one thread, and releasing from a thread that does not hold it
///   throw `.lockMisuse` saying so;
/// - a collective allocation with different sizes, names, distributions
///   or element sizes on different ranks throws `.collectiveMismatch` on
///   every rank;
/// - an allocation larger than what is left (collective and per-process)
///   throws `.outOfSharedMemory` with the bytes asked and the bytes left, and
///   exactly "left" bytes can still be allocated afterwards;
/// - after all that, locks, barriers and allocations still work.
func misuse(_ px: Plexus, _ o: Options) throws -> Bool {
    var failures = Failures()

    // Locks.
    let lock = px.lock(3)
    expectError("release of a lock not held", &failures, contains: ["cannot release lock 3", "does not hold it"]) {
        try lock.release()
    } match: { if case .lockMisuse = $0 { true } else { false } }
    try lock.acquire()
    expectError("second acquire by the holding thread", &failures, contains: ["already held by this thread", "not recursive"]) {
        try lock.acquire()
    } match: { if case .lockMisuse = $0 { true } else { false } }
    let fromOtherThread = Guarded<PlexusError?>(nil)
    Joinable {
        do { try lock.release() } catch { fromOtherThread.with { $0 = error as? PlexusError } }
    }.join()
    switch fromOtherThread.with({ $0 }) {
    case .lockMisuse(let why)? where why.contains("another thread"): break
    case let other: failures.add("release from a thread that does not hold the lock: expected lockMisuse naming another thread, got \(String(describing: other))")
    }
    try lock.release()

    // Collective allocations that disagree.
    expectError("allocation with different sizes", &failures, contains: ["'sized'", "(10 bytes)", "(20 bytes)", "every rank must make the same collective calls"]) {
        _ = try px.allocate(UInt8.self, count: px.rank == 0 ? 10 : 20, name: "sized")
    } match: { if case .collectiveMismatch = $0 { true } else { false } }
    expectError("allocation with different names", &failures, contains: ["'alpha'", "'beta'"]) {
        _ = try px.allocate(Int.self, count: 4, name: px.rank == 0 ? "alpha" : "beta")
    } match: { if case .collectiveMismatch = $0 { true } else { false } }
    // Same size and name, but pages placed differently:
    // without the check both ranks would own a page and write it silently.
    expectError("allocation with different distributions", &failures, contains: ["'spread'", "distribution .block", "distribution .cyclic"]) {
        _ = try px.allocate(Int.self, count: 4 * 512, name: "spread", distribution: px.rank == 0 ? .block : .cyclic)
    } match: { if case .collectiveMismatch = $0 { true } else { false } }
    expectError("allocation on different ranks", &failures, contains: ["'homed'", "distribution .on(rank: 0)", "distribution .on(rank: 1)"]) {
        _ = try px.allocate(Int.self, count: 4 * 512, name: "homed", distribution: .on(rank: px.rank == 0 ? 0 : 1))
    } match: { if case .collectiveMismatch = $0 { true } else { false } }
    expectError("allocation with different element sizes", &failures, contains: ["'typed'", "(64 bytes) of 1-byte elements", "(64 bytes) of 8-byte elements"]) {
        if px.rank == 0 { _ = try px.allocate(UInt8.self, count: 64, name: "typed") } else { _ = try px.allocate(UInt64.self, count: 8, name: "typed") }
    } match: { if case .collectiveMismatch = $0 { true } else { false } }
    // The ranks still agree afterwards: the same call gives the same address.
    let agreed = try px.allocate(Int.self, count: 4, name: "agreed")
    let addresses = try px.allGather(encode([Int(bitPattern: agreed.address)])).map(decode)
    if Set(addresses.map { $0[0] }).count != 1 { failures.add("after the mismatches the ranks got different addresses: \(addresses)") }

    // Out of shared memory: collective, then per-process.
    let regionSize = px.memory!.region.size
    // Sizes near Int.max must not overflow the heap's arithmetic.
    expectError("collective allocation of Int.max bytes", &failures, contains: ["asked \(Int.max) bytes"]) {
        _ = try px.allocateBytes(Int.max, alignment: 1, name: "max")
    } match: { if case .memory(.outOfSharedMemory(Int.max, _)) = $0 { true } else { false } }
    expectError("per-process allocation of Int.max bytes", &failures, contains: ["asked \(Int.max) bytes"]) {
        _ = try px.allocateLocal(UInt8.self, count: Int.max, name: "max-local")
    } match: { if case .memory(.outOfSharedMemory(Int.max, _)) = $0 { true } else { false } }
    let tooMuch = 2 * regionSize
    var left = -1
    expectError("collective allocation of \(tooMuch) bytes", &failures, contains: ["asked \(tooMuch) bytes", "left"]) {
        _ = try px.allocateBytes(tooMuch, alignment: 1, name: "huge")
    } match: {
        if case .memory(.outOfSharedMemory(let asked, let l)) = $0, asked == tooMuch { left = l; return true }
        return false
    }
    if left > 0 && left < regionSize {
        // "left" is exact: that many bytes fit, one more does not.
        do { _ = try px.allocateBytes(left, alignment: 1, name: "rest") } catch {
            failures.add("the error said \(left) bytes are left, but allocating \(left) bytes failed: \(error)")
        }
        expectError("one byte in a full collective heap", &failures, contains: ["asked 1 bytes", "0 left"]) {
            _ = try px.allocateBytes(1, alignment: 1, name: "one-more")
        } match: { if case .memory(.outOfSharedMemory(1, 0)) = $0 { true } else { false } }
    } else {
        failures.add("out-of-memory error reported \(left) bytes left in a region of \(regionSize)")
    }
    var localLeft = -1
    expectError("per-process allocation of \(tooMuch) bytes", &failures, contains: ["asked \(tooMuch) bytes", "left"]) {
        _ = try px.allocateLocal(UInt8.self, count: tooMuch, name: "huge-local")
    } match: {
        if case .memory(.outOfSharedMemory(let asked, let l)) = $0, asked == tooMuch { localLeft = l; return true }
        return false
    }
    if localLeft > 0 && localLeft < regionSize {
        do { _ = try px.allocateLocal(UInt8.self, count: localLeft, name: "rest-local") } catch {
            failures.add("the error said \(localLeft) bytes are left in this rank's arena, but allocating them failed: \(error)")
        }
    } else {
        failures.add("per-process out-of-memory error reported \(localLeft) bytes left in a region of \(regionSize)")
    }

    // Everything still works.
    try px.barrier()
    try lock.withLock {
        agreed[px.rank % agreed.count] += 1
    }
    try px.barrier()
    let sum = (0..<agreed.count).reduce(0) { $0 + agreed[$1] }
    if sum != px.size { failures.add("after the errors, \(px.size) increments under a lock gave \(sum)") }
    return try verdict(px, "misuse", failures, detail: "lock misuse, collective mismatches and out-of-memory gave clear errors; the job carried on")
}

/// Runs `body`, which must throw a PlexusError accepted by `match` whose
/// description contains every string of `contains`.
private func expectError(_ what: String, _ failures: inout Failures, contains: [String],
                         _ body: () throws -> Void, match: (PlexusError) -> Bool) {
    do {
        try body()
        failures.add("\(what): no error")
    } catch {
        guard let error = error as? PlexusError else {
            failures.add("\(what): expected a PlexusError, got \(error)")
            return
        }
        if !match(error) { failures.add("\(what): unexpected error \(error)") }
        let text = error.description
        for c in contains where !text.contains(c) { failures.add("\(what): the message does not say '\(c)': \(text)") }
        if error.description.isEmpty { failures.add("\(what): empty message") }
    }
}

/// `crash-owner`: rank 1 writes a page and so becomes its only owner; then it
/// stops itself (SIGSTOP), so that it cannot serve the page. Every other rank
/// then reads the page and blocks in the fault. Rank 0 has a helper thread
/// that waits until rank 1 is stopped and rank 0's own fault is in flight
/// (its read-fault counter for the page moved), then kills rank 1 with
/// SIGKILL. The job must end promptly with a report naming rank 1: the
/// readers never get the page, so only the launcher can end them.
func crashOwner(_ px: Plexus, _ o: Options) throws -> Bool {
    guard px.size >= 2 else {
        say("FAIL crash-owner: needs at least 2 ranks")
        return false
    }
    let pageSize = px.pageSize!
    let wordsPerPage = pageSize / MemoryLayout<Int>.stride
    // Of `size` consecutive pages, take the one rank 1 manages (page % size
    // == 1, the home of a home-based protocol too): then no other rank can
    // hold or serve a current copy once rank 1 is gone.
    let pages = try px.allocate(Int.self, count: px.size * wordsPerPage, name: "victim", alignment: pageSize)
    let first = px.memory!.region.page(containing: pages.address)!
    let page = SharedArray(base: pages.base + ((1 - first % px.size + px.size) % px.size) * wordsPerPage,
                           count: wordsPerPage, name: "victim")
    let osPIDs = try px.allGather(encode([Int(getpid())])).map { decode($0)[0] }
    if px.rank == 1 { store(page.base, 42) }
    try px.barrier()
    if px.rank == 1 {
        say("rank 1 owns the page (wrote 42) and stops itself")
        kill(getpid(), SIGSTOP)
        say("FAIL crash-owner: rank 1 was resumed instead of killed")
        exit(1)
    }
    let pageIndex = px.memory!.region.page(containing: page.address)!
    if px.rank == 0 {
        let victim = pid_t(osPIDs[1])
        let memory = px.memory!
        // Waits until rank 1 is stopped (before the read, which would
        // otherwise be served) ...
        while processState(victim) != "T" { usleep(1000) }
        let before = memory.statistics.0.pages[pageIndex]?.readFaults ?? 0
        _ = Joinable {
            // ... and, from another thread, until the read has faulted, then kills.
            while (memory.statistics.0.pages[pageIndex]?.readFaults ?? 0) == before { usleep(1000) }
            say("rank 0 is blocked on the page owned by rank 1 (pid \(victim)); killing rank 1")
            kill(victim, SIGKILL)
        }
        // Not joined: this thread blocks below for good.
    } else {
        // Other readers wait for rank 1 to be stopped too.
        while processState(pid_t(osPIDs[1])) != "T" { usleep(1000) }
    }
    say("rank \(px.rank) reads the page owned by rank 1")
    let v = load(page.base)
    say("FAIL crash-owner: rank \(px.rank) read \(v) from a page whose owner was killed")
    exit(1)
}

/// The state letter of a process in /proc/PID/stat ("R", "S", "T", ...).
private func processState(_ pid: pid_t) -> String? {
    guard let d = FileManager.default.contents(atPath: "/proc/\(pid)/stat") else { return nil }
    let s = String(decoding: d, as: UTF8.self)
    // "pid (comm) S ...": the state follows the last ')'.
    guard let close = s.lastIndex(of: ")") else { return nil }
    return s[s.index(after: close)...].split(separator: " ").first.map(String.init)
}

/// `segv-outside [at=low|past-end] [others=exit]`: after using shared memory (so the
/// SIGSEGV handler is installed and has served faults), the last rank
/// stores through a pointer outside the shared region: near address 0
/// (`low`) or the first byte after the region (`past-end`). The handler must
/// pass the fault on to the previous handler, so the process dies of SIGSEGV
/// and the job reports that rank killed by SIGSEGV. With `others=exit` the
/// other ranks exit with an error when they see the crashed rank gone,
/// as a program would (see the comment below).
func segvOutside(_ px: Plexus, _ o: Options) throws -> Bool {
    let pageSize = px.pageSize!
    let region = px.memory!.region
    let words = try px.allocate(Int.self, count: px.size, name: "before-crash", alignment: pageSize)
    store(words.base + px.rank, px.rank + 1)
    try px.barrier()
    let sum = (0..<px.size).reduce(0) { $0 + load(words.base + $1) }
    guard sum == px.size * (px.size + 1) / 2 else {
        say("FAIL segv-outside: shared memory did not work before the crash: sum \(sum)")
        exit(1)
    }
    let crasher = px.size - 1
    if px.rank == crasher {
        let target: UInt
        switch o.at ?? "low" {
        case "low": target = 0x10
        case "past-end": target = region.applicationBase + UInt(region.size)
        case let other:
            say("FAIL segv-outside: at=\(other) is not low or past-end")
            exit(2)
        }
        // The test is only meaningful if nothing is mapped there.
        if isMapped(target) {
            say("FAIL segv-outside: 0x\(String(target, radix: 16)) is mapped in this process; choose another at=")
            exit(2)
        }
        say("rank \(crasher) stores to 0x\(String(target, radix: 16)), outside the shared region "
            + "0x\(String(region.applicationBase, radix: 16))-0x\(String(region.applicationBase + UInt(region.size), radix: 16))")
        store(UnsafeMutablePointer<Int>(bitPattern: target)!, 1)
        say("FAIL segv-outside: the store to 0x\(String(target, radix: 16)) did not crash")
        exit(1)
    }
    // The others wait for a barrier the crashed rank never reaches. When
    // they learn it is gone they wait on, for the launcher to stop them:
    // exiting with an error would race the crash's report, and the launcher
    // reports the first failure it hears of.
    do {
        try px.barrier()
        say("FAIL segv-outside: rank \(px.rank) passed a barrier rank \(crasher) should never reach")
        exit(1)
    } catch {
        if o.others == "exit" { throw error }
        say("rank \(px.rank): \(error); waiting for the launcher to stop the job")
        while true { _ = Glibc.pause() }
    }
}

/// Whether the page holding `address` is mapped (msync fails with ENOMEM
/// on unmapped memory).
private func isMapped(_ address: UInt) -> Bool {
    let page = UInt(sysconf(Int32(_SC_PAGESIZE)))
    return msync(UnsafeMutableRawPointer(bitPattern: address / page * page), Int(page), MS_ASYNC) == 0
}

// MARK: Accesses Plexus refuses
//
// Each scenario below makes the last rank do something the fault path must
// refuse with a message on stderr; that rank then dies of SIGSEGV (the
// refusal is passed on as a crash). The other ranks wait at a barrier the
// crasher never reaches and leave the end of the job to the launcher (see
// `waitForTheLauncher`).

/// The scenarios of this section, for main.swift's list.
var refusedAccesses: [(name: String, ranks: String, run: (Plexus, Options) throws -> Bool)] {
    [
        ("exec-shared", "2+", execShared),
        ("store-unallocated", "2+", storeUnallocated),
        ("chain-previous", "2+", chainPrevious),
        ("fork-child", "1+", forkChild),
        ("syscall-io", "2+", syscallIO),
        ("map-count", "1+", mapCount),
    ]
}

/// `exec-shared`: the last rank writes a `ret` instruction into a shared page
/// and calls it. The handler must refuse the instruction fetch naming the
/// address, not grant read access for ever (the fetch would fault again).
func execShared(_ px: Plexus, _ o: Options) throws -> Bool {
    let pageSize = px.pageSize!
    let code = try px.allocate(UInt8.self, count: pageSize, name: "code", alignment: pageSize)
    let crasher = px.size - 1
    if px.rank == crasher {
        code[0] = 0xC3 // x86_64 `ret`
        say("rank \(crasher) calls code at 0x\(String(code.address, radix: 16)) in shared memory")
        let function = unsafeBitCast(code.base, to: (@convention(c) () -> Void).self)
        function()
        say("FAIL exec-shared: the call into shared memory returned")
        exit(1)
    }
    return try waitForTheLauncher(px, crasher: crasher, "exec-shared")
}

/// `store-unallocated [at=load]`: after a collective allocation of one
/// page, the last rank stores to (or loads from) the collective heap 16 pages
/// past it, where nothing is allocated. The handler must refuse the access
/// there, naming the address and the allocation that exists; before, the
/// store was served and only a later allocation failed, with a bare
/// precondition failure.
func storeUnallocated(_ px: Plexus, _ o: Options) throws -> Bool {
    let pageSize = px.pageSize!
    let first = try px.allocate(Int.self, count: pageSize / MemoryLayout<Int>.stride, name: "first", alignment: pageSize)
    first[px.rank] = px.rank
    try px.barrier()
    let crasher = px.size - 1
    if px.rank == crasher {
        let target = UnsafeMutablePointer<Int>(bitPattern: first.address + UInt(16 * pageSize))!
        let loading = o.at == "load"
        say("rank \(crasher) \(loading ? "loads from" : "stores to") 0x\(String(UInt(bitPattern: target), radix: 16)); "
            + "'first' is at 0x\(String(first.address, radix: 16))")
        if loading {
            let v = load(target)
            say("FAIL store-unallocated: the load from unallocated memory was served (\(v))")
        } else {
            store(target, 42)
            say("FAIL store-unallocated: the store to unallocated memory was served")
        }
        // The next allocation is where the damage used to show.
        _ = try px.allocate(Int.self, count: 16 * pageSize, name: "second", alignment: pageSize)
        exit(1)
    }
    return try waitForTheLauncher(px, crasher: crasher, "store-unallocated")
}

/// `fork-child`: the last rank writes 7 to a shared word, then forks; the
/// child stores 99 to that word. The child must not share the parent's
/// region: the store is refused ("a forked child cannot use Plexus shared
/// memory") and the child dies of SIGSEGV, the parent's word still holds 7,
/// and the job goes on. Before, the child's store landed in the parent's
/// page past coherence, or its fault rang the parent's doorbell and hung.
func forkChild(_ px: Plexus, _ o: Options) throws -> Bool {
    var failures = Failures()
    let word = try px.allocate(Int.self, count: 1, name: "parent-word")
    let forker = px.size - 1
    if px.rank == forker {
        store(word.base, 7)
        let child = fork()
        if child == 0 {
            // Only async-signal-safe calls in the child of a threaded process.
            store(word.base, 99)
            _exit(0)
        }
        guard child > 0 else { throw PlexusError.join("fork failed: errno \(errno)") }
        var status: Int32 = 0
        while waitpid(child, &status, 0) < 0 && errno == EINTR {}
        let signal = status & 0x7f
        if signal == SIGSEGV {
            say("rank \(forker): the forked child died of SIGSEGV")
        } else {
            failures.add("the forked child ended with wait status \(status), not by SIGSEGV")
        }
        let seen = load(word.base)
        if seen != 7 { failures.add("the parent's word holds \(seen) after the child's store, not 7") }
    }
    try px.barrier()
    return try verdict(px, "fork-child", failures, detail: "a forked child could not touch the region, and the job went on")
}

/// `syscall-io`: system calls on shared memory. The last rank reads from a
/// pipe into two pages of a shared array that live on rank 0 (so it has no
/// access): read(2) fails with EFAULT, since the kernel does not fault pages
/// in for a system call. After `px.touch(..., for: .write)` the same read
/// succeeds, then write(2) from the array (touched for reading) sends the
/// bytes on; rank 0 sees them after a barrier. Touching memory outside
/// every allocation throws `.notShared`.
func syscallIO(_ px: Plexus, _ o: Options) throws -> Bool {
    var failures = Failures()
    let pageSize = px.pageSize!
    let bytes = pageSize + 100 // across a page boundary
    let buffer = try px.allocate(UInt8.self, count: 2 * pageSize, name: "io-buffer", alignment: pageSize, distribution: .on(rank: 0))
    let pattern = (0..<bytes).map { UInt8(truncatingIfNeeded: $0 * 7 + 1) }
    let reader = px.size - 1
    /// read(2) of `pattern` through a fresh pipe into `buffer`: the count, or -errno.
    func readThroughPipe() -> Int {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { return -Int(errno) }
        defer { close(fds[0]); close(fds[1]) }
        let wrote = pattern.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
        guard wrote == bytes else { return -1_000_000 }
        var got = 0
        while got < bytes {
            let n = read(fds[0], UnsafeMutableRawPointer(buffer.base + got), bytes - got)
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return -Int(errno) }
            if n == 0 { break }
            got += n
        }
        return got
    }
    if px.rank == reader {
        let untouched = readThroughPipe()
        say("rank \(reader): read(2) into shared memory without access gave \(untouched < 0 ? "errno \(-untouched)" : "\(untouched) bytes")")
        if untouched != -Int(EFAULT) { failures.add("read(2) into pages without access gave \(untouched), not -EFAULT: the premise of touch() changed") }
        try px.touch(buffer, 0..<bytes, for: .write)
        let touched = readThroughPipe()
        if touched != bytes { failures.add("read(2) after touch(.write) gave \(touched), not \(bytes)") }
        if Array(buffer.buffer[0..<bytes]) != pattern { failures.add("the bytes read(2) put in shared memory differ from the pipe's") }
        // write(2) from shared memory, touched for reading.
        var fds: [Int32] = [0, 0]
        if pipe(&fds) == 0 {
            try px.touch(UnsafeRawPointer(buffer.base), bytes: bytes, for: .read)
            let sent = write(fds[1], UnsafeRawPointer(buffer.base), bytes)
            if sent != bytes { failures.add("write(2) from shared memory after touch(.read) gave \(sent) (errno \(errno)), not \(bytes)") }
            close(fds[0]); close(fds[1])
        }
        do {
            try px.touch(UnsafeRawPointer(bitPattern: buffer.address + UInt(64 * pageSize))!, bytes: 8, for: .write)
            failures.add("touch outside every allocation did not throw")
        } catch {
            if case .notShared = error {} else { failures.add("touch outside every allocation threw \(error), not notShared") }
        }
        say("rank \(reader): read(2) of \(bytes) bytes into shared memory after touch: \(touched)")
    }
    try px.barrier()
    if px.rank != reader && Array(buffer.buffer[0..<bytes]) != pattern {
        failures.add("rank \(px.rank) does not see the bytes rank \(reader) read into shared memory")
    }
    return try verdict(px, "syscall-io", failures, detail: "read(2) into shared memory fails with EFAULT untouched and works after touch")
}

/// `map-count`: rank 0 allocates 2 x (vm.max_map_count + 1000) pages and
/// writes every other one, so that each written page becomes a mapping of
/// its own; the mappings run out before the end. The allocation must warn
/// (naming vm.max_map_count and the sysctl to raise it), and the failing
/// protection change must stop the process saying the same, not die
/// with a bare "Cannot allocate memory". Run it with --look-ahead 0 (pages
/// served ahead would merge mappings) and a region of twice the array.
func mapCount(_ px: Plexus, _ o: Options) throws -> Bool {
    guard let limit = MappingLimit.limit, limit < 1 << 20 else {
        say("FAIL map-count: vm.max_map_count is unreadable or too large to reach here")
        exit(2)
    }
    let pageSize = px.pageSize!
    let pages = 2 * (limit + 1000)
    let words = pageSize / MemoryLayout<Int>.stride
    let array = try px.allocate(Int.self, count: pages * words, name: "strided", alignment: pageSize, distribution: .on(rank: 0))
    if px.rank == 0 {
        say("rank 0 writes every other page of \(pages) (vm.max_map_count \(limit))")
        for page in stride(from: 0, to: pages, by: 2) { store(array.base + page * words, 1) }
        say("FAIL map-count: \(pages / 2) pages with their own access did not exhaust vm.max_map_count \(limit)")
        exit(1)
    }
    return try waitForTheLauncher(px, crasher: 0, "map-count")
}

/// What a scenario of this section sets up before `Plexus.join()`.
func beforeJoin(_ o: Options) {
    if o.scenario == "chain-previous" { installPreviousHandler() }
}

/// `chain-previous [at=null|overflow]`: before joining, every rank installs
/// its own SIGSEGV handler (SA_SIGINFO | SA_RESETHAND | SA_ONSTACK, with
/// SIGUSR1 in its sa_mask), which Plexus's handler saves and chains to.
/// Then the last rank stores near address 0 (`null`) or overflows the stack
/// of the thread that joined (`overflow`). The previous handler must run
/// exactly once, as the kernel would run it: with SIGUSR1 blocked, on the
/// alternate stack Plexus gave the joining thread (an overflow can reach
/// no handler without one), and reset to SIG_DFL by SA_RESETHAND, so the
/// access re-executes and the rank dies of SIGSEGV. The handler reports each
/// call on stdout; from its third call on it gives up (resets to SIG_DFL),
/// so a broken chain ends too.
func chainPrevious(_ px: Plexus, _ o: Options) throws -> Bool {
    let crasher = px.size - 1
    if px.rank == crasher {
        switch o.at ?? "null" {
        case "null":
            say("rank \(crasher) stores to 0x10")
            store(UnsafeMutablePointer<Int>(bitPattern: 0x10)!, 1)
        case "overflow":
            say("rank \(crasher) overflows its stack")
            say("FAIL chain-previous: recursion ended at \(recurse(0))")
        case let other:
            say("FAIL chain-previous: at=\(other) is not null or overflow")
            exit(2)
        }
        say("FAIL chain-previous: the bad access returned")
        exit(1)
    }
    return try waitForTheLauncher(px, crasher: crasher, "chain-previous")
}

@inline(never) @_optimize(none)
private func recurse(_ depth: Int) -> Int {
    var frame = (depth, depth, depth, depth, depth, depth, depth, depth)
    return withUnsafeMutablePointer(to: &frame) { recurse($0.pointee.0 + 1) + $0.pointee.7 }
}

nonisolated(unsafe) private var previousHandlerCalls = 0

/// Writes a static string with write(2): all a signal handler may do.
private func writeStdout(_ s: StaticString) {
    _ = write(1, s.utf8Start, s.utf8CodeUnitCount)
}

private func installPreviousHandler() {
    var action = sigaction()
    action.__sigaction_handler.sa_sigaction = { _, _, _ in
        previousHandlerCalls += 1
        var mask = sigset_t()
        pthread_sigmask(SIG_BLOCK, nil, &mask)
        var stack = stack_t()
        sigaltstack(nil, &stack)
        writeStdout(previousHandlerCalls == 1 ? "previous SIGSEGV handler: call 1" : "previous SIGSEGV handler: call 2 or later")
        writeStdout(sigismember(&mask, SIGUSR1) == 1 ? ", SIGUSR1 blocked" : ", SIGUSR1 NOT blocked")
        writeStdout(stack.ss_flags & Int32(SS_ONSTACK) != 0 ? ", on the alternate stack\n" : ", on the thread's stack\n")
        if previousHandlerCalls >= 3 { signal(SIGSEGV, SIG_DFL) }
    }
    sigemptyset(&action.sa_mask)
    sigaddset(&action.sa_mask, SIGUSR1)
    action.sa_flags = SA_SIGINFO | Int32(bitPattern: UInt32(SA_RESETHAND)) | SA_ONSTACK
    sigaction(SIGSEGV, &action, nil)
}

/// The ranks other than `crasher` wait at a barrier it never reaches; when
/// they learn it is gone they wait on, for the launcher to stop the job
/// (exiting with an error would race the crash's report).
func waitForTheLauncher(_ px: Plexus, crasher: Int, _ scenario: String) throws -> Bool {
    do {
        try px.barrier()
        say("FAIL \(scenario): rank \(px.rank) passed a barrier rank \(crasher) should never reach")
        exit(1)
    } catch {
        say("rank \(px.rank): \(error); waiting for the launcher to stop the job")
        while true { _ = Glibc.pause() }
    }
}
