import CFault

func cfaultSetParentDeathSignal() -> Int32 { cfault_set_parent_death_signal(9) }

/// "did you mean" for a first word that is no subcommand.
enum Suggestion {
    /// The visible subcommands' names.
    static var subcommands: [String] {
        PlexusCommand.configuration.subcommands.map { $0.configuration.commandName ?? "\($0)".lowercased() }
            .filter { !$0.hasPrefix("_") }
    }

    /// ": did you mean 'run'?" when `word` is a near miss of a subcommand
    /// (at most two edits, or a prefix), else "".
    static func forMisspelledSubcommand(_ word: String?) -> String {
        guard let word, !word.hasPrefix("-"), !subcommands.contains(word) else { return "" }
        let scored = subcommands.map { ($0, distance(word, $0)) }.filter { $0.1 <= 2 || $0.0.hasPrefix(word) }
        guard let best = scored.min(by: { $0.1 < $1.1 }) else { return "" }
        return ": did you mean '\(best.0)'?"
    }

    /// Levenshtein distance.
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        var row = Array(0...b.count)
        for i in 1...max(a.count, 1) where !a.isEmpty {
            var previous = row[0]
            row[0] = i
            for j in 1...max(b.count, 1) where !b.isEmpty {
                let current = row[j]
                row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
                previous = current
            }
        }
        return a.isEmpty ? b.count : row[b.count]
    }
}
