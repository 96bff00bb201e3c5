import Foundation
import Testing
import Transport
import Wire

/// Two or more real TCP transports on loopback (ephemeral ports) in this process.
final class Mesh: @unchecked Sendable {
    let transports: [FaultInjectingTransport]
    let inboxes: [Mailbox<(ProcessID, Frame)>]
    let lost: [Mailbox<ProcessID>]

    init(_ n: Int, job: String = "test-job", seed: UInt64 = 1) throws {
        var ts: [FaultInjectingTransport] = []
        var ins: [Mailbox<(ProcessID, Frame)>] = []
        var ls: [Mailbox<ProcessID>] = []
        for i in 0..<n {
            let inbox = Mailbox<(ProcessID, Frame)>(capacity: 10_000)
            let lost = Mailbox<ProcessID>(capacity: 100)
            let h = TransportHandler(onFrame: { inbox.put(($0, $1)) }, onPeerLost: { p, _ in lost.put(p) })
            ts.append(try FaultInjectingTransport(seed: seed + UInt64(i), handler: h) { h throws(TransportError) in
                try TCPTransport(job: job, localID: ProcessID(100 + i), bind: SocketAddress(host: "127.0.0.1", port: 0), handler: h)
            })
            ins.append(inbox)
            ls.append(lost)
        }
        var dir: [ProcessID: SocketAddress] = [:]
        for t in ts { dir[t.localID] = (t.inner as! TCPTransport).address }
        for t in ts { (t.inner as! TCPTransport).updateDirectory(dir) }
        transports = ts
        inboxes = ins
        self.lost = ls
    }

    func id(_ i: Int) -> ProcessID { ProcessID(100 + i) }
    func next(_ i: Int) -> (ProcessID, Frame)? { inboxes[i].take(timeout: 5) }
    deinit { for t in transports { t.close() } }
}

@Suite struct TransportTests {
    @Test func framesArriveInOrderFromEachPeer() throws {
        let m = try Mesh(3)
        for k in 0..<200 {
            try m.transports[0].send(Frame(.user, requestID: UInt64(k)), to: m.id(2))
            try m.transports[1].send(Frame(.user, requestID: UInt64(1000 + k)), to: m.id(2))
        }
        var from0: [UInt64] = [], from1: [UInt64] = []
        for _ in 0..<400 {
            let (p, f) = try #require(m.next(2))
            if p == m.id(0) { from0.append(f.requestID) } else { from1.append(f.requestID) }
        }
        #expect(from0 == (0..<200).map { UInt64($0) })
        #expect(from1 == (0..<200).map { UInt64(1000 + $0) })
    }

    /// A frame's header and payload go out in one `sendmsg` of two parts; a
    /// payload larger than the socket buffer is written in several, each
    /// resuming where the last stopped (inside the header or the payload).
    @Test func framesLargerThanTheSocketBufferArriveWhole() throws {
        let m = try Mesh(2)
        let sizes = [0, 1, 4096, 3 << 20, 0, 65_537, 5 << 20, 7]
        @Sendable func payload(_ k: Int, _ n: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ k) } }
        let sender = Thread {
            for (k, n) in sizes.enumerated() { try? m.transports[0].send(Frame(.user, requestID: UInt64(k), payload: payload(k, n)), to: m.id(1)) }
        }
        sender.start()
        for (k, n) in sizes.enumerated() {
            let (p, f) = try #require(m.next(1))
            #expect(p == m.id(0))
            #expect(f.requestID == UInt64(k))
            #expect(f.payload.count == n)
            #expect(f.payload == payload(k, n), "frame \(k) of \(n) bytes arrived changed")
        }
    }

    @Test func eagerMeshMakesOneConnectionPerPair() throws {
        let m = try Mesh(4)
        let ids = (0..<4).map(m.id)
        let group = DispatchGroup()
        let errors = Locked<[String]>([])
        for t in m.transports {
            group.enter()
            Thread {
                do throws(TransportError) { try (t.inner as! TCPTransport).connect(to: ids) } catch { errors.withLock { $0.append(error.description) } }
                group.leave()
            }.start()
        }
        group.wait()
        #expect(errors.value.isEmpty)
        for t in m.transports {
            #expect(Set((t.inner as! TCPTransport).connectedPeers) == Set(ids).subtracting([t.localID]))
        }
    }

    @Test func peerOfAnotherJobIsRefusedWithTheReason() throws {
        let a = try Mesh(1, job: "job-a")
        let b = try Mesh(1, job: "job-b")
        let bt = b.transports[0].inner as! TCPTransport
        bt.updateDirectory([a.id(0): (a.transports[0].inner as! TCPTransport).address])
        do {
            try bt.send(Frame(.user), to: a.id(0))
            Issue.record("a process of job-b reached job-a")
        } catch {
            #expect(error.description.contains("job-a") && error.description.contains("job-b"), "\(error)")
        }
    }

    @Test func peerOfAnotherVersionIsRefusedWithTheReason() throws {
        let a = try Mesh(1)
        let addr = (a.transports[0].inner as! TCPTransport).address
        do {
            _ = try Connection.dial(addr, hello: Hello(job: "test-job", sender: 7, role: "process", protocolVersion: 99))
            Issue.record("a version-99 peer was admitted")
        } catch {
            #expect(error.description.contains("version 99"), "\(error)")
        }
    }

    @Test func nonPlexusPeerIsDroppedWithoutHarm() throws {
        let a = try Mesh(2)
        let addr = (a.transports[0].inner as! TCPTransport).address
        // Garbage instead of a hello: the listener drops it and keeps serving.
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = addr.port.bigEndian
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr)
        _ = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        let junk: [UInt8] = Array("GET / HTTP/1.0\r\n\r\n".utf8)
        _ = junk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var buf = [UInt8](repeating: 0, count: 16)
        let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, 16) }
        #expect(n == 0)  // closed on us
        close(fd)
        try a.transports[1].send(Frame(.user, requestID: 5), to: a.id(0))
        #expect(a.next(0)?.1.requestID == 5)
    }

    /// The receive path does not wait behind the application: while a thread
    /// of the receiving "process" computes, its peers' requests still get answers.
    @Test func busyProcessStillAnswers() throws {
        let inbox = Mailbox<Frame>(capacity: 100)
        let responder = Locked<TCPTransport?>(nil)
        let r = try TCPTransport(job: "j", localID: 1, bind: SocketAddress(host: "127.0.0.1", port: 0),
                                 handler: TransportHandler(onFrame: { from, f in
                                     try? responder.value?.send(Frame(.user, requestID: f.requestID), to: from)
                                 }))
        responder.withLock { $0 = r }
        let c = try TCPTransport(job: "j", localID: 2, bind: SocketAddress(host: "127.0.0.1", port: 0),
                                 handler: TransportHandler(onFrame: { _, f in inbox.put(f) }))
        defer { r.close(); c.close() }
        r.updateDirectory([2: c.address]); c.updateDirectory([1: r.address])
        let stop = AtomicFlag()
        for _ in 0..<2 { Thread { var x = 0; while !stop.isSet { x &+= 1 } ; _ = x }.start() }
        defer { stop.set() }
        for k in 0..<20 {
            try c.send(Frame(.user, requestID: UInt64(k)), to: 1)
            #expect(inbox.take(timeout: 5)?.requestID == UInt64(k))
        }
    }

    @Test func oneWayPartitionDropsOnlyThatDirection() throws {
        let m = try Mesh(2)
        m.transports[0].update { $0.partitionOneWay(from: m.id(0), to: m.id(1)) }
        try m.transports[0].send(Frame(.user, requestID: 1), to: m.id(1))   // dropped
        try m.transports[1].send(Frame(.user, requestID: 2), to: m.id(0))   // delivered
        #expect(m.next(0)?.1.requestID == 2)
        m.transports[0].update { $0.heal() }
        try m.transports[0].send(Frame(.user, requestID: 3), to: m.id(1))
        #expect(m.next(1)?.1.requestID == 3)   // 1 never arrived
        #expect(m.transports[0].stats.value.dropped == 1)
    }

    /// A partition configured only on the receiver still holds: incoming frames
    /// from the cut-off peer are filtered on receipt.
    @Test func twoWayPartitionHoldsFromEitherSide() throws {
        let m = try Mesh(3)
        m.transports[1].update { $0.partition(m.id(0), m.id(1)) }
        try m.transports[0].send(Frame(.user, requestID: 1), to: m.id(1))   // filtered at 1
        try m.transports[1].send(Frame(.user, requestID: 2), to: m.id(0))   // dropped at 1
        try m.transports[2].send(Frame(.user, requestID: 3), to: m.id(1))
        try m.transports[2].send(Frame(.user, requestID: 4), to: m.id(0))
        #expect(m.next(1)?.1.requestID == 3)
        #expect(m.next(0)?.1.requestID == 4)
        // Frame 1 travels on its own connection; heal only once it has
        // reached rank 1 and been filtered, or it would pass after the heal.
        let deadline = Date().addingTimeInterval(5)
        while m.transports[1].stats.value.filteredOnReceipt < 1 && Date() < deadline { sched_yield() }
        #expect(m.transports[1].stats.value.filteredOnReceipt == 1)
        m.transports[1].update { $0.heal() }
        try m.transports[0].send(Frame(.user, requestID: 5), to: m.id(1))
        #expect(m.next(1)?.1.requestID == 5)
    }

    @Test func duplicatedFramesArriveTwice() throws {
        let m = try Mesh(2)
        m.transports[0].update { $0.duplicateProbability = 1 }
        try m.transports[0].send(Frame(.user, requestID: 9), to: m.id(1))
        #expect(m.next(1)?.1.requestID == 9)
        #expect(m.next(1)?.1.requestID == 9)
    }

    @Test func delayedFramesArriveLate() throws {
        let m = try Mesh(2)
        m.transports[0].update { $0.delayMillis[.init(m.id(0), m.id(1))] = 150 }
        let t0 = Date()
        try m.transports[0].send(Frame(.user, requestID: 1), to: m.id(1))
        #expect(m.next(1)?.1.requestID == 1)
        #expect(Date().timeIntervalSince(t0) >= 0.14)
    }

    @Test func droppedConnectionIsReportedAndReconnects() throws {
        let m = try Mesh(2)
        try m.transports[0].send(Frame(.user, requestID: 1), to: m.id(1))
        #expect(m.next(1)?.1.requestID == 1)
        m.transports[0].disconnect(m.id(1))
        #expect(m.lost[1].take(timeout: 5) == m.id(0))
        try m.transports[0].send(Frame(.user, requestID: 2), to: m.id(1))
        #expect(m.next(1)?.1.requestID == 2)
    }

    @Test func unknownAndUnreachablePeersFailClearly() throws {
        let m = try Mesh(1)
        #expect(throws: TransportError.self) { try m.transports[0].send(Frame(.user), to: 999) }
        // A port nobody listens on: take one and close it.
        let probe = try TCPTransport(job: "x", localID: 5, bind: SocketAddress(host: "127.0.0.1", port: 0), handler: TransportHandler(onFrame: { _, _ in }))
        let dead = probe.address
        probe.close()
        let t = m.transports[0].inner as! TCPTransport
        t.updateDirectory([5: dead])
        do {
            try t.send(Frame(.user), to: 5)
            Issue.record("sent to a closed port")
        } catch {
            #expect(error.description.contains("cannot reach"), "\(error)")
        }
    }

    @Test func addressesParseOrExplain() throws {
        #expect(try SocketAddress(parsing: "10.0.0.1:80") == SocketAddress(host: "10.0.0.1", port: 80))
        #expect(try SocketAddress(parsing: "localhost:0").host == "127.0.0.1")
        for bad in ["nohost", "1.2.3.4:99999", "1.2.3:80", "host:abc", ""] {
            #expect(throws: TransportError.self) { try SocketAddress(parsing: bad) }
        }
    }
}
