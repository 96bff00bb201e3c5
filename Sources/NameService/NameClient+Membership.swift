import Foundation
import NamesCore
import Transport
import Wire

/// The membership after a change: what `plexus cluster add/remove` prints.
public struct MembershipOutcome: Equatable, Sendable {
    /// The configuration entry that made the change.
    public var index: UInt64
    /// The voting members now, ascending.
    public var members: [ReplicaID]
    /// Where each member listens ("IP:PORT"), as far as the leader knows.
    public var addresses: [ReplicaID: String]

    public init(index: UInt64, members: [ReplicaID], addresses: [ReplicaID: String]) {
        self.index = index
        self.members = members
        self.addresses = addresses
    }

    /// Majority of the members: how many must be up for the service to serve.
    public var quorum: Int { members.count / 2 + 1 }
}

/// Single-server membership change (Raft dissertation §4.1) through the
/// leader: add a replica started with `plexus node --join-existing`, or
/// remove one. One change at a time; each is exactly-once like a write (a
/// retry carries the same client id and request id and is answered with the
/// first attempt's configuration entry).
extension NameClient {
    /// Adds replica `id`, listening on `address` ("IP:PORT"), as a voting member.
    /// Start it first (`plexus node … --replica-id ID --join-existing`): it
    /// catches up from the leader once added.
    public func addReplica(_ id: ReplicaID, address: String) throws(NameServiceError) -> MembershipOutcome {
        try changeMembership(.add(id, address: address))
    }

    /// Removes replica `id` from the voting members. The removed replica stops
    /// serving (it answers "removed"); stop its process afterwards.
    public func removeReplica(_ id: ReplicaID) throws(NameServiceError) -> MembershipOutcome {
        try changeMembership(.remove(id))
    }

    /// Applies `change` exactly once. `requestID` identifies this change in
    /// the client's session (`clientID`); pass the same one to retry a call
    /// that failed with `mayHaveTakenEffect`.
    public func changeMembership(_ change: MembershipRequest,
                                 requestID: UInt64 = UInt64.random(in: 1...UInt64.max)) throws(NameServiceError)
        -> MembershipOutcome
    {
        guard replicaIDRange.contains(change.replica.rawValue) else {
            throw .invalidArgument("replica id \(change.replica.rawValue) is outside 1...\(replicaIDRange.upperBound)")
        }
        if case .add(_, let address) = change {
            let parsed: SocketAddress
            do { parsed = try SocketAddress(parsing: address) } catch { throw .invalidArgument("--address \(address): \(error)") }
            guard parsed.port != 0 else {
                throw .invalidArgument("--address \(address): give the port the new replica listens on, not 0")
            }
        }
        var session = MembershipSession(client: self)
        defer { session.close() }
        return try session.run { timeout in
            .membership(clientID: clientID, requestID: requestID, change: change, timeoutMillis: timeout)
        }
    }

    /// The membership as the leader sees it (its status), found by asking the
    /// given replicas and following their leader hints. Needs a leader.
    public func leaderStatus() throws(NameServiceError) -> ReplicaStatus {
        var addresses = replicaAddresses
        var problems: [String] = []
        var i = 0
        while i < addresses.count {
            let address = addresses[i]
            i += 1
            let status: ReplicaStatus
            do { status = try self.status(of: address) } catch {
                problems.append("\(address): \(error)")
                continue
            }
            if status.role == "leader" && status.leader == status.id { return status }
            for other in status.addresses.keys.sorted() {
                if let a = status.addresses[other], !addresses.contains(a) { addresses.append(a) }
            }
            if let leader = status.leader, let a = status.addresses[leader], let at = addresses.firstIndex(of: a), at < i {
                // Its leader was asked already and did not say it leads: the
                // cluster is between leaders.
                problems.append("\(address): follows \(leader), which does not lead now")
            }
        }
        throw .unreachable("no replica leads now (asked \(addresses.joined(separator: ", "))"
            + (problems.isEmpty ? "" : "; " + problems.joined(separator: "; ")) + "); retry once a leader is elected")
    }
}

/// The retry loop of one membership call: finds the leader (following
/// redirects and skipping replicas that are not members), backs off while
/// there is none, and stops at the client's deadline. Kept apart from
/// `NameClient.call` so that membership changes do not touch the write path.
struct MembershipSession {
    let client: NameClient
    private var connections: [String: ClientConnection] = [:]

    init(client: NameClient) { self.client = client }

    mutating func close() {
        for connection in connections.values { connection.close() }
        connections = [:]
    }

    private mutating func attempt(_ address: String, _ request: ClientRequest, timeoutMillis: Int) throws(NameServiceError)
        -> ClientResponse
    {
        let connection: ClientConnection
        if let existing = connections[address], !existing.isClosed {
            connection = existing
        } else {
            let socket: SocketAddress
            do { socket = try SocketAddress(parsing: address) } catch { throw .invalidArgument("\(error)") }
            connection = try ClientConnection.open(
                socket, timeoutMillis: min(client.options.connectTimeoutMillis, Int32(max(timeoutMillis, 1))))
            connections[address] = connection
        }
        do { return try connection.call(request, timeoutMillis: timeoutMillis) } catch {
            if case .timedOut = error {} else { connections[address] = nil }
            throw error
        }
    }

    mutating func run(_ make: (UInt64) -> ClientRequest) throws(NameServiceError) -> MembershipOutcome {
        let options = client.options
        let deadline = monotonicMillis() + UInt64(options.timeoutMillis)
        var targets = client.replicaAddresses
        var index = 0
        var backoff = options.initialBackoffMillis
        var mayHaveTakenEffect = false
        var refusedThisRound: Set<String> = []
        var notMembers: [String: String] = [:]
        var lastNoQuorum: (Int, Int, Int)?
        var lastProblem = "no replica answered"
        var anyAnswer = false

        func pause() {
            let left = Int(deadline) - Int(monotonicMillis())
            if left > 0 { usleep(useconds_t(min(backoff, left) * 1000)) }
            backoff = min(backoff * 2, options.maxBackoffMillis)
        }

        while monotonicMillis() < deadline {
            let target = targets[index % targets.count]
            let left = Int(deadline - monotonicMillis())
            let attemptTimeout = min(options.attemptTimeoutMillis, left)
            let response: ClientResponse
            do {
                response = try attempt(target, make(UInt64(attemptTimeout)), timeoutMillis: attemptTimeout)
            } catch {
                switch error {
                case .timedOut, .connectionLost:
                    mayHaveTakenEffect = true
                    anyAnswer = true
                    lastProblem = "\(target): \(error)"
                case .unreachable(let why):
                    lastProblem = why
                default:
                    throw error
                }
                refusedThisRound.insert(target)
                if Set(targets).isSubset(of: refusedThisRound) {
                    refusedThisRound = []
                    pause()
                }
                index += 1
                continue
            }
            anyAnswer = true
            switch response {
            case .membershipChanged(let at, let members, let addresses):
                return MembershipOutcome(index: at, members: members, addresses: addresses)
            case .membershipRefused(let reason):
                throw .rejected(.invalidArgument(
                    "membership change refused: \(reason)"
                        + (mayHaveTakenEffect ? " (an earlier attempt of this call may have taken effect: check `plexus cluster status`)" : "")))
            case .notLeader(let hint, let address):
                if let address, address != target {
                    if let at = targets.firstIndex(of: address) { index = at } else {
                        targets.append(address)
                        index = targets.count - 1
                    }
                    lastProblem = "redirected to leader \(hint.map { "\($0)" } ?? "?") at \(address)"
                } else {
                    lastProblem = "no leader elected yet"
                    pause()
                    index += 1
                }
            case .noQuorum(let reachable, let members, let needed):
                lastNoQuorum = (reachable, members, needed)
                refusedThisRound.insert(target)
                if Set(targets).isSubset(of: refusedThisRound) {
                    throw .noQuorum(reachable: reachable, members: members, needed: needed, mayHaveTakenEffect: mayHaveTakenEffect)
                }
                index += 1
            case .notMember(let reason):
                notMembers[target] = reason
                if Set(targets).isSubset(of: Set(notMembers.keys)) {
                    throw .invalidArgument(reason + " (every replica given to --names is outside the cluster; "
                        + "give at least one current member)")
                }
                index += 1
            case .unavailable(let reason, let maybe, let storage):
                if maybe { mayHaveTakenEffect = true }
                if storage { throw .storage(reason) }
                lastProblem = reason
                pause()
            default:
                throw .protocolViolation("expected the outcome of a membership change, got \(response)")
            }
        }
        if let (r, m, n) = lastNoQuorum {
            throw .noQuorum(reachable: r, members: m, needed: n, mayHaveTakenEffect: mayHaveTakenEffect)
        }
        if !anyAnswer { throw .unreachable("no replica could be reached within \(options.timeoutMillis) ms (last: \(lastProblem))") }
        throw .timedOut("the membership change got no answer within \(options.timeoutMillis) ms (\(lastProblem))",
                        mayHaveTakenEffect: mayHaveTakenEffect)
    }
}

#if canImport(Glibc)
import Glibc
#endif
