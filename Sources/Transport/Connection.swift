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
    /// Serialises writes and numbers frames: the next frame's `sequence`.
    private let sendLock = Mutex<UInt32>(0)
    private var decoder: FrameDecoder
    private var readBuffer = [UInt8](repeating: 0, count: 64 * 1024)
    /// The `sequence` the next frame received must carry (the reader's alone).
    private var expectedSequence: UInt32 = 0
    private let isShutdown = Atomic<Bool>(false)
    /// Why this side broke the connection on purpose (a link fault found,
    /// an injected reset): what the reader reports instead of "closed locally".
    private let brokenBecause = Mutex<String?>(nil)
    /// Faults injected into this connection's frames (tests only), set
    /// before the connection is shared; see `injectFaults`.
    private var faults: InjectedFaults?

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

    /// Sends one frame, numbered next on this connection (`Frame.sequence`:
    /// whatever the frame carries is replaced). Throws `.peerLost` if the
    /// connection is broken.
    public func send(_ frame: Frame) throws(TransportError) {
        try send(frame, injecting: true)
    }

    /// Sends `frame` only if the socket can take it without waiting for the
    /// peer to read; returns false, sending nothing, otherwise. For threads
    /// that must never block on a write (a reader answering its peer: two
    /// readers each blocked writing to the other would never read again).
    /// With injected faults it sends as `send` does.
    public func sendIfRoom(_ frame: Frame) throws(TransportError) -> Bool {
        if faults != nil {
            try send(frame, injecting: true)
            return true
        }
        var header = frame.encodedHeader()
        let outcome: (sent: Bool, err: Int32?) = sendLock.withLock { next in
            guard header.count + frame.payload.count <= Sys.sendRoom(fd) else { return (false, nil) }
            header.withUnsafeMutableBytes { $0.storeBytes(of: next.littleEndian, toByteOffset: Frame.sequenceOffset, as: UInt32.self) }
            next &+= 1
            return (true, header.withUnsafeBytes { h in frame.payload.withUnsafeBytes { p in Sys.writeAll(fd, h, p) } })
        }
        if let e = outcome.err {
            if let why = brokenBecause.withLock({ $0 }) { throw .peerLost(peerHello.sender, reason: why) }
            throw .peerLost(peerHello.sender, reason: "send to \(remote) failed: \(String(cString: strerror(e)))")
        }
        return outcome.sent
    }

    private func send(_ frame: Frame, injecting: Bool) throws(TransportError) {
        var header = frame.encodedHeader()
        let err: Int32? = sendLock.withLock { next in
            // Numbered under the lock that orders the writes: numbers go out in order.
            header.withUnsafeMutableBytes { $0.storeBytes(of: next.littleEndian, toByteOffset: Frame.sequenceOffset, as: UInt32.self) }
            next &+= 1
            if let faults { return sendFaulty(header, frame.payload, faults, injecting: injecting) }
            return header.withUnsafeBytes { h in frame.payload.withUnsafeBytes { p in Sys.writeAll(fd, h, p) } }
        }
        if let e = err {
            if let why = brokenBecause.withLock({ $0 }) { throw .peerLost(peerHello.sender, reason: why) }
            throw .peerLost(peerHello.sender, reason: "send to \(remote) failed: \(String(cString: strerror(e)))")
        }
    }

    /// How many frames this connection has sent (numbered) so far; nil if
    /// a send is in progress (the link is not idle), rather than waiting.
    public var framesSentIfIdle: UInt32? { sendLock.withLockIfAvailable { $0 } }

    // MARK: Fault injection (tests only)

    /// Injects `plan`'s faults into every frame this connection sends from
    /// now on, below the numbering. Call before the connection is shared
    /// with other threads (before it is handed out or its reader started).
    public func injectFaults(_ plan: LinkFaultPlan, local: ProcessID) {
        faults = InjectedFaults(plan: plan, local: local, peer: peerHello.sender, fd: fd)
    }

    /// A numbered frame through the injected faults. Caller holds `sendLock`.
    private func sendFaulty(_ header: [UInt8], _ payload: [UInt8], _ faults: InjectedFaults, injecting: Bool) -> Int32? {
        let decision = injecting ? faults.decide() : .send(copies: 1, delayNanos: 0)
        switch decision {
        case .drop:
            return nil
        case .reset:
            resetAbruptly()
            return ECONNRESET
        case let .send(copies, delayNanos):
            for _ in 0..<copies {
                let err = if let line = faults.line {
                    line.put(header, payload, delayNanos: delayNanos)
                } else {
                    header.withUnsafeBytes { h in payload.withUnsafeBytes { p in Sys.writeAll(fd, h, p) } }
                }
                if let err { return err }
            }
            return nil
        }
    }

    /// Ends the connection as a crash of the network would: a TCP reset
    /// (`connect` to AF_UNSPEC makes Linux send RST at once), then the local
    /// shutdown that wakes this side's reader.
    private func resetAbruptly() {
        brokenBecause.withLock { if $0 == nil { $0 = LinkFault.injectedReset.reason } }
        isShutdown.store(true, ordering: .sequentiallyConsistent)
        var unspecified = sockaddr()
        unspecified.sa_family = sa_family_t(AF_UNSPEC)
        _ = Glibc.connect(fd, &unspecified, socklen_t(MemoryLayout<sockaddr>.size))
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
        faults?.line?.abort()
    }

    /// Blocks until a frame arrives; nil on orderly close. Throws on a broken
    /// connection or a frame that violates the protocol.
    public func receive() throws(TransportError) -> Frame? {
        while true {
            let decoded: Frame?
            do { decoded = try decoder.next() } catch {
                throw .protocolViolation("from \(remote): \(error)")
            }
            if let f = decoded {
                // The link's integrity: one compare per frame on a healthy network.
                if f.sequence != expectedSequence {
                    let fault: LinkFault = f.sequence &- expectedSequence < 1 << 31
                        ? .missing(expected: expectedSequence, got: f.sequence)
                        : .repeated(got: f.sequence, expected: expectedSequence)
                    throw .linkBroken(peerHello.sender, fault)
                }
                expectedSequence &+= 1
                switch f.kind {
                case .linkCheck:
                    continue
                case .linkBroken:
                    let found: LinkFault
                    do { found = try LinkFault.decode(f.payload) } catch {
                        throw .protocolViolation("from \(remote): a link-broken frame: \(error)")
                    }
                    throw .linkBroken(peerHello.sender, .foundByPeer(found))
                default:
                    return f
                }
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
            var told = false
            while true {
                do throws(TransportError) {
                    guard let f = try receive() else { break }
                    onFrame(f)
                } catch {
                    reason = error.description
                    if case .linkBroken(_, let fault) = error {
                        reason = fault.reason
                        // A send that fails from now on (this side closes)
                        // fails with this reason, not "broken pipe".
                        brokenBecause.withLock { if $0 == nil { $0 = fault.reason } }
                        // Tell the peer what was found, so that it does not
                        // take the close for the end of this process.
                        if case .foundByPeer = fault {} else {
                            try? send(Frame(.linkBroken, payload: fault.encoded()), injecting: false)
                            told = true
                        }
                    }
                    break
                }
            }
            if let why = brokenBecause.withLock({ $0 }) {
                reason = why
            } else if isShutdown.load(ordering: .sequentiallyConsistent) {
                reason = "closed locally"
            }
            if told {
                closeLingering { onClose(reason) }
            } else {
                shutdown()
                onClose(reason)
            }
        }
        t.name = name
        t.start()
    }

    /// Closes after telling the peer of a link fault: this side's end of
    /// sending goes out after the finding, then `report` runs, then what the
    /// peer still sends is read and dropped until it closes too (at most
    /// `lingerMillis`). Closing for reading at once would make this side's
    /// kernel answer the peer's next frame with a reset, and a reset can
    /// discard the finding before the peer has read it: it would then
    /// report a broken pipe instead of the lost frame.
    private func closeLingering(lingerMillis: Int = 2000, _ report: () -> Void) {
        faults?.line?.finish()
        _ = Glibc.shutdown(fd, Int32(SHUT_WR))
        report()
        let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(lingerMillis) * 1_000_000
        Sys.setReceiveTimeout(fd, millis: lingerMillis)
        while DispatchTime.now().uptimeNanoseconds < deadline {
            let n = readBuffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n == 0 || (n < 0 && errno != EINTR) { break }
        }
        shutdown()
    }

    /// Shuts the connection down in both directions; the reader (if any) sees
    /// the end. Idempotent. The descriptor is closed at deinitialisation.
    public func shutdown() {
        if isShutdown.exchange(true, ordering: .sequentiallyConsistent) { return }
        sendClosingCheck()
        // Frames held back by injected delay were sent as far as the sender
        // knows: they go out before the close, as they would with TCP.
        faults?.line?.finish()
        _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
    }

    /// A last `.linkCheck` before the close, so that the receiver finds a
    /// gap just before it (a lost last frame, such as a goodbye) instead of
    /// an orderly end. Best effort and never blocking: skipped if another
    /// thread is sending or the socket has no room (then the close is
    /// reported as it always was). Not subject to injected faults: it
    /// stands for the close itself, which TCP delivers in order.
    private func sendClosingCheck() {
        let check = Frame(.linkCheck)
        _ = sendLock.withLockIfAvailable { next in
            var header = check.encodedHeader()
            header.withUnsafeMutableBytes { $0.storeBytes(of: next.littleEndian, toByteOffset: Frame.sequenceOffset, as: UInt32.self) }
            if let line = faults?.line {
                if line.put(header, [], delayNanos: 0, waiting: false) == nil { next &+= 1 }
                return
            }
            let n = header.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT | MSG_NOSIGNAL)) }
            if n > 0 { next &+= 1 }
        }
    }

    deinit {
        if let line = faults?.line {
            _ = Glibc.shutdown(fd, Int32(SHUT_RDWR))
            line.abort()
            line.waitUntilStopped()
        }
        Glibc.close(fd)
    }
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
