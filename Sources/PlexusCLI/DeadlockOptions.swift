import ArgumentParser
import Deadlock
import Plexus

/// Deadlock detection options of `plexus run`, passed to the job's
/// processes as PLEXUS_DEADLOCK and PLEXUS_DEADLOCK_THRESHOLD_MS.
struct DeadlockOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp(
        "What to do about a deadlock among the job's locks (processes each waiting for a lock the next one holds): abort fails the blocked acquire of one process of the cycle (the highest global PID) with an error naming the cycle, and the others go on once it releases its locks; report prints the cycle on stderr and leaves the processes waiting; off does not look.",
        valueName: DeadlockPolicy.allCases.map(\.rawValue).joined(separator: "|")))
    var deadlock: DeadlockPolicy = .abort

    @Option(name: .long, help: ArgumentHelp(
        "How long an acquire waits before its process starts looking for a cycle; shorter finds deadlocks sooner and sends more probes.",
        valueName: "ms"))
    var deadlockThresholdMs: Int = DeadlockSettings.defaultThresholdMillis

    func validate() throws {
        guard (0...DeadlockSettings.maxThresholdMillis).contains(deadlockThresholdMs) else {
            throw ValidationError("--deadlock-threshold-ms \(deadlockThresholdMs) must be a number of milliseconds in 0...\(DeadlockSettings.maxThresholdMillis)")
        }
    }

    var environment: [String: String] {
        DeadlockSettings(policy: deadlock, thresholdMillis: deadlockThresholdMs).environment
    }
}

extension DeadlockPolicy: ExpressibleByArgument {}
