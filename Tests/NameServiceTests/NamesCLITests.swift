import Foundation
import Testing
import TestSupport

/// `plexus cluster|ns|ps|lincheck`: help that teaches, one-line errors, exit codes
/// (64 for usage errors, as ArgumentParser's validation gives; 1 for service errors).
@Suite(.serialized) struct NamesCLITests {
    @Test(arguments: [
        (["ns", "--help"], "plexus ns put /config/size 1000"),
        (["ns", "cas", "--help"], "version mismatch"),
        (["cluster", "status", "--help"], "no quorum needed"),
        (["ps", "--help"], "One row per global PID"),
        (["lincheck", "--help"], "0 linearizable, 1 not linearizable"),
        (["lincheck", "--help"], "3 undecided: \"UNKNOWN (time limit)\""),
        (["node", "--help"], "--replica-id"),
    ])
    func helpTeaches(args: [String], expected: String) throws {
        let r = try runPlexus(args)
        #expect(r.status == 0)
        #expect(r.stdout.contains(expected), "\(r.stdout)")
    }

    @Test(arguments: [
        (["ns", "get", "/a"], 64, "no name service given"),
        (["node", "--listen", "127.0.0.1:0", "--replica-id", "1"], 64, "needs --replicas"),
        (["node", "--listen", "127.0.0.1:0", "--replica-id", "1", "--replicas", "1=127.0.0.1:1"], 64, "needs --data-dir"),
        (["node", "--listen", "127.0.0.1:0", "--replica-id", "4", "--replicas", "1=127.0.0.1:9", "--data-dir", "/tmp/x"], 1,
         "--replica-id 4 is not in --replicas"),
        (["lincheck", "--model", "queue", "f"], 64, "unknown --model 'queue'"),
        (["lincheck", "--model", "kv", "--time-limit", "0", "f"], 64, "--time-limit must be a positive number of seconds"),
        (["lincheck", "--model", "names", "/no/such/file"], 2, "cannot read /no/such/file"),
    ])
    func errorsAreOneLine(args: [String], status: Int32, expected: String) throws {
        let r = try runPlexus(args, timeout: 20)
        #expect(r.status == status, "\(r.stderr)")
        #expect(r.stderr.contains(expected), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }

    @Test func unreachableServiceIsOneLineAndExitOne() throws {
        let r = try runPlexus(["ns", "get", "/a", "--names", "127.0.0.1:1", "--timeout-ms", "300"], timeout: 20)
        #expect(r.status == 1)
        #expect(r.stderr.contains("plexus ns get:"), "\(r.stderr)")
        #expect(r.stderr.split(separator: "\n").count == 1, "\(r.stderr)")
    }

    @Test func lincheckExitCodesFollowTheVerdict() throws {
        let dir = NSTemporaryDirectory()
        let good = dir + "plexus-lin-good-\(UInt32.random(in: 0...UInt32.max)).jsonl"
        let bad = dir + "plexus-lin-bad-\(UInt32.random(in: 0...UInt32.max)).jsonl"
        defer { try? FileManager.default.removeItem(atPath: good); try? FileManager.default.removeItem(atPath: bad) }
        try """
            {"client":1,"type":"invoke","op":"allocate-pid"}
            {"client":1,"type":"ok","op":"allocate-pid","value":1}
            {"client":2,"type":"invoke","op":"allocate-pid"}
            {"client":2,"type":"ok","op":"allocate-pid","value":2}
            """.write(toFile: good, atomically: true, encoding: .utf8)
        try """
            {"client":1,"type":"invoke","op":"allocate-pid"}
            {"client":1,"type":"ok","op":"allocate-pid","value":5}
            {"client":2,"type":"invoke","op":"allocate-pid"}
            {"client":2,"type":"ok","op":"allocate-pid","value":5}
            """.write(toFile: bad, atomically: true, encoding: .utf8)
        let ok = try runPlexus(["lincheck", "--model", "names", good])
        #expect(ok.status == 0 && ok.stdout.contains("LINEARIZABLE"), "\(ok.stdout)")
        let notOK = try runPlexus(["lincheck", "--model", "names", bad])
        #expect(notOK.status == 1 && notOK.stdout.contains("NOT LINEARIZABLE"), "\(notOK.stdout)")
    }

    /// A history whose search explodes (22 concurrent writes, then a read of a value never
    /// written) ends at --time-limit as UNKNOWN (time limit), exit status 3; a kv history with a
    /// lost append exits 1 and names its key.
    @Test func lincheckTimeLimitAndKV() throws {
        let dir = NSTemporaryDirectory()
        let hard = dir + "plexus-lin-hard-\(UInt32.random(in: 0...UInt32.max)).jsonl"
        let kv = dir + "plexus-lin-kv-\(UInt32.random(in: 0...UInt32.max)).edn"
        defer { try? FileManager.default.removeItem(atPath: hard); try? FileManager.default.removeItem(atPath: kv) }
        var lines = (1...22).map { "{\"client\":\($0),\"type\":\"invoke\",\"op\":\"write\",\"value\":\($0)}" }
        lines += (1...22).map { "{\"client\":\($0),\"type\":\"ok\",\"op\":\"write\"}" }
        lines += ["{\"client\":0,\"type\":\"invoke\",\"op\":\"read\"}", "{\"client\":0,\"type\":\"ok\",\"op\":\"read\",\"value\":99}"]
        try lines.joined(separator: "\n").write(toFile: hard, atomically: true, encoding: .utf8)
        let undecided = try runPlexus(["lincheck", "--model", "register", "--time-limit", "0.2", hard])
        #expect(undecided.status == 3, "\(undecided.stdout)\(undecided.stderr)")
        #expect(undecided.stdout.contains("UNKNOWN (time limit)"), "\(undecided.stdout)")
        try """
            {:process 1, :type :invoke, :f :append, :key "a", :value "x"}
            {:process 1, :type :ok, :f :append, :key "a", :value "x"}
            {:process 2, :type :invoke, :f :get, :key "a", :value nil}
            {:process 2, :type :ok, :f :get, :key "a", :value ""}
            {:process 1, :type :invoke, :f :put, :key "b", :value "y"}
            {:process 1, :type :ok, :f :put, :key "b", :value "y"}
            """.write(toFile: kv, atomically: true, encoding: .utf8)
        let lost = try runPlexus(["lincheck", "--model", "kv", kv])
        #expect(lost.status == 1, "\(lost.stdout)\(lost.stderr)")
        #expect(lost.stdout.contains("Non-linearizable key(s): \"a\""), "\(lost.stdout)")
    }

    @Test func commandsAgainstARealCluster() throws {
        let cluster = try NameCluster(size: 3)
        try cluster.waitForLeader()
        let names = cluster.addresses[0]
        func plexus(_ args: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
            try runPlexus(args + ["--names", names], timeout: 20)
        }
        #expect(try plexus(["ns", "put", "/cfg/size", "1000"]).stdout.contains("/cfg/size version 1"))
        #expect(try plexus(["ns", "get", "/cfg/size"]).stdout.contains("/cfg/size = 1000  (version 1"))
        let mismatch = try plexus(["ns", "cas", "/cfg/size", "--version", "7", "2000"])
        #expect(mismatch.status == 1 && mismatch.stderr.contains("version mismatch on /cfg/size: expected 7 found 1"))
        #expect(try plexus(["ns", "cas", "/cfg/size", "--version", "1", "2000"]).status == 0)
        #expect(try plexus(["ns", "ls", "/"]).stdout.contains("/cfg/"))
        #expect(try plexus(["ns", "watch", "/cfg", "--count", "2"]).stdout.contains("updated /cfg/size = 2000 (version 2)"))
        #expect(try plexus(["ns", "rm", "/cfg/size"]).status == 0)
        let missing = try plexus(["ns", "get", "/cfg/size"])
        #expect(missing.status == 1 && missing.stderr.contains("not found: /cfg/size"))
        let client = try cluster.client()
        let pid = try client.allocatePID(node: "node-a", address: "127.0.0.1:9", parent: nil)
        #expect(try plexus(["ps"]).stdout.contains("\(pid.rawValue)       starting   node-a"))
        let status = try plexus(["cluster", "status"])
        #expect(status.status == 0)
        #expect(status.stdout.contains("leader") && status.stdout.contains("leading: 3 of 3 replicas reachable, 2 needed"),
                "\(status.stdout)")
    }
}
