#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Plexus

/// The floor every remote operation is compared with: a 16 B request and a
/// 4 KiB reply over a plain TCP connection on loopback between two processes
/// of the job (blocking reads, TCP_NODELAY), the same exchange a remote read
/// miss needs at the least (MEASUREMENTS.md, `floors/tcp_floor.c 4096 N 1 0`).
///
/// Rank 0 is the client and measures; rank 1 answers. Other ranks take no
/// part. Both sides must call `measure` with the same sample count.
public final class TCPFloor {
    public static let requestBytes = 16
    public static let replyBytes = 4096
    public static let warmup = 200

    private let fd: Int32
    private let rank: Int

    /// Connects rank 0 to rank 1 (a collective of the whole job).
    public init(_ px: Plexus) throws {
        rank = px.rank
        var listener: Int32 = -1
        var port: UInt16 = 0
        if px.rank == 1 {
            listener = try Self.check(socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0), "socket")
            var a = Self.loopback(port: 0)
            try Self.check(withUnsafePointer(to: &a) { bind(listener, UnsafeRawPointer($0).assumingMemoryBound(to: sockaddr.self), socklen_t(MemoryLayout<sockaddr_in>.size)) }, "bind")
            try Self.check(listen(listener, 1), "listen")
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            try Self.check(withUnsafeMutablePointer(to: &a) { getsockname(listener, UnsafeMutableRawPointer($0).assumingMemoryBound(to: sockaddr.self), &len) }, "getsockname")
            port = UInt16(bigEndian: a.sin_port)
        }
        let ports = try px.allGather(withUnsafeBytes(of: port) { Array($0) })
        let serverPort = ports.count > 1 ? ports[1].withUnsafeBytes { $0.loadUnaligned(as: UInt16.self) } : 0
        switch px.rank {
        case 0:
            guard px.size >= 2 else { throw PlexusError.join("the TCP floor needs 2 processes") }
            fd = try Self.check(socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0), "socket")
            var a = Self.loopback(port: serverPort)
            try Self.check(withUnsafePointer(to: &a) { connect(fd, UnsafeRawPointer($0).assumingMemoryBound(to: sockaddr.self), socklen_t(MemoryLayout<sockaddr_in>.size)) }, "connect")
        case 1:
            fd = try Self.check(accept(listener, nil, nil), "accept")
            close(listener)
        default:
            fd = -1
        }
        if fd >= 0 {
            var one: Int32 = 1
            _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        try px.barrier()
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Rank 0: `samples` round trips after `warmup` more, each in
    /// microseconds. Rank 1: answers as many. Other ranks: returns at once.
    public func measure(samples: Int, warmup: Int = TCPFloor.warmup) -> [Double] {
        var request = [UInt8](repeating: 1, count: Self.requestBytes)
        var reply = [UInt8](repeating: 2, count: Self.replyBytes)
        let total = samples + warmup
        var out: [Double] = []
        out.reserveCapacity(samples)
        switch rank {
        case 0:
            for i in 0..<total {
                let t0 = nanoseconds()
                Self.full(fd, &request, write: true)
                Self.full(fd, &reply, write: false)
                if i >= warmup { out.append(Double(nanoseconds() - t0) / 1000) }
            }
        case 1:
            for _ in 0..<total {
                Self.full(fd, &request, write: false)
                Self.full(fd, &reply, write: true)
            }
        default:
            break
        }
        return out
    }

    private static func full(_ fd: Int32, _ buffer: inout [UInt8], write isWrite: Bool) {
        buffer.withUnsafeMutableBytes { b in
            var done = 0
            while done < b.count {
                let n = isWrite ? write(fd, b.baseAddress! + done, b.count - done) : read(fd, b.baseAddress! + done, b.count - done)
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { fatalError("plexus bench: TCP floor connection broke: \(String(cString: strerror(errno)))") }
                done += n
            }
        }
    }

    /// 127.0.0.1:`port` (also the busy-poll floor's address).
    static func loopback(port: UInt16) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = port.bigEndian
        a.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return a
    }

    @discardableResult
    private static func check(_ r: Int32, _ what: String) throws -> Int32 {
        guard r >= 0 else { throw PlexusError.join("TCP floor: \(what): \(String(cString: strerror(errno)))") }
        return r
    }
}

/// CLOCK_MONOTONIC in nanoseconds (a vDSO call, about 20 ns).
@inline(__always)
public func nanoseconds() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

/// The floor of one bench row, measured in blocks between the row's own
/// samples rather than once before it: on this VM whole stretches of a run
/// are up to twice as slow as others, and a floor taken before a row may
/// come from another stretch than the row.
public final class InterleavedFloor {
    private let floor: TCPFloor
    private let perBlock: Int
    public private(set) var samples: [Double] = []
    /// Round trips run before each block and not kept (the connection has
    /// been idle while the row ran).
    public static let warmupPerBlock = 5

    /// `total` round trips spread over `blocks` blocks.
    public init(_ floor: TCPFloor, total: Int, blocks: Int) {
        self.floor = floor
        perBlock = max(1, (total + max(1, blocks) - 1) / max(1, blocks))
    }

    /// One block (a collective of ranks 0 and 1, like `TCPFloor.measure`).
    public func measureBlock() {
        samples += floor.measure(samples: perBlock, warmup: Self.warmupPerBlock)
    }

    public var median: Double { Summary(samples).median }
}
