/// Errors from the history parsers and ``checkFile(path:model:)``.
public struct LincheckError: Error, CustomStringConvertible, Equatable {
    public var message: String

    public init(_ message: String) {
        self.message = message
    }

    public var description: String { message }
}

/// Parser for the Jepsen etcd register histories (the Knossos / Porcupine test data), e.g.
///
///     INFO  jepsen.util - 3	:invoke	:cas	[1 4]
///     INFO  jepsen.util - 3	:ok	:cas	[1 4]
///
/// Fields are separated by tabs or runs of spaces (both occur). Interpretation:
/// - `:invoke` opens an operation of that client; the client's next `:ok`/`:fail`/`:info` ends it.
/// - `:ok :read V` returned V (`nil`: never written); `:ok :write V` and `:ok :cas [A B]` took effect.
/// - `:fail :cas [A B]`: the register did not hold A; that is checked, not ignored.
/// - `:fail :read …` and `:fail :write …`: no effect and nothing observed; dropped.
///   (Jepsen's `:fail` means "did not happen"; a failed read therefore constrains nothing.)
/// - `:info` (timed out), an unparseable `:fail :cas` value, or an operation still open at the end:
///   indefinite — it may take effect at any point after its invocation, or never.
/// - Reads with an unknown outcome are dropped: a read never changes the state, so an indefinite
///   read can always be left out and only costs search time.
/// Lines that are not `jepsen.util` events (other log output) are ignored. Operation times are
/// line numbers, so reports point into the file.
public enum JepsenHistory {
    public typealias Input = RegisterModel.Input
    public typealias Output = RegisterModel.Output

    /// True when `text` looks like a Jepsen log rather than JSON lines.
    public static func looksLikeJepsen(_ text: String) -> Bool {
        text.split(separator: "\n", omittingEmptySubsequences: true).prefix(20).contains { line in
            event(in: line) != nil
        }
    }

    public static func parse(_ text: String) throws -> History<Input, Output> {
        var events: [HistoryEvent<Input, Output>] = []
        var lineNumbers: [Int] = []  // event times, so that reports point into the file
        var openInput: [Int: Input] = [:]
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            guard let e = event(in: line) else { continue }
            let lineNo = number + 1
            func fail(_ why: String) -> LincheckError {
                LincheckError("line \(lineNo): \(why): \(line.trimmedLine())")
            }
            switch e.type {
            case ":invoke":
                let input: Input
                switch e.op {
                case ":read": input = .read
                case ":write":
                    guard let v = e.value.first.flatMap({ Int($0) }) else { throw fail("write without an integer value") }
                    input = .write(v)
                case ":cas":
                    guard let pair = casPair(e.value) else { throw fail("cas without [FROM TO]") }
                    input = .cas(from: pair.0, to: pair.1)
                default:
                    throw fail("unknown operation \(e.op)")
                }
                if openInput[e.client] != nil { throw fail("client \(e.client) invokes while an operation is open") }
                openInput[e.client] = input
                events.append(.invoke(client: e.client, input: input))
                lineNumbers.append(lineNo)
            case ":ok", ":fail", ":info":
                guard let input = openInput.removeValue(forKey: e.client) else {
                    throw fail("completion for client \(e.client) without an open invocation")
                }
                events.append(try completion(type: e.type, input: input, value: e.value, client: e.client, fail: fail))
                lineNumbers.append(lineNo)
            default:
                continue
            }
        }
        let history = try History(events: events, times: lineNumbers)
        // Open reads at the end are indefinite reads: drop them for the reason given above.
        return try History(operations: history.operations.filter { !($0.isIndefinite && $0.input == .read) })
    }

    private static func completion(
        type: Substring, input: Input, value: [Substring], client: Int, fail: (String) -> LincheckError
    ) throws -> HistoryEvent<Input, Output> {
        switch (type, input) {
        case (":ok", .read):
            if value.first == "nil" { return .complete(client: client, output: .value(nil)) }
            guard let v = value.first.flatMap({ Int($0) }) else { throw fail("read returned no integer") }
            return .complete(client: client, output: .value(v))
        case (":ok", _):
            return .complete(client: client, output: .ok)
        case (":fail", .read), (":info", .read), (":fail", .write):
            return .discard(client: client)
        case (":fail", .cas):
            // A definite "compare failed" only when the log repeats the [FROM TO] pair; anything
            // else (e.g. :timed-out) is an unknown outcome.
            return casPair(value) != nil ? .complete(client: client, output: .failed) : .indefinite(client: client)
        default:
            return .indefinite(client: client)
        }
    }

    private struct RawEvent {
        var client: Int
        var type: Substring
        var op: Substring
        var value: [Substring]
    }

    /// Tokenises `… jepsen.util - CLIENT TYPE OP VALUE…`; `nil` for any other line.
    private static func event(in line: Substring) -> RawEvent? {
        let tokens = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
        guard let marker = tokens.firstIndex(of: "jepsen.util"),
              tokens.count > marker + 4, tokens[marker + 1] == "-",
              let client = Int(tokens[marker + 2]),
              tokens[marker + 3].hasPrefix(":")
        else { return nil }
        return RawEvent(client: client, type: tokens[marker + 3], op: tokens[marker + 4],
                        value: Array(tokens[(marker + 5)...]))
    }

    /// `[A B]` split by whitespace arrives as `["[A", "B]"]`.
    private static func casPair(_ value: [Substring]) -> (Int, Int)? {
        let joined = value.joined(separator: " ")
        guard joined.hasPrefix("["), joined.hasSuffix("]") else { return nil }
        let numbers = joined.dropFirst().dropLast().split(separator: " ").compactMap { Int($0) }
        guard numbers.count == 2 else { return nil }
        return (numbers[0], numbers[1])
    }
}

extension Substring {
    func trimmedLine() -> String {
        String(self.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed())
    }
}
