import NamesCore
import Wire

/// The name-service client protocol: Wire frames of kind `.names` (0x0301)
/// whose `requestID` correlates a reply with its request, and whose payload is
/// a `ClientRequest` or `ClientResponse` in the Names byte encoding.
/// Replica-to-replica Raft messages travel as kind `.namesPeer` (0x0302).
///
/// A client first sends a `Hello` with job `namesJob`, role "client" and a
/// random sender id with the top bit set (replica ids are small), then any
/// number of requests; replies may come in any order.
public let namesJob = "plexus-names"

extension MessageKind {
    /// Raft messages between replicas (payload: `RaftMessage`).
    public static let namesPeer = MessageKind(rawValue: 0x0302)
}

/// Largest client request or response payload accepted (1 MiB: a value is at
/// most 64 KiB, a listing page is bounded by its limit).
public let maxClientPayload = 1 << 20

public enum ClientRequest: Equatable, Sendable {
    /// A state change. (`clientID`, `requestID`) make retries exactly-once
    /// (Raft dissertation §6.3): retry a call with the same pair.
    case command(clientID: UInt64, requestID: UInt64, command: NameCommand, timeoutMillis: UInt64)
    /// A linearizable read (read-index, dissertation §6.4).
    case query(NameQuery, timeoutMillis: UInt64)
    /// This replica's view of the cluster (not linearizable; any replica answers).
    case status
    /// Test hook, honoured only by replicas started with fault injection on:
    /// drop all Raft traffic to and from these replicas (empty = heal).
    case isolate([ReplicaID])
    /// Adds or removes one voting replica (Raft dissertation §4.1). Exactly
    /// once like `command`: retry with the same (`clientID`, `requestID`).
    case membership(clientID: UInt64, requestID: UInt64, change: MembershipRequest, timeoutMillis: UInt64)
}

/// A single-server membership change as a client asks for it.
public enum MembershipRequest: Equatable, Sendable {
    /// Add replica `id`, which listens (for peers and clients) on `address`
    /// ("IP:PORT") and was started with `plexus node --join-existing`.
    case add(ReplicaID, address: String)
    case remove(ReplicaID)

    public var replica: ReplicaID {
        switch self {
        case .add(let id, _), .remove(let id): id
        }
    }
}

/// Replica ids are transport process ids below 2^32 (client connections use
/// ids with the top bit set); 0 is not an id.
public let replicaIDRange: ClosedRange<UInt64> = 1...((1 << 32) - 1)

/// One replica's view, for `plexus cluster status`.
public struct ReplicaStatus: Equatable, Sendable {
    public var id: ReplicaID
    public var role: String
    public var term: UInt64
    public var leader: ReplicaID?
    public var commitIndex: UInt64
    public var appliedIndex: UInt64
    public var lastLogIndex: UInt64
    public var snapshotIndex: UInt64
    public var members: [ReplicaID]
    /// "leading: …", "following r2", "no quorum: …".
    public var quorum: String
    /// Set once the replica's disk refused a write; it serves nothing after.
    public var storageFailure: String?
    /// Replica id → client address, as configured on this replica.
    public var addresses: [ReplicaID: String]

    public init(id: ReplicaID, role: String, term: UInt64, leader: ReplicaID?, commitIndex: UInt64, appliedIndex: UInt64,
                lastLogIndex: UInt64, snapshotIndex: UInt64, members: [ReplicaID], quorum: String,
                storageFailure: String?, addresses: [ReplicaID: String]) {
        self.id = id
        self.role = role
        self.term = term
        self.leader = leader
        self.commitIndex = commitIndex
        self.appliedIndex = appliedIndex
        self.lastLogIndex = lastLogIndex
        self.snapshotIndex = snapshotIndex
        self.members = members
        self.quorum = quorum
        self.storageFailure = storageFailure
        self.addresses = addresses
    }
}

public enum ClientResponse: Equatable, Sendable {
    case result(NameResult)
    case queryResult(NameQueryResult)
    case status(ReplicaStatus)
    /// Ask `leaderHint` (at `leaderAddress`) instead; nil if unknown (election
    /// in progress: retry shortly). The request was not applied.
    case notLeader(leaderHint: ReplicaID?, leaderAddress: String?)
    /// This replica cannot see a majority. `mayHaveTakenEffect` is false: the
    /// request was refused before it was proposed.
    case noQuorum(reachable: Int, members: Int, needed: Int)
    /// Not answered: leadership changed, the deadline passed, the replica is
    /// overloaded or its disk failed. `mayHaveTakenEffect` tells whether the
    /// request had been proposed.
    case unavailable(reason: String, mayHaveTakenEffect: Bool, storageFailure: Bool)
    case done
    /// A membership change committed (or had committed before this retry) at
    /// `index`; the members and their addresses now.
    case membershipChanged(index: UInt64, members: [ReplicaID], addresses: [ReplicaID: String])
    /// The change was refused and did not happen (already a member, not a
    /// member, the last member, another change in progress, a bad address).
    case membershipRefused(reason: String)
    /// This replica is not a voting member (removed, or waiting to be added)
    /// and serves nothing; ask the members.
    case notMember(reason: String)
}

// MARK: - Encoding

extension ReplicaStatus: ByteCodable {
    public func write(to writer: inout NamesCore.ByteWriter) {
        id.write(to: &writer)
        writer.writeString(role)
        writer.writeVarint(term)
        writer.writeOptional(leader) { $1.write(to: &$0) }
        writer.writeVarint(commitIndex)
        writer.writeVarint(appliedIndex)
        writer.writeVarint(lastLogIndex)
        writer.writeVarint(snapshotIndex)
        writer.writeArray(members) { $1.write(to: &$0) }
        writer.writeString(quorum)
        writer.writeOptional(storageFailure) { $0.writeString($1) }
        writer.writeArray(addresses.keys.sorted()) { w, id in
            id.write(to: &w)
            w.writeString(addresses[id]!)
        }
    }

    public static func read(from reader: inout NamesCore.ByteReader) throws(DecodeError) -> ReplicaStatus {
        let id = try ReplicaID.read(from: &reader)
        let role = try reader.readString(limit: 64)
        let term = try reader.readVarint()
        let leader = try reader.readOptional(ReplicaID.read)
        let commit = try reader.readVarint()
        let applied = try reader.readVarint()
        let last = try reader.readVarint()
        let snap = try reader.readVarint()
        let members = try reader.readArray(ReplicaID.read)
        let quorum = try reader.readString(limit: 1024)
        let failure = try reader.readOptional { (r: inout NamesCore.ByteReader) throws(DecodeError) in try r.readString(limit: 4096) }
        var addresses: [ReplicaID: String] = [:]
        let pairs = try reader.readArray { (r: inout NamesCore.ByteReader) throws(DecodeError) -> (ReplicaID, String) in
            (try ReplicaID.read(from: &r), try r.readString(limit: 256))
        }
        for (k, v) in pairs { addresses[k] = v }
        return ReplicaStatus(id: id, role: role, term: term, leader: leader, commitIndex: commit, appliedIndex: applied,
                             lastLogIndex: last, snapshotIndex: snap, members: members, quorum: quorum,
                             storageFailure: failure, addresses: addresses)
    }
}

extension ClientRequest: ByteCodable {
    public func write(to writer: inout NamesCore.ByteWriter) {
        switch self {
        case .command(let client, let request, let command, let timeout):
            writer.writeVarint(0)
            writer.writeVarint(client)
            writer.writeVarint(request)
            command.write(to: &writer)
            writer.writeVarint(timeout)
        case .query(let query, let timeout):
            writer.writeVarint(1)
            query.write(to: &writer)
            writer.writeVarint(timeout)
        case .status:
            writer.writeVarint(2)
        case .isolate(let replicas):
            writer.writeVarint(3)
            writer.writeArray(replicas) { $1.write(to: &$0) }
        case .membership(let client, let request, let change, let timeout):
            writer.writeVarint(4)
            writer.writeVarint(client)
            writer.writeVarint(request)
            switch change {
            case .add(let id, let address):
                writer.writeVarint(0)
                id.write(to: &writer)
                writer.writeString(address)
            case .remove(let id):
                writer.writeVarint(1)
                id.write(to: &writer)
            }
            writer.writeVarint(timeout)
        }
    }

    static func readReplicaID(_ reader: inout NamesCore.ByteReader) throws(DecodeError) -> ReplicaID {
        let id = try reader.readVarint()
        guard replicaIDRange.contains(id) else { throw .invalidValue("replica id \(id) outside 1...\(replicaIDRange.upperBound)") }
        return ReplicaID(id)
    }

    static func readMembershipRequest(_ reader: inout NamesCore.ByteReader) throws(DecodeError) -> MembershipRequest {
        switch try reader.readVarint() {
        case 0:
            let id = try readReplicaID(&reader)
            let address = try reader.readString(limit: 256)
            guard !address.isEmpty else { throw .invalidValue("empty address for replica \(id)") }
            return .add(id, address: address)
        case 1: return .remove(try readReplicaID(&reader))
        case let tag: throw .unknownTag(type: "MembershipRequest", tag: tag)
        }
    }

    public static func read(from reader: inout NamesCore.ByteReader) throws(DecodeError) -> ClientRequest {
        switch try reader.readVarint() {
        case 0:
            return .command(clientID: try reader.readVarint(), requestID: try reader.readVarint(),
                            command: try .read(from: &reader), timeoutMillis: try reader.readVarint())
        case 1: return .query(try .read(from: &reader), timeoutMillis: try reader.readVarint())
        case 2: return .status
        case 3: return .isolate(try reader.readArray(ReplicaID.read))
        case 4:
            return .membership(clientID: try reader.readVarint(), requestID: try reader.readVarint(),
                               change: try readMembershipRequest(&reader), timeoutMillis: try reader.readVarint())
        case let tag: throw .unknownTag(type: "ClientRequest", tag: tag)
        }
    }
}

extension ClientResponse: ByteCodable {
    public func write(to writer: inout NamesCore.ByteWriter) {
        switch self {
        case .result(let result):
            writer.writeVarint(0)
            result.write(to: &writer)
        case .queryResult(let result):
            writer.writeVarint(1)
            result.write(to: &writer)
        case .status(let status):
            writer.writeVarint(2)
            status.write(to: &writer)
        case .notLeader(let hint, let address):
            writer.writeVarint(3)
            writer.writeOptional(hint) { $1.write(to: &$0) }
            writer.writeOptional(address) { $0.writeString($1) }
        case .noQuorum(let reachable, let members, let needed):
            writer.writeVarint(4)
            writer.writeVarint(UInt64(reachable))
            writer.writeVarint(UInt64(members))
            writer.writeVarint(UInt64(needed))
        case .unavailable(let reason, let maybe, let storage):
            writer.writeVarint(5)
            writer.writeString(reason)
            writer.writeBool(maybe)
            writer.writeBool(storage)
        case .done:
            writer.writeVarint(6)
        case .membershipChanged(let index, let members, let addresses):
            writer.writeVarint(7)
            writer.writeVarint(index)
            writer.writeArray(members) { $1.write(to: &$0) }
            writer.writeArray(addresses.keys.sorted()) { w, id in
                id.write(to: &w)
                w.writeString(addresses[id]!)
            }
        case .membershipRefused(let reason):
            writer.writeVarint(8)
            writer.writeString(reason)
        case .notMember(let reason):
            writer.writeVarint(9)
            writer.writeString(reason)
        }
    }

    public static func read(from reader: inout NamesCore.ByteReader) throws(DecodeError) -> ClientResponse {
        func small(_ field: String) throws(DecodeError) -> Int {
            let v = try reader.readVarint()
            guard v <= 1 << 16 else { throw .invalidValue("\(field) = \(v)") }
            return Int(v)
        }
        switch try reader.readVarint() {
        case 0: return .result(try .read(from: &reader))
        case 1: return .queryResult(try .read(from: &reader))
        case 2: return .status(try .read(from: &reader))
        case 3:
            return .notLeader(leaderHint: try reader.readOptional(ReplicaID.read),
                              leaderAddress: try reader.readOptional { (r: inout NamesCore.ByteReader) throws(DecodeError) in
                                  try r.readString(limit: 256) })
        case 4: return .noQuorum(reachable: try small("reachable"), members: try small("members"), needed: try small("needed"))
        case 5:
            return .unavailable(reason: try reader.readString(limit: 4096), mayHaveTakenEffect: try reader.readBool(),
                                storageFailure: try reader.readBool())
        case 6: return .done
        case 7:
            let index = try reader.readVarint()
            let members = try reader.readArray(ClientRequest.readReplicaID)
            guard zip(members, members.dropFirst()).allSatisfy({ $0 < $1 }) else {
                throw .invalidValue("members not strictly ascending")
            }
            let pairs = try reader.readArray { (r: inout NamesCore.ByteReader) throws(DecodeError) -> (ReplicaID, String) in
                (try ClientRequest.readReplicaID(&r), try r.readString(limit: 256))
            }
            guard zip(pairs, pairs.dropFirst()).allSatisfy({ $0.0 < $1.0 }) else {
                throw .invalidValue("addresses not strictly ascending by replica")
            }
            return .membershipChanged(index: index, members: members, addresses: Dictionary(uniqueKeysWithValues: pairs))
        case 8: return .membershipRefused(reason: try reader.readString(limit: 4096))
        case 9: return .notMember(reason: try reader.readString(limit: 4096))
        case let tag: throw .unknownTag(type: "ClientResponse", tag: tag)
        }
    }
}
