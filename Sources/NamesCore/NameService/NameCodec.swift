/// Byte encodings of name-service commands, results, queries and the
/// state-machine snapshot, built on `ByteWriter`/`ByteReader`.
///
/// Every decoder rejects truncated, oversized, unknown-tag and trailing input
/// with a `DecodeError`; none traps. Dictionaries and sets are written sorted,
/// so equal states encode to equal bytes (replicas can compare snapshots).

/// A value with a stable byte encoding.
public protocol ByteCodable {
    func write(to writer: inout ByteWriter)
    static func read(from reader: inout ByteReader) throws(DecodeError) -> Self
}

public enum ByteCodecLimits {
    /// Largest command, result, query or Raft message accepted (16 MiB).
    public static let maxMessageBytes = 16 << 20
    /// Largest state-machine snapshot accepted (1 GiB).
    public static let maxSnapshotBytes = 1 << 30
    /// Longest string field accepted inside a message (names, addresses).
    public static let maxStringBytes = 1 << 16
}

extension ByteCodable {
    public func encoded() -> [UInt8] {
        var writer = ByteWriter()
        write(to: &writer)
        return writer.bytes
    }

    /// Decodes exactly one value occupying all of `bytes`.
    public init(decoding bytes: [UInt8], limit: Int = ByteCodecLimits.maxMessageBytes) throws(DecodeError) {
        guard bytes.count <= limit else { throw .oversized(length: bytes.count, limit: limit) }
        var reader = ByteReader(bytes)
        self = try Self.read(from: &reader)
        try reader.expectEnd()
    }
}

extension ByteReader {
    mutating func readTag(_ type: String, below count: UInt64) throws(DecodeError) -> UInt64 {
        let tag = try readVarint()
        guard tag < count else { throw .unknownTag(type: type, tag: tag) }
        return tag
    }

    mutating func readName() throws(DecodeError) -> String {
        try readString(limit: ByteCodecLimits.maxStringBytes)
    }
}

// MARK: - Scalars

extension GlobalPID: ByteCodable {
    public func write(to writer: inout ByteWriter) { writer.writeVarint(rawValue) }
    public static func read(from reader: inout ByteReader) throws(DecodeError) -> GlobalPID { GlobalPID(try reader.readVarint()) }
}

extension LeaseID: ByteCodable {
    public func write(to writer: inout ByteWriter) { writer.writeVarint(rawValue) }
    public static func read(from reader: inout ByteReader) throws(DecodeError) -> LeaseID { LeaseID(try reader.readVarint()) }
}

extension ProcessState: ByteCodable {
    public func write(to writer: inout ByteWriter) { writer.writeVarint(UInt64(rawValue)) }
    public static func read(from reader: inout ByteReader) throws(DecodeError) -> ProcessState {
        ProcessState(rawValue: UInt8(try reader.readTag("ProcessState", below: 5)))!
    }
}

// MARK: - Records

extension ProcessRecord: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        pid.write(to: &writer)
        writer.writeString(node)
        writer.writeString(address)
        state.write(to: &writer)
        writer.writeOptional(parent) { $1.write(to: &$0) }
        writer.writeVarint(startTimeMillis)
        writer.writeOptional(exitStatus) { $0.writeInt(Int64($1)) }
        writer.writeOptional(lease) { $1.write(to: &$0) }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> ProcessRecord {
        ProcessRecord(
            pid: try .read(from: &reader),
            node: try reader.readName(),
            address: try reader.readName(),
            state: try .read(from: &reader),
            parent: try reader.readOptional(GlobalPID.read),
            startTimeMillis: try reader.readVarint(),
            exitStatus: try reader.readOptional { (r: inout ByteReader) throws(DecodeError) in try r.readInt32() },
            lease: try reader.readOptional(LeaseID.read))
    }
}

extension NameEntry: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        writer.writeString(name)
        writer.writeBytes(value)
        writer.writeVarint(version)
        writer.writeVarint(createRevision)
        writer.writeVarint(modRevision)
        writer.writeOptional(lease) { $1.write(to: &$0) }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> NameEntry {
        NameEntry(
            name: try reader.readName(),
            value: try reader.readBytes(),
            version: try reader.readVarint(),
            createRevision: try reader.readVarint(),
            modRevision: try reader.readVarint(),
            lease: try reader.readOptional(LeaseID.read))
    }
}

extension Lease: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        id.write(to: &writer)
        writer.writeVarint(ttlMillis)
        writer.writeVarint(expiresAtMillis)
        writer.writeArray(names.sorted()) { $0.writeString($1) }
        writer.writeArray(pids.sorted()) { $1.write(to: &$0) }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> Lease {
        Lease(
            id: try .read(from: &reader),
            ttlMillis: try reader.readVarint(),
            expiresAtMillis: try reader.readVarint(),
            names: Set(try reader.readArray { (r: inout ByteReader) throws(DecodeError) in try r.readName() }),
            pids: Set(try reader.readArray(GlobalPID.read)))
    }
}

extension WatchEvent: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        writer.writeVarint(revision)
        switch kind {
        case .nameCreated(let entry):
            writer.writeVarint(0)
            entry.write(to: &writer)
        case .nameUpdated(let entry):
            writer.writeVarint(1)
            entry.write(to: &writer)
        case .nameDeleted(let name, let lease):
            writer.writeVarint(2)
            writer.writeString(name)
            writer.writeOptional(lease) { $1.write(to: &$0) }
        case .processChanged(let record):
            writer.writeVarint(3)
            record.write(to: &writer)
        case .processReaped(let pid):
            writer.writeVarint(4)
            pid.write(to: &writer)
        case .leaseEnded(let lease, let expired):
            writer.writeVarint(5)
            lease.write(to: &writer)
            writer.writeBool(expired)
        }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> WatchEvent {
        let revision = try reader.readVarint()
        let kind: Kind
        switch try reader.readTag("WatchEvent", below: 6) {
        case 0: kind = .nameCreated(try .read(from: &reader))
        case 1: kind = .nameUpdated(try .read(from: &reader))
        case 2: kind = .nameDeleted(name: try reader.readName(), lease: try reader.readOptional(LeaseID.read))
        case 3: kind = .processChanged(try .read(from: &reader))
        case 4: kind = .processReaped(try .read(from: &reader))
        default: kind = .leaseEnded(try .read(from: &reader), expired: try reader.readBool())
        }
        return WatchEvent(revision: revision, kind: kind)
    }
}

// MARK: - Commands

extension NameCommand: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        switch self {
        case .allocatePID(let node, let address, let parent, let start, let lease):
            writer.writeVarint(0)
            writer.writeString(node)
            writer.writeString(address)
            writer.writeOptional(parent) { $1.write(to: &$0) }
            writer.writeVarint(start)
            writer.writeOptional(lease) { $1.write(to: &$0) }
        case .setProcessState(let pid, let state):
            writer.writeVarint(1)
            pid.write(to: &writer)
            state.write(to: &writer)
        case .rebindProcess(let pid, let node, let address):
            writer.writeVarint(2)
            pid.write(to: &writer)
            writer.writeString(node)
            writer.writeString(address)
        case .exitProcess(let pid, let status):
            writer.writeVarint(3)
            pid.write(to: &writer)
            writer.writeInt(Int64(status))
        case .reapProcess(let pid):
            writer.writeVarint(4)
            pid.write(to: &writer)
        case .create(let name, let value, let lease):
            writer.writeVarint(5)
            writer.writeString(name)
            writer.writeBytes(value)
            writer.writeOptional(lease) { $1.write(to: &$0) }
        case .createSequential(let prefix, let value, let lease):
            writer.writeVarint(6)
            writer.writeString(prefix)
            writer.writeBytes(value)
            writer.writeOptional(lease) { $1.write(to: &$0) }
        case .put(let name, let value, let lease):
            writer.writeVarint(7)
            writer.writeString(name)
            writer.writeBytes(value)
            writer.writeOptional(lease) { $1.write(to: &$0) }
        case .compareAndSet(let name, let expected, let value):
            writer.writeVarint(8)
            writer.writeString(name)
            writer.writeVarint(expected)
            writer.writeBytes(value)
        case .delete(let name, let expected):
            writer.writeVarint(9)
            writer.writeString(name)
            writer.writeOptional(expected) { $0.writeVarint($1) }
        case .grantLease(let ttl, let now):
            writer.writeVarint(10)
            writer.writeVarint(ttl)
            writer.writeVarint(now)
        case .keepAlive(let lease, let now):
            writer.writeVarint(11)
            lease.write(to: &writer)
            writer.writeVarint(now)
        case .revokeLease(let lease):
            writer.writeVarint(12)
            lease.write(to: &writer)
        case .expireLeases(let now):
            writer.writeVarint(13)
            writer.writeVarint(now)
        case .renewAllLeases(let now):
            writer.writeVarint(14)
            writer.writeVarint(now)
        }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> NameCommand {
        switch try reader.readTag("NameCommand", below: 15) {
        case 0:
            return .allocatePID(
                node: try reader.readName(), address: try reader.readName(),
                parent: try reader.readOptional(GlobalPID.read), startTimeMillis: try reader.readVarint(),
                lease: try reader.readOptional(LeaseID.read))
        case 1: return .setProcessState(pid: try .read(from: &reader), state: try .read(from: &reader))
        case 2: return .rebindProcess(pid: try .read(from: &reader), node: try reader.readName(), address: try reader.readName())
        case 3: return .exitProcess(pid: try .read(from: &reader), status: try reader.readInt32())
        case 4: return .reapProcess(pid: try .read(from: &reader))
        case 5:
            return .create(name: try reader.readName(), value: try reader.readBytes(), lease: try reader.readOptional(LeaseID.read))
        case 6:
            return .createSequential(prefix: try reader.readName(), value: try reader.readBytes(), lease: try reader.readOptional(LeaseID.read))
        case 7:
            return .put(name: try reader.readName(), value: try reader.readBytes(), lease: try reader.readOptional(LeaseID.read))
        case 8:
            return .compareAndSet(name: try reader.readName(), expectedVersion: try reader.readVarint(), value: try reader.readBytes())
        case 9:
            return .delete(name: try reader.readName(), expectedVersion: try reader.readOptional { (r: inout ByteReader) throws(DecodeError) in try r.readVarint() })
        case 10: return .grantLease(ttlMillis: try reader.readVarint(), nowMillis: try reader.readVarint())
        case 11: return .keepAlive(lease: try .read(from: &reader), nowMillis: try reader.readVarint())
        case 12: return .revokeLease(lease: try .read(from: &reader))
        case 13: return .expireLeases(nowMillis: try reader.readVarint())
        default: return .renewAllLeases(nowMillis: try reader.readVarint())
        }
    }
}

// MARK: - Results

extension NameOutput: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        switch self {
        case .allocated(let pid):
            writer.writeVarint(0)
            pid.write(to: &writer)
        case .process(let record):
            writer.writeVarint(1)
            record.write(to: &writer)
        case .reaped(let pid):
            writer.writeVarint(2)
            pid.write(to: &writer)
        case .written(let entry):
            writer.writeVarint(3)
            entry.write(to: &writer)
        case .deleted(let name, let revision):
            writer.writeVarint(4)
            writer.writeString(name)
            writer.writeVarint(revision)
        case .lease(let id, let ttl, let expires):
            writer.writeVarint(5)
            id.write(to: &writer)
            writer.writeVarint(ttl)
            writer.writeVarint(expires)
        case .leaseRevoked(let id):
            writer.writeVarint(6)
            id.write(to: &writer)
        case .leasesExpired(let ids):
            writer.writeVarint(7)
            writer.writeArray(ids) { $1.write(to: &$0) }
        case .leasesRenewed(let count):
            writer.writeVarint(8)
            writer.writeVarint(count)
        }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> NameOutput {
        switch try reader.readTag("NameOutput", below: 9) {
        case 0: return .allocated(try .read(from: &reader))
        case 1: return .process(try .read(from: &reader))
        case 2: return .reaped(try .read(from: &reader))
        case 3: return .written(try .read(from: &reader))
        case 4: return .deleted(name: try reader.readName(), revision: try reader.readVarint())
        case 5: return .lease(id: try .read(from: &reader), ttlMillis: try reader.readVarint(), expiresAtMillis: try reader.readVarint())
        case 6: return .leaseRevoked(try .read(from: &reader))
        case 7: return .leasesExpired(try reader.readArray(LeaseID.read))
        default: return .leasesRenewed(count: try reader.readVarint())
        }
    }
}

extension NameError: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        switch self {
        case .nameExists(let name):
            writer.writeVarint(0)
            writer.writeString(name)
        case .nameNotFound(let name):
            writer.writeVarint(1)
            writer.writeString(name)
        case .versionMismatch(let name, let expected, let found):
            writer.writeVarint(2)
            writer.writeString(name)
            writer.writeVarint(expected)
            writer.writeVarint(found)
        case .invalidName(let name, let reason):
            writer.writeVarint(3)
            writer.writeString(name)
            writer.writeString(reason)
        case .leaseNotFound(let id):
            writer.writeVarint(4)
            id.write(to: &writer)
        case .processNotFound(let pid):
            writer.writeVarint(5)
            pid.write(to: &writer)
        case .invalidTransition(let pid, let from, let to):
            writer.writeVarint(6)
            pid.write(to: &writer)
            from.write(to: &writer)
            to.write(to: &writer)
        case .staleRequest(let client, let request, let latest):
            writer.writeVarint(7)
            writer.writeVarint(client)
            writer.writeVarint(request)
            writer.writeVarint(latest)
        case .compacted(let requested, let oldest):
            writer.writeVarint(8)
            writer.writeVarint(requested)
            writer.writeVarint(oldest)
        case .invalidArgument(let what):
            writer.writeVarint(9)
            writer.writeString(what)
        case .malformedCommand(let why):
            writer.writeVarint(10)
            writer.writeString(why)
        }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> NameError {
        switch try reader.readTag("NameError", below: 11) {
        case 0: return .nameExists(try reader.readName())
        case 1: return .nameNotFound(try reader.readName())
        case 2: return .versionMismatch(name: try reader.readName(), expected: try reader.readVarint(), found: try reader.readVarint())
        case 3: return .invalidName(try reader.readName(), reason: try reader.readName())
        case 4: return .leaseNotFound(try .read(from: &reader))
        case 5: return .processNotFound(try .read(from: &reader))
        case 6: return .invalidTransition(pid: try .read(from: &reader), from: try .read(from: &reader), to: try .read(from: &reader))
        case 7: return .staleRequest(clientID: try reader.readVarint(), requestID: try reader.readVarint(), latest: try reader.readVarint())
        case 8: return .compacted(requested: try reader.readVarint(), oldestAvailable: try reader.readVarint())
        case 9: return .invalidArgument(try reader.readName())
        default: return .malformedCommand(try reader.readName())
        }
    }
}

extension Result: ByteCodable where Success: ByteCodable, Failure: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        switch self {
        case .success(let value):
            writer.writeVarint(0)
            value.write(to: &writer)
        case .failure(let error):
            writer.writeVarint(1)
            error.write(to: &writer)
        }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> Result<Success, Failure> {
        try reader.readTag("Result", below: 2) == 0 ? .success(try .read(from: &reader)) : .failure(try .read(from: &reader))
    }
}

// MARK: - Queries

extension NameQuery: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        switch self {
        case .process(let pid):
            writer.writeVarint(0)
            pid.write(to: &writer)
        case .get(let name):
            writer.writeVarint(1)
            writer.writeString(name)
        case .children(let path):
            writer.writeVarint(2)
            writer.writeString(path)
        case .watch(let from, let prefix, let limit):
            writer.writeVarint(3)
            writer.writeVarint(from)
            writer.writeOptional(prefix) { $0.writeString($1) }
            writer.writeVarint(limit)
        case .lease(let id):
            writer.writeVarint(4)
            id.write(to: &writer)
        case .processes(let after, let limit):
            writer.writeVarint(5)
            after.write(to: &writer)
            writer.writeVarint(limit)
        }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> NameQuery {
        switch try reader.readTag("NameQuery", below: 6) {
        case 0: return .process(try .read(from: &reader))
        case 1: return .get(name: try reader.readName())
        case 2: return .children(of: try reader.readName())
        case 3:
            return .watch(
                fromRevision: try reader.readVarint(),
                prefix: try reader.readOptional { (r: inout ByteReader) throws(DecodeError) in try r.readName() },
                limit: try reader.readVarint())
        case 4: return .lease(try .read(from: &reader))
        default: return .processes(after: try .read(from: &reader), limit: try reader.readVarint())
        }
    }
}

extension ChildName: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        writer.writeString(name)
        writer.writeBool(isEntry)
        writer.writeBool(hasChildren)
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> ChildName {
        ChildName(name: try reader.readName(), isEntry: try reader.readBool(), hasChildren: try reader.readBool())
    }
}

extension WatchBatch: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        writer.writeArray(events) { $1.write(to: &$0) }
        writer.writeVarint(nextRevision)
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> WatchBatch {
        WatchBatch(events: try reader.readArray(WatchEvent.read), nextRevision: try reader.readVarint())
    }
}

extension NameQueryOutput: ByteCodable {
    public func write(to writer: inout ByteWriter) {
        switch self {
        case .process(let record):
            writer.writeVarint(0)
            record.write(to: &writer)
        case .entry(let entry):
            writer.writeVarint(1)
            entry.write(to: &writer)
        case .children(let children):
            writer.writeVarint(2)
            writer.writeArray(children) { $1.write(to: &$0) }
        case .events(let batch):
            writer.writeVarint(3)
            batch.write(to: &writer)
        case .lease(let lease):
            writer.writeVarint(4)
            lease.write(to: &writer)
        case .processes(let records):
            writer.writeVarint(5)
            writer.writeArray(records) { $1.write(to: &$0) }
        }
    }

    public static func read(from reader: inout ByteReader) throws(DecodeError) -> NameQueryOutput {
        switch try reader.readTag("NameQueryOutput", below: 6) {
        case 0: return .process(try .read(from: &reader))
        case 1: return .entry(try .read(from: &reader))
        case 2: return .children(try reader.readArray(ChildName.read))
        case 3: return .events(try .read(from: &reader))
        case 4: return .lease(try .read(from: &reader))
        default: return .processes(try reader.readArray(ProcessRecord.read))
        }
    }
}

// MARK: - Snapshot

extension NameServiceState {
    static let snapshotMagic: [UInt8] = Array("PXNS".utf8)
    static let snapshotVersion: UInt64 = 1

    /// The whole state as bytes, for `RaftCore.onCompact`. Equal states give
    /// equal bytes.
    public func snapshotBytes() -> [UInt8] {
        var writer = ByteWriter()
        writer.writeRaw(Self.snapshotMagic)
        writer.writeVarint(Self.snapshotVersion)
        writer.writeVarint(UInt64(limits.maxSessions))
        writer.writeVarint(UInt64(limits.eventLogCapacity))
        writer.writeVarint(UInt64(limits.maxNameBytes))
        writer.writeVarint(UInt64(limits.maxValueBytes))
        writer.writeVarint(nextPID)
        writer.writeArray(processes.keys.sorted()) { processes[$1]!.write(to: &$0) }
        writer.writeArray(names.keys.sorted()) { names[$1]!.write(to: &$0) }
        writer.writeVarint(revision)
        writer.writeVarint(compactedRevision)
        writer.writeArray(events) { $1.write(to: &$0) }
        writer.writeArray(sequenceCounters.keys.sorted()) { writer, key in
            writer.writeString(key)
            writer.writeVarint(sequenceCounters[key]!)
        }
        writer.writeArray(leases.keys.sorted()) { leases[$1]!.write(to: &$0) }
        writer.writeVarint(nextLeaseID)
        writer.writeArray(sessions.keys.sorted()) { writer, client in
            let session = sessions[client]!
            writer.writeVarint(client)
            writer.writeVarint(session.lastRequestID)
            session.result.write(to: &writer)
            writer.writeVarint(session.lastUsed)
        }
        writer.writeVarint(appliedCommands)
        return writer.bytes
    }

    /// Restores a state from `snapshotBytes()`, checking its internal
    /// consistency so that a corrupt snapshot is refused rather than served.
    public init(snapshotBytes bytes: [UInt8]) throws(DecodeError) {
        guard bytes.count <= ByteCodecLimits.maxSnapshotBytes else {
            throw .oversized(length: bytes.count, limit: ByteCodecLimits.maxSnapshotBytes)
        }
        var reader = ByteReader(bytes)
        for byte in Self.snapshotMagic {
            guard try reader.readByte() == byte else { throw .badHeader }
        }
        guard try reader.readVarint() == Self.snapshotVersion else { throw .badHeader }
        func count(_ raw: UInt64, _ field: String, minimum: UInt64) throws(DecodeError) -> Int {
            guard raw >= minimum, raw <= UInt64(Int32.max) else { throw .invalidValue("\(field) = \(raw)") }
            return Int(raw)
        }
        let limits = Limits(
            maxSessions: try count(try reader.readVarint(), "maxSessions", minimum: 1),
            eventLogCapacity: try count(try reader.readVarint(), "eventLogCapacity", minimum: 1),
            maxNameBytes: try count(try reader.readVarint(), "maxNameBytes", minimum: 2),
            maxValueBytes: try count(try reader.readVarint(), "maxValueBytes", minimum: 0))
        var state = NameServiceState(limits: limits)
        state.nextPID = try reader.readVarint()
        for record in try reader.readArray(ProcessRecord.read) {
            guard record.pid.rawValue > 0, record.pid.rawValue < state.nextPID, state.processes[record.pid] == nil else {
                throw .invalidValue("process table entry \(record.pid)")
            }
            state.processes[record.pid] = record
        }
        for entry in try reader.readArray(NameEntry.read) {
            guard state.names[entry.name] == nil else { throw .invalidValue("duplicate name \(entry.name)") }
            state.names[entry.name] = entry
        }
        state.revision = try reader.readVarint()
        state.compactedRevision = try reader.readVarint()
        state.events = try reader.readArray(WatchEvent.read)
        for (offset, event) in state.events.enumerated() where event.revision != state.compactedRevision + 1 + UInt64(offset) {
            throw .invalidValue("event revision \(event.revision) out of sequence")
        }
        guard state.compactedRevision + UInt64(state.events.count) == state.revision else {
            throw .invalidValue("event log does not end at revision \(state.revision)")
        }
        let counters = try reader.readArray { (r: inout ByteReader) throws(DecodeError) -> (String, UInt64) in
            (try r.readName(), try r.readVarint())
        }
        for (key, value) in counters { state.sequenceCounters[key] = value }
        for lease in try reader.readArray(Lease.read) {
            guard state.leases[lease.id] == nil else { throw .invalidValue("duplicate \(lease.id)") }
            state.leases[lease.id] = lease
        }
        state.nextLeaseID = try reader.readVarint()
        let sessions = try reader.readArray { (r: inout ByteReader) throws(DecodeError) -> (UInt64, Session) in
            let client = try r.readVarint()
            return (client, Session(lastRequestID: try r.readVarint(), result: try NameResult.read(from: &r), lastUsed: try r.readVarint()))
        }
        for (client, session) in sessions { state.sessions[client] = session }
        state.appliedCommands = try reader.readVarint()
        try reader.expectEnd()
        self = state
    }
}
