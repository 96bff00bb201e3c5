#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Memory
import Plexus

// MARK: Real loads and stores

// Swift has no volatile: without these the optimizer may keep a shared value
// in a register across a loop, or reorder and merge stores, and a litmus test
// would check the compiler instead of the protocol. Each call is one real
// load or store (and a call boundary the optimizer cannot see through).

@inline(never) @_optimize(none)
func load(_ p: UnsafeMutablePointer<Int>) -> Int {
    p.pointee
}

@inline(never) @_optimize(none)
func store(_ p: UnsafeMutablePointer<Int>, _ value: Int) {
    p.pointee = value
}

/// Monotonic time in nanoseconds.
func nowNanos() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

/// Waits about `nanos`: a random start offset in the litmus tests. Short
/// waits spin; longer ones sleep, leaving the CPU to the other ranks (a
/// machine with fewer cores than ranks would otherwise spend the delay
/// starving the rank whose fault we wait for). A sleep overshoots by its
/// wake-up latency, which only adds to the randomness.
func delay(nanos: UInt64) {
    if nanos < 20_000 {
        let end = nowNanos() &+ nanos
        while nowNanos() < end {}
    } else {
        var t = timespec(tv_sec: Int(nanos / 1_000_000_000), tv_nsec: Int(nanos % 1_000_000_000))
        var rest = timespec()
        while nanosleep(&t, &rest) != 0 && errno == EINTR { t = rest }
    }
}

// MARK: Output

/// Prints one line and flushes at once: a scenario may crash or be killed
/// right after, and stdout to a pipe is block-buffered.
func say(_ s: String) {
    print(s)
    fflush(nil)
}

// MARK: Options

/// `dsm-check SCENARIO [ITERATIONS] [seed=N] [at=WHERE] [threads=N] [others=exit] [anything else is ignored]`.
/// Unknown words are ignored so that tests can put a marker on the command line.
struct Options {
    var scenario: String
    var iterations: Int?
    var seed: UInt64?
    var at: String?
    var threads: Int?
    var others: String?

    init(_ args: [String]) {
        scenario = args.first ?? ""
        for a in args.dropFirst() {
            if let n = Int(a), n > 0 {
                iterations = n
            } else if a.hasPrefix("seed="), let s = UInt64(a.dropFirst(5)) {
                seed = s
            } else if a.hasPrefix("at=") {
                at = String(a.dropFirst(3))
            } else if a.hasPrefix("others=") {
                others = String(a.dropFirst(7))
            } else if a.hasPrefix("threads="), let t = Int(a.dropFirst(8)), t > 0 {
                threads = t
            }
        }
    }
}

// MARK: Verdicts

/// What went wrong on this rank, bounded so that a broken run does not
/// print a million lines.
struct Failures {
    private(set) var first: [String] = []
    private(set) var count = 0

    mutating func add(_ s: @autoclosure () -> String) {
        count += 1
        if first.count < 8 { first.append(s()) }
    }

    var isEmpty: Bool { count == 0 }
}

/// Collects every rank's failures at rank 0, which prints them and one
/// PASS or FAIL line. A collective. Returns true when every rank passed.
func verdict(_ px: Plexus, _ scenario: String, _ failures: Failures, detail: String) throws -> Bool {
    var text = failures.first.joined(separator: "\n")
    if failures.count > failures.first.count { text += "\n... and \(failures.count - failures.first.count) more" }
    let all = try px.allGather(Array(text.utf8))
    let failed = all.enumerated().filter { !$0.element.isEmpty }
    if px.rank == 0 {
        for (r, bytes) in failed {
            for line in String(decoding: bytes, as: UTF8.self).split(separator: "\n") { say("rank \(r): \(line)") }
        }
        if failed.isEmpty {
            say("PASS \(scenario): \(detail)")
        } else {
            say("FAIL \(scenario): \(detail); failures on ranks \(failed.map(\.offset))")
        }
    }
    return failed.isEmpty
}

/// The memory model of the job's protocol (from `--protocol`).
func memoryModel(of px: Plexus) -> (name: String, model: MemoryModel?) {
    let name = px.memory?.protocolName ?? "none"
    return (name, ProtocolRegistry.protocols.first { $0.name == name }?.model)
}

// MARK: Integer payloads for allGather

func encode(_ values: [Int]) -> [UInt8] {
    values.withUnsafeBytes { Array($0) }
}

func decode(_ bytes: [UInt8]) -> [Int] {
    precondition(bytes.count % MemoryLayout<Int>.stride == 0, "payload of \(bytes.count) bytes is not a list of Int")
    return bytes.withUnsafeBytes { raw in
        (0..<bytes.count / MemoryLayout<Int>.stride).map { raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<Int>.stride, as: Int.self) }
    }
}

/// A thread that can be joined (Foundation's Thread cannot).
final class Joinable: @unchecked Sendable {
    private let done = DispatchSemaphore(value: 0)

    init(_ body: @escaping @Sendable () -> Void) {
        let done = self.done
        let t = Thread {
            body()
            done.signal()
        }
        t.start()
    }

    func join() { done.wait() }
}

/// A lock-protected value for results of helper threads.
final class Guarded<T>: @unchecked Sendable {
    private var value: T
    private let lock = NSLock()
    init(_ v: T) { value = v }
    func with<R>(_ body: (inout T) -> R) -> R {
        lock.lock()
        defer { lock.unlock() }
        return body(&value)
    }
}
