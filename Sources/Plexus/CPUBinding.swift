import CFault
import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Whether a process's application thread is bound to one CPU of its node
/// (`plexus run --bind`).
///
/// On a node with as many CPUs as the job has processes there, the
/// scheduler still puts two processes' computing threads on one CPU now and
/// then, and leaves the other CPU idle for a millisecond or more: after a
/// serving thread wakes an application thread that was waiting for a page,
/// the woken thread goes back to its previous CPU even if another
/// application computes there, and an idle CPU pulls work only on its next
/// balancing tick (Papers/ivy-remote-fault.md, record of 5cbd7cc, has the
/// trace). Message-passing runtimes bind one rank per core for the same
/// reason. Plexus binds the thread that joins the job, so threads it starts
/// later inherit the binding, and the engine's fault thread, which runs
/// when that thread waits for a page. The transport's reader threads stay
/// free: they serve other processes' requests, and any idle CPU should take
/// them.
public enum CPUBindingMode: String, Sendable, CaseIterable, CustomStringConvertible {
    /// Bind when the job's processes on this node fit the CPUs this process
    /// may use, one CPU each in the order of their ranks; otherwise leave
    /// every thread free.
    case auto
    /// Never bind.
    case none

    public var description: String { rawValue }
}

/// The CPU this process binds its application and fault threads to, if
/// any, decided once when it joins.
final class CPUBinding: Sendable {
    /// The CPU, or nil when nothing is bound.
    let cpu: Int32?
    /// What `--stats` and `--summary` report: "CPU 1", or "none (why)".
    let outcome: String
    /// Threads whose binding failed (should stay 0; reported in statistics).
    private let failures = Atomic<Int>(0)

    /// PLEXUS_BIND (set by `plexus run --bind`), PLEXUS_LOCAL_RANK and
    /// PLEXUS_LOCAL_SIZE (this process's index among the job's processes on
    /// its node, and their number; set by the launcher).
    convenience init(environment env: [String: String]) throws(PlexusError) {
        let raw = env["PLEXUS_BIND"] ?? ""
        guard let mode = raw.isEmpty ? CPUBindingMode.auto : CPUBindingMode(rawValue: raw) else {
            throw .join("PLEXUS_BIND='\(raw)' is not one of \(CPUBindingMode.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        guard mode == .auto else {
            self.init(cpu: nil, outcome: "none (--bind none)")
            return
        }
        guard let index = env["PLEXUS_LOCAL_RANK"].flatMap({ Int($0) }), let local = env["PLEXUS_LOCAL_SIZE"].flatMap({ Int($0) }),
              local > 0, (0..<local).contains(index) else {
            self.init(cpu: nil, outcome: "none (the launcher did not say how many processes share this node)")
            return
        }
        guard let cpus = Self.allowedCPUs(), !cpus.isEmpty else {
            self.init(cpu: nil, outcome: "none (cannot read this process's CPU affinity: \(String(cString: strerror(errno))))")
            return
        }
        self.init(choosing: index, of: local, among: cpus)
    }

    /// The CPUs the calling thread may run on, in increasing order; nil
    /// (with errno set) if they cannot be read.
    static func allowedCPUs() -> [Int32]? {
        var cpus = [Int32](repeating: 0, count: 1024)
        let n = Int(cfault_allowed_cpus(&cpus, Int32(cpus.count)))
        return n < 0 ? nil : Array(cpus.prefix(n))
    }

    /// Process `index` of `local` on this node, which may use `cpus`: the
    /// index-th CPU when every process gets one of its own, else none.
    convenience init(choosing index: Int, of local: Int, among cpus: [Int32]) {
        precondition((0..<local).contains(index), "process \(index) of \(local)")
        if local > cpus.count {
            self.init(cpu: nil, outcome: "none (\(local) processes on this node, \(cpus.count) CPU\(cpus.count == 1 ? "" : "s"))")
        } else {
            self.init(cpu: cpus[index], outcome: "CPU \(cpus[index])")
        }
    }

    private init(cpu: Int32?, outcome: String) {
        self.cpu = cpu
        self.outcome = outcome
    }

    /// Binds the calling thread, if this process binds.
    func applyToCurrentThread() {
        guard let cpu else { return }
        if cfault_bind_current_thread(cpu) != 0 { failures.add(1, ordering: .relaxed) }
    }

    var failedThreads: Int { failures.load(ordering: .relaxed) }

    /// `outcome`, with the failures if there were any.
    var report: String {
        failedThreads == 0 ? outcome : "\(outcome), but \(failedThreads) thread(s) could not be bound"
    }
}
