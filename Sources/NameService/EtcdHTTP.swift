#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Transport

/// Incremental parser of one HTTP/1.1 response: status line, headers, then a
/// body framed by Content-Length or by chunked transfer coding (etcd's gateway
/// uses chunks for its streaming RPCs: lease keep-alive and watch).
///
/// Fuzz-safe: every size is bounded (head 16 KiB, body `maxBodyBytes`, chunk
/// size lines 64 bytes) and every malformation is a `.protocolViolation`.
struct HTTPResponseParser {
    enum Framing: Equatable { case length(Int), chunked, untilClose }
    private enum Stage: Equatable { case head, chunkSize, chunkData(Int), chunkDataEnd, trailers, lengthBody(Int), done }

    static let maxHeadBytes = 16 * 1024
    let maxBodyBytes: Int
    private(set) var status = 0
    private(set) var framing: Framing?
    /// The server asked to close the connection after this response.
    private(set) var closeAfter = false
    private var stage = Stage.head
    private var input: [UInt8] = []
    private var inputStart = 0
    /// Decoded body bytes not yet taken.
    private(set) var body: [UInt8] = []
    private var bodyTotal = 0

    init(maxBodyBytes: Int) { self.maxBodyBytes = maxBodyBytes }

    var isComplete: Bool { stage == .done }
    var headComplete: Bool { stage != .head }
    /// Bytes after the end of the response (a well-behaved server sends none).
    var hasTrailingBytes: Bool { inputStart < input.count }

    mutating func feed(_ bytes: ArraySlice<UInt8>) throws(NameServiceError) {
        if inputStart > 0 && inputStart == input.count {
            input.removeAll(keepingCapacity: true)
            inputStart = 0
        }
        input += bytes
        try advance()
        if inputStart > 64 * 1024 {
            input.removeFirst(inputStart)
            inputStart = 0
        }
    }

    /// At end of input: a body framed by the connection's end is complete.
    mutating func finishAtEOF() throws(NameServiceError) {
        if case .lengthBody = stage, framing == .untilClose {
            stage = .done
            return
        }
        guard stage == .done else { throw .protocolViolation("etcd closed the connection in the middle of a reply") }
    }

    /// Takes the decoded body so far.
    mutating func takeBody() -> [UInt8] {
        defer { body.removeAll(keepingCapacity: true) }
        return body
    }

    /// Takes one newline-terminated line from the decoded body, if complete.
    mutating func takeLine() -> [UInt8]? {
        guard let newline = body.firstIndex(of: 10) else { return nil }
        let line = Array(body[..<newline])
        body.removeFirst(newline + 1)
        return line
    }

    private func findCRLF(from: Int) -> Int? {
        var i = from
        while i + 1 < input.count {
            if input[i] == 13 && input[i + 1] == 10 { return i }
            i += 1
        }
        return nil
    }

    private mutating func appendBody(_ count: Int) throws(NameServiceError) {
        bodyTotal += count
        guard bodyTotal <= maxBodyBytes else {
            throw .protocolViolation("etcd reply exceeds \(maxBodyBytes) bytes; narrow the request (fewer names per call)")
        }
        body += input[inputStart..<(inputStart + count)]
        inputStart += count
    }

    private mutating func advance() throws(NameServiceError) {
        while true {
            switch stage {
            case .done:
                return
            case .head:
                guard let end = findHeadEnd() else {
                    guard input.count - inputStart <= Self.maxHeadBytes else {
                        throw .protocolViolation("etcd reply head exceeds \(Self.maxHeadBytes) bytes")
                    }
                    return
                }
                guard end - inputStart <= Self.maxHeadBytes else {
                    throw .protocolViolation("etcd reply head exceeds \(Self.maxHeadBytes) bytes")
                }
                try parseHead(String(decoding: input[inputStart..<end], as: UTF8.self))
                inputStart = end + 4
            case .lengthBody(let left):
                let n = min(left, input.count - inputStart)
                if n > 0 { try appendBody(n) }
                if framing == .untilClose {
                    return
                }
                if left - n == 0 {
                    stage = .done
                } else {
                    stage = .lengthBody(left - n)
                    return
                }
            case .chunkSize:
                guard let end = findCRLF(from: inputStart) else {
                    guard input.count - inputStart <= 64 else { throw .protocolViolation("etcd sent a malformed chunk size") }
                    return
                }
                let line = String(decoding: input[inputStart..<end], as: UTF8.self)
                let hex = line.split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
                let digits = hex.trimmingCharacters(in: .whitespaces)
                guard !digits.isEmpty, digits.count <= 8, let size = Int(digits, radix: 16), size >= 0 else {
                    throw .protocolViolation("etcd sent a malformed chunk size '\(line.prefix(32))'")
                }
                guard size <= maxBodyBytes else { throw .protocolViolation("etcd sent a chunk of \(size) bytes") }
                inputStart = end + 2
                stage = size == 0 ? .trailers : .chunkData(size)
            case .chunkData(let left):
                let n = min(left, input.count - inputStart)
                if n > 0 { try appendBody(n) }
                if left - n > 0 {
                    stage = .chunkData(left - n)
                    return
                }
                stage = .chunkDataEnd
            case .chunkDataEnd:
                guard input.count - inputStart >= 2 else { return }
                guard input[inputStart] == 13 && input[inputStart + 1] == 10 else {
                    throw .protocolViolation("etcd sent a chunk without its CRLF")
                }
                inputStart += 2
                stage = .chunkSize
            case .trailers:
                guard let end = findCRLF(from: inputStart) else {
                    guard input.count - inputStart <= Self.maxHeadBytes else {
                        throw .protocolViolation("etcd sent oversized trailers")
                    }
                    return
                }
                let empty = end == inputStart
                inputStart = end + 2
                if empty { stage = .done }
            }
        }
    }

    private func findHeadEnd() -> Int? {
        guard input.count - inputStart >= 4 else { return nil }
        var i = inputStart
        while i + 3 < input.count {
            if input[i] == 13 && input[i + 1] == 10 && input[i + 2] == 13 && input[i + 3] == 10 { return i }
            i += 1
        }
        return nil
    }

    private mutating func parseHead(_ head: String) throws(NameServiceError) {
        let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
        let statusParts = (lines.first ?? "").split(separator: " ", maxSplits: 2)
        guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), statusParts[1].count == 3,
              let code = Int(statusParts[1]), (100...599).contains(code)
        else { throw .protocolViolation("etcd sent a malformed status line '\((lines.first ?? "").prefix(64))'") }
        status = code
        var length: Int?
        var chunked = false
        for line in lines.dropFirst() {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2 else { throw .protocolViolation("etcd sent a malformed header line '\(line.prefix(64))'") }
            let name = parts[0].lowercased()
            let value = parts[1].trimmingCharacters(in: .whitespaces).lowercased()
            switch name {
            case "content-length":
                guard value.count <= 12, let n = Int(value), n >= 0 else {
                    throw .protocolViolation("etcd sent a malformed Content-Length '\(value.prefix(32))'")
                }
                guard n <= maxBodyBytes else {
                    throw .protocolViolation("etcd reply of \(n) bytes exceeds \(maxBodyBytes); narrow the request")
                }
                if let length, length != n { throw .protocolViolation("etcd sent conflicting Content-Length headers") }
                length = n
            case "transfer-encoding":
                guard value == "chunked" else { throw .protocolViolation("etcd sent unsupported Transfer-Encoding '\(value)'") }
                chunked = true
            case "connection":
                if value.contains("close") { closeAfter = true }
            default:
                break
            }
        }
        if chunked {
            framing = .chunked
            stage = .chunkSize
        } else if let length {
            framing = .length(length)
            stage = length == 0 ? .done : .lengthBody(length)
        } else {
            framing = .untilClose
            closeAfter = true
            stage = .lengthBody(Int.max)
        }
    }
}

/// A minimal HTTP/1.1 client connection to one etcd endpoint (IPv4), enough
/// for etcd's JSON gateway: keep-alive POSTs, Content-Length or chunked
/// replies, every wait bounded by a deadline (monotonic milliseconds). Not
/// thread-safe: one request at a time.
final class HTTPConnection: @unchecked Sendable {
    let endpoint: String
    private let fd: Int32
    private var closed = false
    /// False once a reply left the connection in an unknown state.
    private(set) var reusable = true
    static let maxResponseBytes = 16 << 20

    init(endpoint: String, deadline: UInt64) throws(NameServiceError) {
        self.endpoint = endpoint
        let address: SocketAddress
        do { address = try SocketAddress(parsing: endpoint) } catch { throw .invalidArgument("etcd endpoint: \(error)") }
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard s >= 0 else { throw .unreachable("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        _ = setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = address.port.bigEndian
        let host = address.host == "localhost" ? "127.0.0.1" : address.host
        guard inet_pton(AF_INET, host, &sa.sin_addr) == 1 else {
            Glibc.close(s)
            throw .invalidArgument("etcd endpoint \(endpoint): not an IPv4 address")
        }
        let r = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r < 0 && errno != EINPROGRESS {
            let e = errno
            Glibc.close(s)
            throw .unreachable("etcd at \(endpoint): \(String(cString: strerror(e)))")
        }
        fd = s
        if r < 0 {
            do { try wait(for: Int16(POLLOUT), deadline: deadline, doing: "connecting") } catch {
                Glibc.close(s)
                throw error
            }
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            _ = getsockopt(s, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 {
                Glibc.close(s)
                throw .unreachable("etcd at \(endpoint): \(String(cString: strerror(err)))")
            }
        }
    }

    deinit { close() }

    func close() {
        guard !closed else { return }
        closed = true
        reusable = false
        Glibc.close(fd)
    }

    /// Waits until the socket is ready or the deadline passes (then `.timedOut`).
    private func wait(for events: Int16, deadline: UInt64, doing what: String) throws(NameServiceError) {
        while true {
            let now = monotonicMillis()
            guard now < deadline else {
                reusable = false
                throw .timedOut("etcd at \(endpoint) did not answer in time (\(what))", mayHaveTakenEffect: true)
            }
            var p = pollfd(fd: fd, events: events, revents: 0)
            let r = poll(&p, 1, Int32(min(deadline - now, 60_000)))
            if r < 0 {
                if errno == EINTR { continue }
                reusable = false
                throw .connectionLost("etcd at \(endpoint): poll: \(String(cString: strerror(errno)))")
            }
            if r > 0 { return }
        }
    }

    /// Sends one POST. Throws `.unreachable` if nothing could be sent.
    func sendRequest(path: String, body: [UInt8], deadline: UInt64) throws(NameServiceError) {
        let head = "POST \(path) HTTP/1.1\r\nHost: \(endpoint)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
        let request = Array(head.utf8) + body
        var done = 0
        while done < request.count {
            let n = request.withUnsafeBytes { send(fd, $0.baseAddress! + done, $0.count - done, Int32(MSG_NOSIGNAL)) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK {
                    try wait(for: Int16(POLLOUT), deadline: deadline, doing: "sending")
                    continue
                }
                let why = String(cString: strerror(errno))
                reusable = false
                if done == 0 { throw .unreachable("etcd at \(endpoint): send: \(why)") }
                throw .connectionLost("etcd at \(endpoint): send: \(why)")
            }
            done += n
        }
    }

    /// Reads more of the reply into `parser`; false at end of stream.
    func read(into parser: inout HTTPResponseParser, deadline: UInt64) throws(NameServiceError) -> Bool {
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                do { try parser.feed(chunk[0..<n]) } catch {
                    reusable = false
                    throw error
                }
                return true
            }
            if n == 0 {
                reusable = false
                return false
            }
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK {
                try wait(for: Int16(POLLIN), deadline: deadline, doing: "reading the reply")
                continue
            }
            reusable = false
            throw .connectionLost("etcd at \(endpoint): recv: \(String(cString: strerror(errno)))")
        }
    }

    /// One request, one whole reply: (HTTP status, body).
    func post(path: String, body: [UInt8], deadline: UInt64) throws(NameServiceError) -> (Int, [UInt8]) {
        try sendRequest(path: path, body: body, deadline: deadline)
        var parser = HTTPResponseParser(maxBodyBytes: Self.maxResponseBytes)
        while !parser.isComplete {
            if !(try read(into: &parser, deadline: deadline)) {
                do { try parser.finishAtEOF() } catch {
                    throw .connectionLost("etcd at \(endpoint) closed the connection before the whole reply arrived")
                }
            }
        }
        if parser.closeAfter || parser.hasTrailingBytes { reusable = false }
        return (parser.status, parser.takeBody())
    }
}
