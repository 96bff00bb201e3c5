/// Parser for Jepsen-style key-value histories: one EDN map per line, one line per event, in
/// real-time order (the line number is the event's time), e.g.
///
///     {:process 3, :type :invoke, :f :append, :key "9", :value "x 3 0 y"}
///     {:process 3, :type :ok, :f :append, :key "9", :value "x 3 0 y"}
///     {:process 1, :type :invoke, :f :get, :key "9", :value nil}
///     {:process 1, :type :ok, :f :get, :key "9", :value "x 3 0 y"}
///
/// This is the format of Porcupine's `kv` test data and of Jepsen's history files.
/// - `:process` (integer) is the client; events of other processes (`:nemesis`) are skipped.
/// - `:type` `:invoke` opens an operation of that client; the client's next `:ok`, `:fail` or
///   `:info` ends it, and must name the same `:f` and `:key`. `:ok` = it happened (a get's
///   `:value` is what it read, `nil` meaning the empty string); `:fail` = it did not happen
///   (dropped); `:info` = unknown (indefinite: it may take effect at any point after its
///   invocation, or never). An operation still open at the end is indefinite too.
/// - `:f` is `:get`, `:put` or `:append`; `:key` a string or integer; `:value` the string
///   written (put/append invoke) or read (get ok). Other keys (`:time`, `:index`, …) are ignored.
/// - Blank lines and lines starting with `;` are ignored.
///
/// Malformed, truncated or oversized input is rejected with the line and column and what was
/// expected; the reader never trusts a length or nesting depth it has not checked against
/// ``EDNLimits``.
public enum EDNHistory {
    public static func parseKV(_ text: String, limits: EDNLimits = EDNLimits()) throws -> History<KVModel.Input, KVModel.Output> {
        var events: [HistoryEvent<KVModel.Input, KVModel.Output>] = []
        var times: [Int] = []
        var open: [Int: KVModel.Input] = [:]
        var lineCount = 0
        for (index, raw) in text.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            lineCount += 1
            if lineCount > limits.maxLines {
                throw LincheckError("line \(number): more than \(limits.maxLines) lines; split the history or raise the limit")
            }
            guard raw.count <= limits.maxLineBytes else {
                throw LincheckError("line \(number): \(raw.count) bytes, more than the \(limits.maxLineBytes) allowed per event; "
                    + "is this a Jepsen EDN history, one event per line?")
            }
            var reader = EDNReader(bytes: Array(raw), line: number, limits: limits)
            guard let value = try reader.readTopLevel() else { continue }
            guard let event = try kvEvent(value, line: number) else { continue }
            func fail(_ why: String) -> LincheckError { LincheckError("line \(number): \(why)") }
            switch event.type {
            case "invoke":
                if open[event.process] != nil {
                    throw fail("process \(event.process) invokes while its previous operation is still open")
                }
                let input: KVModel.Input
                switch event.f {
                case "get": input = KVModel.Input(key: event.key, .get)
                case "put", "append":
                    guard let v = event.value else { throw fail(":\(event.f) needs a string :value") }
                    input = KVModel.Input(key: event.key, event.f == "put" ? .put(v) : .append(v))
                default: throw fail("unknown :f :\(event.f); expected :get, :put or :append")
                }
                open[event.process] = input
                events.append(.invoke(client: event.process, input: input))
            default:
                guard let pending = open.removeValue(forKey: event.process) else {
                    throw fail(":\(event.type) of process \(event.process) without an open :invoke")
                }
                let f: String
                switch pending.operation {
                case .get: f = "get"
                case .put: f = "put"
                case .append: f = "append"
                }
                guard event.f == f, event.key == pending.key else {
                    throw fail(":\(event.type) :\(event.f) \"\(event.key)\" does not match the open :\(f) \"\(pending.key)\" of process \(event.process)")
                }
                switch (event.type, pending.operation) {
                case ("ok", .get): events.append(.complete(client: event.process, output: .value(event.value ?? "")))
                case ("ok", _): events.append(.complete(client: event.process, output: .ok))
                case ("fail", _): events.append(.discard(client: event.process))
                default: events.append(.indefinite(client: event.process))
                }
            }
            times.append(number)
        }
        let history = try History(events: events, times: times)
        // A get with an unknown outcome constrains nothing: drop it.
        return try History(operations: history.operations.filter { !($0.isIndefinite && $0.input.operation == .get) })
    }

    struct KVEvent {
        var process: Int
        var type: String
        var f: String
        var key: String
        var value: String?
    }

    /// The fields of one event map; `nil` for an event of a non-client process (the nemesis).
    static func kvEvent(_ value: EDNValue, line: Int) throws -> KVEvent? {
        func fail(_ why: String) -> LincheckError { LincheckError("line \(line): \(why)") }
        guard case let .map(pairs) = value else { throw fail("expected a map {:process …, :type …, :f …, :key …, :value …}") }
        var fields: [String: EDNValue] = [:]
        for (k, v) in pairs {
            guard case let .keyword(name) = k else { throw fail("map keys must be keywords such as :process") }
            if fields.updateValue(v, forKey: name) != nil { throw fail("duplicate key :\(name)") }
        }
        let process: Int
        switch fields["process"] {
        case let .integer(p)?: process = p
        case .keyword?: return nil  // :nemesis and the like: not a client
        case nil: throw fail("missing :process")
        default: throw fail(":process must be an integer")
        }
        guard case let .keyword(type)? = fields["type"], ["invoke", "ok", "fail", "info"].contains(type) else {
            throw fail(":type must be :invoke, :ok, :fail or :info")
        }
        guard case let .keyword(f)? = fields["f"] else { throw fail(":f must be a keyword such as :get") }
        let key: String
        switch fields["key"] {
        case let .string(s)?: key = s
        case let .integer(n)?: key = String(n)
        default: throw fail(":key must be a string or an integer")
        }
        let text: String?
        switch fields["value"] {
        case nil, .null?: text = nil
        case let .string(s)?: text = s
        case let .integer(n)?: text = String(n)
        default: throw fail(":value must be a string, an integer or nil")
        }
        return KVEvent(process: process, type: type, f: f, key: key, value: text)
    }
}

/// Bounds on what the EDN reader accepts; larger input is refused with an error, not read.
public struct EDNLimits: Sendable {
    /// Bytes in one line (one event).
    public var maxLineBytes: Int
    /// Nesting of maps, vectors and lists.
    public var maxDepth: Int
    /// Lines in one history.
    public var maxLines: Int

    public init(maxLineBytes: Int = 1 << 20, maxDepth: Int = 16, maxLines: Int = 50_000_000) {
        self.maxLineBytes = maxLineBytes
        self.maxDepth = maxDepth
        self.maxLines = maxLines
    }
}

/// The subset of EDN that histories use.
indirect enum EDNValue: Equatable {
    case null
    case bool(Bool)
    case integer(Int)
    case string(String)
    case keyword(String)
    case symbol(String)
    case vector([EDNValue])
    case map([(EDNValue, EDNValue)])

    static func == (a: EDNValue, b: EDNValue) -> Bool {
        switch (a, b) {
        case (.null, .null): return true
        case let (.bool(x), .bool(y)): return x == y
        case let (.integer(x), .integer(y)): return x == y
        case let (.string(x), .string(y)), let (.keyword(x), .keyword(y)), let (.symbol(x), .symbol(y)): return x == y
        case let (.vector(x), .vector(y)): return x == y
        case let (.map(x), .map(y)): return x.count == y.count && zip(x, y).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }
}

/// A recursive-descent reader over the bytes of one line. Every access is bounds-checked and
/// nesting is limited, so no input can make it trap or exhaust the stack.
struct EDNReader {
    let bytes: [UInt8]
    let line: Int
    let limits: EDNLimits
    var position = 0

    init(bytes: [UInt8], line: Int, limits: EDNLimits) {
        self.bytes = bytes
        self.line = line
        self.limits = limits
    }

    func error(_ why: String, at offset: Int? = nil) -> LincheckError {
        LincheckError("line \(line), column \((offset ?? position) + 1): \(why)")
    }

    /// The line's single value, or `nil` for a blank or comment line.
    mutating func readTopLevel() throws -> EDNValue? {
        skipWhitespace()
        if position == bytes.count { return nil }
        let value = try read(depth: 0)
        skipWhitespace()
        if position < bytes.count { throw error("unexpected text after the event; put one event per line") }
        return value
    }

    mutating func skipWhitespace() {
        while position < bytes.count {
            switch bytes[position] {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"), UInt8(ascii: ","):
                position += 1
            case UInt8(ascii: ";"):
                position = bytes.count  // a comment runs to the end of the line
            default:
                return
            }
        }
    }

    mutating func read(depth: Int) throws -> EDNValue {
        guard depth < limits.maxDepth else { throw error("nested more than \(limits.maxDepth) levels deep") }
        skipWhitespace()
        guard position < bytes.count else { throw error("the line ends where a value was expected (truncated?)") }
        let start = position
        switch bytes[position] {
        case UInt8(ascii: "{"):
            position += 1
            let items = try readSequence(until: UInt8(ascii: "}"), depth: depth, opened: start)
            guard items.count % 2 == 0 else { throw error("a map needs an even number of forms (key value …)", at: start) }
            return .map(stride(from: 0, to: items.count, by: 2).map { (items[$0], items[$0 + 1]) })
        case UInt8(ascii: "["):
            position += 1
            return .vector(try readSequence(until: UInt8(ascii: "]"), depth: depth, opened: start))
        case UInt8(ascii: "("):
            position += 1
            return .vector(try readSequence(until: UInt8(ascii: ")"), depth: depth, opened: start))
        case UInt8(ascii: "\""):
            return .string(try readString())
        case UInt8(ascii: ":"):
            position += 1
            let name = readToken()
            guard !name.isEmpty else { throw error("a keyword needs a name after ':'", at: start) }
            return .keyword(name)
        case UInt8(ascii: "}"), UInt8(ascii: "]"), UInt8(ascii: ")"):
            throw error("unexpected '\(Character(Unicode.Scalar(bytes[position])))' with nothing open")
        case UInt8(ascii: "#"):
            throw error("tagged values and sets (#…) are not supported in histories")
        default:
            let token = readToken()
            guard !token.isEmpty else {
                throw error("unexpected character \(describeByte(bytes[start]))", at: start)
            }
            switch token {
            case "nil": return .null
            case "true": return .bool(true)
            case "false": return .bool(false)
            default: break
            }
            if let first = token.utf8.first, first == UInt8(ascii: "-") || first == UInt8(ascii: "+") || (first >= 48 && first <= 57) {
                guard let n = Int(token) else {
                    throw error("\"\(token.prefix(40))\" is not an integer in range (decimals and big numbers are not supported)", at: start)
                }
                return .integer(n)
            }
            return .symbol(token)
        }
    }

    mutating func readSequence(until close: UInt8, depth: Int, opened: Int) throws -> [EDNValue] {
        var items: [EDNValue] = []
        while true {
            skipWhitespace()
            guard position < bytes.count else {
                throw error("'\(Character(Unicode.Scalar(bytes[opened])))' opened at column \(opened + 1) is never closed (truncated line?)")
            }
            if bytes[position] == close {
                position += 1
                return items
            }
            items.append(try read(depth: depth + 1))
        }
    }

    /// Symbol and keyword characters: anything up to whitespace or a delimiter.
    mutating func readToken() -> String {
        let start = position
        while position < bytes.count {
            switch bytes[position] {
            case UInt8(ascii: " "), UInt8(ascii: "\t"), UInt8(ascii: "\r"), UInt8(ascii: ","), UInt8(ascii: ";"),
                 UInt8(ascii: "{"), UInt8(ascii: "}"), UInt8(ascii: "["), UInt8(ascii: "]"),
                 UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "\""):
                return String(decoding: bytes[start..<position], as: UTF8.self)
            default:
                position += 1
            }
        }
        return String(decoding: bytes[start..<position], as: UTF8.self)
    }

    mutating func readString() throws -> String {
        let start = position
        position += 1  // the opening quote
        var out: [UInt8] = []
        while position < bytes.count {
            let b = bytes[position]
            position += 1
            switch b {
            case UInt8(ascii: "\""):
                guard let s = String(validating: out, as: UTF8.self) else {
                    throw error("the string is not valid UTF-8", at: start)
                }
                return s
            case UInt8(ascii: "\\"):
                guard position < bytes.count else { break }
                let e = bytes[position]
                position += 1
                switch e {
                case UInt8(ascii: "\""): out.append(UInt8(ascii: "\""))
                case UInt8(ascii: "\\"): out.append(UInt8(ascii: "\\"))
                case UInt8(ascii: "n"): out.append(UInt8(ascii: "\n"))
                case UInt8(ascii: "t"): out.append(UInt8(ascii: "\t"))
                case UInt8(ascii: "r"): out.append(UInt8(ascii: "\r"))
                case UInt8(ascii: "u"):
                    guard position + 4 <= bytes.count,
                          let code = UInt32(String(decoding: bytes[position..<position + 4], as: UTF8.self), radix: 16),
                          let scalar = Unicode.Scalar(code)
                    else { throw error("\\u needs 4 hex digits naming a Unicode scalar (not a surrogate)", at: position - 2) }
                    position += 4
                    out.append(contentsOf: Array(String(Character(scalar)).utf8))
                default:
                    throw error("unknown escape \\\(describeByte(e)) in a string", at: position - 2)
                }
            default:
                out.append(b)
            }
        }
        throw error("the string opened at column \(start + 1) is never closed (truncated line?)")
    }

    func describeByte(_ b: UInt8) -> String {
        b >= 0x21 && b < 0x7F ? "'\(Character(Unicode.Scalar(b)))'" : "byte 0x" + String(b, radix: 16)
    }
}
