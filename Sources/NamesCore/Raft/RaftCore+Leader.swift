/// Leader role of `RaftCore`: log replication (Raft §5.3), the commit rule
/// (§5.4.2), InstallSnapshot sending (§7), read-index confirmation
/// (dissertation §6.4) and check-quorum (dissertation §6.2). See
/// `RaftCore.swift` for the paper, terminology and deviations.
extension RaftCore {
    mutating func tickLeader() {
        heartbeatElapsed += 1
        if configuration.checkQuorum && now - leaderSince >= UInt64(configuration.electionTimeoutTicks)
            && reachableMembers() < quorum {
            // A leader cut off from a majority stops acting as leader, so a
            // minority side refuses writes and reads instead of serving stale data.
            becomeFollower(term: term, leader: nil)
            return
        }
        if heartbeatElapsed >= configuration.heartbeatIntervalTicks {
            heartbeatElapsed = 0
            broadcastHeartbeat()
        }
    }

    /// Sends new entries to every follower that has not been sent them yet.
    mutating func broadcastAppend() {
        for peer in progress.keys.sorted() where progress[peer]!.next <= log.lastIndex {
            sendAppend(to: peer)
        }
    }

    /// Heartbeat round (§5.2): also restarts replication from `match + 1`, which
    /// retransmits anything lost since the last round.
    mutating func broadcastHeartbeat() {
        for peer in progress.keys.sorted() {
            if progress[peer]!.match < log.lastIndex {
                progress[peer]!.next = progress[peer]!.match + 1
            }
            sendAppend(to: peer)
        }
    }

    /// AppendEntries from `next`, or InstallSnapshot when the entries it needs
    /// have been compacted away (§7).
    mutating func sendAppend(to peer: ReplicaID) {
        guard var tracked = progress[peer] else { return }
        let prevIndex = tracked.next - 1
        if prevIndex < log.snapshotIndex {
            guard let snapshot else { preconditionFailure("compacted log without a snapshot") }
            send(to: peer, .installSnapshot(InstallSnapshot(term: term, snapshot: snapshot, readSequence: readSequence)))
            tracked.next = snapshot.lastIncludedIndex + 1
            progress[peer] = tracked
            return
        }
        let prevTerm = log.term(at: prevIndex)!
        let last = Swift.min(log.lastIndex, prevIndex + UInt64(configuration.maxEntriesPerMessage))
        let entries = log.entries(from: prevIndex + 1, through: last)
        send(to: peer, .appendEntries(AppendEntries(
            term: term, prevLogIndex: prevIndex, prevLogTerm: prevTerm, entries: entries,
            leaderCommit: commitIndex, readSequence: readSequence)))
        tracked.next = last + 1
        progress[peer] = tracked
    }

    mutating func onAppendResponse(from: ReplicaID, _ response: AppendResponse) {
        guard role == .leader, var tracked = progress[from] else { return }
        tracked.readAck = Swift.max(tracked.readAck, response.readSequence)
        if response.success {
            tracked.match = Swift.max(tracked.match, response.index)
            tracked.next = Swift.max(tracked.next, tracked.match + 1)
            progress[from] = tracked
            dropIfInformed(from)
            maybeAdvanceCommit()
            maybeConfirmReads()
            if role == .leader, progress[from].map({ $0.next <= log.lastIndex }) ?? false {
                sendAppend(to: from)
            }
        } else {
            // Back up to the follower's hint, never below what it has matched and
            // never forward because of a stale rejection.
            tracked.next = Swift.max(tracked.match + 1, Swift.min(response.index, tracked.next))
            progress[from] = tracked
            maybeConfirmReads()
            if role == .leader { sendAppend(to: from) }
        }
    }

    mutating func onSnapshotResponse(from: ReplicaID, _ response: SnapshotResponse) {
        onAppendResponse(from: from, AppendResponse(
            term: response.term, success: true, index: response.matchIndex, readSequence: response.readSequence))
    }

    /// §5.3/§5.4.2: the commit index is the highest index stored on a majority,
    /// but only if that entry is from the current term; earlier entries commit
    /// indirectly. The leader counts itself only while it is a member
    /// (dissertation §4.2.2).
    mutating func maybeAdvanceCommit() {
        guard role == .leader, !members.isEmpty else { return }
        var matches = members.map { $0 == id ? log.lastIndex : (progress[$0]?.match ?? 0) }
        matches.sort(by: >)
        let candidate = matches[quorum - 1]
        guard candidate > commitIndex, log.term(at: candidate) == term else { return }
        commitIndex = candidate
        onCommitAdvanced()
    }

    mutating func onCommitAdvanced() {
        if !readsAwaitingTermCommit.isEmpty && log.term(at: commitIndex) == term {
            let waiting = readsAwaitingTermCommit
            readsAwaitingTermCommit = []
            registerReads(waiting)
        }
        if !members.contains(id) && commitIndex >= configurationIndex {
            // Dissertation §4.2.2: a leader removed from the configuration steps
            // down once the change is committed.
            becomeFollower(term: term, leader: nil)
        }
    }

    /// Records reads at the current commit index and starts a heartbeat round
    /// whose majority acknowledgement proves we were still leader afterwards.
    mutating func registerReads(_ requestIDs: [UInt64]) {
        if members == [id] {
            for requestID in requestIDs {
                out.readStates.append(ReadState(requestID: requestID, result: .ready(index: commitIndex)))
            }
            return
        }
        readSequence += 1
        for requestID in requestIDs {
            pendingReads.append(PendingRead(requestID: requestID, index: commitIndex, sequence: readSequence))
        }
        for peer in progress.keys.sorted() { sendAppend(to: peer) }
    }

    /// Answers pending reads whose round a majority has echoed.
    mutating func maybeConfirmReads() {
        guard role == .leader, !pendingReads.isEmpty, !members.isEmpty else { return }
        var acks = members.map { $0 == id ? readSequence : (progress[$0]?.readAck ?? 0) }
        acks.sort(by: >)
        let confirmed = acks[quorum - 1]
        while let first = pendingReads.first, first.sequence <= confirmed {
            pendingReads.removeFirst()
            out.readStates.append(ReadState(requestID: first.requestID, result: .ready(index: first.index)))
        }
    }
}
