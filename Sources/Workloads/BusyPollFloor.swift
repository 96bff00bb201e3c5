#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// The round trip this machine can reach between two plain processes (no
/// runtime, no serving threads): a 16 B request answered over TCP on
/// loopback (TCP_NODELAY), each side spinning on a non-blocking `recv`
/// (MSG_DONTWAIT) instead of sleeping in `read`, so that no wake-up is
/// paid (MEASUREMENTS.md, `floors/tcp_floor.c 4096 N 1 1`). The request's
/// first byte asks for a 4 KiB reply (a page) or a 16 B one (a lock or
/// barrier message).
///
/// `plexus bench` starts the server and the client as processes of their
/// own (`plexus bench _floor-peer`).
public enum BusyPollFloor {
    public static let requestBytes = 16
    public static let pageReplyBytes = 4096
    public static let smallReplyBytes = 16

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        init(_ what: String) { description = "busy-poll floor: \(what): \(String(cString: strerror(errno)))" }
        init(message: String) { description = "busy-poll floor: \(message)" }
    }

    /// A listening socket on 127.0.0.1 at an ephemeral port.
    public static func listen() throws -> (fd: Int32, port: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket") }
        var a = TCPFloor.loopback(port: 0)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &a) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && Glibc.listen(fd, 1) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        guard ok else {
            let failure = Failure("bind/listen on 127.0.0.1")
            close(fd)
            throw failure
        }
        return (fd, UInt16(bigEndian: a.sin_port))
    }

    /// Accepts one client and answers its requests until it closes the connection.
    public static func serve(listener: Int32) throws {
        let fd = accept(listener, nil, nil)
        guard fd >= 0 else { throw Failure("accept") }
        close(listener)
        defer { close(fd) }
        noDelay(fd)
        var request = [UInt8](repeating: 0, count: requestBytes)
        let page = [UInt8](repeating: 2, count: pageReplyBytes)
        while true {
            guard try spinReceive(fd, &request, endOK: true) else { return }
            try send(fd, page, count: request[0] == 1 ? pageReplyBytes : smallReplyBytes)
        }
    }

    /// Connects to the server at `port` and measures, in alternating blocks
    /// of `block` (each after a few unkept round trips), `samples` round
    /// trips with a 4 KiB reply and `samples` with a 16 B reply, in
    /// microseconds.
    public static func measure(port: UInt16, samples: Int, block: Int = 50) throws -> (page: [Double], small: [Double]) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure("socket") }
        defer { close(fd) }
        var a = TCPFloor.loopback(port: port)
        let connected = withUnsafePointer(to: &a) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0 }
        }
        guard connected else { throw Failure("connect to 127.0.0.1:\(port)") }
        noDelay(fd)
        var request = [UInt8](repeating: 1, count: requestBytes)
        var reply = [UInt8](repeating: 0, count: pageReplyBytes)
        var page: [Double] = [], small: [Double] = []
        page.reserveCapacity(samples)
        small.reserveCapacity(samples)
        func roundTrips(_ n: Int, pageReply: Bool, into out: inout [Double], keep: Bool) throws {
            request[0] = pageReply ? 1 : 0
            let replyBytes = pageReply ? pageReplyBytes : smallReplyBytes
            for _ in 0..<n {
                let t0 = nanoseconds()
                try send(fd, request, count: requestBytes)
                _ = try spinReceive(fd, &reply, count: replyBytes, endOK: false)
                if keep { out.append(Double(nanoseconds() - t0) / 1000) }
            }
        }
        var unused: [Double] = []
        try roundTrips(200, pageReply: true, into: &unused, keep: false)
        while page.count < samples {
            let n = min(block, samples - page.count)
            try roundTrips(5, pageReply: true, into: &unused, keep: false)
            try roundTrips(n, pageReply: true, into: &page, keep: true)
            try roundTrips(5, pageReply: false, into: &unused, keep: false)
            try roundTrips(n, pageReply: false, into: &small, keep: true)
        }
        return (page, small)
    }

    /// Receives `count` bytes (all of `buffer` by default), spinning on
    /// MSG_DONTWAIT. Returns false if the peer closed the connection before
    /// the first byte and `endOK`.
    private static func spinReceive(_ fd: Int32, _ buffer: inout [UInt8], count: Int? = nil, endOK: Bool) throws -> Bool {
        let total = count ?? buffer.count
        return try buffer.withUnsafeMutableBytes { b in
            var done = 0
            while done < total {
                let n = recv(fd, b.baseAddress! + done, total - done, Int32(MSG_DONTWAIT))
                if n > 0 { done += n; continue }
                if n == 0 {
                    if done == 0 && endOK { return false }
                    throw Failure(message: "the peer closed the connection in the middle of a message")
                }
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { continue }
                throw Failure("recv")
            }
            return true
        }
    }

    private static func send(_ fd: Int32, _ buffer: [UInt8], count: Int) throws {
        try buffer.withUnsafeBytes { b in
            var done = 0
            while done < count {
                let n = Glibc.send(fd, b.baseAddress! + done, count - done, Int32(MSG_NOSIGNAL))
                if n > 0 { done += n; continue }
                if n < 0 && errno == EINTR { continue }
                throw Failure("send")
            }
        }
    }

    private static func noDelay(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

}
