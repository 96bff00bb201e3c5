#if canImport(Glibc)
import Glibc
#endif
import Wire

/// An IPv4 endpoint. Names are resolved once, at parse time.
public struct SocketAddress: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses "HOST:PORT" where HOST is a dotted IPv4 address or "localhost".
    public init(parsing text: String) throws(TransportError) {
        guard let colon = text.lastIndex(of: ":") else {
            throw .badAddress(text, reason: "no ':' before the port")
        }
        var host = String(text[..<colon])
        let portText = text[text.index(after: colon)...]
        guard let port = UInt16(portText) else {
            throw .badAddress(text, reason: "port '\(portText)' is not a number from 0 to 65535")
        }
        if host == "localhost" { host = "127.0.0.1" }
        if host.isEmpty || host == "*" { host = "0.0.0.0" }
        var a = in_addr()
        guard inet_pton(AF_INET, host, &a) == 1 else {
            throw .badAddress(text, reason: "'\(host)' is not an IPv4 address")
        }
        self.host = host
        self.port = port
    }

    public var description: String { "\(host):\(port)" }

    func sockaddr() -> sockaddr_in {
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = port.bigEndian
        _ = inet_pton(AF_INET, host, &sa.sin_addr)
        return sa
    }
}

/// Thin wrappers over the socket system calls: each reads errno right after the
/// call, retries EINTR and throws a typed error.
enum Sys {
    static func check(_ r: Int32, _ call: String, _ context: String) throws(TransportError) -> Int32 {
        if r < 0 { throw .system(call: call, errno: errno, context: context) }
        return r
    }

    static func tcpSocket() throws(TransportError) -> Int32 {
        try check(socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0), "socket", "a TCP socket")
    }

    static func setNoDelay(_ fd: Int32) {
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Binds and listens; port 0 picks an ephemeral port. Returns the fd and the bound address.
    static func listen(on address: SocketAddress) throws(TransportError) -> (Int32, SocketAddress) {
        let fd = try tcpSocket()
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var sa = address.sockaddr()
        let r = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r < 0 {
            let e = errno
            close(fd)
            throw .system(call: "bind", errno: e, context: "listening address \(address)")
        }
        if Glibc.listen(fd, 512) < 0 {
            let e = errno
            close(fd)
            throw .system(call: "listen", errno: e, context: "\(address)")
        }
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return (fd, SocketAddress(host: address.host, port: UInt16(bigEndian: bound.sin_port)))
    }

    /// Accepts one connection; returns nil when the listener was closed.
    static func accept(_ fd: Int32) -> Int32? {
        while true {
            let c = Glibc.accept(fd, nil, nil)
            if c >= 0 {
                _ = fcntl(c, F_SETFD, FD_CLOEXEC)
                setNoDelay(c)
                return c
            }
            switch errno {
            case EINTR, ECONNABORTED, EPROTO: continue
            case EMFILE, ENFILE, ENOBUFS, ENOMEM:
                // Out of descriptors or memory: back off briefly rather than spin.
                usleep(10_000)
                continue
            default: return nil
            }
        }
    }

    /// Connects with a deadline (non-blocking connect + poll), then returns a blocking socket.
    static func connect(to address: SocketAddress, timeoutMillis: Int32) throws(TransportError) -> Int32 {
        let fd = try tcpSocket()
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
        var sa = address.sockaddr()
        let r = withUnsafePointer(to: &sa) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        if r < 0 && errno != EINPROGRESS {
            let e = errno
            close(fd)
            throw .unreachable(address: address.description, reason: String(cString: strerror(e)))
        }
        if r < 0 {
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            var n: Int32
            repeat { n = poll(&p, 1, timeoutMillis) } while n < 0 && errno == EINTR
            if n == 0 {
                close(fd)
                throw .unreachable(address: address.description, reason: "no answer within \(timeoutMillis) ms")
            }
            var err: Int32 = 0
            var len = socklen_t(MemoryLayout<Int32>.size)
            _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len)
            if err != 0 {
                close(fd)
                throw .unreachable(address: address.description, reason: String(cString: strerror(err)))
            }
        }
        _ = fcntl(fd, F_SETFL, flags)
        setNoDelay(fd)
        return fd
    }

    /// Bytes a blocking write of this many more bytes can add without
    /// waiting for the peer to read: half the send buffer (the kernel
    /// counts a buffer's bookkeeping too, up to about as much again), less
    /// what is queued and not yet acknowledged. A negative or zero answer
    /// means a write may block.
    static func sendRoom(_ fd: Int32) -> Int {
        var queued: Int32 = 0
        var buffer: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard ioctl(fd, UInt(TIOCOUTQ), &queued) == 0,
              getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buffer, &length) == 0 else { return 0 }
        return Int(buffer) / 2 - Int(queued)
    }

    /// Writes every byte of `first` then `second` with as few system calls as
    /// the socket allows (one `sendmsg` of both when the buffer has room), so
    /// a frame's payload is sent from where it is instead of being copied
    /// behind its header. Returns the errno on failure. MSG_NOSIGNAL: a
    /// closed peer is an error, not SIGPIPE.
    static func writeAll(_ fd: Int32, _ first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer) -> Int32? {
        var done = 0
        let total = first.count + second.count
        while done < total {
            // At most two parts, on the stack: this runs for every frame sent.
            let n = withUnsafeTemporaryAllocation(of: iovec.self, capacity: 2) { parts -> Int in
                var count = 0
                if done < first.count {
                    parts[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: first.baseAddress! + done), iov_len: first.count - done)
                    count += 1
                }
                let intoSecond = max(0, done - first.count)
                if second.count > intoSecond {
                    parts[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: second.baseAddress! + intoSecond), iov_len: second.count - intoSecond)
                    count += 1
                }
                var m = msghdr()
                m.msg_iov = parts.baseAddress
                m.msg_iovlen = count
                return sendmsg(fd, &m, Int32(MSG_NOSIGNAL))
            }
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            done += n
        }
        return nil
    }

    /// Sets a receive timeout (0 = none) on a blocking socket.
    static func setReceiveTimeout(_ fd: Int32, millis: Int) {
        var tv = timeval(tv_sec: millis / 1000, tv_usec: (millis % 1000) * 1000)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    }
}
