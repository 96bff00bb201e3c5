#if canImport(Glibc)
import Glibc
#endif
import ArgumentParser
import Cluster
import Foundation

/// `plexus cc`: the system C compiler with Plexus's header, library and
/// run path, like `mpicc`.
struct CompileC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cc",
        abstract: "Compile and link a C program against Plexus (like mpicc).",
        discussion: CompilerWrapper.discussion(command: "cc", compiler: "cc", variable: "PLEXUS_CC"),
        helpNames: [.long])

    @Argument(parsing: .allUnrecognized, help: "Arguments for the compiler, and --showme[:compile|:link].")
    var arguments: [String] = []

    func run() throws { try CompilerWrapper(compiler: "cc", variable: "PLEXUS_CC").run(arguments) }
}

/// `plexus c++`: the same for C++, like `mpicxx`.
struct CompileCXX: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "c++",
        abstract: "Compile and link a C++ program against Plexus (like mpicxx).",
        discussion: CompilerWrapper.discussion(command: "c++", compiler: "c++", variable: "PLEXUS_CXX"),
        helpNames: [.long])

    @Argument(parsing: .allUnrecognized, help: "Arguments for the compiler, and --showme[:compile|:link].")
    var arguments: [String] = []

    func run() throws { try CompilerWrapper(compiler: "c++", variable: "PLEXUS_CXX").run(arguments) }
}

/// Why `plexus cc` cannot build. The message says what to do.
enum CompilerWrapperError: Error, CustomStringConvertible {
    case noLibrary(looked: [String])
    case noHeader(library: String)
    case noCompiler(variable: String, SpawnError)

    var description: String {
        switch self {
        case .noLibrary(let looked):
            return "cannot find libPlexusC.so (looked in \(looked.joined(separator: " and "))): in a source tree run "
                + "`swift build` first, which builds it next to plexus; or install Plexus with Scripts/install.sh"
        case .noHeader(let lib):
            return "found \(lib)/libPlexusC.so but no plexus.h: install Plexus with Scripts/install.sh, "
                + "or run the plexus of a source tree's .build directory"
        case .noCompiler(let variable, let e):
            return "cannot run the compiler: \(e) (set $\(variable) to the one to use, or install one, e.g. apt-get install gcc g++)"
        }
    }
}

/// Finds Plexus's header and library relative to the running `plexus`, and
/// builds the compiler's command line.
struct CompilerWrapper {
    /// The default compiler command, and the variable that overrides it.
    var compiler: String
    var variable: String

    /// Where plexus.h and libPlexusC.so are.
    struct Paths: Equatable {
        var include: String
        var lib: String
    }

    static func discussion(command: String, compiler: String, variable: String) -> String {
        """
        Every argument goes to the system compiler (\(compiler), or $\(variable): a command,
        split at spaces), with the include path of plexus.h, and, when linking,
        -lPlexusC, its directory and a run path to it, so the program runs under
        `plexus run` without LD_LIBRARY_PATH. The exit status is the compiler's.
        The paths are found from this plexus: PREFIX/include and PREFIX/lib when it
        is installed in PREFIX/bin (Scripts/install.sh), else its build directory
        (.build/debug or .build/release) and Sources/PlexusC/include of its source tree.
        `pkg-config --cflags --libs plexus` gives the same flags for an installed Plexus.

          --showme           print the command instead of running it
          --showme:compile   print only the flags for compiling
          --showme:link      print only the flags for linking

        Examples:
          plexus \(command) -O2 -o hello hello.c && plexus run -n 4 ./hello
          plexus \(command) --showme
        """
    }

    /// Installed layout first (PREFIX/bin/plexus with PREFIX/include and
    /// PREFIX/lib), then the build directory of a source tree.
    static func locate(executable: String) throws(CompilerWrapperError) -> Paths {
        let fm = FileManager.default
        let bin = URL(fileURLWithPath: executable).deletingLastPathComponent()
        let prefix = bin.deletingLastPathComponent()
        let installedLib = prefix.appendingPathComponent("lib").path
        let installedInclude = prefix.appendingPathComponent("include").path
        if fm.fileExists(atPath: installedLib + "/libPlexusC.so") && fm.fileExists(atPath: installedInclude + "/plexus.h") {
            return Paths(include: installedInclude, lib: installedLib)
        }
        guard fm.fileExists(atPath: bin.path + "/libPlexusC.so") else {
            throw .noLibrary(looked: [bin.path, installedLib])
        }
        // The source tree: the first ancestor with Sources/PlexusC/include/plexus.h.
        var dir = bin
        while dir.path != "/" {
            let include = dir.appendingPathComponent("Sources/PlexusC/include").path
            if fm.fileExists(atPath: include + "/plexus.h") { return Paths(include: include, lib: bin.path) }
            dir = dir.deletingLastPathComponent()
        }
        throw .noHeader(library: bin.path)
    }

    static func compileFlags(_ p: Paths) -> [String] { ["-I\(p.include)"] }
    static func linkFlags(_ p: Paths) -> [String] { ["-L\(p.lib)", "-Wl,-rpath,\(p.lib)", "-lPlexusC"] }

    /// Whether the arguments stop before linking (-c, -S, -E, or -M/-MM).
    static func links(_ arguments: [String]) -> Bool {
        !arguments.contains { ["-c", "-S", "-E", "-M", "-MM"].contains($0) }
    }

    /// The whole command: compiler, include path, the user's arguments, and
    /// the library flags when linking.
    static func command(compiler: [String], arguments: [String], paths: Paths) -> [String] {
        compiler + compileFlags(paths) + arguments + (links(arguments) ? linkFlags(paths) : [])
    }

    func run(_ all: [String]) throws {
        let showme = all.filter { $0 == "--showme" || $0.hasPrefix("--showme:") }
        let arguments = all.filter { !($0 == "--showme" || $0.hasPrefix("--showme:")) }
        let paths: Paths
        do { paths = try Self.locate(executable: selfExecutable()) } catch {
            writeAll(2, "plexus \(compiler): \(error)\n")
            throw ExitCode(1)
        }
        let chosen = ProcessInfo.processInfo.environment[variable].flatMap { $0.isEmpty ? nil : $0 } ?? compiler
        let compilerCommand = chosen.split(separator: " ").map(String.init)
        if let mode = showme.last {
            let words: [String]
            switch mode {
            case "--showme:compile": words = Self.compileFlags(paths)
            case "--showme:link": words = Self.linkFlags(paths)
            case "--showme": words = Self.command(compiler: compilerCommand, arguments: arguments, paths: paths)
            default:
                writeAll(2, "plexus \(compiler): unknown \(mode): use --showme, --showme:compile or --showme:link\n")
                throw ExitCode(2)
            }
            writeAll(1, words.map(shellQuoted).joined(separator: " ") + "\n")
            return
        }
        let argv = Self.command(compiler: compilerCommand, arguments: arguments, paths: paths)
        let program: String
        do {
            program = try resolveProgram(argv[0], path: ProcessInfo.processInfo.environment["PATH"],
                                         directory: FileManager.default.currentDirectoryPath)
        } catch {
            writeAll(2, "plexus \(compiler): \(CompilerWrapperError.noCompiler(variable: variable, error))\n")
            throw ExitCode(127)
        }
        // The compiler replaces this process: its exit status is ours.
        let cArgs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        execv(program, cArgs)
        let e = errno
        writeAll(2, "plexus \(compiler): cannot execute \(program): \(String(cString: strerror(e)))\n")
        throw ExitCode(126)
    }
}
