import ArgumentParser
import Cluster
import Foundation

/// `plexus run`'s options for what a job's processes get from the caller:
/// environment variables (as `mpirun -x`) and standard input.
struct JobInputOptions: ParsableArguments {
    @Option(name: [.customShort("x"), .customLong("env")], help: ArgumentHelp(
        "Give every process this variable: NAME (its value here), NAME=VALUE, or PREFIX* (every variable starting with PREFIX). Repeatable. Processes always get PATH, LD_LIBRARY_PATH, OMP_* and PLEXUS_* from here, and HOME, USER, LOGNAME, SHELL from their node; nothing else.",
        valueName: "NAME[=VALUE]"))
    var env: [String] = []

    @Option(name: .long, help: ArgumentHelp(
        "Which processes read this command's standard input: a rank, all, or none (they read end-of-file).",
        valueName: "RANK|all|none"))
    var stdin: String = "0"

    func validate() throws {
        guard StandardInputTarget(parsing: stdin) != nil else {
            throw ValidationError("--stdin '\(stdin)' is not a rank, all or none (e.g. --stdin 0)")
        }
        do { _ = try inherited() } catch { throw ValidationError(error.description) }
    }

    /// The caller's variables the job's processes get.
    func inherited() throws(EnvironmentError) -> [String: String] {
        try JobEnvironment.inherited(from: ProcessInfo.processInfo.environment, requests: env)
    }

    var standardInput: StandardInputTarget { StandardInputTarget(parsing: stdin) ?? .rank(0) }

    /// Sets both on `spec`.
    func apply(to spec: inout JobSpec) throws {
        do { spec.inherited = try inherited() } catch { throw ValidationError(error.description) }
        spec.standardInput = standardInput
    }
}
