#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import Transport
import Wire

/// A peer made by hand on a raw socket: it writes frames with the sequence
/// numbers the test chooses, as a faulty link would deliver them.
private final class RawPeer {
    let fd: Int32
    private var decoder = FrameDecoder()

    /// Connects to `address` and says hello as `sender` (the hello is frame 0).
    init(to address: SocketAddress, sender: ProcessID, job: String = "link-job") throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_port = address.port.bigEndian
        inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr)
        let rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw TransportError.system(call: "connect", errno: errno, context: "the test's raw peer") }
        var tv = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        write(Frame(.hello, payload: Hello(job: job, sender: sender, role: "process").encoded()))
        let answer = try #require(try next())
        #expect(answer.kind == .helloAccepted && answer.sequence == 0)
    }

    func write(_ f: Frame) {
        let bytes = f.encoded()
        _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
    }

    /// The next frame the transport sent, nil at its close (or after 5 s).
    func next() throws -> Frame? {
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            if let f = try decoder.next() { return f }
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { return nil }
            decoder.append(buf[0..<n])
        }
    }

    deinit { close(fd) }
}

/// What a transport received: frames in order and the losses reported.
private final class Receiver: @unchecked Sendable {
    let frames = Mailbox<(ProcessID, Frame)>(capacity: 10_000)
    let lost = Mailbox<(ProcessID, String)>(capacity: 100)
    var handler: TransportHandler {
        TransportHandler(onFrame: { [frames] in frames.put(($0, $1)) }, onPeerLost: { [lost] in lost.put(($0, $1)) })
    }

    /// The request IDs of the frames received until nothing came for `quiet` seconds.
    func drain(quiet: Double = 0.3) -> [UInt64] {
        var ids: [UInt64] = []
        while let (_, f) = frames.take(timeout: quiet) { ids.append(f.requestID) }
        return ids
    }
}

private func transport(_ id: ProcessID, _ r: Receiver, faults: LinkFaultPlan? = nil, linkCheckMillis: Int = 500) throws -> TCPTransport {
    try TCPTransport(job: "link-job", localID: id, bind: SocketAddress(host: "127.0.0.1", port: 0),
                     linkFaults: faults, linkCheckMillis: linkCheckMillis, handler: r.handler)
}

@Suite struct LinkIntegrityTests {
    /// Frames 1 and 2 arrive, frame 3 does not, frame 4 does: 1 and 2 are
    /// delivered, then the link is broken naming frame 3; frame 4 is not
    /// delivered. The sender is told what was found, then the link closes.
    @Test func aGapBreaksTheLinkNamingTheMissingFrame() throws {
        let r = Receiver()
        let t = try transport(1, r)
        defer { t.close() }
        let peer = try RawPeer(to: t.address, sender: 2)
        for (seq, id) in [(1, 10), (2, 11), (4, 13)] { peer.write(Frame(.user, requestID: UInt64(id), sequence: UInt32(seq))) }
        let (who, why) = try #require(r.lost.take(timeout: 5))
        #expect(who == 2)
        #expect(why == LinkFault.missing(expected: 3, got: 4).reason)
        #expect(why == "link integrity: frame 3 from it is missing (frame 4 came next): a frame was lost on the link; the job cannot continue")
        #expect(r.drain() == [10, 11])
        let told = try #require(try peer.next())
        #expect(told.kind == .linkBroken && told.sequence == 1 && told.payload == [1, 3, 0, 0, 0, 4, 0, 0, 0])
        // The closing check, then the end.
        while let f = try peer.next() { #expect(f.kind == .linkCheck) }
        #expect(throws: TransportError.self) { try t.send(Frame(.user), to: 2) }
    }

    @Test func aRepeatedFrameBreaksTheLinkAsADuplicate() throws {
        let r = Receiver()
        let t = try transport(1, r)
        defer { t.close() }
        let peer = try RawPeer(to: t.address, sender: 2)
        for (seq, id) in [(1, 10), (2, 11), (2, 11), (3, 12)] { peer.write(Frame(.user, requestID: UInt64(id), sequence: UInt32(seq))) }
        let (_, why) = try #require(r.lost.take(timeout: 5))
        #expect(why == LinkFault.repeated(got: 2, expected: 3).reason)
        #expect(why.contains("frame 2 from it arrived a second time (frame 3 was next): a frame was duplicated on the link"))
        #expect(r.drain() == [10, 11])
        let told = try #require(try peer.next())
        #expect(told.kind == .linkBroken && told.payload == [2, 3, 0, 0, 0, 2, 0, 0, 0])
    }

    /// Reordering shows as a gap: the later frame arrives first.
    @Test func reorderedFramesBreakTheLink() throws {
        let r = Receiver()
        let t = try transport(1, r)
        defer { t.close() }
        let peer = try RawPeer(to: t.address, sender: 2)
        for seq in [1, 3, 2] { peer.write(Frame(.user, requestID: UInt64(seq), sequence: UInt32(seq))) }
        let (_, why) = try #require(r.lost.take(timeout: 5))
        #expect(why == LinkFault.missing(expected: 2, got: 3).reason)
        #expect(r.drain() == [1])
    }

    /// Link checks are consumed, never delivered; one with a number past
    /// the next reveals a lost last frame.
    @Test func linkChecksRevealALostLastFrameAndAreNotDelivered() throws {
        let r = Receiver()
        let t = try transport(1, r)
        defer { t.close() }
        let peer = try RawPeer(to: t.address, sender: 2)
        peer.write(Frame(.user, requestID: 1, sequence: 1))
        peer.write(Frame(.linkCheck, sequence: 2))
        peer.write(Frame(.user, requestID: 3, sequence: 3))
        #expect(r.drain() == [1, 3])
        // Frame 4 (the one the peer would wait for an answer to) is lost.
        peer.write(Frame(.linkCheck, sequence: 5))
        let (_, why) = try #require(r.lost.take(timeout: 5))
        #expect(why == LinkFault.missing(expected: 4, got: 5).reason)
    }

    /// An idle connection sends link checks, numbered in turn.
    @Test func anIdleLinkSendsLinkChecks() throws {
        let r = Receiver()
        let t = try transport(1, r, linkCheckMillis: 20)
        defer { t.close() }
        let peer = try RawPeer(to: t.address, sender: 2)
        for seq in 1...3 {
            let f = try #require(try peer.next())
            #expect(f.kind == .linkCheck && f.sequence == UInt32(seq) && f.payload.isEmpty)
        }
    }

    /// A peer that found a fault in what this process sent says so; the
    /// loss is reported with what it found.
    @Test func aPeersFindingIsReported() throws {
        let r = Receiver()
        let t = try transport(1, r)
        defer { t.close() }
        let peer = try RawPeer(to: t.address, sender: 2)
        peer.write(Frame(.linkBroken, sequence: 1, payload: [1, 7, 0, 0, 0, 9, 0, 0, 0]))
        let (_, why) = try #require(r.lost.take(timeout: 5))
        #expect(why == LinkFault.foundByPeer(.missing(expected: 7, got: 9)).reason)
        #expect(why.contains("it found frame 7 from this process missing (frame 9 came next)"))
        // Not answered with a finding of its own.
        while let f = try peer.next() { #expect(f.kind == .linkCheck) }
    }

    /// The decoder of a link-broken frame refuses anything but its 9 bytes
    /// with a known kind: truncated, oversized, unknown kinds.
    @Test(arguments: [[], [1], [1, 7, 0, 0, 0, 9, 0, 0], [1, 7, 0, 0, 0, 9, 0, 0, 0, 0], [0, 7, 0, 0, 0, 9, 0, 0, 0], [3, 7, 0, 0, 0, 9, 0, 0, 0]] as [[UInt8]])
    func malformedFindingsAreProtocolViolations(payload: [UInt8]) throws {
        let r = Receiver()
        let t = try transport(1, r)
        defer { t.close() }
        let peer = try RawPeer(to: t.address, sender: 2)
        peer.write(Frame(.linkBroken, sequence: 1, payload: payload))
        let (_, why) = try #require(r.lost.take(timeout: 5))
        #expect(why.contains("wire protocol violation") && why.contains("a link-broken frame"), "\(why)")
    }

    // MARK: Injected faults between two real transports

    /// Sends `count` frames from a to b (request IDs 0...); returns the
    /// first send error.
    private func sendAll(_ a: TCPTransport, to b: ProcessID, _ count: Int) -> TransportError? {
        for k in 0..<count {
            do throws(TransportError) { try a.send(Frame(.user, requestID: UInt64(k), payload: [UInt8(k & 0xFF)]), to: b) } catch { return error }
        }
        return nil
    }

    /// Delay and jitter hold frames back but never reorder or lose them,
    /// also when the sender closes right after sending.
    @Test func delayAndJitterKeepOrderAndLoseNothing() throws {
        let ra = Receiver(), rb = Receiver()
        let plan = try LinkFaultPlan(parsing: "seed=3,delay=2,jitter=5")
        let a = try transport(1, ra, faults: plan), b = try transport(2, rb, faults: plan)
        defer { b.close() }
        a.updateDirectory([2: b.address])
        let t0 = Date()
        #expect(sendAll(a, to: 2, 300) == nil)
        a.close()
        var ids: [UInt64] = []
        while ids.count < 300, let (_, f) = rb.frames.take(timeout: 5) { ids.append(f.requestID) }
        #expect(ids == (0..<300).map(UInt64.init))
        #expect(Date().timeIntervalSince(t0) >= 0.002)
        // The close is orderly: no link fault.
        let (_, why) = try #require(rb.lost.take(timeout: 5))
        #expect(why == "closed by peer", "\(why)")
    }

    /// Dropped frames: what arrives is delivered in order up to the first
    /// gap, and both ends then report the broken link naming that frame.
    @Test(arguments: [UInt64(1), 2, 3])
    func droppedFramesBreakTheLinkAfterAnInOrderPrefix(seed: UInt64) throws {
        let ra = Receiver(), rb = Receiver()
        let plan = try LinkFaultPlan(parsing: "seed=\(seed),drop=0.2")
        let a = try transport(1, ra, faults: plan, linkCheckMillis: 60_000), b = try transport(2, rb, linkCheckMillis: 60_000)
        defer { a.close(); b.close() }
        a.updateDirectory([2: b.address])
        _ = sendAll(a, to: 2, 200)
        let (_, why) = try #require(rb.lost.take(timeout: 5))
        let got = rb.drain()
        #expect(got == (0..<UInt64(got.count)).map { $0 }, "delivered out of order: \(got)")
        // Frame 0 was the hello: request k travels as frame k + 1.
        #expect(why.hasPrefix("link integrity: frame \(got.count + 1) from it is missing (frame "), "\(why)")
        let (_, told) = try #require(ra.lost.take(timeout: 5))
        #expect(told.hasPrefix("link integrity: it found frame \(got.count + 1) from this process missing"), "\(told)")
    }

    @Test func duplicatedFramesBreakTheLinkAfterAnInOrderPrefix() throws {
        let ra = Receiver(), rb = Receiver()
        let a = try transport(1, ra, faults: try LinkFaultPlan(parsing: "seed=4,duplicate=0.2"), linkCheckMillis: 60_000)
        let b = try transport(2, rb, linkCheckMillis: 60_000)
        defer { a.close(); b.close() }
        a.updateDirectory([2: b.address])
        _ = sendAll(a, to: 2, 200)
        let (_, why) = try #require(rb.lost.take(timeout: 5))
        let got = rb.drain()
        #expect(!got.isEmpty && got == (0..<UInt64(got.count)).map { $0 }, "\(got)")
        #expect(why == LinkFault.repeated(got: UInt32(got.count), expected: UInt32(got.count + 1)).reason, "\(why)")
    }

    /// An injected reset ends the connection at once: the sender's send
    /// fails saying so, the receiver sees the reset.
    @Test func anInjectedResetEndsTheLinkOnBothSides() throws {
        let ra = Receiver(), rb = Receiver()
        let a = try transport(1, ra, faults: try LinkFaultPlan(parsing: "seed=5,reset=0.05"), linkCheckMillis: 60_000)
        let b = try transport(2, rb, linkCheckMillis: 60_000)
        defer { a.close(); b.close() }
        a.updateDirectory([2: b.address])
        let error = try #require(sendAll(a, to: 2, 2000))
        #expect(error.description.contains(LinkFault.injectedReset.reason), "\(error)")
        let (_, mine) = try #require(ra.lost.take(timeout: 5))
        #expect(mine == LinkFault.injectedReset.reason)
        let (_, theirs) = try #require(rb.lost.take(timeout: 5))
        #expect(theirs.contains("reset by peer") || theirs == "closed by peer", "\(theirs)")
        let got = rb.drain()
        #expect(got == (0..<UInt64(got.count)).map { $0 }, "\(got)")
        // A lost link is not redialled.
        #expect(throws: TransportError.self) { try a.send(Frame(.user), to: 2) }
    }

    @Test func faultPlansParseOrSayTheSyntax() throws {
        let p = try LinkFaultPlan(parsing: "seed=7,drop=0.001,duplicate=0.001,delay=2,jitter=3,reset=0.0005")
        #expect(p.seed == 7 && p.drop == 0.001 && p.duplicate == 0.001 && p.delayMillis == 2 && p.jitterMillis == 3 && p.reset == 0.0005)
        #expect(try LinkFaultPlan(parsing: " delay = 4 ").delayMillis == 4)
        #expect(try LinkFaultPlan.fromEnvironment([:]) == nil)
        #expect(try LinkFaultPlan.fromEnvironment([LinkFaultPlan.environmentVariable: ""]) == nil)
        for bad in ["drop=2", "drop=-0.1", "drop", "=1", "loss=0.1", "delay=-1", "delay=1.5", "jitter=10001", "seed=x",
                    "drop=0.1,drop=0.2", "drop=0.1,", "duplicate=nan"] {
            do {
                _ = try LinkFaultPlan(parsing: bad)
                Issue.record("accepted \(bad)")
            } catch {
                #expect(error.description.contains("PLEXUS_FAULT_INJECTION='\(bad)'") && error.description.contains("expected seed=N,drop=P"),
                        "\(error)")
            }
        }
    }
}
