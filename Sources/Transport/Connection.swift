#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Synchronization
import Wire

/// One TCP connection carrying Plexus frames, after a successful hello.
///
/// Thread safety: `send` may be called from any thread (writes are serialised
/// by a lock, so frames never interleave). Exactly one thread reads: either a
/// caller of `receive()` or, after `startReader`, the reader thread.
///
/// The descriptor is closed only when the object is deinitialised, that is
/// when no thread can use it any more; `shutdown()` and the end of the reader
/// only shut the socket down. Closing earlier would free the descriptor
/// number while another thread might still send on, or shut down, this
/// connection — and by then the number may belong to a new socket of an
/// unrelated connection, which would be written to or reset.
public final class Connection: @unchecked Sendable {
    /// The hello the other side sent: its job, identity and role. Set during
    /// the handshake, before the connection is shared with other threads.
    public internal(set) var peerHello: Hello
    public internal(set) var remote: String
    private let fd: Int32
    private let sendLock = Mutex(())
    private var decoder: FrameDecoder
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)
    private let isShutdown = Atomic<Bool>(false)

    init(fd: Int32, peerHello: Hello, remote: String, maxPayload: Int) {
        self.fd = fd
        self.peerHello = peerHello
        self.remote = remote
        self.decoder = FrameDecoder(maxPayload: maxPayload)
    }

    /// Dials `address`, introduces itself with `hello` and waits for the answer.
    /// Throws `.refused` with the peer's reason if it will not talk to us.
    public static func dial(
        _ address: SocketAddress, hello: Hello, timeoutMillis: Int32 = 3000,
        maxPayload: Int = Frame.defaultMaxPayload
    ) throws(TransportError) -> Connection {
        let fd = try Sys.connect(to: address, timeoutMillis: timeoutMillis)
        let pending = Connection(fd: fd, peerHello: hello, remote: address.description, maxPayload: maxPayload)
        do {
            try pending.send(Frame(.hello, payload: hello.encoded()))
            Sys.setReceiveTimeout(fd, millis: Int(timeoutMillis))
            guard let answer = try pending.receive() else {
                throw TransportError.unreachable(address: address.description, reason: "closed during the handshake")
            }
            Sys.setReceiveTimeout(fd, millis: 0)
            switch answer.kind {
            case .helloAccepted:
                do { pending.peerHello = try Hello.decode(answer.payload) } catch {
                    throw TransportError.protocolViolation("bad hello from \(address): \(error)")
                }
                // The same object goes on: its decoder may already hold bytes
                // the peer sent right after accepting us.
                return pending
            case .helloRejected:
                let reason = String(decoding: answer.payload.prefix(1024), as: UTF8.self)
                throw TransportError.refused(address: address.description, reason: reason)
            default:
                throw TransportError.protocolViolation("\(address) answered the hello with \(answer.kind)")
            }
        } catch let e as TransportError {
            throw e   // `pending` goes away here and closes the descriptor
        } catch {
            throw .protocolViolation("\(error)")
        }
    }

    /// Sends one frame. Throws `.peerLost` if the connection is broken.
    public func send(_ frame: Frame) throws(TransportError) {
        let header = frame.encodedHeader()
        let err: Int32? = sendLock.withLock { _ in
            header.withUnsafeBytes { h in frame.payload.withUnsafeBytes { p in Sys.writeAll(fd, h, p) } }
        }
        if let e = err {
            throw .peerLost(peerHello.sender, reason: "send to \(remote) failed: \(String(cString: strerror(e)))")
        }
    }

    /// Blocks until a frame arrives; nil on orderly close. Throws on a broken
    /// connection or a frame that violates the protocol.
    public func receive() throws(TransportError) -> Frame? {
        while true {
            do {
                if let f = try decoder.next() { return f }
            } catch {
                throw .protocolViolation("from \(remote): \(error)")
            }
            let n = readBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n > 0 {
                readBuffer.withUnsafeBytes { decoder.append(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            } else if n == 0 {
                if decoder.buffered > 0 {
                    throw .peerLost(peerHello.sender, reason: "\(remote) closed inside a frame")
                }
                return nil
            } else if errno == EINTR {
                continue
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                throw .timedOut("waiting for a frame from \(remote)")
            } else {
                throw .peerLost(peerHello.sender, reason: String(cString: strerror(errno)))
            }
        }
    }

    /// Like `receive()`, but gives up with `.timedOut` after `timeoutMillis`
    /// without a complete frame. Only before `startReader`.
    public func receive(timeoutMillis: Int) throws(TransportError) -> Frame? {
        Sys.setReceiveTimeout(fd, millis: max(1, timeoutMillis))
        defer { Sys.setReceiveTimeout(fd, millis: 0) }
        return try receive()
    }

    /// Starts the reader thread. `onStart` runs on it first (to set its
    /// scheduling, for example); `onFrame` runs on it for every frame, in
    /// order; `onClose` runs once, last, with the reason. The descriptor is
    /// closed after.
    public func startReader(
        name: String, onStart: (@Sendable () -> Void)? = nil, onFrame: @escaping @Sendable (Frame) -> Void,
        onClose: @escaping @Sendable (String) -> Void
    ) {
        let t = Thread { [self] in
            onStart?()
            var reason = "closed by peer"
            while true {
                do throws(TransportError) {
                    guard let f = try receive() else { break }
                    onFrame(f)
                } catch {
                    reason = error.description
                    break
                }
            }
            if isShutdown.load(ordering: .sequentiallyConsistent) { reason = "closed locally" }
            shutdown()
            onClose(reason)
        }
        t.name = name
        t.start()
    }

    /// Shuts the connection down in both directions; the reader (if any) sees
    /// the end. Idempotent. The descriptor is closed at deinitialisation.
    public func shutdown() {
        if isShutdown.exchange(true, ordering: .sequentiallyConsistent) { return }
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    deinit { Glibc.close(fd) }
}

/// Accepts connections, checks each hello with `admit` (nil = accept, else the
/// reason to refuse) and hands admitted connections to `onConnection`.
/// A dialer that says nothing is dropped after `handshakeMillis`.
public final class Listener: @unchecked Sendable {
    public let address: SocketAddress
    private let fd: Int32
    private let closed = AtomicFlag()

    public init(
        address: SocketAddress, identity: Hello, handshakeMillis: Int = 3000,
        maxPayload: Int = Frame.defaultMaxPayload,
        admit: @escaping @Sendable (Hello) -> String?,
        onConnection: @escaping @Sendable (Connection) -> Void
    ) throws(TransportError) {
        let (fd, bound) = try Sys.listen(on: address)
        self.fd = fd
        self.address = bound
        let t = Thread { [closed] in
            defer { Glibc.close(fd) }
            while let c = Sys.accept(fd) {
                if closed.isSet {
                    Glibc.close(c)
                    break
                }
                // The handshake runs on its own short-lived thread so that a
                // silent dialer cannot hold up everyone else's accept.
                let h = Thread {
                    Listener.handshake(c, identity: identity, handshakeMillis: handshakeMillis,
                                       maxPayload: maxPayload, admit: admit, onConnection: onConnection)
                }
                h.name = "plexus-handshake"
                h.start()
            }
        }
        t.name = "plexus-accept \(bound)"
        t.start()
    }

    private static func handshake(
        _ c: Int32, identity: Hello, handshakeMillis: Int, maxPayload: Int,
        admit: (Hello) -> String?, onConnection: (Connection) -> Void
    ) {
        Sys.setReceiveTimeout(c, millis: handshakeMillis)
        let probe = Connection(fd: c, peerHello: identity, remote: "incoming", maxPayload: maxPayload)
        // On every early return `probe` goes away and closes the descriptor.
        guard let first = try? probe.receive(), first.kind == .hello,
              let hello = try? Hello.decode(first.payload) else {
            return
        }
        if let reason = admit(hello) {
            try? probe.send(Frame(.helloRejected, payload: Array(reason.utf8)))
            return
        }
        do {
            try probe.send(Frame(.helloAccepted, payload: identity.encoded()))
        } catch {
            return
        }
        Sys.setReceiveTimeout(c, millis: 0)
        probe.peerHello = hello
        probe.remote = "process \(hello.sender)"
        onConnection(probe)
    }

    /// Stops accepting. Connections already handed out stay open. The accept
    /// thread closes the descriptor once it has left `accept`, so the number
    /// cannot be reused under it.
    public func close() {
        if closed.set() { return }
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }
}
