#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// What produced a benchmark's figures, written with every row of its JSON
/// so that a figure can always be traced to a build, a machine and a day.
/// Fields that do not apply to a benchmark (a page size for the name
/// service) are nil.
struct RunMetadata: Codable, Equatable {
    /// ISO 8601 time the run started, UTC.
    var date: String
    /// `git rev-parse HEAD` of the source tree the binary was built from,
    /// with `-dirty` when it had uncommitted changes; `unknown` outside a
    /// checkout.
    var commit: String
    /// `debug` or `release`.
    var build: String
    /// `uname -r`.
    var kernel: String
    /// CPUs this process may use.
    var cpus: Int
    var `protocol`: String?
    var pageSize: Int?
    var lookAhead: Int?
    /// What `--bind` gave each process, as the job reports it.
    var binding: String?
    var processes: Int?

    /// The metadata of a run starting now; the caller fills in the fields of
    /// its own benchmark.
    static func now() -> RunMetadata {
        let formatter = ISO8601DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        var name = utsname()
        uname(&name)
        let kernel = withUnsafeBytes(of: &name.release) { raw in
            String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
        }
        #if DEBUG
        let build = "debug"
        #else
        let build = "release"
        #endif
        return RunMetadata(date: formatter.string(from: Date()), commit: sourceCommit(), build: build, kernel: kernel,
                           cpus: ProcessInfo.processInfo.activeProcessorCount)
    }

    /// The commit of the checkout this file was compiled from.
    static func sourceCommit() -> String {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
        guard let head = git(["-C", root, "rev-parse", "HEAD"]), !head.isEmpty else { return "unknown" }
        let dirty = git(["-C", root, "status", "--porcelain", "--untracked-files=no"]).map { !$0.isEmpty } ?? false
        return head + (dirty ? "-dirty" : "")
    }

    private static func git(_ arguments: [String]) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["git"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}

extension RunMetadata {
    /// Where results of this run kept in the repository go:
    /// `Papers/data/YYYY-MM-DD-SHORTCOMMIT-KIND.json` (KIND: bench, names),
    /// named by date and commit only. A build with uncommitted changes says so
    /// in the name (`-dirty`): its figures belong to no commit.
    func suggestedPath(kind: String) -> String {
        let day = String(date.prefix(10))
        let dirty = commit.hasSuffix("-dirty")
        let short = commit == "unknown" ? "unknown" : String(commit.prefix(7)) + (dirty ? "-dirty" : "")
        return "Papers/data/\(day)-\(short)-\(kind).json"
    }
}

/// A benchmark row with the metadata of its run: in JSON the row's own
/// fields and `run`, so that every row says what produced it.
struct StampedRow<Row: Codable>: Codable {
    var row: Row
    var run: RunMetadata

    private enum Key: String, CodingKey { case run }

    init(row: Row, run: RunMetadata) {
        self.row = row
        self.run = run
    }

    init(from decoder: any Decoder) throws {
        row = try Row(from: decoder)
        run = try decoder.container(keyedBy: Key.self).decode(RunMetadata.self, forKey: .run)
    }

    func encode(to encoder: any Encoder) throws {
        try row.encode(to: encoder)
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(run, forKey: .run)
    }
}
