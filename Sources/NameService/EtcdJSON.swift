import Foundation
import NamesCore

/// etcd v3 gateway JSON (grpc-gateway, `OrigName`): 64-bit integers arrive as
/// strings, zero values and empty lists are omitted, bytes are base64. These
/// types decode exactly what `EtcdNameClient` reads; anything malformed is a
/// `.protocolViolation`, never a crash.
enum EtcdJSON {
    /// An int64 written as a JSON string (or, leniently, a number).
    struct Int64Value: Decodable, Equatable {
        var value: Int64
        init(_ value: Int64) { self.value = value }
        init(from decoder: Decoder) throws {
            let c = try decoder.singleValueContainer()
            if let s = try? c.decode(String.self) {
                guard s.utf8.count <= 20, let v = Int64(s) else {
                    throw DecodingError.dataCorruptedError(in: c, debugDescription: "not an int64: \(s.prefix(32))")
                }
                value = v
            } else {
                value = try c.decode(Int64.self)
            }
        }
        /// As an unsigned revision/version/count; negative values are malformed.
        func unsigned(_ field: String) throws(NameServiceError) -> UInt64 {
            guard value >= 0 else { throw .protocolViolation("etcd sent a negative \(field): \(value)") }
            return UInt64(value)
        }
    }

    struct Header: Decodable { var revision: Int64Value? }

    struct KeyValue: Decodable {
        var key: String?
        var value: String?
        var create_revision: Int64Value?
        var mod_revision: Int64Value?
        var version: Int64Value?
        var lease: Int64Value?
    }

    /// A decoded key-value with its bytes.
    struct KV {
        var key: String
        var value: [UInt8]
        var createRevision: UInt64
        var modRevision: UInt64
        var version: UInt64
        /// 0 = none.
        var lease: Int64

        init(_ raw: KeyValue) throws(NameServiceError) {
            guard let k = raw.key, let keyBytes = Data(base64Encoded: k) else {
                throw .protocolViolation("etcd sent a key-value without a valid base64 key")
            }
            key = String(decoding: keyBytes, as: UTF8.self)
            if let v = raw.value {
                guard let bytes = Data(base64Encoded: v) else { throw .protocolViolation("etcd sent a value that is not base64") }
                value = [UInt8](bytes)
            } else {
                value = []
            }
            createRevision = try raw.create_revision?.unsigned("create_revision") ?? 0
            modRevision = try raw.mod_revision?.unsigned("mod_revision") ?? 0
            version = try raw.version?.unsigned("version") ?? 0
            lease = raw.lease?.value ?? 0
        }
    }

    struct RangeResponse: Decodable {
        var header: Header?
        var kvs: [KeyValue]?
        var more: Bool?
    }

    struct PutResponse: Decodable {
        var header: Header?
        var prev_kv: KeyValue?
    }

    struct DeleteRangeResponse: Decodable {
        var header: Header?
        var deleted: Int64Value?
    }

    struct ResponseOp: Decodable {
        var response_range: RangeResponse?
        var response_put: PutResponse?
        var response_delete_range: DeleteRangeResponse?
    }

    struct TxnResponse: Decodable {
        var header: Header?
        var succeeded: Bool?
        var responses: [ResponseOp]?
    }

    struct LeaseGrantResponse: Decodable {
        var header: Header?
        var ID: Int64Value?
        var TTL: Int64Value?
        var error: String?
    }

    struct LeaseRevokeResponse: Decodable { var header: Header? }

    struct LeaseKeepAliveResponse: Decodable {
        var header: Header?
        var ID: Int64Value?
        var TTL: Int64Value?
    }

    struct StreamError: Decodable {
        var grpc_code: Int?
        var http_code: Int?
        var message: String?
        var http_status: String?
    }

    struct KeepAliveMessage: Decodable {
        var result: LeaseKeepAliveResponse?
        var error: StreamError?
    }

    struct Event: Decodable {
        /// Absent for PUT (the zero value).
        var type: String?
        var kv: KeyValue?
        var prev_kv: KeyValue?
    }

    struct WatchResponse: Decodable {
        var header: Header?
        var watch_id: Int64Value?
        var created: Bool?
        var canceled: Bool?
        var compact_revision: Int64Value?
        var cancel_reason: String?
        var events: [Event]?
    }

    struct WatchMessage: Decodable {
        var result: WatchResponse?
        var error: StreamError?
    }

    struct StatusResponse: Decodable {
        var header: Header?
        var leader: Int64Value?
        var errors: [String]?
    }

    /// An error reply: `{"error": "...", "message": "...", "code": N}`.
    struct ErrorResponse: Decodable {
        var error: String?
        var message: String?
        var code: Int?
    }

    static func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8], what: String) throws(NameServiceError) -> T {
        do { return try JSONDecoder().decode(T.self, from: Data(bytes)) } catch {
            throw .protocolViolation("etcd answered \(what) with malformed JSON (\(String(describing: error).prefix(200)))")
        }
    }

    static func revision(_ header: Header?, what: String) throws(NameServiceError) -> UInt64 {
        guard let r = header?.revision else { throw .protocolViolation("etcd answered \(what) without a revision") }
        return try r.unsigned("revision")
    }
}
