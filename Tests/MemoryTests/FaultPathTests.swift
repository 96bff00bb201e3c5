import CFault
import Foundation
import Memory
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The real fault path: SIGSEGV on the application view, hand-off to an
/// engine thread through the doorbell, pages installed through the system
/// view. The handler is process-wide, so these tests run one at a time.
///
/// Not tested here: that a genuine SIGSEGV outside the region still kills
/// the process when the previous action was SIG_DFL. That needs a child
/// process, which swift-testing cannot spawn of itself; the CLI tests cover it.
/// Counts SIGSEGVs that reached the handler installed before CFault's.
private let chainedSignals = Atomic<Int>(0)

@Suite(.serialized) struct FaultPathTests {
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    /// The byte the engine installs at `offset` of `page` on first touch.
    static func pattern(page: Int, offset: Int) -> UInt8 { UInt8(truncatingIfNeeded: page &* 31 &+ offset &* 7) }

    /// Bytes [0, 64 * threads) of each page are the threads' own slots; the
    /// rest keeps the engine's pattern.
    static let patternStart = 1024

    /// An engine on its own thread: polls the doorbell and hands each fault
    /// to `serve`. The default policy grants read access on a page's first
    /// fault, even a write fault, so that writers must fault again and get
    /// read-write on the second.
    final class TestEngine: Sendable {
        let channel: FaultChannel
        let policy: (@Sendable (Fault) -> Void)?
        /// A pipe; writing to its end stops the engine.
        let stop: [Int32]
        let access: Mutex<[PageAccess]>
        let served = Atomic<Int>(0)

        init(channel: FaultChannel, policy: (@Sendable (Fault) -> Void)? = nil) {
            self.channel = channel
            self.policy = policy
            access = Mutex(Array(repeating: .none, count: channel.region.pageCount))
            var ends: [Int32] = [-1, -1]
            precondition(pipe(&ends) == 0, "pipe failed: errno \(errno)")
            stop = ends
        }

        func run() {
            var fds = [pollfd(fd: channel.doorbell, events: Int16(POLLIN), revents: 0),
                       pollfd(fd: stop[0], events: Int16(POLLIN), revents: 0)]
            while true {
                let ready = poll(&fds, 2, -1)
                if ready < 0 && errno == EINTR { continue }
                precondition(ready > 0, "poll failed: errno \(errno)")
                if fds[1].revents != 0 { return }
                channel.drainDoorbell()
                while let fault = channel.nextFault() {
                    if let policy { policy(fault) } else { serve(fault) }
                }
            }
        }

        private func serve(_ fault: Fault) {
            let region = channel.region
            let grant: PageAccess? = access.withLock { access in
                switch access[fault.page] {
                case .none:
                    let bytes = region.systemPage(fault.page)
                    for offset in FaultPathTests.patternStart..<bytes.count {
                        bytes[offset] = FaultPathTests.pattern(page: fault.page, offset: offset)
                    }
                    access[fault.page] = .read
                    return .read
                case .read where fault.isWrite:
                    access[fault.page] = .readWrite
                    return .readWrite
                default:
                    return nil // already granted: the thread only needs waking
                }
            }
            if let grant {
                do {
                    try region.setProtection(pages: fault.page..<fault.page + 1, grant)
                } catch {
                    preconditionFailure("\(error)")
                }
            }
            served.add(1, ordering: .relaxed)
            channel.complete(page: fault.page)
        }

        func shutdown() {
            var one: UInt8 = 1
            _ = write(stop[1], &one, 1)
        }
    }

    /// Runs `body` on `count` threads and waits for all of them.
    static func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
        let finished = DispatchSemaphore(value: 0)
        for index in 0..<count {
            Thread {
                body(index)
                finished.signal()
            }.start()
        }
        for _ in 0..<count { finished.wait() }
    }

    @Test func concurrentThreadsReadAndWriteThroughTheEngine() throws {
        let pages = 8, threads = 4, rounds = 3
        let region = try SharedRegion(base: 0x2000_0000_0000, size: pages * Self.pageSize, pageSize: Self.pageSize)
        let channel = try FaultChannel(region: region)
        let engine = TestEngine(channel: channel)
        let before = FaultChannel.statistics
        let engineDone = DispatchSemaphore(value: 0)
        Thread {
            engine.run()
            engineDone.signal()
        }.start()

        let base = region.applicationBase
        let mismatches = Atomic<Int>(0)
        Self.onThreads(threads) { thread in
            for round in 0..<rounds {
                // Every thread walks all pages in its own order (odd strides
                // are coprime with 8), so one page faults from several threads.
                for step in 0..<pages {
                    let page = (step * (2 * thread + 1) + round) % pages
                    let pageAddress = UnsafeMutableRawPointer(bitPattern: base + UInt(page * Self.pageSize))!
                    let probe = Self.patternStart + (thread * 131 + round) % (Self.pageSize - Self.patternStart)
                    if pageAddress.load(fromByteOffset: probe, as: UInt8.self) != Self.pattern(page: page, offset: probe) {
                        mismatches.add(1, ordering: .relaxed)
                    }
                    let value = UInt64(round << 16 | thread << 8 | page)
                    pageAddress.storeBytes(of: value, toByteOffset: thread * 64, as: UInt64.self)
                    if pageAddress.load(fromByteOffset: thread * 64, as: UInt64.self) != value {
                        mismatches.add(1, ordering: .relaxed)
                    }
                }
            }
        }
        engine.shutdown()
        engineDone.wait()

        #expect(mismatches.load(ordering: .relaxed) == 0)
        // What the threads wrote is in the memfd, seen through the system view.
        for page in 0..<pages {
            let bytes = region.systemPage(page)
            for thread in 0..<threads {
                let value = bytes.load(fromByteOffset: thread * 64, as: UInt64.self)
                #expect(value == UInt64((rounds - 1) << 16 | thread << 8 | page))
            }
            #expect(bytes[Self.pageSize - 1] == Self.pattern(page: page, offset: Self.pageSize - 1))
        }
        // Each page needed a read grant and then a write grant.
        #expect(engine.access.withLock { $0 } == Array(repeating: .readWrite, count: pages))
        #expect(engine.served.load(ordering: .relaxed) >= 2 * pages)
        let after = FaultChannel.statistics
        #expect(after.faults - before.faults >= UInt64(2 * pages))
        try channel.uninstall()
    }

    /// A single-rank `sc` core drives the real fault path: its effects are
    /// performed on the region exactly as the engine will perform them.
    @Test func aSingleRankSCCoreServesRealFaults() throws {
        let pages = 4, threads = 3
        let region = try SharedRegion(base: 0x2500_0000_0000, size: pages * Self.pageSize, pageSize: Self.pageSize)
        let channel = try FaultChannel(region: region)
        let core = Mutex(SCProtocol(configuration: CoherenceConfiguration(rank: 0, rankCount: 1, pageCount: pages, pageSize: Self.pageSize)))
        let engine = TestEngine(channel: channel) { fault in
            let effects = core.withLock { fault.isWrite ? $0.onWriteFault(page: fault.page) : $0.onReadFault(page: fault.page) }
            for effect in effects {
                switch effect {
                case let .setProtection(range, access):
                    do { try region.setProtection(pages: range, access) } catch { preconditionFailure("\(error)") }
                case let .completeFaults(page):
                    channel.complete(page: page)
                case .record:
                    break
                default:
                    preconditionFailure("a single rank has no peers, but its core asked for \(effect)")
                }
            }
        }
        let engineDone = DispatchSemaphore(value: 0)
        Thread {
            engine.run()
            engineDone.signal()
        }.start()

        let base = region.applicationBase
        Self.onThreads(threads) { thread in
            for page in 0..<pages {
                let address = UnsafeMutableRawPointer(bitPattern: base + UInt(page * Self.pageSize))!
                _ = address.load(fromByteOffset: 2048, as: UInt8.self)
                address.storeBytes(of: UInt32(thread + 1), toByteOffset: thread * 4, as: UInt32.self)
            }
        }
        engine.shutdown()
        engineDone.wait()

        for page in 0..<pages {
            for thread in 0..<threads {
                #expect(region.systemPage(page).load(fromByteOffset: thread * 4, as: UInt32.self) == UInt32(thread + 1))
            }
            #expect(core.withLock { $0.access(ofPage: page) } == .readWrite)
        }
        let statistics = core.withLock { $0.statistics }
        #expect(statistics.total.readFaults >= 1 && statistics.total.writeFaults >= pages)
        #expect(statistics.messagesSent == 0)
        try channel.uninstall()
    }

    /// The kernel id of the calling thread, from /proc/thread-self
    /// ("PID/task/TID"): Glibc's Swift module has no gettid().
    static func currentThreadID() -> Int32 {
        var buffer = [CChar](repeating: 0, count: 64)
        let n = readlink("/proc/thread-self", &buffer, buffer.count - 1)
        guard n > 0 else { return -1 }
        let link = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return link.split(separator: "/").last.flatMap { Int32($0) } ?? -1
    }

    @Test func concurrentFaultsOnOnePageCoalesceSleepAndWakeTogether() throws {
        let region = try SharedRegion(base: 0x2100_0000_0000, size: 2 * Self.pageSize, pageSize: Self.pageSize)
        let channel = try FaultChannel(region: region)
        #expect(throws: MemoryError.faultHandlerBusy) { try FaultChannel(region: region) }
        // The first reader loads at byte 0x124 of the page, the second at 0:
        // the fault describes the first (the one that opened the request).
        let firstOffset = 0x124
        region.systemPage(1).storeBytes(of: 0xfeed, as: UInt32.self)
        region.systemPage(1).storeBytes(of: 0xfeed, toByteOffset: firstOffset, as: UInt32.self)
        let before = FaultChannel.statistics

        let readers = 2
        let readersDone = DispatchSemaphore(value: 0)
        let seen = Atomic<Int>(0)
        let firstThread = Atomic<Int32>(0)
        let page = region.applicationAddress(ofPage: 1)
        for reader in 0..<readers {
            Thread {
                if reader == 0 { firstThread.store(Self.currentThreadID(), ordering: .releasing) }
                let address = page + UInt(reader == 0 ? firstOffset : 0)
                if UnsafeRawPointer(bitPattern: address)!.load(as: UInt32.self) == 0xfeed { seen.add(1, ordering: .relaxed) }
                readersDone.signal()
            }.start()
            // The second reader starts once the first has published its
            // fault. (Two faults in the very same instant can both miss each
            // other and claim two slots; the engine then gets the page twice,
            // which the protocols treat as one request.)
            if reader == 0 { while FaultChannel.statistics.faults == before.faults { sched_yield() } }
        }

        // Nothing serves the page yet, so both readers end up asleep in the
        // handler, the second one joined to the first one's slot. (Waiting on
        // the counters is the synchronisation: each step must happen.)
        while FaultChannel.statistics.sleeps - before.sleeps < UInt64(readers) { sched_yield() }
        let during = FaultChannel.statistics
        #expect(during.faults - before.faults == 1)
        #expect(during.coalesced - before.coalesced == 1)

        var fds = [pollfd(fd: channel.doorbell, events: Int16(POLLIN), revents: 0)]
        #expect(poll(&fds, 1, 0) == 1, "the doorbell rings for a pending fault")
        channel.drainDoorbell()
        #expect(poll(&fds, 1, 0) == 0, "draining resets the doorbell")
        let fault = try #require(channel.nextFault())
        #expect(fault.page == 1 && !fault.isWrite)
        #expect(fault.origin.offset == firstOffset, "the fault names the byte the first reader touched")
        #expect(fault.origin.thread == firstThread.load(ordering: .acquiring), "and its thread")
        #expect(fault.origin.instruction != 0, "and its instruction")
        #expect(channel.nextFault() == nil, "one request for both readers")
        #expect(throws: MemoryError.faultHandlerBusy) { try channel.uninstall() }

        try region.setProtection(pages: 1..<2, .read)
        #expect(channel.complete(page: 1) == nil, "the waiters slept, so none spins on a CPU")
        for _ in 0..<readers { readersDone.wait() }
        #expect(seen.load(ordering: .relaxed) == readers)
        try channel.uninstall()
    }

    /// Completing a fault whose waiter is still spinning in the handler names
    /// the waiter's CPU (the engine skips its poll for the next fault when
    /// that is its own CPU). The waiter is pinned to one CPU and spins for
    /// up to 30 s, so it cannot have slept or moved.
    @Test func completingASpinningWaiterNamesItsCPU() throws {
        let region = try SharedRegion(base: 0x2200_0000_0000, size: 2 * Self.pageSize, pageSize: Self.pageSize)
        let channel = try FaultChannel(region: region)
        cfault_set_spin_nanoseconds(30_000_000_000)
        defer { cfault_set_spin_nanoseconds(50_000) }
        let cpu = Int32(sysconf(Int32(_SC_NPROCESSORS_ONLN)) - 1)
        let before = FaultChannel.statistics
        region.systemPage(0).storeBytes(of: 0xbeef, as: UInt32.self)
        let done = DispatchSemaphore(value: 0)
        let pinned = Atomic<Bool>(false)
        let value = Atomic<UInt32>(0)
        let page = region.applicationAddress(ofPage: 0)
        Thread {
            var set = cpu_set_t()
            withUnsafeMutableBytes(of: &set) { $0.storeBytes(of: UInt64(1) << UInt64(cpu), as: UInt64.self) }
            // sched_setaffinity is a GNU extension that Glibc's module hides.
            typealias SetAffinity = @convention(c) (pid_t, Int, UnsafeRawPointer) -> Int32
            if let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sched_setaffinity") {
                let setAffinity = unsafeBitCast(symbol, to: SetAffinity.self)
                pinned.store(withUnsafeBytes(of: &set) { setAffinity(0, $0.count, $0.baseAddress!) } == 0, ordering: .releasing)
            }
            value.store(UnsafeRawPointer(bitPattern: page)!.load(as: UInt32.self), ordering: .releasing)
            done.signal()
        }.start()
        var fault: Fault?
        while fault == nil { fault = channel.nextFault(); if fault == nil { sched_yield() } }
        #expect(fault?.page == 0)
        try region.setProtection(pages: 0..<1, .read)
        let reported = channel.complete(page: 0)
        done.wait()
        let wasPinned = pinned.load(ordering: .acquiring)
        #expect(wasPinned, "could not pin the waiter to CPU \(cpu)")
        #expect(reported == cpu, "the waiter spun on CPU \(cpu), complete reported \(String(describing: reported))")
        #expect(value.load(ordering: .acquiring) == 0xbeef)
        #expect(FaultChannel.statistics.sleeps == before.sleeps, "the waiter slept instead of spinning")
        try channel.uninstall()
    }

    /// A SIGSEGV that is not a fault in the region goes to the handler that
    /// was installed before (here: one sent by raise, which carries no
    /// fault address). Genuine faults outside the region take the same path.
    @Test func signalsOutsideTheRegionReachThePreviousHandler() throws {
        var previous = sigaction()
        var counting = sigaction()
        counting.__sigaction_handler.sa_handler = { _ in chainedSignals.add(1, ordering: .relaxed) }
        #expect(sigaction(SIGSEGV, &counting, &previous) == 0)
        defer { sigaction(SIGSEGV, &previous, nil) }

        let region = try SharedRegion(base: 0x2600_0000_0000, size: Self.pageSize, pageSize: Self.pageSize)
        let channel = try FaultChannel(region: region)
        let before = FaultChannel.statistics
        raise(SIGSEGV)
        #expect(chainedSignals.load(ordering: .relaxed) == 1)
        #expect(FaultChannel.statistics.chained - before.chained == 1)
        try channel.uninstall()
    }

    @Test func aTakenFixedBaseNamesTheClashingMapping() throws {
        let base: UInt = 0x2200_0000_0000
        let first = try SharedRegion(base: base, size: 4 * Self.pageSize, pageSize: Self.pageSize)
        do {
            _ = try SharedRegion(base: base + UInt(Self.pageSize), size: 4 * Self.pageSize, pageSize: Self.pageSize)
            Issue.record("mapping over an existing region succeeded")
        } catch let error {
            guard case let .fixedRangeTaken(_, _, clash) = error else {
                Issue.record("expected fixedRangeTaken, got \(error)")
                return
            }
            #expect(clash?.hasPrefix("220000000000-220000004000") == true)
            #expect(clash?.contains("plexus-region") == true)
            #expect(error.description.contains("/proc/self/maps"))
            #expect(error.description.contains("Choose another base address"))
        }
        withExtendedLifetime(first) {}
    }

    @Test func layoutIsCheckedAndNeverRounded() {
        #expect(throws: MemoryError.self) { try SharedRegion(base: 0x2300_0000_0000, size: Self.pageSize + 1, pageSize: Self.pageSize) }
        #expect(throws: MemoryError.self) { try SharedRegion(base: 0x2300_0000_0001, size: Self.pageSize, pageSize: Self.pageSize) }
        #expect(throws: MemoryError.self) { try SharedRegion(base: 0x2300_0000_0000, size: 3 * Self.pageSize, pageSize: 3 * Self.pageSize) }
    }

    @Test func allocationSaysWhatWasAskedAndWhatIsLeft() throws {
        let region = try SharedRegion(base: 0x2400_0000_0000, size: 2 * Self.pageSize, pageSize: Self.pageSize)
        #expect(region.pageCount == 2)
        #expect(try region.allocate(bytes: 100) == region.applicationBase)
        #expect(try region.allocate(bytes: 8, alignment: 64) == region.applicationBase + 128)
        let left = 2 * Self.pageSize - 136
        #expect(throws: MemoryError.outOfSharedMemory(askedBytes: left + 1, leftBytes: left)) {
            try region.allocate(bytes: left + 1, alignment: 8)
        }
        #expect(MemoryError.outOfSharedMemory(askedBytes: 10, leftBytes: 4).description
            == "out of shared memory: asked 10 bytes, 4 left in the region. Start the job with a larger region.")
        #expect(region.page(containing: region.applicationBase + UInt(Self.pageSize)) == 1)
        #expect(region.page(containing: region.applicationBase - 1) == nil)
    }
}
