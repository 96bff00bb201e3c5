/// The in-memory image of the replicated log held by `RaftCore`: the entries
/// after the last snapshot, plus that snapshot's index and term (Raft §7).
///
/// Terminology: `snapshotIndex`/`snapshotTerm` are the paper's
/// lastIncludedIndex/lastIncludedTerm; `entries[i]` has index
/// `snapshotIndex + 1 + i`. With no snapshot both are 0, the empty prefix.
/// Not thread-safe; owned by one `RaftCore` value.
struct RaftLog: Equatable, Sendable {
    private(set) var snapshotIndex: UInt64
    private(set) var snapshotTerm: UInt64
    private(set) var entries: [LogEntry]

    init(snapshotIndex: UInt64 = 0, snapshotTerm: UInt64 = 0, entries: [LogEntry] = []) {
        for (offset, entry) in entries.enumerated() {
            precondition(entry.index == snapshotIndex + 1 + UInt64(offset),
                         "persisted log is not contiguous after the snapshot at \(snapshotIndex)")
        }
        self.snapshotIndex = snapshotIndex
        self.snapshotTerm = snapshotTerm
        self.entries = entries
    }

    var firstIndex: UInt64 { snapshotIndex + 1 }
    var lastIndex: UInt64 { snapshotIndex + UInt64(entries.count) }
    var lastTerm: UInt64 { entries.last?.term ?? snapshotTerm }

    /// Term of the entry at `index`; nil if compacted away or beyond the end.
    func term(at index: UInt64) -> UInt64? {
        if index == snapshotIndex { return snapshotTerm }
        if index < snapshotIndex || index > lastIndex { return nil }
        return entries[Int(index - snapshotIndex - 1)].term
    }

    func entry(at index: UInt64) -> LogEntry? {
        guard index > snapshotIndex, index <= lastIndex else { return nil }
        return entries[Int(index - snapshotIndex - 1)]
    }

    /// Entries in `from...through`, which must lie within the retained log.
    func entries(from: UInt64, through: UInt64) -> [LogEntry] {
        guard from <= through else { return [] }
        precondition(from > snapshotIndex && through <= lastIndex, "range \(from)...\(through) outside the log")
        let lo = Int(from - snapshotIndex - 1)
        let hi = Int(through - snapshotIndex - 1)
        return Array(entries[lo...hi])
    }

    /// Raft §5.4.1 "up-to-date": compare last terms, then lengths.
    func isUpToDate(lastLogIndex: UInt64, lastLogTerm: UInt64) -> Bool {
        lastLogTerm > lastTerm || (lastLogTerm == lastTerm && lastLogIndex >= lastIndex)
    }

    mutating func append(_ entry: LogEntry) {
        precondition(entry.index == lastIndex + 1, "append of \(entry.index) after \(lastIndex)")
        entries.append(entry)
    }

    /// Deletes entries with index >= `index` (which must be after the snapshot).
    mutating func truncate(from index: UInt64) {
        precondition(index > snapshotIndex, "truncation into the snapshot")
        guard index <= lastIndex else { return }
        entries.removeLast(Int(lastIndex - index + 1))
    }

    /// Discards entries up to and including `index`, which must be retained.
    mutating func compact(through index: UInt64) {
        guard index > snapshotIndex else { return }
        precondition(index <= lastIndex, "compaction beyond the log")
        let term = term(at: index)!
        entries.removeFirst(Int(index - snapshotIndex))
        snapshotIndex = index
        snapshotTerm = term
    }

    /// Replaces the whole log by a snapshot point (InstallSnapshot, §7: "discard
    /// the entire log").
    mutating func reset(snapshotIndex: UInt64, snapshotTerm: UInt64) {
        self.snapshotIndex = snapshotIndex
        self.snapshotTerm = snapshotTerm
        entries.removeAll()
    }

    /// The latest configuration entry at or below `index` among retained entries.
    func lastConfiguration(atOrBelow index: UInt64) -> (index: UInt64, members: [ReplicaID], context: ConfigurationContext)? {
        var i = Swift.min(index, lastIndex)
        while i > snapshotIndex {
            if case .configuration(let members, let context) = entries[Int(i - snapshotIndex - 1)].payload {
                return (i, members, context)
            }
            i -= 1
        }
        return nil
    }

    /// The retained configuration entry made by client request
    /// (`clientID`, `requestID`), if any.
    func configurationEntry(clientID: UInt64, requestID: UInt64) -> LogEntry? {
        entries.last { entry in
            guard case .configuration(_, let context) = entry.payload else { return false }
            return context.clientID == clientID && context.requestID == requestID
        }
    }
}
