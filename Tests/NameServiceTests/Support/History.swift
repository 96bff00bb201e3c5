import Foundation
import Lincheck
import NameService
import NamesCore
import Testing
import TestSupport

/// Records every client operation as Plexus JSON-lines history (the format
/// `plexus lincheck --model names` reads): invoke before the call, then ok,
/// fail (certainly did not happen) or info (outcome unknown: timeouts, lost
/// connections, no quorum after the request may have been proposed).
/// Lines are appended under one lock in the order events happen, so line
/// order is real-time order. Thread-safe.
final class HistoryRecorder: @unchecked Sendable {
    private let lines = Locked<[String]>([])
    /// PIDs whose allocation was acknowledged.
    let acknowledgedPIDs = Locked<[UInt64]>([])
    /// Acknowledged writes: key → values written (acknowledged).
    let acknowledgedValues = Locked<[String: Set<String>]>([:])
    let counts = Locked<[String: Int]>([:])

    var text: String { lines.value.joined(separator: "\n") + "\n" }

    private func append(_ fields: [(String, String)]) {
        let line = "{" + fields.map { "\"\($0.0)\":\($0.1)" }.joined(separator: ",") + "}"
        lines.withLock { $0.append(line) }
    }

    private static func quoted(_ s: String) -> String { "\"\(s)\"" }

    enum Op {
        case allocatePID
        case put(String, String)
        case cas(String, UInt64, String)
        case get(String)
        case create(String, String)
        case delete(String)

        var name: String {
            switch self {
            case .allocatePID: "allocate-pid"
            case .put: "put"
            case .cas: "cas"
            case .get: "get"
            case .create: "create"
            case .delete: "delete"
            }
        }
    }

    /// Runs `op` through `client`, recording invoke and completion. Returns the
    /// entry/PID on success, for the workload's next choice.
    @discardableResult
    func run(_ op: Op, client id: Int, on client: any NameServiceBackend) -> (entry: NameEntry?, pid: UInt64?, error: NameServiceError?) {
        var invoke: [(String, String)] = [("client", "\(id)"), ("type", Self.quoted("invoke")), ("op", Self.quoted(op.name))]
        switch op {
        case .allocatePID: break
        case .put(let k, let v), .create(let k, let v):
            invoke += [("key", Self.quoted(k)), ("value", Self.quoted(v))]
        case .cas(let k, let version, let v):
            invoke += [("key", Self.quoted(k)), ("value", Self.quoted(v)), ("version", "\(version)")]
        case .get(let k), .delete(let k):
            invoke.append(("key", Self.quoted(k)))
        }
        append(invoke)
        let done: [(String, String)] = [("client", "\(id)"), ("op", Self.quoted(op.name))]
        do throws(NameServiceError) {
            switch op {
            case .allocatePID:
                let pid = try client.allocatePID(node: "test", address: "client-\(id)", parent: nil)
                append(done + [("type", Self.quoted("ok")), ("value", "\(pid.rawValue)")])
                acknowledgedPIDs.withLock { $0.append(pid.rawValue) }
                bump("ok")
                return (nil, pid.rawValue, nil)
            case .put(let k, let v), .create(let k, let v), .cas(let k, _, let v):
                let entry: NameEntry
                switch op {
                case .put: entry = try client.put(k, value: Array(v.utf8))
                case .create: entry = try client.create(k, value: Array(v.utf8))
                case .cas(_, let version, _): entry = try client.compareAndSet(k, expectedVersion: version, value: Array(v.utf8))
                default: fatalError("unreachable")
                }
                append(done + [("type", Self.quoted("ok")), ("version", "\(entry.version)")])
                acknowledgedValues.withLock { _ = $0[k, default: []].insert(v) }
                bump("ok")
                return (entry, nil, nil)
            case .get(let k):
                let entry = try client.get(k)
                append(done + [("type", Self.quoted("ok")), ("value", Self.quoted(String(decoding: entry.value, as: UTF8.self))),
                               ("version", "\(entry.version)")])
                bump("ok")
                return (entry, nil, nil)
            case .delete(let k):
                try client.delete(k, expectedVersion: nil)
                append(done + [("type", Self.quoted("ok"))])
                bump("ok")
                return (nil, nil, nil)
            }
        } catch {
            let kind: String
            var errorField: [(String, String)] = []
            switch error {
            case .rejected(.versionMismatch): kind = "fail"; errorField = [("error", Self.quoted("version-mismatch"))]
            case .rejected(.nameNotFound): kind = "fail"; errorField = [("error", Self.quoted("not-found"))]
            case .rejected(.nameExists): kind = "fail"; errorField = [("error", Self.quoted("exists"))]
            default: kind = error.mayHaveTakenEffect ? "info" : "fail"
            }
            append(done + [("type", Self.quoted(kind))] + errorField)
            bump(kind == "info" ? "info" : (errorField.isEmpty ? "unavailable" : "fail"))
            if case .noQuorum = error { bump("noQuorum") }
            return (nil, nil, error)
        }
    }

    private func bump(_ key: String) { counts.withLock { $0[key, default: 0] += 1 } }

    /// Checks the history with the names model; records a test issue with the
    /// report and writes the history to a file if it is not linearizable.
    func expectLinearizable(_ label: String, sourceLocation: SourceLocation = #_sourceLocation) {
        let history = text
        print("\(label): \(lines.value.count) history lines, outcomes \(counts.value.sorted { $0.key < $1.key }), "
            + "\(acknowledgedPIDs.value.count) PIDs acknowledged")
        do {
            let (report, ok) = try checkText(history, model: "names",
                                             options: CheckOptions(maxStates: 2_000_000, timeout: .seconds(60)))
            if !ok {
                let path = NSTemporaryDirectory() + "plexus-\(label)-\(UInt32.random(in: 0...UInt32.max)).jsonl"
                try? history.write(toFile: path, atomically: true, encoding: .utf8)
                Issue.record("\(label): history not linearizable (saved to \(path)):\n\(report)", sourceLocation: sourceLocation)
            }
        } catch {
            Issue.record("\(label): cannot check the history: \(error)", sourceLocation: sourceLocation)
        }
        let pids = acknowledgedPIDs.value
        #expect(Set(pids).count == pids.count, "\(label): a PID was issued twice: \(pids.sorted())", sourceLocation: sourceLocation)
    }
}

/// Clients that run a random mix of operations on a few top-level keys until
/// told to stop. Each client is its own `NameClient` (one session each).
final class Workload: @unchecked Sendable {
    let recorder: HistoryRecorder
    private let stopFlag = AtomicFlag()
    private let group = DispatchGroup()
    let keys: [String]

    init(recorder: HistoryRecorder, keys: [String] = ["/k1", "/k2", "/k3"]) {
        self.recorder = recorder
        self.keys = keys
    }

    func start(clients: [any NameServiceBackend], firstID: Int = 1) {
        for (offset, client) in clients.enumerated() {
            let id = firstID + offset
            group.enter()
            Thread { [self] in
                defer { group.leave() }
                var rng = SplitMix64(seed: UInt64(id) &* 7919)
                var versions: [String: UInt64] = [:]
                var n = 0
                while !stopFlag.isSet {
                    n += 1
                    let key = keys[Int(rng.next() % UInt64(keys.count))]
                    let value = "c\(id)-\(n)"
                    switch rng.next() % 10 {
                    case 0, 1, 2:
                        recorder.run(.allocatePID, client: id, on: client)
                    case 3, 4:
                        if let e = recorder.run(.put(key, value), client: id, on: client).entry { versions[key] = e.version }
                    case 5, 6:
                        let r = recorder.run(.cas(key, versions[key] ?? 1, value), client: id, on: client)
                        if let e = r.entry { versions[key] = e.version }
                    default:
                        if let e = recorder.run(.get(key), client: id, on: client).entry { versions[key] = e.version }
                    }
                }
            }.start()
        }
    }

    /// Stops the clients and waits for their last operation to finish.
    func stop() {
        stopFlag.set()
        group.wait()
    }
}

/// Polls `condition` until it holds or `timeout` seconds pass.
func eventually(_ timeout: Double = 10, _ what: String, _ condition: () throws -> Bool) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        if (try? condition()) == true { return }
        usleep(20_000)
    }
    if try condition() { return }
    throw HarnessError("\(what) did not happen within \(timeout) s")
}
