/// Byte encodings of Raft values: log entries and hard state for the durable
/// log, snapshots, and `RaftMessage` for the transport. Same format and
/// guarantees as `NameCodec.swift`: decoders refuse malformed input, never trap.

extension ReplicaID: ByteCodable {
    public func write(to writer: inout ByteWriter) { writer.writeVarint(rawValue) }
    public static func read(from reader: inout ByteReader) throws(DecodeError) -> ReplicaID { ReplicaID(try reader.readVarint()) }
}

extension HardState: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        writer.writeVarint(term)
        writer.writeOptional(votedFor) { $1.write(to: &$0) }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> HardState {
        HardState(term: try reader.readVarint(), votedFor: try reader.readOptional(ReplicaID.read))
    }
}

extension LogEntry: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        writer.writeVarint(index)
        writer.writeVarint(term)
        switch payload {
        case .noop:
            writer.writeVarint(0)
        case .command(let client, let request, let data):
            writer.writeVarint(1)
            writer.writeVarint(client)
            writer.writeVarint(request)
            writer.writeBytes(data)
        case .configuration(let members, let context) where context.isEmpty:
            // The original encoding, still written when there is no context so
            // that logs from before contexts existed and new ones read alike.
            writer.writeVarint(2)
            writer.writeArray(members) { $1.write(to: &$0) }
        case .configuration(let members, let context):
            writer.writeVarint(3)
            writer.writeArray(members) { $1.write(to: &$0) }
            context.write(to: &writer)
        }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> LogEntry {
        let index = try reader.readVarint()
        let term = try reader.readVarint()
        let payload: EntryPayload
        switch try reader.readTag("EntryPayload", below: 4) {
        case 0: payload = .noop
        case 1: payload = .command(clientID: try reader.readVarint(), requestID: try reader.readVarint(), data: try reader.readBytes())
        case 2: payload = .configuration(members: try readMembers(&reader))
        default:
            let members = try readMembers(&reader)
            let context = try ConfigurationContext.read(from: &reader)
            // Tag 2 is the only encoding of an empty context: one value, one encoding.
            guard !context.isEmpty else { throw .invalidValue("empty configuration context under tag 3") }
            payload = .configuration(members: members, context: context)
        }
        return LogEntry(index: index, term: term, payload: payload)
    }

    static func readMembers(_ reader: inout ByteReader) throws(DecodeError) -> [ReplicaID] {
        let members = try reader.readArray(ReplicaID.read)
        guard zip(members, members.dropFirst()).allSatisfy({ $0 < $1 }) else {
            throw .invalidValue("configuration members not strictly ascending")
        }
        return members
    }
}

extension ConfigurationContext: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        writer.writeArray(addresses.keys.sorted()) { w, id in
            id.write(to: &w)
            w.writeString(addresses[id]!)
        }
        writer.writeVarint(clientID)
        writer.writeVarint(requestID)
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> ConfigurationContext {
        let pairs = try reader.readArray { (r: inout ByteReader) throws(DecodeError) -> (ReplicaID, String) in
            (try ReplicaID.read(from: &r), try r.readString(limit: 1024))
        }
        guard zip(pairs, pairs.dropFirst()).allSatisfy({ $0.0 < $1.0 }) else {
            throw .invalidValue("configuration addresses not strictly ascending by replica")
        }
        return ConfigurationContext(addresses: Dictionary(uniqueKeysWithValues: pairs),
                                    clientID: try reader.readVarint(), requestID: try reader.readVarint())
    }
}

extension RaftSnapshot: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        writer.writeVarint(lastIncludedIndex)
        writer.writeVarint(lastIncludedTerm)
        writer.writeArray(members) { $1.write(to: &$0) }
        writer.writeBytes(data)
        context.write(to: &writer)
    }

    /// A snapshot file written before configuration contexts existed ends
    /// after `data`; it reads with an empty context. (Inside InstallSnapshot a
    /// snapshot is always followed by more fields, so there the context is
    /// always read.)
    public static func read(from reader: inout ByteReader) throws(DecodeError) -> RaftSnapshot {
        let index = try reader.readVarint()
        let term = try reader.readVarint()
        let members = try LogEntry.readMembers(&reader)
        let data = try reader.readBytes()
        let context = reader.remaining == 0 ? ConfigurationContext() : try ConfigurationContext.read(from: &reader)
        return RaftSnapshot(lastIncludedIndex: index, lastIncludedTerm: term, members: members, data: data, context: context)
    }
}

extension RaftMessage: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        switch self {
        case .voteRequest(let m):
            writer.writeVarint(0)
            writer.writeVarint(m.term)
            writer.writeVarint(m.lastLogIndex)
            writer.writeVarint(m.lastLogTerm)
            writer.writeBool(m.isPreVote)
        case .voteResponse(let m):
            writer.writeVarint(1)
            writer.writeVarint(m.term)
            writer.writeBool(m.granted)
            writer.writeBool(m.isPreVote)
        case .appendEntries(let m):
            writer.writeVarint(2)
            writer.writeVarint(m.term)
            writer.writeVarint(m.prevLogIndex)
            writer.writeVarint(m.prevLogTerm)
            writer.writeArray(m.entries) { $1.write(to: &$0) }
            writer.writeVarint(m.leaderCommit)
            writer.writeVarint(m.readSequence)
        case .appendResponse(let m):
            writer.writeVarint(3)
            writer.writeVarint(m.term)
            writer.writeBool(m.success)
            writer.writeVarint(m.index)
            writer.writeVarint(m.readSequence)
        case .installSnapshot(let m):
            writer.writeVarint(4)
            writer.writeVarint(m.term)
            m.snapshot.write(to: &writer)
            writer.writeVarint(m.readSequence)
        case .snapshotResponse(let m):
            writer.writeVarint(5)
            writer.writeVarint(m.term)
            writer.writeVarint(m.matchIndex)
            writer.writeVarint(m.readSequence)
        }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> RaftMessage {
        switch try reader.readTag("RaftMessage", below: 6) {
        case 0:
            return .voteRequest(VoteRequest(
                term: try reader.readVarint(), lastLogIndex: try reader.readVarint(),
                lastLogTerm: try reader.readVarint(), isPreVote: try reader.readBool()))
        case 1:
            return .voteResponse(VoteResponse(term: try reader.readVarint(), granted: try reader.readBool(), isPreVote: try reader.readBool()))
        case 2:
            let term = try reader.readVarint()
            let prevIndex = try reader.readVarint()
            let prevTerm = try reader.readVarint()
            let entries = try reader.readArray(LogEntry.read)
            for (offset, entry) in entries.enumerated() {
                let (expected, overflow) = prevIndex.addingReportingOverflow(1 + UInt64(offset))
                guard !overflow, entry.index == expected, entry.term <= term else {
                    throw .invalidValue("entry \(entry.index) does not follow \(prevIndex) in term <= \(term)")
                }
            }
            return .appendEntries(AppendEntries(
                term: term, prevLogIndex: prevIndex, prevLogTerm: prevTerm, entries: entries,
                leaderCommit: try reader.readVarint(), readSequence: try reader.readVarint()))
        case 3:
            return .appendResponse(AppendResponse(
                term: try reader.readVarint(), success: try reader.readBool(),
                index: try reader.readVarint(), readSequence: try reader.readVarint()))
        case 4:
            return .installSnapshot(InstallSnapshot(
                term: try reader.readVarint(), snapshot: try .read(from: &reader), readSequence: try reader.readVarint()))
        default:
            return .snapshotResponse(SnapshotResponse(
                term: try reader.readVarint(), matchIndex: try reader.readVarint(), readSequence: try reader.readVarint()))
        }
    }
}
