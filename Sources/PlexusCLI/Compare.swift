#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Cluster
import Foundation
import Logging
import Memory
import Plexus
import Transport

/// `plexus compare`: one program under several coherence protocols and page
/// sizes, repeated, with the medians side by side as a table, CSV, JSON and
/// an SVG chart.
struct Compare: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run one program under several protocols and page sizes and compare their figures.",
        discussion: discussion)

    private static var discussion: String {
        let columns = ComparisonMetric.allCases.map { m in
            "  " + m.column.padding(toLength: 15, withPad: " ", startingAt: 0) + m.meaning
        }.joined(separator: "\n")
        return """
            Runs PROGRAM as a job of -n processes on this machine under every
            configuration: each protocol of --protocols with each page size of
            --page-size, --repeat times each. Then prints one row per configuration
            with the medians of its runs, and writes the same rows to --csv and
            --json, and a chart to --svg. The runs alternate between configurations
            (run 1 of each, then run 2 of each, ...), so that a machine that slows
            down during the comparison slows them all alike. Progress goes to stderr;
            the program's output is kept, and shown only when its run fails
            (--show-output relays it to stderr).

            Registered protocols: \(ProtocolRegistry.names.joined(separator: ", ")).
            An unknown protocol, and an output file that cannot be written, are
            refused before anything runs.

            A run that fails (non-zero exit status, crash, --timeout) stops the
            comparison with an error that names its configuration, shows the
            program's last lines and the command that reruns it alone; no file is
            written. With --keep-going the other configurations go on: the failed one
            is a row marked failed, without figures or bars, the files are written,
            and plexus exits with status 1.

            The figures come from the statistics each process sends when it calls
            finalize (Plexus.finalize() in Swift, plexus_finalize() in C): a process
            that exits without it adds nothing to them.

            Examples:
              plexus compare --protocols sc,hlrc -n 2 --csv fs.csv --svg fs.svg \\
                  .build/debug/false-sharing 20000
              plexus compare --protocols sc,hlrc --page-size 4096,16384 -n 4 \\
                  --repeat 5 --svg c-dsm.svg .build/debug/c-dsm 1000

            Columns (a run's figures are summed over its processes; the table shows
            the median of the runs, --csv and --json also the smallest and largest):
              protocol       the coherence protocol
              page           the coherence unit, in bytes
              runs           how many runs the medians are of
            \(columns)
            A column is "-" when no process reported it.

            The chart has one panel per figure (wall time, messages and pages
            transferred, then those not zero everywhere) with one bar per
            configuration: its median, a whisker from its smallest to its largest
            run, and its ratio to the first configuration.
            """
    }

    @Option(name: .long, help: ArgumentHelp(
        "Comma-separated coherence protocols to compare. Default: every registered one.", valueName: "names"))
    var protocols: String = ProtocolRegistry.names.joined(separator: ",")

    @Option(name: .long, help: ArgumentHelp(
        "Comma-separated coherence units in bytes (powers of two of at least 4096; a K suffix works, e.g. 4K,16K).",
        valueName: "sizes"))
    var pageSize: String = "4096"

    @Option(name: .customShort("n"), help: "Number of processes of each job.")
    var processes: Int = 2

    @Option(name: .customLong("repeat"), help: "Runs per configuration; the table shows their median.")
    var repeats: Int = 3

    @Option(name: .long, help: ArgumentHelp("Write one row per configuration (medians, then the smallest and largest runs) to this CSV file.",
                                            valueName: "file"))
    var csv: String?

    @Option(name: .long, help: ArgumentHelp("Write the chart to this SVG file.", valueName: "file"))
    var svg: String?

    @Option(name: .long, help: ArgumentHelp("Write every run's figures and each configuration's median, min and max to this JSON file.",
                                            valueName: "file"))
    var json: String?

    @Flag(name: .long, help: "When a run fails, go on with the other configurations (the failed one is marked failed) instead of stopping.")
    var keepGoing = false

    @Flag(name: .long, help: "Relay the program's output to stderr, prefixed by rank, instead of keeping it for the error of a failed run.")
    var showOutput = false

    @Option(name: .long, help: ArgumentHelp("End a run that takes longer than this many seconds; it counts as failed.", valueName: "seconds"))
    var timeout: Double?

    @Option(name: .long, help: "Size of each job's shared region (e.g. 256M, 1G); a multiple of every page size.")
    var sharedMemory: String = "1G"

    @Option(name: .long, help: ArgumentHelp("Pages past a fault that sc also serves in the same exchange, as for plexus run; 0 turns it off.",
                                            valueName: "pages"))
    var lookAhead: Int = SharedMemoryConfiguration.defaultLookAhead

    @OptionGroup var common: CommonOptions

    @Argument(parsing: .captureForPassthrough, help: "The program and its arguments.")
    var command: [String] = []

    /// The configurations, protocols outer, page sizes inner, in the order given.
    func configurations() throws -> [CompareConfiguration] {
        let names = protocols.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
        guard !names.contains(where: \.isEmpty) else {
            throw ValidationError("--protocols '\(protocols)' has an empty name: give names separated by commas, e.g. --protocols \(ProtocolRegistry.names.joined(separator: ","))")
        }
        for name in names { try MemoryOptions.checkProtocol(name) }
        if let twice = names.first(where: { n in names.filter { $0 == n }.count > 1 }) {
            throw ValidationError("--protocols names \(twice) twice: name each protocol once")
        }
        var sizes: [Int] = []
        for word in pageSize.split(separator: ",", omittingEmptySubsequences: false) {
            let text = word.trimmingCharacters(in: .whitespaces)
            guard let size = parseSize(text) else {
                throw ValidationError("--page-size '\(text)' is not a size: use bytes or a K suffix, e.g. --page-size 4096,16K")
            }
            try MemoryOptions.checkPageSize(size)
            guard !sizes.contains(size) else { throw ValidationError("--page-size names \(size) twice: name each size once") }
            try MemoryOptions.checkRegion(sharedMemory: sharedMemory, pageSize: size)
            sizes.append(size)
        }
        return names.flatMap { p in sizes.map { CompareConfiguration(protocol: p, pageSize: $0) } }
    }

    func validate() throws {
        // Every word after the options is the program's: ask for help here.
        if command.first == "--help" || command.first == "-h" { throw CleanExit.helpRequest(self) }
        guard processes >= 1, processes <= 4096 else { throw ValidationError("-n \(processes) must be between 1 and 4096") }
        guard repeats >= 1 else { throw ValidationError("--repeat \(repeats) must be at least 1") }
        guard command.first.map({ !$0.isEmpty }) == true else {
            throw ValidationError("no program given: try `plexus compare --protocols \(ProtocolRegistry.names.joined(separator: ",")) ./my-program`")
        }
        if let timeout, !(timeout > 0 && timeout.isFinite) {
            throw ValidationError("--timeout \(timeout) must be a number of seconds > 0")
        }
        try MemoryOptions.checkLookAhead(lookAhead)
        _ = try configurations()
        let outputs = [("--csv", csv), ("--svg", svg), ("--json", json)].compactMap { o, p in p.map { (o, $0) } }
        for (option, path) in outputs { try OutputFile.validate(path, option: option) }
        for (i, a) in outputs.enumerated() {
            for b in outputs[(i + 1)...] where URL(fileURLWithPath: a.1).standardized == URL(fileURLWithPath: b.1).standardized {
                throw ValidationError("\(a.0) and \(b.0) name the same file \(a.1): give each its own")
            }
        }
    }

    func run() throws {
        let logger = try common.makeLogger("plexus.compare")
        let configurations = try configurations()
        var results = configurations.map { ConfigurationResult(configuration: $0) }
        var started = RunMetadata.now()
        started.processes = processes
        started.lookAhead = lookAhead
        var step = 0
        for run in 1...repeats {
            for i in results.indices where results[i].failure == nil {
                step += 1
                // Runs left: this one and those after it, of the configurations not failed.
                let left = results.indices.filter { results[$0].failure == nil }.count * (repeats - run)
                    + results[i...].filter { $0.failure == nil }.count
                let total = step - 1 + left
                do {
                    try runOnce(&results[i], number: run, step: step, of: total, logger: logger)
                } catch {
                    writeAll(2, "plexus compare: \(error)\n")
                    if case .runFailed = error, keepGoing { continue }
                    throw ExitCode(error.exitStatus)
                }
            }
        }
        let title = ([URL(fileURLWithPath: command[0]).lastPathComponent] + command.dropFirst()).joined(separator: " ")
        let report = CompareReport(title: title, processes: processes, repeats: repeats, results: results)
        writeAll(1, report.table())
        if let csv { try OutputFile.write(Data(report.csv().utf8), to: csv, option: "--csv") }
        if let svg { try OutputFile.write(Data(CompareChart(report: report).svg().utf8), to: svg, option: "--svg") }
        if let json { try OutputFile.write(report.document(command: command, run: started), to: json, option: "--json") }
        if results.contains(where: { $0.failure != nil }) { throw ExitCode(1) }
    }

    /// Runs the program once under `result`'s configuration and adds the
    /// run's figures to it, or its failure (then throws `.runFailed`).
    private func runOnce(_ result: inout ConfigurationResult, number: Int, step: Int, of total: Int, logger: Logger) throws(CompareError) {
        let c = result.configuration
        let output = KeptOutput(echo: showOutput)
        output.begin("[\(step)/\(total)] \(c.name) run \(number)/\(repeats) ...")
        var args = command
        let program = args.removeFirst()
        var spec = JobSpec(processes: processes, nodes: [], program: program, arguments: args,
                           environment: MemoryOptions.environment(
                               sharedMemoryBytes: parseSize(sharedMemory) ?? 0, protocol: c.protocol, pageSize: c.pageSize,
                               lookAhead: lookAhead, servingPriority: .auto, bind: .auto, statistics: true))
        spec.timeoutSeconds = timeout
        let job: JobResult
        do { job = try runJob(spec, output: output, logger: logger) } catch {
            output.end("could not start")
            throw .couldNotStart(configuration: c.name)
        }
        if job.status == 130 || job.status == 143 {
            output.end("interrupted")
            throw .interrupted(status: job.status)
        }
        guard job.status == 0 else {
            output.end(job.status == 124 ? "timed out" : "failed (status \(job.status))")
            let why = job.failures.isEmpty ? "exit status \(job.status)" : job.failures.joined(separator: "; ")
            result.failure = why
            throw .runFailed(configuration: c.name, run: number, of: repeats, reason: why, lastLines: output.lines,
                             rerun: rerunCommand(c), keepGoing: keepGoing)
        }
        let reports = MemoryOptions.reports(of: job)
        result.runs.append(RunFigures(seconds: job.seconds, reports: reports))
        output.end(String(format: "%.2f s", job.seconds))
        if reports.count < processes && !result.warnedMissingReports {
            result.warnedMissingReports = true
            let whose = reports.isEmpty ? "no process of \(c.name) sent statistics: only its wall time is known"
                : "\(reports.count) of \(processes) processes of \(c.name) sent statistics: the others' faults, messages and waits are missing from its figures"
            writeAll(2, "plexus compare: \(whose) (a process sends them when it calls finalize, plexus_finalize() in C)\n")
        }
    }

    /// `plexus run` with this configuration's settings: reruns one of its
    /// runs alone, with the program's output.
    private func rerunCommand(_ c: CompareConfiguration) -> String {
        var words = ["plexus", "run", "-n", "\(processes)", "--protocol", c.protocol, "--page-size", "\(c.pageSize)"]
        if sharedMemory != "1G" { words += ["--shared-memory", sharedMemory] }
        if lookAhead != SharedMemoryConfiguration.defaultLookAhead { words += ["--look-ahead", "\(lookAhead)"] }
        return (words + command).map(shellQuoted).joined(separator: " ")
    }
}

/// One protocol at one page size.
struct CompareConfiguration: Hashable, Sendable {
    var `protocol`: String
    var pageSize: Int

    /// "hlrc page 4096", in progress lines and errors.
    var name: String { "\(`protocol`) page \(pageSize)" }
}

/// The runs of one configuration so far.
struct ConfigurationResult {
    var configuration: CompareConfiguration
    var runs: [RunFigures] = []
    /// Why a run failed; the configuration is not run again.
    var failure: String?
    var warnedMissingReports = false

    init(configuration: CompareConfiguration) { self.configuration = configuration }

    /// Median, min and max of each figure; nil when a run failed.
    var summary: [ComparisonMetric: Spread]? { failure == nil ? Comparison.summarize(runs) : nil }
}

/// Why a comparison stopped.
enum CompareError: Error, CustomStringConvertible {
    /// A run exited non-zero, crashed or timed out: the program or the
    /// protocol is at fault. Rerun it alone (the command is given) to see
    /// its whole output, or pass --keep-going to compare the others.
    case runFailed(configuration: String, run: Int, of: Int, reason: String, lastLines: [String], rerun: String, keepGoing: Bool)
    /// The launcher could not start the job (the program does not exist or
    /// may not be executed); its error was printed above.
    case couldNotStart(configuration: String)
    /// Ctrl-C or SIGTERM stopped a run.
    case interrupted(status: Int32)

    var exitStatus: Int32 {
        switch self {
        case .runFailed, .couldNotStart: 1
        case .interrupted(let status): status
        }
    }

    var description: String {
        switch self {
        case let .runFailed(configuration, run, of, reason, lastLines, rerun, keepGoing):
            var s = "\(configuration) failed in run \(run) of \(of): \(reason)\n"
            if !lastLines.isEmpty {
                s += "its last lines of output:\n" + lastLines.map { "  " + $0 }.joined(separator: "\n") + "\n"
            }
            s += "to run it alone: \(rerun)"
            s += keepGoing ? "\ngoing on with the other configurations (--keep-going)"
                           : "\nthe comparison stopped there; --keep-going compares the other configurations without it"
            return s
        case .couldNotStart(let configuration):
            return "could not start the program under \(configuration) (see the error above): check the path and that it is executable"
        case .interrupted(let status):
            return "interrupted (status \(status)): no results were written"
        }
    }
}

/// A job's output sink that keeps the last lines of the program's output
/// (for the error of a failed run), relays them when asked, and lets the
/// launcher's notes interrupt an open progress line cleanly.
final class KeptOutput: OutputSink, Sendable {
    static let kept = 20
    private struct State {
        var lines: [String] = []
        var progressOpen = false
    }
    private let state = Locked(State())
    private let echo: Bool

    init(echo: Bool) { self.echo = echo }

    var lines: [String] { state.value.lines }

    func line(rank: Int, stream: UInt8, _ text: String) {
        let line = "[\(rank)] \(text)"
        state.withLock { s in
            s.lines.append(line)
            if s.lines.count > Self.kept { s.lines.removeFirst() }
            if echo { emit(&s, line) }
        }
    }

    func note(_ text: String) { state.withLock { emit(&$0, "plexus: \(text)") } }

    /// Starts a progress line on stderr, ended by `end`.
    func begin(_ text: String) {
        state.withLock { s in
            writeAll(2, text)
            s.progressOpen = true
        }
    }

    func end(_ text: String) {
        state.withLock { s in
            writeAll(2, s.progressOpen ? " \(text)\n" : "  ... \(text)\n")
            s.progressOpen = false
        }
    }

    private func emit(_ s: inout State, _ line: String) {
        writeAll(2, (s.progressOpen ? "\n" : "") + line + "\n")
        s.progressOpen = false
    }
}

/// A word as a POSIX shell reads it back.
func shellQuoted(_ word: String) -> String {
    let plain = word.allSatisfy { $0.isLetter || $0.isNumber || "-_./=:,+@%".contains($0) }
    return plain && !word.isEmpty ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
