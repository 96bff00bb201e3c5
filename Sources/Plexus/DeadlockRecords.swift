import Deadlock
import Dispatch
import Foundation
import NameService
import Transport

/// A deadlock as its victim records it in the name service, under
/// `/deadlocks/<job>/<n>` (n: the service's sequence number under the job),
/// as compact JSON: when, which job, the policy, and the cycle's members from
/// the victim on, each with its rank, global PID, node and what it waited on
/// (the next member holds it). `plexus deadlocks` lists these.
public struct DeadlockRecord: Codable, Sendable, Equatable {
    public struct Member: Codable, Sendable, Equatable {
        /// The job rank (-1 for a process outside the victim's job).
        public var rank: Int
        public var pid: UInt64
        public var node: String
        /// What it waited on: "lock", "barrier", "receive", "exit" or another kind.
        public var resource: String
        /// The lock or barrier id, the sender's or exiting process's PID.
        public var id: UInt64

        public init(rank: Int, pid: UInt64, node: String, resource: String, id: UInt64) {
            self.rank = rank
            self.pid = pid
            self.node = node
            self.resource = resource
            self.id = id
        }
    }

    /// ISO 8601, UTC, when the victim found the cycle.
    public var time: String
    public var job: String
    /// The victim's policy: abort (its acquire failed) or report (it stays blocked).
    public var policy: String
    /// The global PID of the victim (the first member).
    public var victim: UInt64
    /// In cycle order: each member waits for the next, the last for the first.
    public var members: [Member]

    public static let directory = "/deadlocks"

    public init(cycle: DeadlockCycle, ranks: [Int], job: String, policy: DeadlockPolicy, time: Date = Date()) {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(identifier: "UTC")
        self.time = formatter.string(from: time)
        self.job = job
        self.policy = policy.rawValue
        victim = cycle.victim
        members = cycle.hops.enumerated().map { i, hop in
            let (kind, id): (String, UInt64) = switch hop.resource {
            case .lock(let id): ("lock", id)
            case .barrier(let id): ("barrier", id)
            case .receive(let from): ("receive", from)
            case .exit(let pid): ("exit", pid)
            case .other(let kind, let id): (kind, id)
            }
            return Member(rank: i < ranks.count ? ranks[i] : -1, pid: hop.pid, node: hop.node, resource: kind, id: id)
        }
    }

    /// The cycle again (wait sequences and versions are not recorded: 0).
    public var cycle: DeadlockCycle {
        DeadlockCycle(path: members.map { m in
            let resource: Resource = switch m.resource {
            case "lock": .lock(m.id)
            case "barrier": .barrier(m.id)
            case "receive": .receive(from: m.id)
            case "exit": .exit(of: m.id)
            default: .other(kind: m.resource, id: m.id)
            }
            return Hop(pid: m.pid, sequence: 0, version: 0, node: m.node, resource: resource)
        })
    }

    /// The ranks of `cycle.hops`, in its order.
    public var ranks: [Int] {
        let c = cycle
        return c.hops.map { hop in members.first { $0.pid == hop.pid }?.rank ?? -1 }
    }

    /// "rank 1 (pid 9@a) waits for lock 2, held by rank 0 (pid 4@b); ...".
    public var text: String {
        members.indices.map { i in
            let m = members[i], next = members[(i + 1) % members.count]
            func who(_ m: Member) -> String { (m.rank >= 0 ? "rank \(m.rank) " : "") + "(pid \(m.pid)@\(m.node))" }
            if m.resource == "lock" { return "\(who(m)) waits for lock \(m.id), held by \(who(next))" }
            return "\(who(m)) waits on \(m.resource) \(m.id) for \(who(next))"
        }.joined(separator: "; ")
    }

    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? Array(encoder.encode(self))) ?? []
    }

    public init(decoding bytes: [UInt8]) throws {
        self = try JSONDecoder().decode(DeadlockRecord.self, from: Data(bytes))
    }
}

/// Writes a victim's deadlocks to the job's name service (`PLEXUS_NAMES`),
/// best-effort: off the detector's threads, one at a time, at most
/// `maxPending` waiting (more are dropped with a warning); a service that
/// cannot be reached costs a warning on stderr, never the job.
final class DeadlockRecorder: Sendable {
    let spec: String
    let job: String
    let rank: Int
    static let maxPending = 64
    static let timeoutMillis = 2000
    private let queue = DispatchQueue(label: "plexus-deadlock-records")
    private let group = DispatchGroup()
    private let pending = Locked<Int>(0)
    /// The client, made on first use (nil until then, or after it failed).
    private let client = Locked<(any NameServiceBackend)?>(nil)

    init(spec: String, job: String, rank: Int) {
        self.spec = spec
        self.job = job
        self.rank = rank
    }

    /// Where this job's deadlocks go.
    var directory: String { "\(DeadlockRecord.directory)/\(job)/" }

    func record(_ record: DeadlockRecord) {
        let admitted = pending.withLock { n in
            guard n < Self.maxPending else { return false }
            n += 1
            return true
        }
        guard admitted else {
            writeStderr("plexus[\(rank)]: not recording a deadlock in the name service: \(Self.maxPending) records are still being written")
            return
        }
        group.enter()
        queue.async { [self] in
            defer {
                pending.withLock { $0 -= 1 }
                group.leave()
            }
            do throws(NameServiceError) {
                let backend: any NameServiceBackend
                if let c = client.value { backend = c } else {
                    backend = try makeNameServiceBackend(spec, timeoutMillis: Self.timeoutMillis)
                    client.withLock { $0 = backend }
                }
                _ = try backend.createSequential(directory, value: record.encoded(), lease: nil)
            } catch {
                writeStderr("plexus[\(rank)]: could not record the deadlock under \(directory) in the name service \(spec): \(error). "
                    + "The cycle is only in this output; check that the service is up (plexus cluster status --names \(spec))")
            }
        }
    }

    /// Waits until the records asked for so far are written or failed, at
    /// most `seconds`.
    func flush(seconds: Double) {
        _ = group.wait(timeout: .now() + seconds)
    }
}
