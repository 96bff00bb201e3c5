/// Leader election (Raft §5.2, §5.4.1) with pre-vote (dissertation §9.6):
/// follower and candidate handlers of `RaftCore`. See `RaftCore.swift` for the
/// paper, terminology and deviations.
extension RaftCore {
    /// Follower/candidate clock: start an election when no leader was heard from
    /// for a randomised election timeout (§5.2). Non-members never campaign.
    mutating func tickElection() {
        electionElapsed += 1
        if electionElapsed >= randomizedElectionTimeout && members.contains(id) {
            campaign(preVote: configuration.preVote)
        }
    }

    /// Starts a pre-vote round (term unchanged) or a real election (term + 1,
    /// vote for self).
    mutating func campaign(preVote: Bool) {
        guard members.contains(id) else { return }
        failPendingReads(.leadershipLost)
        let requestTerm: UInt64
        if preVote {
            role = .preCandidate
            requestTerm = term + 1
        } else {
            role = .candidate
            term += 1
            votedFor = id
            requestTerm = term
        }
        leader = nil
        progress = [:]
        votesReceived = [id: true]
        electionElapsed = 0
        resetRandomizedElectionTimeout()
        if tallyVotes() == .won {
            if preVote { campaign(preVote: false) } else { becomeLeader() }
            return
        }
        for peer in members where peer != id {
            send(to: peer, .voteRequest(VoteRequest(
                term: requestTerm, lastLogIndex: log.lastIndex, lastLogTerm: log.lastTerm, isPreVote: preVote)))
        }
    }

    enum Tally { case won, lost, pending }

    func tallyVotes() -> Tally {
        var granted = 0
        var rejected = 0
        for member in members {
            switch votesReceived[member] {
            case true?: granted += 1
            case false?: rejected += 1
            case nil: break
            }
        }
        if granted >= quorum { return .won }
        if rejected >= quorum { return .lost }
        return .pending
    }

    /// RequestVote receiver (Figure 2): grant if we have not voted for someone
    /// else in this term and the candidate's log is at least as up-to-date as ours
    /// (§5.4.1). A pre-vote is granted on the same log rule for a higher term, and
    /// changes nothing locally.
    mutating func onVoteRequest(from: ReplicaID, _ request: VoteRequest) {
        let upToDate = log.isUpToDate(lastLogIndex: request.lastLogIndex, lastLogTerm: request.lastLogTerm)
        if request.isPreVote {
            let grant = request.term > term && upToDate
            send(to: from, .voteResponse(VoteResponse(term: grant ? request.term : term, granted: grant, isPreVote: true)))
            return
        }
        // Here request.term == term (step() adopted a higher term already).
        let canVote = votedFor == from || (votedFor == nil && leader == nil)
        let grant = canVote && upToDate
        if grant {
            votedFor = from
            // §5.2: granting a vote resets the election timer.
            electionElapsed = 0
        }
        send(to: from, .voteResponse(VoteResponse(term: term, granted: grant, isPreVote: false)))
    }

    mutating func onVoteResponse(from: ReplicaID, _ response: VoteResponse) {
        if response.isPreVote {
            guard role == .preCandidate else { return }
            if response.granted && response.term != term + 1 { return }
        } else {
            guard role == .candidate, response.term == term else { return }
        }
        votesReceived[from] = response.granted
        switch tallyVotes() {
        case .won:
            if response.isPreVote { campaign(preVote: false) } else { becomeLeader() }
        case .lost:
            becomeFollower(term: term, leader: nil)
        case .pending:
            break
        }
    }

    mutating func becomeFollower(term newTerm: UInt64, leader newLeader: ReplicaID?) {
        if newTerm > term {
            term = newTerm
            votedFor = nil
        }
        failPendingReads(.leadershipLost)
        role = .follower
        leader = newLeader
        progress = [:]
        votesReceived = [:]
        electionElapsed = 0
        resetRandomizedElectionTimeout()
        if newLeader != nil { lastLeaderContact = now }
    }

    /// §5.2 "Once a candidate wins an election, it becomes leader"; §8: it
    /// appends a no-op so that it can commit entries of earlier terms (§5.4.2)
    /// and answer read-index reads (dissertation §6.4).
    mutating func becomeLeader() {
        role = .leader
        leader = id
        lastLeaderContact = now
        leaderSince = now
        heartbeatElapsed = 0
        votesReceived = [:]
        progress = [:]
        for member in members where member != id {
            progress[member] = Progress(next: log.lastIndex + 1, match: 0)
        }
        appendLocal(.noop)
        broadcastAppend()
    }

    /// Rejects every pending read (leadership changed, so the reads' indices
    /// are no longer proven current).
    mutating func failPendingReads(_ reason: RaftRejection) {
        for read in pendingReads {
            out.readStates.append(ReadState(requestID: read.requestID, result: .rejected(reason)))
        }
        for requestID in readsAwaitingTermCommit {
            out.readStates.append(ReadState(requestID: requestID, result: .rejected(reason)))
        }
        pendingReads = []
        readsAwaitingTermCommit = []
    }
}
