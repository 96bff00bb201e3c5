import Foundation
import Testing
import Transport
@testable import Lincheck

@Suite struct KVTests {
    typealias I = KVModel.Input
    typealias O = KVModel.Output
    let model = KVModel()

    @Test func getPutAppendPerKey() throws {
        let ok = try check(model, [
            op(0, I(key: "1", .get), O.value(""), 0, 1),          // never written: empty
            op(1, I(key: "1", .append("x 0 0 y")), O.ok, 2, 3),
            op(2, I(key: "1", .append("x 1 0 y")), O.ok, 4, 5),
            op(3, I(key: "2", .put("p")), O.ok, 4, 5),
            op(4, I(key: "1", .get), O.value("x 0 0 yx 1 0 y"), 6, 7),
            op(5, I(key: "1", .put("z")), O.ok, 8, 9),
            op(6, I(key: "1", .get), O.value("z"), 10, 11),
            op(7, I(key: "2", .get), O.value("p"), 10, 11),
        ])
        #expect(ok.verdict == .linearizable)
        #expect(ok.partitions.count == 2)
        // Appends concurrent with a get: it sees a prefix in some order, not a mix.
        let reordered = try check(model, [
            op(0, client: 0, I(key: "k", .append("a")), O.ok, 0, 10),
            op(1, client: 1, I(key: "k", .append("b")), O.ok, 0, 10),
            op(2, client: 2, I(key: "k", .get), O.value("ba"), 1, 11),
        ])
        #expect(reordered.verdict == .linearizable)
        let torn = try check(model, [
            op(0, client: 0, I(key: "k", .append("a")), O.ok, 0, 10),
            op(1, client: 1, I(key: "k", .append("b")), O.ok, 0, 10),
            op(2, client: 2, I(key: "k", .get), O.value("ab"), 1, 11),
            op(3, client: 2, I(key: "k", .get), O.value("b"), 12, 13),
        ])
        #expect(torn.verdict == .notLinearizable)
    }

    @Test func parsesJepsenEDN() throws {
        let text = """
            ; a comment
            {:process 3, :type :invoke, :f :append, :key "9", :value "x 3 0 y"}
            {:process 1, :type :invoke, :f :get, :key "9", :value nil}
            {:process :nemesis, :type :info, :f :start, :value nil}
            {:process 3, :type :ok, :f :append, :key "9", :value "x 3 0 y"}
            {:process 1, :type :ok, :f :get, :key "9", :value "x 3 0 y", :time 12345, :index 3}

            {:process 2 :type :invoke :f :put :key 7 :value "a \\"q\\" \\u00e9"}
            {:process 2, :type :info, :f :put, :key 7, :value "a \\"q\\" \\u00e9"}
            {:process 4, :type :invoke, :f :put, :key "1", :value "no"}
            {:process 4, :type :fail, :f :put, :key "1", :value "no"}
            {:process 5, :type :invoke, :f :get, :key "1", :value nil}
            {:process 6, :type :invoke, :f :append, :key "1", :value "open"}
            """
        let ops = try EDNHistory.parseKV(text).operations
        #expect(ops.map(\.input) == [
            I(key: "9", .append("x 3 0 y")), I(key: "9", .get), I(key: "7", .put("a \"q\" é")), I(key: "1", .append("open")),
        ])  // the failed put and the open get are dropped
        #expect(ops.map(\.output) == [O.ok, O.value("x 3 0 y"), nil, nil])
        #expect(ops.map(\.call) == [2, 3, 8, 13])
        #expect(ops.map(\.ret) == [5, 6, nil, nil])
    }

    @Test(arguments: [
        ("{:process 1, :type :invoke, :f :get, :key \"1\"", "'{' opened at column 1 is never closed (truncated line?)"),
        ("{:process 1, :type :invoke, :f :put, :key \"1\", :value \"abc", "never closed (truncated line?)"),
        ("{:process 1, :type :invoke, :f :put, :key \"1\", :value \"a\\qb\"}", "unknown escape \\'q'"),
        ("{:process 1, :type :invoke, :f :put, :key \"1\", :value \"\\ud800\"}", "not a surrogate"),
        ("{:process 1, :type :invoke, :f :cas, :key \"1\", :value \"x\"}", "unknown :f :cas; expected :get, :put or :append"),
        ("{:process 1, :type :invoke, :f :get, :key \"1\"} {}", "one event per line"),
        ("{:process 1, :type :invoke, :f :get, :key}", "even number of forms"),
        ("{:process 99999999999999999999999, :type :invoke}", "not an integer in range"),
        ("{:process 1, :type :invoke, :f :get, :key \"1\", :process 2}", "duplicate key :process"),
        ("{:process 1, :type :done, :f :get, :key \"1\"}", ":type must be :invoke, :ok, :fail or :info"),
        ("{:process 1, :type :ok, :f :get, :key \"1\", :value \"\"}", ":ok of process 1 without an open :invoke"),
        ("[1 2 3]", "expected a map"),
        ("#{1 2}", "not supported"),
        ("}", "with nothing open"),
        ("{:process 1, :type :invoke, :f :get, :key \"1\", :value nil}\n{:process 1, :type :ok, :f :put, :key \"1\", :value \"v\"}",
         "line 2: :ok :put \"1\" does not match the open :get \"1\" of process 1"),
        (String(repeating: "[", count: 40) + String(repeating: "]", count: 40), "nested more than 16 levels deep"),
    ])
    func malformedInputIsRejectedClearly(text: String, expected: String) {
        do {
            _ = try EDNHistory.parseKV(text)
            Issue.record("accepted: \(text)")
        } catch let error as LincheckError {
            #expect(error.message.contains(expected), "\(error.message)")
            #expect(error.message.hasPrefix("line "), "\(error.message)")
        } catch {
            Issue.record("unexpected error type: \(error)")
        }
    }

    @Test func oversizedInputIsRefused() {
        let long = "{:process 1, :type :invoke, :f :put, :key \"1\", :value \"" + String(repeating: "x", count: 2_000) + "\"}"
        #expect(throws: LincheckError.self) { try EDNHistory.parseKV(long, limits: EDNLimits(maxLineBytes: 1_000)) }
        let many = String(repeating: "\n", count: 20)
        #expect(throws: LincheckError.self) { try EDNHistory.parseKV(many, limits: EDNLimits(maxLines: 10)) }
    }

    /// Random bytes and mutations of valid lines: every input parses or fails with a
    /// `LincheckError` naming the line; none traps.
    @Test func fuzzedInputNeverCrashes() {
        var rng = SplitMix64(seed: 0xF022)
        let valid = [
            "{:process 3, :type :invoke, :f :append, :key \"9\", :value \"x 3 0 y\"}",
            "{:process 3, :type :ok, :f :append, :key \"9\", :value \"x 3 0 y\"}",
            "{:process 1, :type :invoke, :f :get, :key \"9\", :value nil}",
            "{:process 1, :type :ok, :f :get, :key \"9\", :value \"a\\\"b\\u00e9\"}",
            "{:process :nemesis, :type :info, :f :start, :value [:a {:b (1 2)}]}",
        ]
        let alphabet = Array("{}[]()\":\\, ;#-+0123456789aeuxnil\u{00e9}\t".utf8) + [0, 0xFF, 0xC3, 0x80]
        var accepted = 0
        var rejected = 0
        for n in 0..<4_000 {
            var bytes: [UInt8]
            if n % 4 == 0 {
                bytes = (0..<Int.random(in: 0..<120, using: &rng)).map { _ in
                    Bool.random(using: &rng) ? UInt8.random(in: 0...255, using: &rng) : alphabet.randomElement(using: &rng)!
                }
            } else {
                bytes = Array((0..<Int.random(in: 1...3, using: &rng)).map { _ in valid.randomElement(using: &rng)! }
                    .joined(separator: "\n").utf8)
                for _ in 0..<Int.random(in: 1...4, using: &rng) where !bytes.isEmpty {
                    let at = Int.random(in: 0..<bytes.count, using: &rng)
                    switch Int.random(in: 0..<4, using: &rng) {
                    case 0: bytes[at] = alphabet.randomElement(using: &rng)!
                    case 1: bytes.remove(at: at)
                    case 2: bytes.insert(alphabet.randomElement(using: &rng)!, at: at)
                    default: bytes.removeSubrange(at...)  // truncated
                    }
                }
            }
            let text = String(decoding: bytes, as: UTF8.self)
            do {
                _ = try EDNHistory.parseKV(text)
                accepted += 1
            } catch let error as LincheckError {
                #expect(error.message.hasPrefix("line "), "\(error.message)")
                rejected += 1
            } catch {
                Issue.record("unexpected error type \(type(of: error)): \(error)")
            }
        }
        #expect(accepted > 100 && rejected > 1_000, "accepted \(accepted), rejected \(rejected)")
    }

    /// Keys are checked independently and in parallel; every violating key is named, with a
    /// minimal failing sub-history.
    @Test func reportNamesTheViolatingKeys() throws {
        var lines: [String] = []
        func event(_ p: Int, _ type: String, _ f: String, _ key: String, _ value: String?) {
            lines.append("{:process \(p), :type :\(type), :f :\(f), :key \"\(key)\", :value \(value.map { "\"\($0)\"" } ?? "nil")}")
        }
        for key in 0..<6 {
            for round in 0..<5 {
                event(1, "invoke", "append", "\(key)", "x 1 \(round) y")
                event(2, "invoke", "get", "\(key)", nil)
                event(1, "ok", "append", "\(key)", "x 1 \(round) y")
                let seen = (0...round).map { "x 1 \($0) y" }.joined()
                // Key 4 loses everything from the third read on.
                let read = key == 4 && round >= 2 ? "" : seen
                event(2, "ok", "get", "\(key)", read)
            }
        }
        let check = try checkHistoryText(lines.joined(separator: "\n"), model: "kv")
        #expect(check.verdict == .notLinearizable)
        #expect(check.report.hasPrefix("model: kv, format: Jepsen EDN\nNOT LINEARIZABLE — 60 operations in 6 partition(s)"), "\(check.report)")
        #expect(check.report.contains("Non-linearizable key(s): \"4\"\n"), "\(check.report)")
        #expect(check.report.contains("A minimal failing sub-history of key \"4\": 2 of its 10 operations:"), "\(check.report)")
        #expect(check.report.contains("get \"4\" -> \"\""), "\(check.report)")
    }

    /// One key whose search explodes (14 concurrent appends, then an impossible read) must not
    /// keep the others from being decided, whether the state bound or the clock stops it.
    @Test func aHardKeyDoesNotStarveTheOthers() throws {
        var ops: [HistoryOperation<I, O>] = []
        for i in 0..<14 { ops.append(op(ops.count, client: i, I(key: "hard", .append("a\(i)")), O.ok, 0, 100)) }
        ops.append(op(ops.count, client: 20, I(key: "hard", .get), O.value("impossible"), 101, 102))
        for key in 0..<5 {
            ops.append(op(ops.count, client: 30, I(key: "k\(key)", .put("v")), O.ok, 200, 201))
            ops.append(op(ops.count, client: 31, I(key: "k\(key)", .get), O.value(key == 3 ? "stale" : "v"), 202, 203))
        }
        let history = try History(operations: ops)
        for options in [CheckOptions(maxStates: 40_000), CheckOptions(maxStates: nil, timeout: .milliseconds(300))] {
            let result = checkLinearizabilityInParallel(
                model: model, history: history, options: options, parallel: ParallelOptions(workers: 2, firstRoundStates: 5_000))
            #expect(result.verdict == .notLinearizable)
            let verdicts = Dictionary(uniqueKeysWithValues: result.partitions.map { ($0.operations[0].input.key, $0.verdict) })
            #expect(verdicts["k3"] == .notLinearizable)
            for key in ["k0", "k1", "k2", "k4"] { #expect(verdicts[key] == .linearizable) }
            guard case let .unknown(reason)? = verdicts["hard"] else {
                Issue.record("the hard key was decided: \(String(describing: verdicts["hard"]))")
                continue
            }
            #expect(reason.hasPrefix(options.timeout == nil ? "state limit" : "time limit"), "\(reason)")
            try validate(result)
        }
        // Without the violating key the verdict is unknown, never a guess, and the report says why.
        let withoutViolation = try History(operations: ops.filter { $0.input.key != "k3" })
        let undecided = checkLinearizabilityInParallel(
            model: model, history: withoutViolation, options: CheckOptions(maxStates: nil, timeout: .milliseconds(200)),
            parallel: ParallelOptions(workers: 2, firstRoundStates: 5_000))
        #expect(undecided.verdict.description.hasPrefix("unknown (time limit"))
        #expect(undecided.report().hasPrefix("UNKNOWN (time limit)"))
    }

    /// The parallel checker agrees with the brute force on random small multi-key histories.
    @Test func parallelAgreesWithBruteForce() throws {
        let generator = HistoryGenerator<KVModel>(
            randomInput: { rng in
                let key = ["a", "b"].randomElement(using: &rng)!
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: return I(key: key, .get)
                case 1: return I(key: key, .put(["x", "y"].randomElement(using: &rng)!))
                default: return I(key: key, .append(["x", "y"].randomElement(using: &rng)!))
                }
            },
            execute: { state, input, _ in
                let next = KVModel().step(state, input, nil)!
                if case .get = input.operation { return (.value(state[input.key, default: ""]), next) }
                return (.ok, next)
            },
            randomOutput: { input, rng in
                if case .get = input.operation { return .value(["", "x", "xy", "y", "yx"].randomElement(using: &rng)!) }
                return .ok
            })
        var rng = SplitMix64(seed: 0x5EED_0003)
        var linearizable = 0
        for n in 0..<400 {
            let ops = generator.make(model, &rng)
            let expected = bruteForceLinearizable(model, ops)
            let result = checkLinearizabilityInParallel(model: model, history: try History(operations: ops),
                                                        options: CheckOptions(maxStates: nil), parallel: ParallelOptions(workers: 2))
            #expect(result.verdict == (expected ? .linearizable : .notLinearizable), "case \(n)")
            try validate(result)
            if expected { linearizable += 1 }
        }
        #expect(linearizable > 80 && linearizable < 360, "\(linearizable) of 400 linearizable")
    }
}
