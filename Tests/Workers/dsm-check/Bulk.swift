import Plexus

/// `bulk-both-ways`: every rank writes every word of its own block of pages
/// (4 MiB) in several intervals (a barrier after each), then reads every
/// other rank's block, after hinting all of it. Under lrc with a small
/// `--collection-bound` the barriers collect: every rank then asks for the
/// diffs of every page the others wrote at once, and answers as many, so
/// megabytes cross both ways at the same moment: a rank whose threads
/// blocked writing to a peer whose threads block writing back would hang
/// the job. Every value read is checked.
func bulkBothWays(_ px: Plexus, _ o: Options) throws -> Bool {
    let rounds = o.iterations ?? 6
    let pageSize = px.pageSize!
    let wordsPerPage = pageSize / MemoryLayout<Int>.stride
    let pagesPerRank = (4 << 20) / pageSize
    let block = pagesPerRank * wordsPerPage
    let data = try px.allocate(Int.self, count: px.size * block, name: "bulk", alignment: pageSize)
    func value(rank: Int, word: Int, round: Int) -> Int { (rank << 48) | (round << 32) | word }
    for round in 0..<rounds {
        for w in 0..<block { store(data.base + px.rank * block + w, value(rank: px.rank, word: w, round: round)) }
        try px.barrier()
    }
    var failures = Failures()
    try px.prefetch(data, 0..<(px.size * block), for: .read)
    for r in 0..<px.size where r != px.rank {
        for w in 0..<block {
            let got = load(data.base + r * block + w), want = value(rank: r, word: w, round: rounds - 1)
            if got != want { failures.add("rank \(r)'s word \(w) is \(got), expected \(want)") }
        }
    }
    try px.barrier()
    let mib = Double(px.size * pagesPerRank * pageSize) / Double(1 << 20)
    return try verdict(px, "bulk-both-ways", failures,
                       detail: "\(px.size) ranks each read \(pagesPerRank) pages written in \(rounds) intervals by each other rank (\(mib) MiB in all)")
}
