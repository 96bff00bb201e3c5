import Testing
@testable import NamesCore

/// Round-trip and robustness tests for every decoder: random values must
/// round-trip; truncated, oversized, random and mutated inputs must be refused
/// (or decode to a value that re-encodes stably), never crash.

private struct Gen {
    var rng: SeededGenerator
    init(_ seed: UInt64) { rng = SeededGenerator(seed: seed) }

    mutating func int(_ bound: Int) -> Int { Int(rng.next() % UInt64(bound)) }
    mutating func u64() -> UInt64 {
        switch int(4) {
        case 0: UInt64(int(3))
        case 1: UInt64(int(300))
        case 2: rng.next() >> UInt64(int(64))
        default: UInt64.max - UInt64(int(2))
        }
    }
    mutating func bool() -> Bool { int(2) == 0 }
    mutating func bytes() -> [UInt8] { (0..<int(12)).map { _ in UInt8(truncatingIfNeeded: rng.next()) } }
    mutating func string() -> String {
        let pieces = ["/", "a", "jobs", "é", "🙂", "-", "0", "queue/item-", "x"]
        return (0..<int(6)).map { _ in pieces[int(pieces.count)] }.joined()
    }
    mutating func maybe<T>(_ make: (inout Gen) -> T) -> T? { bool() ? make(&self) : nil }
    mutating func pid() -> GlobalPID { GlobalPID(u64()) }
    mutating func lease() -> LeaseID { LeaseID(u64()) }
    mutating func state() -> ProcessState { ProcessState.allCases[int(5)] }

    mutating func command() -> NameCommand {
        switch int(15) {
        case 0: .allocatePID(node: string(), address: string(), parent: maybe { $0.pid() }, startTimeMillis: u64(), lease: maybe { $0.lease() })
        case 1: .setProcessState(pid: pid(), state: state())
        case 2: .rebindProcess(pid: pid(), node: string(), address: string())
        case 3: .exitProcess(pid: pid(), status: Int32(truncatingIfNeeded: rng.next()))
        case 4: .reapProcess(pid: pid())
        case 5: .create(name: string(), value: bytes(), lease: maybe { $0.lease() })
        case 6: .createSequential(prefix: string(), value: bytes(), lease: maybe { $0.lease() })
        case 7: .put(name: string(), value: bytes(), lease: maybe { $0.lease() })
        case 8: .compareAndSet(name: string(), expectedVersion: u64(), value: bytes())
        case 9: .delete(name: string(), expectedVersion: maybe { $0.u64() })
        case 10: .grantLease(ttlMillis: u64(), nowMillis: u64())
        case 11: .keepAlive(lease: lease(), nowMillis: u64())
        case 12: .revokeLease(lease: lease())
        case 13: .expireLeases(nowMillis: u64())
        default: .renewAllLeases(nowMillis: u64())
        }
    }

    mutating func record() -> ProcessRecord {
        ProcessRecord(pid: pid(), node: string(), address: string(), state: state(), parent: maybe { $0.pid() },
                      startTimeMillis: u64(), exitStatus: maybe { Int32(truncatingIfNeeded: $0.rng.next()) }, lease: maybe { $0.lease() })
    }

    mutating func entry() -> NameEntry {
        NameEntry(name: string(), value: bytes(), version: u64(), createRevision: u64(), modRevision: u64(), lease: maybe { $0.lease() })
    }

    mutating func result() -> NameResult {
        if bool() {
            switch int(9) {
            case 0: return .success(.allocated(pid()))
            case 1: return .success(.process(record()))
            case 2: return .success(.reaped(pid()))
            case 3: return .success(.written(entry()))
            case 4: return .success(.deleted(name: string(), revision: u64()))
            case 5: return .success(.lease(id: lease(), ttlMillis: u64(), expiresAtMillis: u64()))
            case 6: return .success(.leaseRevoked(lease()))
            case 7: return .success(.leasesExpired((0..<int(4)).map { _ in lease() }))
            default: return .success(.leasesRenewed(count: u64()))
            }
        }
        switch int(11) {
        case 0: return .failure(.nameExists(string()))
        case 1: return .failure(.nameNotFound(string()))
        case 2: return .failure(.versionMismatch(name: string(), expected: u64(), found: u64()))
        case 3: return .failure(.invalidName(string(), reason: string()))
        case 4: return .failure(.leaseNotFound(lease()))
        case 5: return .failure(.processNotFound(pid()))
        case 6: return .failure(.invalidTransition(pid: pid(), from: state(), to: state()))
        case 7: return .failure(.staleRequest(clientID: u64(), requestID: u64(), latest: u64()))
        case 8: return .failure(.compacted(requested: u64(), oldestAvailable: u64()))
        case 9: return .failure(.invalidArgument(string()))
        default: return .failure(.malformedCommand(string()))
        }
    }

    mutating func query() -> NameQuery {
        switch int(6) {
        case 0: .process(pid())
        case 1: .get(name: string())
        case 2: .children(of: string())
        case 3: .watch(fromRevision: u64(), prefix: maybe { $0.string() }, limit: u64())
        case 4: .lease(lease())
        default: .processes(after: pid(), limit: u64())
        }
    }

    mutating func queryResult() -> NameQueryResult {
        switch int(7) {
        case 0: .success(.process(record()))
        case 1: .success(.entry(entry()))
        case 2: .success(.children((0..<int(3)).map { _ in ChildName(name: string(), isEntry: bool(), hasChildren: bool()) }))
        case 3: .success(.events(WatchBatch(events: (0..<int(3)).map { _ in
            WatchEvent(revision: u64(), kind: [.nameCreated(entry()), .nameUpdated(entry()), .nameDeleted(name: string(), lease: maybe { $0.lease() }),
                                              .processChanged(record()), .processReaped(pid()), .leaseEnded(lease(), expired: bool())][int(6)])
        }, nextRevision: u64())))
        case 4: .success(.lease(Lease(id: lease(), ttlMillis: u64(), expiresAtMillis: u64(), names: Set((0..<int(3)).map { _ in string() }),
                                      pids: Set((0..<int(3)).map { _ in pid() }))))
        case 5: .success(.processes((0..<int(3)).map { _ in record() }))
        default: .failure(.nameNotFound(string()))
        }
    }

    mutating func logEntry(index: UInt64, term: UInt64) -> LogEntry {
        let payload: EntryPayload = switch int(3) {
        case 0: .noop
        case 1: .command(clientID: u64(), requestID: u64(), data: bytes())
        default: .configuration(members: Array(Set((0..<int(4)).map { _ in ReplicaID(UInt64(int(9))) })).sorted(),
                                context: bool() ? ConfigurationContext() : context())
        }
        return LogEntry(index: index, term: term, payload: payload)
    }

    mutating func context() -> ConfigurationContext {
        var addresses: [ReplicaID: String] = [:]
        for _ in 0..<int(4) { addresses[ReplicaID(UInt64(int(9)))] = string() }
        // Never all empty: that is the plain configuration encoding.
        return ConfigurationContext(addresses: addresses, clientID: u64(), requestID: 1 + UInt64(int(100)))
    }

    mutating func message() -> RaftMessage {
        let term = UInt64(int(1000)) + 1
        switch int(6) {
        case 0: return .voteRequest(VoteRequest(term: term, lastLogIndex: u64(), lastLogTerm: u64(), isPreVote: bool()))
        case 1: return .voteResponse(VoteResponse(term: term, granted: bool(), isPreVote: bool()))
        case 2:
            let prev = UInt64(int(1000))
            return .appendEntries(AppendEntries(
                term: term, prevLogIndex: prev, prevLogTerm: UInt64(int(Int(term))),
                entries: (0..<int(4)).map { logEntry(index: prev + 1 + UInt64($0), term: term) },
                leaderCommit: u64(), readSequence: u64()))
        case 3: return .appendResponse(AppendResponse(term: term, success: bool(), index: u64(), readSequence: u64()))
        case 4:
            return .installSnapshot(InstallSnapshot(term: term, snapshot: RaftSnapshot(
                lastIncludedIndex: u64(), lastIncludedTerm: u64(), members: [1, 2, 3], data: bytes(),
                context: bool() ? ConfigurationContext() : context()), readSequence: u64()))
        default: return .snapshotResponse(SnapshotResponse(term: term, matchIndex: u64(), readSequence: u64()))
        }
    }

    /// A random mutation of a valid encoding.
    mutating func mutate(_ input: [UInt8]) -> [UInt8] {
        var bytes = input
        for _ in 0..<(1 + int(3)) {
            switch int(6) {
            case 0 where !bytes.isEmpty: bytes[int(bytes.count)] ^= UInt8(1 << int(8))
            case 1 where !bytes.isEmpty: bytes[int(bytes.count)] = UInt8(truncatingIfNeeded: rng.next())
            case 2 where !bytes.isEmpty: bytes.removeLast(1 + int(bytes.count))
            case 3: bytes.insert(UInt8(truncatingIfNeeded: rng.next()), at: int(bytes.count + 1))
            case 4 where !bytes.isEmpty: bytes[int(bytes.count)] = [0x00, 0x7F, 0x80, 0xFF][int(4)]
            default: bytes += (0..<int(4)).map { _ in 0xFF }
            }
        }
        return bytes
    }
}

/// Decodes `bytes` as `T`; if that succeeds the value must re-encode and decode to itself.
private func checkDecode<T: ByteCodable & Equatable>(_: T.Type, _ bytes: [UInt8]) -> Bool {
    guard let value = try? T(decoding: bytes) else { return false }
    let again = try? T(decoding: value.encoded())
    #expect(again == value)
    return true
}

@Suite("Codecs")
struct CodecFuzzTests {
    @Test("random commands, results, queries and Raft messages round-trip")
    func roundTrip() throws {
        var gen = Gen(1)
        for _ in 0..<3000 {
            let command = gen.command()
            #expect(try NameCommand(decoding: command.encoded()) == command)
            let result = gen.result()
            #expect(try NameResult(decoding: result.encoded()) == result)
            let query = gen.query()
            #expect(try NameQuery(decoding: query.encoded()) == query)
            let answer = gen.queryResult()
            #expect(try NameQueryResult(decoding: answer.encoded()) == answer)
            let message = gen.message()
            #expect(try RaftMessage(decoding: message.encoded()) == message)
        }
        let hard = HardState(term: 7, votedFor: 3)
        #expect(try HardState(decoding: hard.encoded()) == hard)
    }

    @Test("every strict prefix of a valid encoding is refused as truncated or invalid")
    func truncation() {
        var gen = Gen(2)
        var checked = 0
        for _ in 0..<400 {
            let encodings: [([UInt8], ([UInt8]) -> Bool)] = [
                (gen.command().encoded(), { (try? NameCommand(decoding: $0)) != nil }),
                (gen.result().encoded(), { (try? NameResult(decoding: $0)) != nil }),
                (gen.message().encoded(), { (try? RaftMessage(decoding: $0)) != nil }),
            ]
            for (bytes, decodes) in encodings {
                #expect(decodes(bytes))
                for length in 0..<bytes.count {
                    #expect(!decodes(Array(bytes[..<length])), "prefix \(length) of \(bytes) decoded")
                    checked += 1
                }
            }
        }
        #expect(checked > 10_000)
    }

    @Test("oversized inputs, oversized lengths and overlong varints are refused before allocating")
    func oversized() {
        #expect(throws: DecodeError.oversized(length: 11, limit: 10)) { try NameCommand(decoding: [UInt8](repeating: 0, count: 11), limit: 10) }
        // A create whose name claims 2^62 bytes.
        #expect(throws: DecodeError.invalidLength(1 << 62)) { try NameCommand(decoding: [5, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]) }
        // An append claiming 2^40 entries.
        #expect(throws: DecodeError.self) { try RaftMessage(decoding: [2, 1, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x80, 0x20]) }
        // Varints longer than 64 bits.
        #expect(throws: DecodeError.malformedVarint) { try NameCommand(decoding: [13] + [UInt8](repeating: 0xFF, count: 10) + [1]) }
        #expect(throws: DecodeError.malformedVarint) { try NameCommand(decoding: [13, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02]) }
        #expect(throws: DecodeError.trailingBytes(1)) { try NameCommand(decoding: NameCommand.expireLeases(nowMillis: 1).encoded() + [0]) }
        #expect(throws: DecodeError.unknownTag(type: "NameCommand", tag: 99)) { try NameCommand(decoding: [99]) }
        #expect(throws: DecodeError.invalidUTF8) { try NameCommand(decoding: [5, 1, 0xFF, 0, 0]) }
    }

    @Test("configuration contexts: one encoding per value, and old encodings still read")
    func configurationContexts() throws {
        // A configuration without context keeps the original encoding (tag 2),
        // so logs written before contexts existed read as before.
        let plain = LogEntry(index: 3, term: 1, payload: .configuration(members: [1, 2]))
        #expect(plain.encoded() == [3, 1, 2, 2, 1, 2])
        let withContext = LogEntry(index: 3, term: 1, payload: .configuration(
            members: [1, 2], context: ConfigurationContext(addresses: [2: "h:2", 1: "h:1"], clientID: 4, requestID: 5)))
        #expect(try LogEntry(decoding: withContext.encoded()) == withContext)
        // Tag 3 with an empty context would be a second encoding of a plain one.
        #expect(throws: DecodeError.self) { try LogEntry(decoding: [3, 1, 3, 2, 1, 2, 0, 0, 0]) }
        // Addresses out of order or repeated are refused.
        #expect(throws: DecodeError.self) { try LogEntry(decoding: [3, 1, 3, 1, 1, 2, 2, 1, 0x61, 1, 1, 0x62, 0, 1]) }
        #expect(throws: DecodeError.self) { try LogEntry(decoding: [3, 1, 3, 1, 1, 2, 1, 1, 0x61, 1, 1, 0x62, 0, 1]) }
        // A snapshot file from before contexts (ending after its data) reads with an empty one.
        let old: [UInt8] = [7, 2, 2, 1, 2, 1, 9]
        #expect(try RaftSnapshot(decoding: old) == RaftSnapshot(lastIncludedIndex: 7, lastIncludedTerm: 2, members: [1, 2], data: [9]))
        let snapshot = RaftSnapshot(lastIncludedIndex: 7, lastIncludedTerm: 2, members: [1, 2], data: [9],
                                    context: ConfigurationContext(addresses: [1: "a"], clientID: 1, requestID: 1))
        #expect(try RaftSnapshot(decoding: snapshot.encoded()) == snapshot)
        for cut in old.count..<snapshot.encoded().count where cut != old.count {
            #expect(throws: DecodeError.self) { try RaftSnapshot(decoding: Array(snapshot.encoded()[..<cut])) }
        }
    }

    @Test("tens of thousands of random and mutated inputs never crash any decoder")
    func fuzz() throws {
        var gen = Gen(3)
        var state = NameServiceState()
        for i in 0..<5 { _ = state.apply(.put(name: "/f/\(i)", value: [UInt8(i)], lease: nil), clientID: 1, requestID: UInt64(i + 1)) }
        _ = state.apply(.allocatePID(node: "n", address: "a", parent: nil, startTimeMillis: 0, lease: nil), clientID: 2, requestID: 1)
        let snapshot = state.snapshotBytes()
        var accepted = 0
        var total = 0
        for round in 0..<12_000 {
            let random = (0..<gen.int(24)).map { _ in UInt8(truncatingIfNeeded: gen.rng.next()) }
            let seeds: [[UInt8]] = [random, gen.mutate(gen.command().encoded()), gen.mutate(gen.result().encoded()),
                                    gen.mutate(gen.message().encoded()), gen.mutate(gen.query().encoded())]
            for bytes in seeds {
                total += 1
                if checkDecode(NameCommand.self, bytes) { accepted += 1 }
                if checkDecode(NameResult.self, bytes) { accepted += 1 }
                if checkDecode(RaftMessage.self, bytes) { accepted += 1 }
                if checkDecode(NameQuery.self, bytes) { accepted += 1 }
                if checkDecode(NameQueryResult.self, bytes) { accepted += 1 }
                if checkDecode(LogEntry.self, bytes) { accepted += 1 }
                // The state machine turns undecodable entries into a deterministic error.
                var copy = state
                if case .failure(.malformedCommand) = copy.apply(encoded: bytes, clientID: 9, requestID: UInt64(round + 1)) {
                    #expect((try? NameCommand(decoding: bytes)) == nil)
                }
            }
            if round % 4 == 0 {
                total += 1
                let mutated = gen.mutate(snapshot)
                if let restored = try? NameServiceState(snapshotBytes: mutated) {
                    #expect(try NameServiceState(snapshotBytes: restored.snapshotBytes()) == restored)
                }
            }
        }
        #expect(total > 60_000)
        // Some mutations are still valid encodings; most are not.
        #expect(accepted > 0 && accepted < total * 6)
    }
}
