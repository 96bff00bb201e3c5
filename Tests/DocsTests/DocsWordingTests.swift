import Foundation
import Testing

/// The README and the write-ups in Papers/ describe the project, not the
/// history of their own writing: builds are named by commit and runs by date,
/// never by numbered work periods ("session 12", "the ninth session"). The
/// README is a short manual that gives the two commands exactly.

/// The repository root: this file is Tests/DocsTests/DocsWordingTests.swift.
private let root = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

private let forbiddenPatterns = [
    #"\bsession\s+\d+"#,
    #"\bsessions\s+\d+"#,
    #"\b(first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth|thirteenth|fourteenth|fifteenth|sixteenth|\d+(st|nd|rd|th))\s+session\b"#,
    #"\bwork\s+period"#,
]

/// README.md and every text file under Papers/, as paths relative to the root.
private func documents() throws -> [String] {
    var paths = ["README.md"]
    let papers = root.appendingPathComponent("Papers")
    let walker = FileManager.default.enumerator(at: papers, includingPropertiesForKeys: [.isRegularFileKey])
    while let url = walker?.nextObject() as? URL {
        guard (try url.resourceValues(forKeys: [.isRegularFileKey])).isRegularFile == true else { continue }
        paths.append(String(url.standardizedFileURL.path.dropFirst(root.standardizedFileURL.path.count + 1)))
    }
    return paths.sorted()
}

private func text(_ path: String) throws -> String {
    try String(contentsOf: root.appendingPathComponent(path), encoding: .utf8)
}

@Suite struct DocsWordingTests {
    @Test func documentsAreFound() throws {
        let paths = try documents()
        #expect(paths.contains("README.md"))
        #expect(paths.contains { $0.hasPrefix("Papers/") && $0.hasSuffix(".md") })
    }

    @Test func noNarrationByWorkPeriods() throws {
        let rules = try forbiddenPatterns.map { ($0, try NSRegularExpression(pattern: $0, options: [.caseInsensitive])) }
        var findings: [String] = []
        for path in try documents() {
            let lines = try text(path).components(separatedBy: "\n")
            for (index, line) in lines.enumerated() {
                let range = NSRange(line.startIndex..., in: line)
                for (pattern, regex) in rules {
                    if let match = regex.firstMatch(in: line, range: range), let found = Range(match.range, in: line) {
                        findings.append("\(path):\(index + 1): \"\(line[found])\" (\(pattern))")
                    }
                }
            }
        }
        #expect(findings.isEmpty, "wording that narrates work periods; name builds by commit and runs by date:\n\(findings.joined(separator: "\n"))")
    }

    /// The README is the manual of every part in one read; past this length
    /// a part's reference belongs in its own document, linked from it.
    @Test func readmeIsShort() throws {
        let readme = try text("README.md")
        var lines = readme.components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        #expect(lines.count <= 310, "README.md has \(lines.count) lines; at most 310")
    }

    @Test func readmeGivesTheTwoCommands() throws {
        let readme = try text("README.md")
        for command in ["swift run plexus demo", "Scripts/test.sh"] {
            #expect(readme.contains(command), "README.md does not contain `\(command)`")
        }
    }
}
