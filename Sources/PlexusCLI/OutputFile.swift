#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Cluster
import Foundation

/// A file an option names for output (`--json`, `--stats`): checked before
/// anything runs, written once the results exist. A run that fails leaves
/// no file behind (nor an empty one): the check creates nothing.
enum OutputFile {
    /// Throws a ValidationError naming `option` unless `path` can be written:
    /// its directory exists and may be written, and if the file exists it is
    /// a regular file this process may write.
    static func validate(_ path: String, option: String) throws {
        guard !path.isEmpty else { throw ValidationError("\(option) needs a file name") }
        let url = URL(fileURLWithPath: path)
        let directory = url.deletingLastPathComponent().path
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) {
            guard !isDirectory.boolValue else {
                throw ValidationError("\(option) \(path) is a directory: give a file name, e.g. \(option) \(url.appendingPathComponent("results.json").path)")
            }
            guard access(path, W_OK) == 0 else {
                throw ValidationError("\(option) \(path) cannot be written (\(String(cString: strerror(errno)))): choose another file")
            }
        }
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw ValidationError("\(option) \(path): the directory \(directory) does not exist: create it first or choose another path")
        }
        guard access(directory, W_OK | X_OK) == 0 else {
            throw ValidationError("\(option) \(path): cannot create files in \(directory) (\(String(cString: strerror(errno)))): choose another directory")
        }
    }

    /// Writes `value` as pretty-printed JSON (sorted keys) to `path`, all or
    /// nothing; on failure says which option's file could not be written.
    static func write<T: Encodable>(_ value: T, to path: String, option: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        let data: Data
        do { data = try encoder.encode(value) } catch {
            writeAll(2, "plexus: cannot encode the results for \(option): \(error)\n")
            throw ExitCode(1)
        }
        try write(data, to: path, option: option)
    }

    static func write(_ data: Data, to path: String, option: String) throws {
        do { try data.write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            writeAll(2, "plexus: cannot write \(option) \(path): \(error.localizedDescription)\n")
            throw ExitCode(1)
        }
    }
}
