import Foundation
@testable import NameService
import NamesCore
import Testing

/// The etcd backend's decoders (HTTP framing, gateway JSON, process rows)
/// refuse malformed, truncated and oversized input with a typed error.
@Suite struct EtcdDecodingTests {
    static let good = Array("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n3\r\n1}\n\r\n0\r\n\r\n".utf8)

    @Test func chunkedAndLengthBodiesParse() throws {
        var p = HTTPResponseParser(maxBodyBytes: 1 << 20)
        // Byte by byte, as a slow network would deliver it.
        for b in Self.good { try p.feed([b][...]) }
        #expect(p.isComplete && p.status == 200)
        #expect(p.takeLine() == Array("{\"a\":1}".utf8))
        var q = HTTPResponseParser(maxBodyBytes: 1 << 20)
        try q.feed(Array("HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}".utf8)[...])
        #expect(q.isComplete && q.status == 404 && q.takeBody() == Array("{}".utf8))
    }

    @Test(arguments: [
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFF\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000000000000000000000000000000000000000000000000000000000000000000001",
        "SMTP ready\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nbroken header\r\n\r\n",
    ])
    func malformedFramingIsRefused(text: String) {
        var p = HTTPResponseParser(maxBodyBytes: 1 << 20)
        #expect(throws: NameServiceError.self) { try p.feed(Array(text.utf8)[...]) }
    }

    @Test func oversizedInputIsRefused() {
        var head = HTTPResponseParser(maxBodyBytes: 1 << 20)
        #expect(throws: NameServiceError.self) {
            try head.feed(Array(("HTTP/1.1 200 OK\r\nX: " + String(repeating: "a", count: 20_000)).utf8)[...])
        }
        var body = HTTPResponseParser(maxBodyBytes: 100)
        #expect(throws: NameServiceError.self) {
            try body.feed(Array("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)[...])
            for _ in 0..<20 { try body.feed(Array("a\r\n0123456789\r\n".utf8)[...]) }
        }
    }

    @Test func truncatedRepliesAreIncompleteNotCrashes() throws {
        for cut in 0..<Self.good.count {
            var p = HTTPResponseParser(maxBodyBytes: 1 << 20)
            try p.feed(Self.good[0..<cut])
            #expect(!p.isComplete)
            #expect(throws: NameServiceError.self) { try p.finishAtEOF() }
        }
    }

    @Test func randomAndMutatedBytesNeverCrash() {
        var rng = SystemRandomNumberGenerator()
        for round in 0..<3000 {
            var bytes = Self.good
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...200, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                for _ in 0..<Int.random(in: 1...6, using: &rng) {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            var p = HTTPResponseParser(maxBodyBytes: 1 << 16)
            _ = try? p.feed(bytes[...])
            _ = try? EtcdJSON.decode(EtcdJSON.WatchMessage.self, bytes, what: "fuzz")
            _ = try? EtcdJSON.decode(EtcdJSON.TxnResponse.self, bytes, what: "fuzz")
            _ = try? EtcdNameClient.decodeRow(bytes, pid: 1)
        }
    }

    @Test(arguments: [
        #"{"kvs":[{"key":"not base64!"}]}"#,
        #"{"kvs":[{"key":"YQ==","value":"%%%"}]}"#,
        #"{"kvs":[{"key":"YQ==","version":"-3"}]}"#,
        #"{"kvs":[{"key":"YQ==","version":"99999999999999999999999"}]}"#,
        #"{"kvs":[{"value":"YQ=="}]}"#,
    ])
    func malformedKeyValuesAreRefused(json: String) {
        // Refused when decoded or when the key-value is read, never accepted.
        #expect(throws: NameServiceError.self) {
            let response = try EtcdJSON.decode(EtcdJSON.RangeResponse.self, Array(json.utf8), what: "range")
            _ = try EtcdJSON.KV(response.kvs?.first ?? EtcdJSON.KeyValue())
        }
    }

    @Test(arguments: ["", "{", "[]", #"{"kvs":"x"}"#, #"{"header":{"revision":true}}"#, String(repeating: "[", count: 10_000)])
    func malformedJSONIsRefused(json: String) {
        #expect(throws: NameServiceError.self) {
            _ = try EtcdJSON.decode(EtcdJSON.RangeResponse.self, Array(json.utf8), what: "range")
        }
    }

    @Test func processRowsRoundTripAndRefuseUnknownStates() throws {
        let record = ProcessRecord(pid: GlobalPID(7), node: "n", address: "127.0.0.1:1", state: .migrating, parent: GlobalPID(3),
                                   startTimeMillis: 42, exitStatus: nil, lease: LeaseID(UInt64.max))
        let bytes = try JSONEncoder().encode(EtcdNameClient.Row(record))
        #expect(try EtcdNameClient.decodeRow([UInt8](bytes), pid: 7) == record)
        #expect(throws: NameServiceError.self) {
            _ = try EtcdNameClient.decodeRow(Array(#"{"state":"zombie","node":"n","address":"","start":1}"#.utf8), pid: 7)
        }
    }

    @Test(arguments: [
        ("10.0.0.1:7401,10.0.0.2:7401", NameServiceSpec.replicas(["10.0.0.1:7401", "10.0.0.2:7401"])),
        ("etcd://127.0.0.1:2379", NameServiceSpec.etcd(endpoints: ["127.0.0.1:2379"], prefix: "/plexus")),
        ("etcd://127.0.0.1:2379,127.0.0.2:2379/jobs/a", NameServiceSpec.etcd(endpoints: ["127.0.0.1:2379", "127.0.0.2:2379"],
                                                                            prefix: "/jobs/a")),
    ])
    func specsParse(text: String, spec: NameServiceSpec) throws {
        #expect(try NameServiceSpec(parsing: text) == spec)
    }
}
