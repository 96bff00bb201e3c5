#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Names
import Transport

/// The name service on an external etcd (v3), for sites that already run one.
///
/// Talks to etcd's HTTP/JSON gateway (`/v3/kv/range`, `/v3/kv/put`,
/// `/v3/kv/txn`, `/v3/kv/deleterange`; keys and values base64) over plain
/// HTTP/1.1 sockets. Mapping onto etcd:
///  - a name N is the key `<prefix>/names` + N; `version`, `create_revision`
///    and `mod_revision` are etcd's own (etcd's per-key version has exactly
///    the semantics of `NameEntry.version`);
///  - create / CAS / conditional delete are transactions comparing the key's
///    version (0 = absent);
///  - PIDs come from the counter key `<prefix>/pid`: read it, then a
///    transaction "if mod_revision is unchanged, put counter+1 and the process
///    row"; a lost race retries. etcd reads are linearizable by default.
/// Deviations: no process-state updates beyond allocation (`processes()` lists
/// rows as written at allocation); listing scans the prefix with keys only.
///
/// Thread safety: each call takes a pooled connection; safe from any thread.
public final class EtcdNameClient: NameServiceBackend, @unchecked Sendable {
    public let endpoints: [String]
    public let prefix: String
    public let timeoutMillis: Int
    private let pool = Locked<[HTTPConnection]>([])
    private let preferred = Locked(0)

    /// `endpoints`: etcd client URLs' host:port (e.g. 127.0.0.1:2379).
    public init(endpoints: [String], prefix: String = "/plexus", timeoutMillis: Int = 5000) throws(NameServiceError) {
        guard !endpoints.isEmpty else { throw .invalidArgument("no etcd endpoint given") }
        for e in endpoints {
            do { _ = try SocketAddress(parsing: e) } catch { throw .invalidArgument("etcd endpoint: \(error)") }
        }
        self.endpoints = endpoints
        self.prefix = prefix
        self.timeoutMillis = timeoutMillis
    }

    deinit { for c in pool.value { c.close() } }

    // MARK: - NameServiceBackend

    public func allocatePID(node: String, address: String, parent: GlobalPID?) throws(NameServiceError) -> GlobalPID {
        let counter = prefix + "/pid"
        let deadline = monotonicMillis() + UInt64(timeoutMillis)
        var conflicts = 0
        while monotonicMillis() < deadline {
            let current = try range(counter).first
            let last = current.flatMap { UInt64(String(decoding: $0.value, as: UTF8.self)) } ?? 0
            let pid = last + 1
            let row = "\(node)\t\(address)\t\(parent.map { "\($0.rawValue)" } ?? "")"
            let compare: [String: Any] = current.map {
                ["key": b64(counter), "target": "MOD", "result": "EQUAL", "mod_revision": "\($0.modRevision)"]
            } ?? ["key": b64(counter), "target": "VERSION", "result": "EQUAL", "version": "0"]
            let response = try post("/v3/kv/txn", [
                "compare": [compare],
                "success": [
                    ["request_put": ["key": b64(counter), "value": b64("\(pid)")]],
                    ["request_put": ["key": b64(prefix + "/procs/" + String(format: "%020llu", pid)), "value": b64(row)]],
                ],
            ])
            if response["succeeded"] as? Bool == true { return GlobalPID(pid) }
            // Lost the race for the counter: back off (jittered, exponential,
            // bounded) so that many allocators do not livelock.
            conflicts += 1
            usleep(useconds_t(UInt64.random(in: 0...(1000 << min(conflicts, 6)))))
        }
        throw .timedOut("etcd PID counter contended for \(timeoutMillis) ms", mayHaveTakenEffect: false)
    }

    public func create(_ name: String, value: [UInt8]) throws(NameServiceError) -> NameEntry {
        try validate(name, value)
        let key = prefix + "/names" + name
        let response = try post("/v3/kv/txn", [
            "compare": [["key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "0"]],
            "success": [["request_put": ["key": b64(key), "value": b64(value)]]],
        ])
        guard response["succeeded"] as? Bool == true else { throw .rejected(.nameExists(name)) }
        let revision = headerRevision(response)
        return NameEntry(name: name, value: value, version: 1, createRevision: revision, modRevision: revision, lease: nil)
    }

    public func put(_ name: String, value: [UInt8]) throws(NameServiceError) -> NameEntry {
        try validate(name, value)
        let key = prefix + "/names" + name
        let response = try post("/v3/kv/put", ["key": b64(key), "value": b64(value), "prev_kv": true])
        let revision = headerRevision(response)
        if let prev = response["prev_kv"] as? [String: Any], let kv = KeyValue(prev) {
            return NameEntry(name: name, value: value, version: kv.version + 1, createRevision: kv.createRevision,
                             modRevision: revision, lease: nil)
        }
        return NameEntry(name: name, value: value, version: 1, createRevision: revision, modRevision: revision, lease: nil)
    }

    public func compareAndSet(_ name: String, expectedVersion: UInt64, value: [UInt8]) throws(NameServiceError) -> NameEntry {
        try validate(name, value)
        let key = prefix + "/names" + name
        let response = try post("/v3/kv/txn", [
            "compare": [["key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "\(expectedVersion)"]],
            "success": [["request_put": ["key": b64(key), "value": b64(value), "prev_kv": true]]],
            "failure": [["request_range": ["key": b64(key)]]],
        ])
        let revision = headerRevision(response)
        let first = (response["responses"] as? [[String: Any]])?.first
        guard response["succeeded"] as? Bool == true else {
            let kvs = ((first?["response_range"] as? [String: Any])?["kvs"] as? [[String: Any]]) ?? []
            guard let current = kvs.first.flatMap(KeyValue.init) else { throw .rejected(.nameNotFound(name)) }
            throw .rejected(.versionMismatch(name: name, expected: expectedVersion, found: current.version))
        }
        let prev = ((first?["response_put"] as? [String: Any])?["prev_kv"] as? [String: Any]).flatMap(KeyValue.init)
        return NameEntry(name: name, value: value, version: expectedVersion + 1,
                         createRevision: prev?.createRevision ?? revision, modRevision: revision, lease: nil)
    }

    public func delete(_ name: String, expectedVersion: UInt64?) throws(NameServiceError) {
        try validate(name, [])
        let key = prefix + "/names" + name
        let compare: [String: Any] = expectedVersion.map {
            ["key": b64(key), "target": "VERSION", "result": "EQUAL", "version": "\($0)"]
        } ?? ["key": b64(key), "target": "VERSION", "result": "GREATER", "version": "0"]
        let response = try post("/v3/kv/txn", [
            "compare": [compare],
            "success": [["request_delete_range": ["key": b64(key)]]],
            "failure": [["request_range": ["key": b64(key)]]],
        ])
        guard response["succeeded"] as? Bool == true else {
            let first = (response["responses"] as? [[String: Any]])?.first
            let kvs = ((first?["response_range"] as? [String: Any])?["kvs"] as? [[String: Any]]) ?? []
            guard let current = kvs.first.flatMap(KeyValue.init), let expectedVersion else {
                throw .rejected(.nameNotFound(name))
            }
            throw .rejected(.versionMismatch(name: name, expected: expectedVersion, found: current.version))
        }
    }

    public func get(_ name: String) throws(NameServiceError) -> NameEntry {
        try validate(name, [])
        guard let kv = try range(prefix + "/names" + name).first else { throw .rejected(.nameNotFound(name)) }
        return NameEntry(name: name, value: kv.value, version: kv.version, createRevision: kv.createRevision,
                         modRevision: kv.modRevision, lease: nil)
    }

    public func list(_ path: String) throws(NameServiceError) -> [ChildName] {
        if path != "/" { try validate(path, []) }
        let base = prefix + "/names"
        let scan = base + (path == "/" ? "/" : path + "/")
        var state = NameServiceState()
        for kv in try range(scan, prefix: true, keysOnly: true) {
            let name = String(kv.key.dropFirst(base.count))
            _ = state.apply(.put(name: name, value: [], lease: nil), clientID: 0, requestID: 0)
        }
        switch state.children(of: path) {
        case .success(let children): return children
        case .failure(let error): throw .rejected(error)
        }
    }

    /// PIDs allocated so far with the node and address given at allocation.
    public func processes() throws(NameServiceError) -> [(pid: GlobalPID, node: String, address: String)] {
        try range(prefix + "/procs/", prefix: true).compactMap { kv in
            guard let pid = UInt64(kv.key.split(separator: "/").last ?? "") else { return nil }
            let fields = String(decoding: kv.value, as: UTF8.self).split(separator: "\t", omittingEmptySubsequences: false)
            return (GlobalPID(pid), fields.first.map(String.init) ?? "", fields.count > 1 ? String(fields[1]) : "")
        }
    }

    // MARK: - etcd calls

    struct KeyValue {
        var key: String
        var value: [UInt8]
        var version: UInt64
        var createRevision: UInt64
        var modRevision: UInt64

        init?(_ json: [String: Any]) {
            guard let key = (json["key"] as? String).flatMap({ Data(base64Encoded: $0) }) else { return nil }
            self.key = String(decoding: key, as: UTF8.self)
            value = (json["value"] as? String).flatMap { Data(base64Encoded: $0) }.map { [UInt8]($0) } ?? []
            version = EtcdNameClient.number(json["version"])
            createRevision = EtcdNameClient.number(json["create_revision"])
            modRevision = EtcdNameClient.number(json["mod_revision"])
        }
    }

    /// grpc-gateway writes 64-bit integers as strings.
    static func number(_ any: Any?) -> UInt64 {
        if let s = any as? String { return UInt64(s) ?? 0 }
        if let n = any as? NSNumber { return n.uint64Value }
        return 0
    }

    private func headerRevision(_ response: [String: Any]) -> UInt64 {
        Self.number((response["header"] as? [String: Any])?["revision"])
    }

    private func range(_ key: String, prefix isPrefix: Bool = false, keysOnly: Bool = false) throws(NameServiceError) -> [KeyValue] {
        var body: [String: Any] = ["key": b64(key)]
        if isPrefix {
            var end = Array(key.utf8)
            end[end.count - 1] += 1
            body["range_end"] = Data(end).base64EncodedString()
        }
        if keysOnly { body["keys_only"] = true }
        let response = try post("/v3/kv/range", body)
        return ((response["kvs"] as? [[String: Any]]) ?? []).compactMap(KeyValue.init)
    }

    private func validate(_ name: String, _ value: [UInt8]) throws(NameServiceError) {
        if case .failure(let error) = NameServiceState().get(name), case .invalidName = error { throw .rejected(error) }
        if value.count > NameServiceState.Limits().maxValueBytes {
            throw .rejected(.invalidArgument("value of \(value.count) bytes exceeds \(NameServiceState.Limits().maxValueBytes)"))
        }
    }

    private func b64(_ s: String) -> String { Data(s.utf8).base64EncodedString() }
    private func b64(_ b: [UInt8]) -> String { Data(b).base64EncodedString() }

    /// POSTs JSON to the first endpoint that answers; retries other endpoints on
    /// connection failures until the deadline.
    private func post(_ path: String, _ body: [String: Any]) throws(NameServiceError) -> [String: Any] {
        let payload: Data
        do { payload = try JSONSerialization.data(withJSONObject: body) } catch {
            throw .invalidArgument("cannot encode an etcd request: \(error)")
        }
        let deadline = monotonicMillis() + UInt64(timeoutMillis)
        var lastError = "no endpoint tried"
        while monotonicMillis() < deadline {
            let index = preferred.value
            let endpoint = endpoints[index % endpoints.count]
            let connection = pool.withLock { p -> HTTPConnection? in
                guard let i = p.firstIndex(where: { $0.endpoint == endpoint }) else { return nil }
                return p.remove(at: i)
            }
            do {
                let c = try connection ?? HTTPConnection(endpoint: endpoint, timeoutMillis: Int32(timeoutMillis))
                let (status, data) = try c.post(path: path, body: [UInt8](payload))
                pool.withLock { p in if p.count < 64 { p.append(c) } else { c.close() } }
                guard let json = (try? JSONSerialization.jsonObject(with: Data(data))) as? [String: Any] else {
                    throw NameServiceError.protocolViolation("etcd at \(endpoint) answered \(path) with non-JSON (HTTP \(status))")
                }
                guard status == 200 else {
                    let message = (json["message"] as? String) ?? (json["error"] as? String) ?? "HTTP \(status)"
                    lastError = "etcd at \(endpoint): \(message)"
                    if message.contains("no leader") || message.contains("timed out") {
                        preferred.withLock { $0 = ($0 + 1) % endpoints.count }
                        usleep(20_000)
                        continue
                    }
                    throw NameServiceError.protocolViolation(lastError)
                }
                return json
            } catch let error as NameServiceError {
                if case .protocolViolation = error { throw error }
                lastError = error.description
                connection?.close()
                preferred.withLock { $0 = ($0 + 1) % endpoints.count }
                usleep(20_000)
            } catch {
                lastError = "\(error)"
                preferred.withLock { $0 = ($0 + 1) % endpoints.count }
            }
        }
        throw .timedOut("etcd did not answer \(path) within \(timeoutMillis) ms (\(lastError))", mayHaveTakenEffect: true)
    }
}

/// A minimal HTTP/1.1 client connection (keep-alive, Content-Length bodies),
/// enough for etcd's JSON gateway. Responses are bounded (16 MiB). Not
/// thread-safe: one request at a time.
final class HTTPConnection: @unchecked Sendable {
    let endpoint: String
    private let fd: Int32
    static let maxResponseBytes = 16 << 20

    init(endpoint: String, timeoutMillis: Int32) throws(NameServiceError) {
        self.endpoint = endpoint
        let address: SocketAddress
        do { address = try SocketAddress(parsing: endpoint) } catch { throw .invalidArgument("\(error)") }
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard s >= 0 else { throw .unreachable("socket: \(String(cString: strerror(errno)))") }
        var tv = timeval(tv_sec: Int(timeoutMillis / 1000), tv_usec: Int(timeoutMillis % 1000) * 1000)
        _ = setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var one: Int32 = 1
        _ = setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = address.port.bigEndian
        inet_pton(AF_INET, address.host, &sa.sin_addr)
        let r = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r < 0 {
            let e = errno
            Glibc.close(s)
            throw .unreachable("etcd at \(endpoint): \(String(cString: strerror(e)))")
        }
        fd = s
    }

    func close() { Glibc.close(fd) }

    func post(path: String, body: [UInt8]) throws(NameServiceError) -> (Int, [UInt8]) {
        let head = "POST \(path) HTTP/1.1\r\nHost: \(endpoint)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
        let request = Array(head.utf8) + body
        var done = 0
        while done < request.count {
            let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .unreachable("etcd at \(endpoint): send: \(String(cString: strerror(errno)))")
            }
            done += n
        }
        var buffer: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        var headerEnd: Int?
        var contentLength = -1
        var status = 0
        while true {
            if let end = headerEnd, contentLength >= 0, buffer.count >= end + contentLength {
                return (status, Array(buffer[end..<(end + contentLength)]))
            }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw .unreachable("etcd at \(endpoint): connection closed or timed out while reading the reply")
            }
            buffer += chunk[0..<n]
            guard buffer.count <= Self.maxResponseBytes else {
                throw .protocolViolation("etcd reply exceeds \(Self.maxResponseBytes) bytes")
            }
            if headerEnd == nil, let range = findHeaderEnd(buffer) {
                headerEnd = range
                let header = String(decoding: buffer[0..<range], as: UTF8.self)
                let lines = header.split(separator: "\r\n")
                status = lines.first.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
                for line in lines.dropFirst() {
                    let parts = line.split(separator: ":", maxSplits: 1)
                    if parts.count == 2, parts[0].lowercased() == "content-length" {
                        contentLength = Int(parts[1].trimmingCharacters(in: .whitespaces)) ?? -1
                    }
                    if parts.count == 2, parts[0].lowercased() == "transfer-encoding" {
                        throw .protocolViolation("etcd sent a chunked reply; only Content-Length bodies are supported")
                    }
                }
                guard contentLength >= 0, contentLength <= Self.maxResponseBytes else {
                    throw .protocolViolation("etcd reply without a usable Content-Length")
                }
            }
        }
    }

    private func findHeaderEnd(_ b: [UInt8]) -> Int? {
        guard b.count >= 4 else { return nil }
        for i in 0...(b.count - 4) where b[i] == 13 && b[i + 1] == 10 && b[i + 2] == 13 && b[i + 3] == 10 {
            return i + 4
        }
        return nil
    }
}
