#if canImport(Glibc)
import Glibc
#endif
import Foundation
@testable import NameService
import NamesCore
import Testing
import TestSupport

/// ReplicaStorage in-process: recovery equals what was persisted, a torn
/// or corrupt tail is cut wherever it is cut, injected disk errors surface as
/// typed errors; client-protocol decoders refuse every malformed input.
@Suite struct StorageTests {
    func temporaryDirectory() -> String {
        NSTemporaryDirectory() + "plexus-storage-\(UInt32.random(in: 0...UInt32.max))"
    }

    func entry(_ index: UInt64, term: UInt64 = 1) -> LogEntry {
        LogEntry(index: index, term: term, payload: .command(clientID: 7, requestID: index, data: Array(repeating: UInt8(index & 0xFF), count: 20)))
    }

    func ready(entries: [LogEntry], hard: HardState? = nil, truncateFrom: UInt64? = nil, snapshot: RaftSnapshot? = nil) -> RaftReady {
        var r = RaftReady()
        r.entriesToAppend = entries
        r.hardState = hard
        r.logTruncateFrom = truncateFrom
        r.snapshot = snapshot
        return r
    }

    @Test func recoveryReturnsExactlyWhatWasPersisted() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        var expected = RaftPersistentState()
        do {
            let storage = try ReplicaStorage(directory: dir)
            #expect(try storage.load().state == RaftPersistentState())
            let batches = [
                ready(entries: [entry(1), entry(2), entry(3)], hard: HardState(term: 1, votedFor: 2)),
                ready(entries: [entry(3, term: 2), entry(4, term: 2)], hard: HardState(term: 2, votedFor: nil), truncateFrom: 3),
                ready(entries: [], snapshot: RaftSnapshot(lastIncludedIndex: 2, lastIncludedTerm: 1, members: [1, 2, 3], data: [9, 9])),
                ready(entries: [entry(5, term: 2)]),
            ]
            for b in batches {
                try storage.persist(b)
                expected.persist(b)
            }
        }
        let recovered = try ReplicaStorage(directory: dir).load()
        #expect(recovered.state == expected)
        #expect(recovered.discardedBytes == 0)
        #expect(recovered.state.entries.map(\.index) == [3, 4, 5])
    }

    /// Cut the last record at every byte: recovery keeps exactly the records
    /// before it and never applies a partial one.
    @Test func tornTailIsCutAtEveryLength() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let storage = try ReplicaStorage(directory: dir)
            _ = try storage.load()
            try storage.persist(ready(entries: [entry(1), entry(2)], hard: HardState(term: 1, votedFor: 1)))
        }
        let wal = dir + "/wal"
        let full = try [UInt8](Data(contentsOf: URL(fileURLWithPath: wal)))
        var lastRecordStart = 0
        var offset = 0
        while let record = ReplicaStorage.unframe(full, at: offset) {
            lastRecordStart = offset
            offset = record.end
        }
        #expect(offset == full.count)
        for cut in lastRecordStart..<full.count {
            try Data(full[0..<cut]).write(to: URL(fileURLWithPath: wal))
            let recovered = try ReplicaStorage(directory: dir).load()
            // The last record is the hard state; the entries survive intact.
            #expect(recovered.state.entries == [entry(1), entry(2)])
            #expect(recovered.state.hardState == HardState())
            #expect(recovered.discardedBytes == cut - lastRecordStart)
            let size = (try FileManager.default.attributesOfItem(atPath: wal)[.size] as? Int) ?? -1
            #expect(size == lastRecordStart, "the torn tail must be truncated on disk")
        }
    }

    @Test func flippedByteInTheTailFailsTheChecksum() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let storage = try ReplicaStorage(directory: dir)
            _ = try storage.load()
            for i in 1...5 { try storage.persist(ready(entries: [entry(UInt64(i))])) }
        }
        let wal = dir + "/wal"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: wal)))
        bytes[bytes.count - 3] ^= 0x40
        try Data(bytes).write(to: URL(fileURLWithPath: wal))
        let recovered = try ReplicaStorage(directory: dir).load()
        #expect(recovered.state.entries.map(\.index) == [1, 2, 3, 4])
        #expect(recovered.discardReason?.contains("checksum") == true)
    }

    @Test func corruptSnapshotStopsStartupWithAClearError() throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let storage = try ReplicaStorage(directory: dir)
            _ = try storage.load()
            try storage.persist(ready(entries: [entry(1)]))
            try storage.persist(ready(entries: [], snapshot: RaftSnapshot(lastIncludedIndex: 1, lastIncludedTerm: 1, members: [1], data: [1, 2, 3])))
        }
        let path = dir + "/snapshot"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[bytes.count - 1] ^= 1
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        #expect(throws: StorageError.corrupt(path: path, reason: "length or checksum mismatch")) {
            _ = try ReplicaStorage(directory: dir).load()
        }
    }

    @Test(arguments: [ENOSPC, EROFS, EIO])
    func diskErrorsAreTypedAndSayWhatToDo(code: Int32) throws {
        let dir = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let faults = StorageFaults()
        let storage = try ReplicaStorage(directory: dir, faults: faults)
        _ = try storage.load()
        try storage.persist(ready(entries: [entry(1)]))
        faults.failWrites(with: code)
        do {
            try storage.persist(ready(entries: [entry(2)]))
            Issue.record("persist must fail")
        } catch {
            guard case .system(let call, _, let e) = error else { Issue.record("\(error)"); return }
            #expect(call == "write" && e == code)
            let advice = ["free space", "read-only", "failing"]
            #expect(advice.contains { error.description.contains($0) }, "\(error)")
        }
    }

    @Test func unwritableDataDirectoryIsRefusedAtStart() {
        #expect(throws: StorageError.self) { _ = try ReplicaStorage(directory: "/proc/plexus-no-such-dir") }
    }
}

@Suite struct ClientProtocolCodecTests {
    static let samples: [ClientRequest] = [
        .command(clientID: 1, requestID: 2, command: .put(name: "/a", value: [1, 2], lease: nil), timeoutMillis: 500),
        .command(clientID: 9, requestID: 1, command: .allocatePID(node: "n", address: "a", parent: GlobalPID(3), startTimeMillis: 5, lease: nil),
                 timeoutMillis: 1),
        .query(.get(name: "/a/b"), timeoutMillis: 100),
        .query(.processes(after: GlobalPID(4), limit: 10), timeoutMillis: 100),
        .status,
        .isolate([1, 2]),
        .membership(clientID: 3, requestID: 4, change: .add(4, address: "127.0.0.1:7404"), timeoutMillis: 1000),
        .membership(clientID: 3, requestID: 5, change: .remove(2), timeoutMillis: 1000),
    ]
    static let responses: [ClientResponse] = [
        .result(.success(.allocated(GlobalPID(5)))),
        .result(.failure(.nameNotFound("/x"))),
        .queryResult(.success(.children([ChildName(name: "/a", isEntry: true, hasChildren: false)]))),
        .status(ReplicaStatus(id: 1, role: "leader", term: 3, leader: 1, commitIndex: 4, appliedIndex: 4, lastLogIndex: 5,
                              snapshotIndex: 0, members: [1, 2, 3], quorum: "leading", storageFailure: nil,
                              addresses: [1: "127.0.0.1:1"])),
        .notLeader(leaderHint: 2, leaderAddress: "127.0.0.1:2"),
        .noQuorum(reachable: 1, members: 3, needed: 2),
        .unavailable(reason: "x", mayHaveTakenEffect: true, storageFailure: false),
        .done,
        .membershipChanged(index: 9, members: [1, 2, 4], addresses: [1: "127.0.0.1:1", 4: "127.0.0.1:4"]),
        .membershipRefused(reason: "r4 is already a member"),
        .notMember(reason: "replica r3 was removed"),
    ]

    @Test func roundTripsAndRejectsEveryTruncation() throws {
        for request in Self.samples {
            let bytes = request.encoded()
            #expect(try ClientRequest(decoding: bytes) == request)
            for cut in 0..<bytes.count {
                #expect(throws: DecodeError.self) { _ = try ClientRequest(decoding: Array(bytes[0..<cut])) }
            }
            #expect(throws: DecodeError.self) { _ = try ClientRequest(decoding: bytes + [0]) }
        }
        for response in Self.responses {
            let bytes = response.encoded()
            #expect(try ClientResponse(decoding: bytes) == response)
            for cut in 0..<bytes.count {
                #expect(throws: DecodeError.self) { _ = try ClientResponse(decoding: Array(bytes[0..<cut])) }
            }
        }
    }

    @Test func rejectsOversizedAndUnknownInput() {
        #expect(throws: DecodeError.self) {
            _ = try ClientRequest(decoding: [UInt8](repeating: 2, count: maxClientPayload + 1), limit: maxClientPayload)
        }
        #expect(throws: DecodeError.unknownTag(type: "ClientRequest", tag: 9)) { _ = try ClientRequest(decoding: [9]) }
        #expect(throws: DecodeError.unknownTag(type: "ClientResponse", tag: 10)) { _ = try ClientResponse(decoding: [10]) }
        // A length claiming more bytes than follow is refused before allocating.
        #expect(throws: DecodeError.self) { _ = try ClientResponse(decoding: [5, 0xFF, 0xFF, 0xFF, 0x7F]) }
    }

    @Test func malformedMembershipRequestsAreRefused() {
        func request(_ change: [UInt8]) -> [UInt8] { [4, 1, 1] + change + [5] }
        // Replica id 0 and ids of 2^32 and more (client connection ids) are not replica ids.
        #expect(throws: DecodeError.self) { _ = try ClientRequest(decoding: request([1, 0])) }
        #expect(throws: DecodeError.self) { _ = try ClientRequest(decoding: request([1, 0x80, 0x80, 0x80, 0x80, 0x10])) }
        #expect((try? ClientRequest(decoding: request([1, 7]))) == .membership(clientID: 1, requestID: 1, change: .remove(7), timeoutMillis: 5))
        // An add without an address, or with an unknown change kind.
        #expect(throws: DecodeError.self) { _ = try ClientRequest(decoding: request([0, 4, 0])) }
        #expect(throws: DecodeError.unknownTag(type: "MembershipRequest", tag: 2)) { _ = try ClientRequest(decoding: request([2, 4])) }
        // An address longer than any IP:PORT is refused before it is read.
        #expect(throws: DecodeError.self) { _ = try ClientRequest(decoding: request([0, 4, 0x81, 0x02] + [UInt8](repeating: 0x31, count: 257))) }
        // Responses: members out of order, a member id of 0.
        #expect(throws: DecodeError.self) { _ = try ClientResponse(decoding: [7, 1, 2, 2, 1, 0]) }
        #expect(throws: DecodeError.self) { _ = try ClientResponse(decoding: [7, 1, 1, 0, 0]) }
    }

    @Test func randomBytesNeverTrap() {
        var rng = SplitMix64(seed: 0x5EED)
        for _ in 0..<20_000 {
            let n = Int(rng.next() % 40)
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? ClientRequest(decoding: bytes)
            _ = try? ClientResponse(decoding: bytes)
        }
    }

    @Test func replicaListParsingSaysWhatIsWrong() {
        #expect(throws: NameServiceError.self) { _ = try ReplicaConfiguration.parseReplicas("1=127.0.0.1:0") }
        #expect(throws: NameServiceError.self) { _ = try ReplicaConfiguration.parseReplicas("x=127.0.0.1:1") }
        #expect(throws: NameServiceError.self) { _ = try ReplicaConfiguration.parseReplicas("1=127.0.0.1:1,1=127.0.0.1:2") }
        #expect((try? ReplicaConfiguration.parseReplicas("1=127.0.0.1:5,2=localhost:6"))?.count == 2)
    }
}
