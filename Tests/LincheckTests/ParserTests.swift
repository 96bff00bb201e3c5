import Foundation
import Testing
@testable import Lincheck

@Suite struct ParserTests {
    typealias R = RegisterModel
    typealias N = NamesModel

    @Test func jepsenTabsSpacesAndOutcomes() throws {
        // Tabs and runs of spaces both occur in the etcd logs.
        let text = """
            INFO  jepsen.core - some unrelated log line
            INFO  jepsen.util - 0\t:invoke\t:write\t1
            INFO  jepsen.util - 1   :invoke :read   nil
            INFO  jepsen.util - 0\t:ok\t:write\t1
            INFO  jepsen.util - 1   :fail   :read   :timed-out
            INFO  jepsen.util - 2\t:invoke\t:cas\t[1 4]
            INFO  jepsen.util - 3\t:invoke\t:cas\t[2 3]
            INFO  jepsen.util - 2\t:info\t:cas\t:timed-out
            INFO  jepsen.util - 3\t:fail\t:cas\t[2 3]
            INFO  jepsen.util - 4\t:invoke\t:read\tnil
            INFO  jepsen.util - 4\t:ok\t:read\t4
            INFO  jepsen.util - 0\t:invoke\t:write\t0
            INFO  jepsen.util - 5\t:invoke\t:read\tnil
            """
        #expect(JepsenHistory.looksLikeJepsen(text))
        let ops = try JepsenHistory.parse(text).operations
        // The timed-out read and the read still open at the end are dropped.
        #expect(ops.map(\.input) == [.write(1), .cas(from: 1, to: 4), .cas(from: 2, to: 3), .read, .write(0)])
        #expect(ops.map(\.output) == [.ok, nil, .failed, .value(4), nil])
        #expect(ops.map(\.client) == [0, 2, 3, 4, 0])
        // Times are line numbers.
        #expect(ops[0].call == 2 && ops[0].ret == 4)
        #expect(ops[1].isIndefinite && ops[4].isIndefinite)
        #expect(checkLinearizability(model: R(), history: try JepsenHistory.parse(text)).verdict == .linearizable)
    }

    @Test func jepsenMalformedLinesAreRejected() {
        #expect(throws: LincheckError.self) {
            try JepsenHistory.parse("INFO  jepsen.util - 0\t:invoke\t:write\tx\n")
        }
        #expect(throws: LincheckError.self) {
            try JepsenHistory.parse("INFO  jepsen.util - 0\t:ok\t:write\t1\n")
        }
        #expect(throws: LincheckError.self) {
            try JepsenHistory.parse("INFO  jepsen.util - 0\t:invoke\t:read\tnil\nINFO  jepsen.util - 0\t:invoke\t:read\tnil\n")
        }
    }

    @Test func jsonRegister() throws {
        let text = """
            # a comment
            {"client":1,"type":"invoke","op":"write","key":"r","value":3}
            {"client":2,"type":"invoke","op":"cas","key":"r","value":[3,4]}
            {"client":1,"type":"ok","op":"write","key":"r","value":3}
            {"client":2,"type":"fail","op":"cas","key":"r","value":[3,4]}

            {"client":1,"type":"invoke","op":"read","key":"r"}
            {"client":1,"type":"ok","op":"read","key":"r","value":3}
            {"client":3,"type":"invoke","op":"write","value":9}
            {"client":3,"type":"fail"}
            {"client":3,"type":"invoke","op":"write","value":7}
            {"client":3,"type":"info"}
            {"client":4,"type":"invoke","op":"read"}
            {"client":4,"type":"ok","value":null}
            """
        #expect(!JepsenHistory.looksLikeJepsen(text))
        let ops = try JSONLinesHistory.parseRegister(text).operations
        // The failed write of 9 did not happen and is gone; the info write of 7 is indefinite.
        #expect(ops.map(\.input) == [.write(3), .cas(from: 3, to: 4), .read, .write(7), .read])
        #expect(ops.map(\.output) == [.ok, .failed, .value(3), nil, .value(nil)])
        #expect(ops[0].call == 2 && ops[0].ret == 4)  // line numbers
        // The failed cas is fine (it overlaps the write of 3, so it may precede it), but the last
        // read of nil is impossible once the write of 3 was acknowledged.
        let result = checkLinearizability(model: R(), history: try JSONLinesHistory.parseRegister(text))
        #expect(result.verdict == .notLinearizable)
        #expect(result.counterexample?.blocking.call == 13)
    }

    @Test func jsonTimeFieldOrdersEvents() throws {
        // Client logs concatenated, ordered by "time": the read of 1 starts after the write ended.
        let text = """
            {"client":1,"type":"invoke","op":"write","value":1,"time":10}
            {"client":1,"type":"ok","op":"write","time":20}
            {"client":2,"type":"invoke","op":"read","time":30}
            {"client":2,"type":"ok","op":"read","value":null,"time":40}
            {"client":3,"type":"invoke","op":"read","time":5}
            {"client":3,"type":"ok","op":"read","value":null,"time":15}
            """
        let history = try JSONLinesHistory.parseRegister(text)
        #expect(history.operations.map(\.call) == [5, 10, 30])
        #expect(history.operations.map(\.ret) == [15, 20, 40])
        #expect(checkLinearizability(model: R(), history: history).verdict == .notLinearizable)
    }

    @Test func jsonRegisterErrors() {
        func message(_ text: String) -> String? {
            do { _ = try JSONLinesHistory.parseRegister(text); return nil } catch { return "\(error)" }
        }
        #expect(message("{\"client\":1,\"type\":\"invoke\",\"op\":\"write\"}")?.contains("line 1: write needs an integer") == true)
        #expect(message("\n{\"client\":1,\"type\":\"bogus\",\"op\":\"read\"}")?.hasPrefix("line 2: unknown type") == true)
        #expect(message("not json")?.hasPrefix("line 1: not a valid event") == true)
        #expect(message("""
            {"client":1,"type":"invoke","op":"read","key":"a"}
            {"client":2,"type":"invoke","op":"read","key":"b"}
            """)?.contains("single register") == true)
        #expect(message("""
            {"client":1,"type":"invoke","op":"read"}
            {"client":1,"type":"ok","op":"write"}
            """)?.contains("does not match") == true)
    }

    @Test func jsonNames() throws {
        let text = """
            {"client":1,"type":"invoke","op":"create","key":"/a","value":"x"}
            {"client":1,"type":"ok","op":"create","version":1}
            {"client":1,"type":"invoke","op":"create","key":"/a","value":"y"}
            {"client":1,"type":"fail","op":"create","error":"exists"}
            {"client":1,"type":"invoke","op":"cas","key":"/a","value":"z","version":7}
            {"client":1,"type":"fail","op":"cas","error":"version-mismatch"}
            {"client":1,"type":"invoke","op":"put","key":"/a/b","value":42}
            {"client":1,"type":"fail","op":"put","error":"unavailable"}
            {"client":1,"type":"invoke","op":"get","key":"/a"}
            {"client":1,"type":"ok","op":"get","value":"x","version":1}
            {"client":1,"type":"invoke","op":"get","key":"/zz"}
            {"client":1,"type":"ok","op":"get","value":null}
            {"client":2,"type":"invoke","op":"allocate-pid"}
            {"client":2,"type":"ok","op":"allocate-pid","value":12}
            {"client":2,"type":"invoke","op":"allocate-pid"}
            {"client":2,"type":"info","op":"allocate-pid"}
            {"client":3,"type":"invoke","op":"delete","key":"/a","version":3}
            {"client":3,"type":"fail","op":"delete","error":"version-mismatch"}
            {"client":5,"type":"invoke","op":"create-sequential","key":"/s/","value":"q"}
            {"client":5,"type":"ok","op":"create-sequential","value":"/s/0000000000"}
            {"client":5,"type":"invoke","op":"list","key":"/"}
            {"client":5,"type":"ok","op":"list","value":["/s/","/a","/a/"]}
            {"client":4,"type":"invoke","op":"get","key":"/a"}
            """
        let ops = try JSONLinesHistory.parseNames(text).operations
        #expect(ops.map(\.input) == [
            .create(path: "/a", value: "x"), .create(path: "/a", value: "y"),
            .cas(path: "/a", expectedVersion: 7, value: "z"),
            .get(path: "/a"), .get(path: "/zz"), .allocatePID, .allocatePID, .delete(path: "/a", expectedVersion: 3),
            .createSequential(prefix: "/s/", value: "q"), .list(path: "/"),
        ])  // the put failed with a non-model error: dropped; the open get: dropped
        #expect(ops.map(\.output) == [
            .ok(version: 1), .exists, .versionMismatch, .value("x", version: 1), .notFound, .pid(12), nil, .versionMismatch,
            .created(name: "/s/0000000000"),
            .children([.init(name: "/a", isEntry: true, hasChildren: true), .init(name: "/s", isEntry: false, hasChildren: true)]),
        ])
        let result = checkLinearizability(model: N(), history: try JSONLinesHistory.parseNames(text))
        // Nothing was stored below /a (the put failed), so the listing is impossible.
        #expect(result.verdict == .notLinearizable)
        #expect(result.counterexample?.blocking.input == .list(path: "/"))
        func message(_ text: String) -> String? {
            do { _ = try JSONLinesHistory.parseNames(text); return nil } catch { return "\(error)" }
        }
        #expect(message("{\"client\":1,\"type\":\"invoke\",\"op\":\"get\",\"key\":\"nope\"}")?.contains("starting with /") == true)
        #expect(message("{\"client\":1,\"type\":\"invoke\",\"op\":\"cas\",\"key\":\"/a\",\"value\":\"v\"}")?.contains("expected version") == true)
        #expect(message("{\"client\":1,\"type\":\"invoke\",\"op\":\"put\",\"key\":\"/a\",\"value\":\"v\",\"lease\":3}")?
            .contains("record histories without leases") == true)
        #expect(message("""
            {"client":1,"type":"invoke","op":"put","key":"/a/b","value":"v"}
            {"client":1,"type":"fail","op":"put","error":"no-parent"}
            """)?.contains("directories are implicit") == true)
        #expect(message("""
            {"client":1,"type":"invoke","op":"list","key":"/"}
            {"client":1,"type":"ok","op":"list","value":"a"}
            """)?.contains("list needs value [child, ...]") == true)
    }

    @Test func checkTextAndCheckFile() throws {
        let good = """
            {"client":1,"type":"invoke","op":"allocate-pid"}
            {"client":2,"type":"invoke","op":"allocate-pid"}
            {"client":1,"type":"ok","op":"allocate-pid","value":2}
            {"client":2,"type":"ok","op":"allocate-pid","value":1}
            """
        let (goodReport, goodOK) = try checkText(good, model: "names")
        #expect(goodOK)
        #expect(goodReport.contains("format: JSON lines"))
        #expect(goodReport.contains("LINEARIZABLE — 2 operations in 1 partition(s)"))

        let duplicate = good.replacingOccurrences(of: "\"value\":1", with: "\"value\":2")
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("lincheck-\(UUID().uuidString).jsonl")
        try duplicate.write(to: url, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: url) }
        let (badReport, badOK) = try checkFile(path: url.path, model: "names")
        #expect(!badOK)
        #expect(badReport.contains("NOT LINEARIZABLE"))
        #expect(badReport.contains("#0 client 1 [t=1..3] allocate-pid -> pid 2"))
        #expect(badReport.contains("#1 client 2 [t=2..4] allocate-pid -> pid 2   -- impossible in this state"))

        #expect(throws: LincheckError("unknown model \"queue\" (expected register, names or kv)")) {
            try checkFile(path: url.path, model: "queue")
        }
        #expect(throws: LincheckError.self) { try checkFile(path: "/nonexistent/history.jsonl", model: "names") }
    }
}
