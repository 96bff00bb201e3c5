import Foundation

/// Parser for Plexus' own recorded histories: one JSON object per line, one line per event.
///
///     {"client":1,"type":"invoke","op":"create","key":"/jobs","value":"a"}
///     {"client":2,"type":"invoke","op":"allocate-pid"}
///     {"client":1,"type":"ok","op":"create","version":1}
///     {"client":2,"type":"info","op":"allocate-pid"}
///
/// Blank lines and lines starting with `#` are ignored. Fields:
/// - `client` (integer, required): the issuing client; a client has at most one open operation.
/// - `type` (required): `"invoke"` opens an operation; `"ok"` / `"fail"` / `"info"` end the
///   client's open one. `"info"` means the outcome is unknown (timed out, connection lost): the
///   operation becomes *indefinite*. Operations still open at the end are indefinite too.
/// - `op` (string, required on invoke; optional on completions, but must then match).
/// - `key` (string): the path of names operations; optional for the register model, which
///   accepts at most one distinct key per file.
/// - `value`: the argument on invoke, the result on `ok`.
/// - `version` (integer, names): the expected version of `cas` on invoke; the resulting version
///   of `create`/`put`/`cas`, or the version read by `get`, on `ok` (optional: omitted = not
///   recorded, matches any).
/// - `error` (string): on `fail`, which failure the service reported.
/// - `time` (integer, optional): when *every* line has it, events are ordered by it (ties keep
///   line order and count as concurrent), so per-client logs can simply be concatenated;
///   otherwise line order is the real-time order, and the recorder must write lines in the
///   order events happened. Reports show these times, or line numbers when there are none.
///
/// Register model (`op` = `read` | `write` | `cas`):
/// - `read`: `ok` with `value` an integer or `null` (never written).
/// - `write`: invoke with an integer `value`.
/// - `cas`: invoke with `value` `[from, to]`; `ok` = swapped; `fail` = the register did not hold `from`.
/// - `fail` on read or write: the operation did not take effect and is dropped.
///
/// Names model (`op` = `create` | `create-sequential` | `get` | `put` | `cas` | `delete` | `list` |
/// `allocate-pid`), with string values (numbers are taken as their decimal text); see
/// ``NamesModel`` for the rules, which are the service's:
/// - `create` key value → ok [version] | fail error `exists`
/// - `create-sequential` key (the prefix) value → ok [value: the generated name] | fail error `exists`
/// - `get` key → ok value [version] (`value` null or absent = not found) | fail error `not-found`
/// - `put` key value → ok [version]
/// - `cas` key value version → ok [version] | fail error `version-mismatch` | `not-found`
/// - `delete` key [version: the expected one] → ok | fail error `not-found` | `version-mismatch`
/// - `list` key (`/` for the top level) → ok value [child, …]: the immediate children, a
///   directory with a trailing `/`; a child that is both a name and a directory appears twice
///   (`"/a"` and `"/a/"`)
/// - `allocate-pid` → ok value PID (integer)
/// - Any operation may also fail with `invalid-name` or `value-too-large` (`invalid-argument`).
/// - A `fail` with any other (or no) `error`: the operation did not take effect and is dropped.
/// - A `lease` field (ephemeral names) is rejected: leases end on the leader's clock, which no
///   history records, so the model does not cover them.
///
/// Reads (`read`, `get`) with unknown outcome are dropped: they cannot change the state.
public enum JSONLinesHistory {
    public static func parseRegister(_ text: String) throws -> History<RegisterModel.Input, RegisterModel.Output> {
        let lines = try decodeLines(text)
        let keys = Set(lines.compactMap(\.event.key))
        if keys.count > 1 {
            throw LincheckError("the register model checks a single register, but the history uses keys "
                + keys.sorted().joined(separator: ", ") + "; check it with the names model instead")
        }
        return try build(lines, dropIfIndefinite: { $0 == .read }) { line in
            let e = line.event
            switch e.op {
            case "read": return .read
            case "write":
                guard let v = e.value?.int else { throw line.error("write needs an integer value") }
                return .write(v)
            case "cas":
                guard case let .array(pair)? = e.value, pair.count == 2, let from = pair[0].int, let to = pair[1].int else {
                    throw line.error("cas needs value [from, to]")
                }
                return .cas(from: from, to: to)
            default:
                throw line.error("unknown register operation \(e.op.map { "\"\($0)\"" } ?? "(none)")")
            }
        } complete: { line, input in
            let e = line.event
            switch (e.type, input) {
            case ("ok", .read):
                switch e.value {
                case nil, .null?: return .output(.value(nil))
                case let v?:
                    guard let n = v.int else { throw line.error("read returned a non-integer") }
                    return .output(.value(n))
                }
            case ("ok", _): return .output(.ok)
            case ("fail", .cas): return .output(.failed)
            case ("fail", _): return .discard
            default: return .indefinite
            }
        }
    }

    public static func parseNames(_ text: String) throws -> History<NamesModel.Input, NamesModel.Output> {
        let lines = try decodeLines(text)
        let isRead: (NamesModel.Input) -> Bool = { input in
            switch input {
            case .get, .list: return true
            default: return false
            }
        }
        return try build(lines, dropIfIndefinite: isRead) { line in
            let e = line.event
            if e.lease != nil {
                throw line.error("ephemeral names (a lease) are not covered by the names model; "
                    + "record histories without leases")
            }
            func key() throws -> String {
                guard let key = e.key, key.hasPrefix("/") else { throw line.error("\(e.op ?? "") needs a key starting with /") }
                return key
            }
            func value() throws -> String {
                guard let v = e.value?.text else { throw line.error("\(e.op ?? "") needs a string value") }
                return v
            }
            switch e.op {
            case "create": return .create(path: try key(), value: try value())
            case "create-sequential": return .createSequential(prefix: try key(), value: try value())
            case "get": return .get(path: try key())
            case "put": return .put(path: try key(), value: try value())
            case "cas":
                guard let version = e.version else { throw line.error("cas needs the expected version") }
                return .cas(path: try key(), expectedVersion: version, value: try value())
            case "delete": return .delete(path: try key(), expectedVersion: e.version)
            case "list": return .list(path: try key())
            case "allocate-pid": return .allocatePID
            default:
                throw line.error("unknown names operation \(e.op.map { "\"\($0)\"" } ?? "(none)"); expected create, "
                    + "create-sequential, get, put, cas, delete, list or allocate-pid")
            }
        } complete: { line, input in
            let e = line.event
            switch e.type {
            case "ok":
                switch input {
                case .get:
                    switch e.value {
                    case nil, .null?: return .output(.notFound)
                    case let v?:
                        guard let text = v.text else { throw line.error("get returned a non-string value") }
                        return .output(.value(text, version: e.version))
                    }
                case .allocatePID:
                    guard let pid = e.value?.int, pid > 0 else { throw line.error("allocate-pid returned no PID (a positive integer)") }
                    return .output(.pid(UInt64(pid)))
                case .createSequential:
                    switch e.value {
                    case nil, .null?: return .output(.created(name: nil))
                    case let v?:
                        guard let name = v.text else { throw line.error("create-sequential returned a non-string name") }
                        return .output(.created(name: name))
                    }
                case .list:
                    guard case let .array(items)? = e.value else {
                        throw line.error("list needs value [child, ...] (directories end with /)")
                    }
                    var children: [String: NamesModel.Child] = [:]
                    for item in items {
                        guard let name = item.text, name.hasPrefix("/") else {
                            throw line.error("list children must be paths starting with /")
                        }
                        if name.count > 1, name.hasSuffix("/") {
                            let base = String(name.dropLast())
                            children[base, default: .init(name: base, isEntry: false, hasChildren: true)].hasChildren = true
                        } else {
                            children[name, default: .init(name: name, isEntry: true, hasChildren: false)].isEntry = true
                        }
                    }
                    return .output(.children(children.keys.sorted().map { children[$0]! }))
                case .delete:
                    return .output(.ok(version: nil))
                default:
                    return .output(.ok(version: e.version))
                }
            case "fail":
                let outcome: NamesModel.Output?
                switch (e.error, input) {
                case (_, .allocatePID): outcome = nil  // no failure of an allocation is modelled: dropped
                case ("exists", .create), ("exists", .createSequential): outcome = .exists
                case ("not-found", .get), ("not-found", .cas), ("not-found", .delete): outcome = .notFound
                case ("version-mismatch", .cas), ("version-mismatch", .delete): outcome = .versionMismatch
                case ("invalid-name", _): outcome = .invalidName
                case ("value-too-large", _), ("invalid-argument", _): outcome = .valueTooLarge
                case ("no-parent", _), ("not-empty", _):
                    throw line.error("the name service has no \"\(e.error!)\" failure: directories are implicit, "
                        + "so a name needs no parent and a delete never depends on names below it")
                default: outcome = nil
                }
                return outcome.map { .output($0) } ?? .discard
            default:
                return .indefinite
            }
        }
    }

    // MARK: - Shared machinery

    enum Completion<Output> {
        case output(Output)
        case discard
        case indefinite
    }

    struct RawEvent: Decodable {
        var client: Int
        var type: String
        var op: String?
        var key: String?
        var value: JSONValue?
        var version: UInt64?
        var error: String?
        var time: Int?
        var lease: JSONValue?
    }

    struct Line {
        var number: Int
        var event: RawEvent

        func error(_ why: String) -> LincheckError {
            LincheckError("line \(number): \(why)")
        }
    }

    static func decodeLines(_ text: String) throws -> [Line] {
        let decoder = JSONDecoder()
        var lines: [Line] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = raw.trimmedLine()
            if trimmed.isEmpty || trimmed.hasPrefix("#") { continue }
            do {
                let event = try decoder.decode(RawEvent.self, from: Data(trimmed.utf8))
                guard ["invoke", "ok", "fail", "info"].contains(event.type) else {
                    throw LincheckError("line \(index + 1): unknown type \"\(event.type)\"")
                }
                lines.append(Line(number: index + 1, event: event))
            } catch let error as LincheckError {
                throw error
            } catch {
                throw LincheckError("line \(index + 1): not a valid event object (\(error))")
            }
        }
        if !lines.isEmpty, lines.allSatisfy({ $0.event.time != nil }) {
            // Stable: ties keep line order.
            lines = lines.enumerated()
                .sorted { ($0.element.event.time!, $0.offset) < ($1.element.event.time!, $1.offset) }
                .map(\.element)
        }
        return lines
    }

    static func build<Input: Sendable, Output: Sendable>(
        _ lines: [Line],
        dropIfIndefinite: (Input) -> Bool,
        invoke: (Line) throws -> Input,
        complete: (Line, Input) throws -> Completion<Output>
    ) throws -> History<Input, Output> {
        var events: [HistoryEvent<Input, Output>] = []
        var times: [Int] = []
        // Times are the `time` fields when present (then `lines` is sorted by them), otherwise
        // line numbers, so that reports point into the file.
        let timed = !lines.isEmpty && lines.allSatisfy { $0.event.time != nil }
        var open: [Int: (op: String?, input: Input)] = [:]
        for line in lines {
            let e = line.event
            times.append(timed ? e.time! : line.number)
            if e.type == "invoke" {
                if open[e.client] != nil { throw line.error("client \(e.client) invokes while an operation is open") }
                let input = try invoke(line)
                open[e.client] = (e.op, input)
                events.append(.invoke(client: e.client, input: input))
                continue
            }
            guard let pending = open.removeValue(forKey: e.client) else {
                throw line.error("\(e.type) for client \(e.client) without an open invocation")
            }
            if let op = e.op, op != pending.op {
                throw line.error("\(e.type) \(op) does not match the open \(pending.op ?? "?") of client \(e.client)")
            }
            switch try complete(line, pending.input) {
            case let .output(output): events.append(.complete(client: e.client, output: output))
            case .discard: events.append(.discard(client: e.client))
            case .indefinite: events.append(.indefinite(client: e.client))
            }
        }
        let history = try History(events: events, times: times)
        return try History(operations: history.operations.filter { !($0.isIndefinite && dropIfIndefinite($0.input)) })
    }
}

/// Any JSON value; `value` fields are polymorphic (integer, string, array, null).
enum JSONValue: Decodable, Equatable {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() { self = .null }
        else if let v = try? c.decode(Int.self) { self = .int(v) }
        else if let v = try? c.decode(Double.self) { self = .double(v) }
        else if let v = try? c.decode(Bool.self) { self = .bool(v) }
        else if let v = try? c.decode(String.self) { self = .string(v) }
        else if let v = try? c.decode([JSONValue].self) { self = .array(v) }
        else { self = .object(try c.decode([String: JSONValue].self)) }
    }

    var int: Int? {
        if case let .int(v) = self { return v }
        return nil
    }

    /// Names values are strings; integers are accepted as their decimal text.
    var text: String? {
        switch self {
        case let .string(s): return s
        case let .int(v): return String(v)
        default: return nil
        }
    }
}
