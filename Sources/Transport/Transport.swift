import Foundation
import Synchronization
import Wire

/// What a transport tells the layer above. Both closures run on transport
/// threads (one reader thread per connection): they must not block for long.
public struct TransportHandler: Sendable {
    /// A frame from a peer. Frames from one peer arrive in the order sent.
    public var onFrame: @Sendable (ProcessID, Frame) -> Void
    /// The connection to a peer ended (the peer exited, crashed or was cut off).
    public var onPeerLost: @Sendable (ProcessID, String) -> Void

    public init(
        onFrame: @escaping @Sendable (ProcessID, Frame) -> Void,
        onPeerLost: @escaping @Sendable (ProcessID, String) -> Void = { _, _ in }
    ) {
        self.onFrame = onFrame
        self.onPeerLost = onPeerLost
    }
}

/// Moves frames between the processes of one job, addressed by global PID.
/// Implementations: `TCPTransport`, and `FaultInjectingTransport` around it for tests.
public protocol Transport: AnyObject, Sendable {
    var localID: ProcessID { get }
    /// Sends a frame to a peer, connecting first if needed. Frames to one peer
    /// are delivered in order. Throws if the peer cannot be reached.
    func send(_ frame: Frame, to peer: ProcessID) throws(TransportError)
    /// Sends a frame only if that cannot block (see `Connection.sendIfRoom`);
    /// false: nothing was sent, try again later or with `send`.
    func sendIfRoom(_ frame: Frame, to peer: ProcessID) throws(TransportError) -> Bool
    /// Drops the connection to `peer` (the next send reconnects).
    func disconnect(_ peer: ProcessID)
    /// Closes every connection and stops accepting.
    func close()
}

extension Transport {
    /// Transports without a notion of room send, and may block.
    public func sendIfRoom(_ frame: Frame, to peer: ProcessID) throws(TransportError) -> Bool {
        try send(frame, to: peer)
        return true
    }
}

/// TCP transport: one connection per peer pair, TCP_NODELAY, one reader
/// thread per connection so that the receive path never waits behind the
/// application: a process busy computing still answers its peers.
///
/// Connections are made lazily by `send` or eagerly by `connect(to:)`. A job
/// establishes its mesh eagerly at start (each process dials the peers with a
/// higher PID and waits for the others), so two processes never dial each
/// other at once. If they do later (after a reconnect), both connections are
/// read until they close and each side keeps sending on the one it has: no
/// frame is lost, though the pair then briefly has two connections.
public final class TCPTransport: Transport, @unchecked Sendable {
    public let localID: ProcessID
    public let job: String
    public var address: SocketAddress { listener.address }
    public let connectTimeoutMillis: Int32

    private let handler: TransportHandler
    private let readerStart: (@Sendable () -> Void)?
    /// Faults injected into every connection (tests only; see `LinkFaultPlan`).
    public let linkFaults: LinkFaultPlan?
    /// A connection that sent nothing for this long sends a `.linkCheck`.
    public let linkCheckMillis: Int
    private var listener: Listener!
    private let state = Mutex(State())
    private let changed = NSCondition()

    private struct State {
        var directory: [ProcessID: SocketAddress] = [:]
        var connections: [ProcessID: Connection] = [:]
        /// Peers whose connection ended by itself (not by `disconnect`), with
        /// the reason: a send to one fails with that reason instead of
        /// dialling an address where nobody listens any more.
        var lost: [ProcessID: String] = [:]
        var closed = false
    }

    /// `readerStart` runs first on every reader thread (the threads that run
    /// `handler`), for example to give them a scheduling priority.
    ///
    /// Link integrity: every connection numbers its frames and its receiver
    /// checks the numbers (`LinkFault`); a link that lost or repeated a frame
    /// is reported through `onPeerLost` with the reason. So that a lost last
    /// frame (the one a peer now waits for the answer to) is found too, a
    /// connection that sent nothing for `linkCheckMillis` sends an empty
    /// `.linkCheck` frame: an idle link costs one small frame per period.
    /// `linkFaults` injects faults into every connection, for tests.
    public init(
        job: String, localID: ProcessID, bind: SocketAddress, connectTimeoutMillis: Int32 = 5000,
        linkFaults: LinkFaultPlan? = nil, linkCheckMillis: Int = 500,
        readerStart: (@Sendable () -> Void)? = nil, handler: TransportHandler
    ) throws(TransportError) {
        self.job = job
        self.localID = localID
        self.handler = handler
        self.readerStart = readerStart
        self.connectTimeoutMillis = connectTimeoutMillis
        self.linkFaults = linkFaults
        self.linkCheckMillis = max(1, linkCheckMillis)
        let me = Hello(job: job, sender: localID, role: "process")
        listener = try Listener(
            address: bind, identity: me,
            admit: { hello in hello.refusal(expectedJob: job) },
            onConnection: { [weak self] c in self?.adopt(c) })
        let checker = Thread { [weak self] in
            var sentBefore: [ObjectIdentifier: UInt32] = [:]
            while let t = self, t.checkLinks(&sentBefore) {}
        }
        checker.name = "plexus-link-check"
        checker.start()
    }

    /// One round of link checks: waits `linkCheckMillis` (or less), then
    /// sends a `.linkCheck` on each connection that sent nothing since the
    /// round before. False once the transport is closed.
    private func checkLinks(_ sentBefore: inout [ObjectIdentifier: UInt32]) -> Bool {
        changed.lock()
        if !state.withLock({ $0.closed }) { _ = changed.wait(until: Date().addingTimeInterval(Double(linkCheckMillis) / 1000)) }
        changed.unlock()
        let (connections, closed) = state.withLock { s in (Array(s.connections.values), s.closed) }
        if closed { return false }
        var sentNow: [ObjectIdentifier: UInt32] = [:]
        for c in connections {
            // A connection in the middle of a send is busy, not idle: skip it
            // rather than wait for it.
            guard let sent = c.framesSentIfIdle else { continue }
            if sentBefore[ObjectIdentifier(c)] == sent { try? c.send(Frame(.linkCheck)) }
            sentNow[ObjectIdentifier(c)] = c.framesSentIfIdle
        }
        sentBefore = sentNow
        return true
    }

    /// Tells the transport where processes are (from the launcher or the name service).
    public func updateDirectory(_ entries: [ProcessID: SocketAddress]) {
        state.withLock { $0.directory.merge(entries) { _, new in new } }
    }

    public func send(_ frame: Frame, to peer: ProcessID) throws(TransportError) {
        let c = try connection(to: peer)
        try c.send(frame)
    }

    public func sendIfRoom(_ frame: Frame, to peer: ProcessID) throws(TransportError) -> Bool {
        let c = try connection(to: peer)
        return try c.sendIfRoom(frame)
    }

    /// Establishes the mesh: dials every peer with a higher PID, then waits
    /// until every peer with a lower PID has dialled us, within the timeout.
    public func connect(to peers: [ProcessID]) throws(TransportError) {
        for p in peers where p > localID { _ = try connection(to: p) }
        let deadline = Date().addingTimeInterval(Double(connectTimeoutMillis) / 1000)
        changed.lock()
        defer { changed.unlock() }
        while true {
            let missing = state.withLock { s in peers.filter { $0 < localID && s.connections[$0] == nil } }
            if missing.isEmpty { return }
            if state.withLock({ $0.closed }) { throw .closed }
            if !changed.wait(until: deadline) {
                throw .timedOut("processes \(missing) did not connect within \(connectTimeoutMillis) ms")
            }
        }
    }

    public func disconnect(_ peer: ProcessID) {
        let c = state.withLock { s -> Connection? in
            s.lost[peer] = nil
            return s.connections.removeValue(forKey: peer)
        }
        c?.shutdown()
    }

    public func close() {
        let all = state.withLock { s -> [Connection] in
            s.closed = true
            defer { s.connections.removeAll() }
            return Array(s.connections.values)
        }
        listener.close()
        for c in all { c.shutdown() }
        changed.lock()
        changed.broadcast()
        changed.unlock()
    }

    public var connectedPeers: [ProcessID] { state.withLock { Array($0.connections.keys) } }

    private func connection(to peer: ProcessID) throws(TransportError) -> Connection {
        let (existing, address, closed, lost) = state.withLock { ($0.connections[peer], $0.directory[peer], $0.closed, $0.lost[peer]) }
        if closed { throw .closed }
        if let c = existing { return c }
        // A peer whose connection broke is gone (it exited or crashed): say
        // so, rather than "connection refused" from dialling its old address.
        // `disconnect` or a new connection from it makes it reachable again.
        if let lost { throw .peerLost(peer, reason: lost) }
        guard let address else { throw .unknownPeer(peer) }
        let c = try Connection.dial(address, hello: Hello(job: job, sender: localID, role: "process"),
                                    timeoutMillis: connectTimeoutMillis)
        guard c.peerHello.sender == peer else {
            c.shutdown()
            throw .refused(address: address.description,
                           reason: "expected process \(peer) there but found process \(c.peerHello.sender)")
        }
        return adopt(c)
    }

    /// Registers a connection (unless one to that peer already exists, in which
    /// case the older one keeps carrying our sends) and starts reading it.
    @discardableResult
    private func adopt(_ c: Connection) -> Connection {
        let peer = c.peerHello.sender
        if let linkFaults { c.injectFaults(linkFaults, local: localID) }
        let (current, closed) = state.withLock { s -> (Connection, Bool) in
            if s.closed { return (c, true) }
            if let old = s.connections[peer] { return (old, false) }
            s.connections[peer] = c
            s.lost[peer] = nil
            return (c, false)
        }
        let handler = self.handler
        c.startReader(
            name: "plexus-recv \(peer)",
            onStart: readerStart,
            onFrame: { f in handler.onFrame(peer, f) },
            onClose: { [weak self] reason in
                guard let self else { return }
                let wasCurrent = self.state.withLock { s -> Bool in
                    guard let cur = s.connections[peer], cur === c else { return false }
                    s.connections[peer] = nil
                    s.lost[peer] = reason
                    return true
                }
                if wasCurrent { handler.onPeerLost(peer, reason) }
            })
        if closed { c.shutdown() }
        changed.lock()
        changed.broadcast()
        changed.unlock()
        return current
    }
}
