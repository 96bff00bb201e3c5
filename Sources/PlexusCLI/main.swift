// PlexusCLI: the `plexus` command (swift-argument-parser); every subcommand is a thin shell over the library targets.

#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Cluster

// Bad input gets one line that says what to do, not a usage dump; `--help`
// still prints the full help.
do {
    var command = try PlexusCommand.parseAsRoot()
    try command.run()
} catch {
    let code = PlexusCommand.exitCode(for: error)
    if code == .success || error is CleanExit {
        PlexusCommand.exit(withError: error)
    }
    if !(error is ExitCode) {
        let message = PlexusCommand.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
        writeAll(2, "plexus: \(message)\(Suggestion.forMisspelledSubcommand(CommandLine.arguments.dropFirst().first)) (see `plexus help`)\n")
    }
    exit(code.rawValue)
}
