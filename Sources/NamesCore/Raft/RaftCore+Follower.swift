/// Follower role of `RaftCore`: the AppendEntries receiver with the
/// consistency check and conflict truncation (Raft §5.3, Figure 2) and the
/// InstallSnapshot receiver (§7, Figure 13). See `RaftCore.swift` for the
/// paper, terminology and deviations.
extension RaftCore {
    /// A valid message from the leader of our term: follow it.
    mutating func acknowledgeLeader(_ from: ReplicaID) {
        if role != .follower || leader != from {
            becomeFollower(term: term, leader: from)
        }
        electionElapsed = 0
        lastLeaderContact = now
    }

    mutating func onAppendEntries(from: ReplicaID, _ request: AppendEntries) {
        // Two leaders in one term cannot exist (election safety, §5.2); the
        // simulator checks it, the core ignores such a message.
        guard role != .leader else { return }
        acknowledgeLeader(from)

        var prevIndex = request.prevLogIndex
        var entries = request.entries[...]
        let lastNew = request.prevLogIndex + UInt64(request.entries.count)
        if prevIndex < commitIndex {
            // Our prefix up to commitIndex is committed, so the leader holds it
            // too (leader completeness, §5.4.1): skip what we already have.
            entries = entries.drop { $0.index <= commitIndex }
            prevIndex = commitIndex
        } else if log.term(at: prevIndex) != request.prevLogTerm {
            // Consistency check failed (§5.3): reject with a hint.
            send(to: from, .appendResponse(AppendResponse(
                term: term, success: false, index: rejectHint(prevIndex: prevIndex),
                readSequence: request.readSequence)))
            return
        }

        var membershipChanged = false
        for entry in entries {
            if let existing = log.term(at: entry.index) {
                if existing == entry.term { continue }
                // §5.3: "If an existing entry conflicts with a new one (same index
                // but different terms), delete the existing entry and all that
                // follow it". Committed entries never conflict (§5.4).
                precondition(entry.index > commitIndex, "conflict at committed index \(entry.index)")
                log.truncate(from: entry.index)
                out.recordTruncate(from: entry.index)
                membershipChanged = true
            }
            log.append(entry)
            out.entriesToAppend.append(entry)
            if case .configuration = entry.payload { membershipChanged = true }
        }
        if membershipChanged { refreshMembership() }

        let matched = Swift.max(lastNew, commitIndex)
        // Figure 2: commitIndex = min(leaderCommit, index of last new entry).
        let newCommit = Swift.min(request.leaderCommit, matched)
        if newCommit > commitIndex { commitIndex = newCommit }
        send(to: from, .appendResponse(AppendResponse(
            term: term, success: true, index: matched, readSequence: request.readSequence)))
    }

    /// The next index the leader should try: our log end if we are short,
    /// otherwise the first index of the conflicting term (above the commit index).
    func rejectHint(prevIndex: UInt64) -> UInt64 {
        if prevIndex > log.lastIndex { return log.lastIndex + 1 }
        let conflictTerm = log.term(at: prevIndex)
        var index = prevIndex
        while index - 1 > commitIndex && log.term(at: index - 1) == conflictTerm {
            index -= 1
        }
        return index
    }

    mutating func onInstallSnapshot(from: ReplicaID, _ request: InstallSnapshot) {
        guard role != .leader else { return }
        acknowledgeLeader(from)
        let incoming = request.snapshot
        if incoming.lastIncludedIndex <= commitIndex {
            send(to: from, .snapshotResponse(SnapshotResponse(
                term: term, matchIndex: commitIndex, readSequence: request.readSequence)))
            return
        }
        if log.term(at: incoming.lastIncludedIndex) == incoming.lastIncludedTerm {
            // Figure 13 step 6: keep the entries following the snapshot.
            log.compact(through: incoming.lastIncludedIndex)
        } else {
            // Figure 13 step 7: discard the entire log.
            log.reset(snapshotIndex: incoming.lastIncludedIndex, snapshotTerm: incoming.lastIncludedTerm)
            out.recordTruncate(from: incoming.lastIncludedIndex + 1)
        }
        snapshot = incoming
        commitIndex = incoming.lastIncludedIndex
        appliedIndex = incoming.lastIncludedIndex
        out.snapshot = incoming
        out.restoresStateMachine = true
        refreshMembership()
        send(to: from, .snapshotResponse(SnapshotResponse(
            term: term, matchIndex: incoming.lastIncludedIndex, readSequence: request.readSequence)))
    }
}
