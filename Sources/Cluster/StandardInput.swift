#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Transport

/// `plexus run`'s standard input, forwarded to the processes of the chosen
/// ranks (`JobSpec.standardInput`): read in chunks and sent to each rank's
/// node as `input` messages, never more than `ControlMessage.inputWindow`
/// bytes ahead of what that rank's node has credited (so input moves at the
/// pace of the slowest reading rank, and no buffer grows without bound).
/// End-of-file is forwarded as `end`. A rank that has ended no longer
/// counts; once none is left, reading stops.
final class InputForwarder: @unchecked Sendable {
    private let source: Int32
    private let targets: [Int: Connection]
    private let condition = NSCondition()
    /// Live target ranks and how many more bytes each may be sent. Guarded by `condition`.
    private var credit: [Int: Int]
    private var stopped = false
    /// Written by `stop` to end a wait for input.
    private var wake: [Int32] = [-1, -1]

    /// `targets`: each rank that reads the input and its node's connection.
    init(source: Int32, targets: [Int: Connection]) {
        self.source = source
        self.targets = targets
        credit = targets.mapValues { _ in ControlMessage.inputWindow }
        if pipe(&wake) == 0 {
            for fd in wake { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        }
    }

    func start() {
        // Reading a terminal from the background (`plexus run ... &`) would
        // stop the whole launcher (SIGTTIN); ignored, the read fails instead,
        // which ends the input. Job processes get the default back (`spawnChild`).
        if isatty(source) == 1 { signal(SIGTTIN, SIG_IGN) }
        let t = Thread { [self] in forward() }
        t.name = "plexus-stdin"
        t.start()
    }

    /// `rank`'s node says its process took (or dropped) `bytes` more.
    func credited(rank: Int, bytes: Int) {
        condition.lock()
        if let c = credit[rank] { credit[rank] = min(ControlMessage.inputWindow, c + bytes) }
        condition.broadcast()
        condition.unlock()
    }

    /// `rank`'s process has ended: input no longer waits for it.
    func gone(rank: Int) {
        condition.lock()
        credit[rank] = nil
        condition.broadcast()
        condition.unlock()
    }

    /// Stops reading (the job is over); the thread closes the wake pipe.
    func stop() {
        condition.lock()
        stopped = true
        if wake[1] >= 0 {
            var b: UInt8 = 1
            _ = write(wake[1], &b, 1)
        }
        condition.broadcast()
        condition.unlock()
    }

    private func forward() {
        defer {
            condition.lock()
            let fds = wake
            wake = [-1, -1]
            condition.unlock()
            for fd in fds where fd >= 0 { close(fd) }
        }
        var buffer = [UInt8](repeating: 0, count: ControlMessage.maxInputChunk)
        while true {
            condition.lock()
            while !stopped, let least = credit.values.min(), least == 0 { condition.wait() }
            guard !stopped, let least = credit.values.min() else {
                condition.unlock()
                return
            }
            condition.unlock()
            var fds = [pollfd(fd: source, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: wake[0], events: Int16(POLLIN), revents: 0)]
            let p = poll(&fds, 2, -1)
            if p < 0 && errno == EINTR { continue }
            if fds[1].revents != 0 { return }
            let n = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, min(least, $0.count)) }
            if n < 0 && (errno == EINTR || errno == EAGAIN) { continue }
            // End of file, or an error (no standard input at all): both end the input.
            let end = n <= 0
            let bytes = end ? [] : Array(buffer[0..<n])
            condition.lock()
            let live = credit.keys.sorted()
            if !end { for r in live { credit[r]! -= n } }
            condition.unlock()
            for r in live {
                try? targets[r]?.send(ControlMessage.input(rank: r, bytes: bytes, end: end).frame())
            }
            if end { return }
        }
    }
}

/// A job process's standard input on its node: what the launcher sent
/// (`input` messages), written to the process's stdin pipe by a thread of
/// its own, so a process that does not read never holds up its session.
/// Holds at most `ControlMessage.inputWindow` bytes (the launcher sends no
/// more until credited); each write is credited back. Once the process has
/// closed its standard input or ended, what arrives is dropped and credited.
final class InputFeeder: @unchecked Sendable {
    private let fd: Int32
    private let credit: @Sendable (Int) -> Void
    private let condition = NSCondition()
    /// Guarded by `condition`.
    private var queue: [[UInt8]] = []
    private var queued = 0
    private var ended = false
    private var stopped = false

    /// `fd`: the non-blocking write end of the process's stdin pipe, owned
    /// (and closed) by the feeder. `credit` tells the launcher of bytes taken.
    init(fd: Int32, rank: Int, credit: @escaping @Sendable (Int) -> Void) {
        // A process that closed its standard input makes the write fail
        // with EPIPE, which must not kill the node.
        signal(SIGPIPE, SIG_IGN)
        self.fd = fd
        self.credit = credit
        let t = Thread { [self] in feed() }
        t.name = "plexus-stdin \(rank)"
        t.start()
    }

    /// Queues input; false if it would exceed the window (the launcher broke
    /// the protocol; nothing is queued).
    func put(_ bytes: [UInt8], end: Bool) -> Bool {
        condition.lock()
        if stopped || ended {
            condition.unlock()
            if !bytes.isEmpty { credit(bytes.count) }
            return true
        }
        guard queued + bytes.count <= ControlMessage.inputWindow else {
            condition.unlock()
            return false
        }
        if !bytes.isEmpty {
            queue.append(bytes)
            queued += bytes.count
        }
        if end { ended = true }
        condition.signal()
        condition.unlock()
        return true
    }

    /// The process has ended or its session is over: drop what is queued.
    func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    private var isStopped: Bool {
        condition.lock()
        defer { condition.unlock() }
        return stopped
    }

    private func feed() {
        var open = true
        defer { if open { close(fd) } }
        while true {
            condition.lock()
            while queue.isEmpty && !ended && !stopped { condition.wait() }
            if stopped || queue.isEmpty {
                // Stopped, or everything written and the input has ended:
                // closing the pipe gives the process its end-of-file.
                let dropped = queued
                queue = []
                queued = 0
                ended = true
                stopped = true
                condition.unlock()
                if dropped > 0 { credit(dropped) }
                return
            }
            let chunk = queue.removeFirst()
            condition.unlock()
            var done = 0
            while open && done < chunk.count {
                let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress! + done, $0.count - done) }
                if n > 0 { done += n; continue }
                if n < 0 && errno == EINTR { continue }
                if n < 0 && errno == EAGAIN {
                    // Waits in slices so that a stop is seen while the process does not read.
                    var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&p, 1, 100)
                    if isStopped { break }
                    continue
                }
                // EPIPE: the process closed its standard input; the rest is dropped.
                close(fd)
                open = false
            }
            condition.lock()
            queued -= chunk.count
            condition.unlock()
            credit(chunk.count)
        }
    }
}
