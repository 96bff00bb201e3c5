import Foundation
import Plexus
import Workloads

// Visibility through synchronisation: what every protocol guarantees, sc and
// release consistency alike. A write made before a barrier (or before a lock
// release) is seen by every rank after the barrier (or by the next acquirer).

/// The value rank `rank` writes to its word `word` in round `round`: never 0
/// (the initial contents) and different in every round.
func pattern(round: Int, rank: Int, word: Int) -> Int {
    (round + 1) * 1_000_000 + rank * 1000 + word
}

/// `visibility-barrier [ROUNDS]`: in every round each rank writes its words,
/// some interleaved with the other ranks' words on one shared page, some on
/// a page of its own, and one rank overwrites a hot word several times; then
/// a barrier; then every rank reads every word and checks it holds the last
/// value written before the barrier; then a barrier before the next round
/// overwrites them.
func visibilityBarrier(_ px: Plexus, _ o: Options) throws -> Bool {
    let rounds = o.iterations ?? 300
    let pageSize = px.pageSize!
    let wordsPerPage = pageSize / MemoryLayout<Int>.stride
    let perRank = 4
    // Word j of rank i at mixed[j * size + i]: all ranks write one page.
    let mixed = try px.allocate(Int.self, count: perRank * px.size, name: "mixed", alignment: pageSize)
    // Word j of rank i at own[i * wordsPerPage + j * 16]: a page per rank.
    let own = try px.allocate(Int.self, count: px.size * wordsPerPage, name: "own", alignment: pageSize)
    let hot = try px.allocate(Int.self, count: 1, name: "hot", alignment: pageSize)
    var failures = Failures()
    for round in 0..<rounds {
        for j in 0..<perRank {
            // A first value, overwritten: only the last write must show.
            store(mixed.base + j * px.size + px.rank, -1)
            store(mixed.base + j * px.size + px.rank, pattern(round: round, rank: px.rank, word: j))
            store(own.base + px.rank * wordsPerPage + j * 16, pattern(round: round, rank: px.rank, word: j + perRank))
        }
        let hotWriter = round % px.size
        if px.rank == hotWriter {
            for k in (0...2).reversed() { store(hot.base, pattern(round: round, rank: px.rank, word: 100 + k)) }
        }
        try px.barrier()
        for r in 0..<px.size {
            for j in 0..<perRank {
                let m = load(mixed.base + j * px.size + r), want = pattern(round: round, rank: r, word: j)
                if m != want { failures.add("round \(round): mixed[\(j * px.size + r)] (rank \(r)'s word \(j)) is \(m), expected \(want)") }
                let w = load(own.base + r * wordsPerPage + j * 16), wantOwn = pattern(round: round, rank: r, word: j + perRank)
                if w != wantOwn { failures.add("round \(round): own[\(r * wordsPerPage + j * 16)] (rank \(r)'s word \(j)) is \(w), expected \(wantOwn)") }
            }
        }
        let h = load(hot.base), wantHot = pattern(round: round, rank: hotWriter, word: 100)
        if h != wantHot { failures.add("round \(round): hot is \(h), expected \(wantHot) (rank \(hotWriter)'s last write)") }
        try px.barrier()
    }
    return try verdict(px, "visibility-barrier", failures,
                       detail: "\(rounds) rounds x \(px.size) ranks, every rank saw every last write made before the barrier")
}

/// `visibility-lock [HANDOFFS]`: each rank takes one lock HANDOFFS times.
/// Under the lock it reads a record spread over two pages, checks it is
/// whole and not older than what this rank saw last, and writes the next
/// record. Page 0 holds the sequence number, the writer's rank and four
/// data words, all rewritten at every hand-off. Page 1 holds four more data
/// words, rewritten only when the new sequence number is a multiple of 3:
/// in between, acquirers only read it, so read copies pile up and the next
/// writer must invalidate them all. Afterwards rank 0 checks, from
/// everyone's observations, that every sequence number was seen by exactly
/// one acquirer (no update lost) and that each acquirer saw the record
/// written by the previous one (the last write before the hand-off).
func visibilityLock(_ px: Plexus, _ o: Options) throws -> Bool {
    let handoffs = o.iterations ?? 100
    let pageSize = px.pageSize!
    let wordsPerPage = pageSize / MemoryLayout<Int>.stride
    // Page 0: seq, writer, data 0..<4; page 1: data 4..<8.
    let record = try px.allocate(Int.self, count: 2 * wordsPerPage, name: "record", alignment: pageSize)
    let seq = record.base, writer = record.base + 1
    func dataWord(_ j: Int) -> UnsafeMutablePointer<Int> { j < 4 ? record.base + 2 + j : record.base + wordsPerPage + (j - 4) * 8 }
    /// What word j holds once seq is s: page 0 words are from s itself,
    /// page 1 words from the last multiple of 3 (0 before anyone wrote).
    func data(_ s: Int, _ j: Int) -> Int {
        let from = j < 4 ? s : s - s % 3
        return from == 0 ? 0 : from * 100 + j
    }
    try px.barrier()
    let lock = px.lock(7)
    var failures = Failures()
    var observed: [Int] = []  // (seq, writer) pairs seen at acquisition
    var lastSeen = -1
    for _ in 0..<handoffs {
        try lock.acquire()
        let s = load(seq), w = load(writer)
        for j in 0..<8 {
            let v = load(dataWord(j))
            if v != data(s, j) { failures.add("acquired seq \(s) from rank \(w) but data word \(j) is \(v), expected \(data(s, j))") }
        }
        if s <= lastSeen { failures.add("acquired seq \(s) after having seen seq \(lastSeen): an older record") }
        lastSeen = s
        observed += [s, w]
        // Data first, sequence number last: any order is fine under the lock.
        for j in 0..<8 where j < 4 || (s + 1) % 3 == 0 { store(dataWord(j), data(s + 1, j)) }
        store(writer, px.rank)
        store(seq, s + 1)
        try lock.release()
    }
    try px.barrier()
    let final = load(seq)
    if final != px.size * handoffs { failures.add("after the barrier seq is \(final), expected \(px.size * handoffs)") }
    let all = try px.allGather(encode(observed)).map(decode)
    if px.rank == 0 {
        // seq -> (observer, writer it saw)
        var seenBy = [Int: (Int, Int)]()
        for (r, list) in all.enumerated() {
            for k in stride(from: 0, to: list.count, by: 2) {
                if let prev = seenBy[list[k]] {
                    failures.add("seq \(list[k]) was seen by rank \(prev.0) and rank \(r): an update was lost")
                }
                seenBy[list[k]] = (r, list[k + 1])
            }
        }
        for s in 0..<(px.size * handoffs) {
            guard let (observer, sawWriter) = seenBy[s] else {
                failures.add("nobody acquired the lock at seq \(s)")
                continue
            }
            if s > 0, let (previous, _) = seenBy[s - 1], sawWriter != previous {
                failures.add("rank \(observer) saw seq \(s) written by rank \(sawWriter), but rank \(previous) wrote it")
            }
        }
    }
    return try verdict(px, "visibility-lock", failures,
                       detail: "\(px.size * handoffs) hand-offs, each acquirer saw the previous holder's last writes")
}

/// `lock-counter [K] [threads=T]`: T threads in each of the N ranks each add
/// 1 to a shared counter K times under one lock; the counter must end at
/// exactly N*T*K. Each thread also counts its own increments, without the
/// lock, in a word on the counter's page (false sharing with the counter),
/// which must end at exactly K.
func lockCounter(_ px: Plexus, _ o: Options) throws -> Bool {
    let k = o.iterations ?? 200
    let threads = o.threads ?? 2
    let pageSize = px.pageSize!
    // counter at [0]; thread t of rank r counts at [1 + r * threads + t].
    let words = try px.allocate(Int.self, count: 1 + px.size * threads, name: "counter", alignment: pageSize)
    try px.barrier()
    let lock = px.lock(1)
    let errors = Guarded<[String]>([])
    let base = words.base
    let address = words.address  // a pointer is not Sendable; its address is
    let rank = px.rank
    let workers = (0..<threads).map { t in
        Joinable {
            let base = UnsafeMutablePointer<Int>(bitPattern: address)!
            let mine = base + 1 + rank * threads + t
            for _ in 0..<k {
                do {
                    try lock.acquire()
                    increment(base)
                    try lock.release()
                } catch {
                    errors.with { $0.append("thread \(t): \(error)") }
                    return
                }
                increment(mine)
            }
        }
    }
    for w in workers { w.join() }
    try px.barrier()
    var failures = Failures()
    for e in errors.with({ $0 }) { failures.add(e) }
    let total = load(base), want = px.size * threads * k
    if total != want { failures.add("counter is \(total), expected \(px.size) ranks x \(threads) threads x \(k) = \(want)") }
    for r in 0..<px.size {
        for t in 0..<threads {
            let v = load(base + 1 + r * threads + t)
            if v != k { failures.add("rank \(r) thread \(t)'s own count is \(v), expected \(k)") }
        }
    }
    return try verdict(px, "lock-counter", failures,
                       detail: "counter \(total), expected \(want) = \(px.size) ranks x \(threads) threads x \(k) increments under lock 1")
}
