#if canImport(Glibc)
import Glibc
#endif
import Foundation
import Testing
import TestSupport

/// `plexus cc` and `plexus c++`, like `mpicc` and `mpicxx`: the system
/// compiler with Plexus's header, library and run path.
@Suite(.serialized) struct CompilerWrapperTests {
    static let sourceTree = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().path

    /// The directory libPlexusC.so is in: the build directory, next to plexus.
    var libraryDirectory: String {
        get throws { URL(fileURLWithPath: try product("plexus")).resolvingSymlinksInPath().deletingLastPathComponent().path }
    }

    func plexus(_ args: [String], environment: [String: String] = [:], in directory: String? = nil) throws -> (status: Int32, stdout: String, stderr: String) {
        let c: Child
        if let directory {
            c = try Child("/bin/sh", ["-c", "cd \(quoted(directory)) && exec \(quoted(try product("plexus"))) "
                                      + args.map(quoted).joined(separator: " ")], environment: environment)
        } else {
            c = try Child(try product("plexus"), args, environment: environment)
        }
        let s = try c.wait(timeout: 120)
        return (s, c.stdout, c.stderr)
    }

    @Test func showmePrintsTheWholeCommand() throws {
        let lib = try libraryDirectory
        let include = Self.sourceTree + "/Sources/PlexusC/include"
        let link = "-L\(lib) -Wl,-rpath,\(lib) -lPlexusC"
        let r = try plexus(["cc", "--showme", "-O2", "prog.c", "-o", "prog"], environment: ["PLEXUS_CC": ""])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == "cc -I\(include) -O2 prog.c -o prog \(link)\n", "\(r.stdout)")
        let cxx = try plexus(["c++", "-c", "prog.cc", "--showme"], environment: ["PLEXUS_CXX": ""])
        #expect(cxx.stdout == "c++ -I\(include) -c prog.cc\n", "compiling only needs no library: \(cxx.stdout)")
        let chosen = try plexus(["cc", "--showme", "a b.c"], environment: ["PLEXUS_CC": "gcc -std=c11"])
        #expect(chosen.stdout == "gcc -std=c11 -I\(include) 'a b.c' \(link)\n", "\(chosen.stdout)")
        #expect(try plexus(["cc", "--showme:compile"]).stdout == "-I\(include)\n")
        #expect(try plexus(["cc", "--showme:link"]).stdout == "\(link)\n")
    }

    /// The C example built by `plexus cc` runs under `plexus run` with no
    /// LD_LIBRARY_PATH: the run path finds libPlexusC.so.
    @Test func builtProgramRunsUnderPlexusRun() throws {
        let dir = NSTemporaryDirectory() + "plexus-cc-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let noLibraryPath = ["LD_LIBRARY_PATH": ""]
        let cc = try plexus(["cc", "-O2", Self.sourceTree + "/Examples/c-hello/main.c", "-o", "hello"], environment: noLibraryPath, in: dir)
        #expect(cc.status == 0, "\(cc.stderr)")
        let r = try plexus(["run", "-n", "2", "./hello"], environment: noLibraryPath, in: dir)
        #expect(r.status == 0, "\(r.stderr)")
        for rank in 0..<2 { #expect(r.stdout.contains("[\(rank)] hello from rank \(rank) of 2"), "\(r.stdout)") }
        // The same program as C++.
        let cxx = try plexus(["c++", "-x", "c++", Self.sourceTree + "/Examples/c-hello/main.c", "-o", "hello++"], environment: noLibraryPath, in: dir)
        #expect(cxx.status == 0, "\(cxx.stderr)")
        let r2 = try plexus(["run", "-n", "1", "./hello++"], environment: noLibraryPath, in: dir)
        #expect(r2.status == 0 && r2.stdout.contains("[0] hello from rank 0 of 1"), "\(r2.stdout) \(r2.stderr)")
    }

    /// Scripts/install.sh's layout (here from the built products, without
    /// building): the installed plexus finds PREFIX/include and PREFIX/lib,
    /// plexus.pc gives the same flags, and both programs run.
    @Test func anInstalledPrefixBuildsProgramsThatRun() throws {
        let prefix = NSTemporaryDirectory() + "plexus-prefix-\(UInt32.random(in: 0...UInt32.max))"
        defer { try? FileManager.default.removeItem(atPath: prefix) }
        let install = try Child("/bin/bash", [Self.sourceTree + "/Scripts/install.sh", prefix],
                                environment: ["PLEXUS_INSTALL_FROM": try libraryDirectory])
        #expect(try install.wait(timeout: 60) == 0, "\(install.stderr)")
        for f in ["bin/plexus", "lib/libPlexusC.so", "include/plexus.h", "lib/pkgconfig/plexus.pc"] {
            #expect(FileManager.default.fileExists(atPath: prefix + "/" + f), "\(f) is not installed")
        }
        let installed = prefix + "/bin/plexus"
        let showme = try Child(installed, ["cc", "--showme:compile"])
        #expect(try showme.wait(timeout: 30) == 0)
        #expect(showme.stdout == "-I\(prefix)/include\n", "\(showme.stdout)")
        let dir = prefix + "/work"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let main = quoted(Self.sourceTree + "/Examples/c-hello/main.c")
        let script = "cd \(quoted(dir)) && \(quoted(installed)) cc \(main) -o hello "
            + "&& cc \(main) -o hello-pc $(PKG_CONFIG_PATH=\(quoted(prefix + "/lib/pkgconfig")) pkg-config --cflags --libs plexus) "
            + "&& \(quoted(installed)) run -n 2 ./hello && \(quoted(installed)) run -n 2 ./hello-pc"
        let build = try Child("/bin/sh", ["-c", script], environment: ["LD_LIBRARY_PATH": "", "PLEXUS_CC": ""])
        #expect(try build.wait(timeout: 120) == 0, "\(build.stderr)")
        for rank in 0..<2 {
            #expect(build.stdout.components(separatedBy: "[\(rank)] hello from rank \(rank) of 2").count == 3, "\(build.stdout)")
        }
    }

    @Test func theCompilersStatusIsReturned() throws {
        let r = try plexus(["cc", "/nonexistent/prog.c", "-o", "/dev/null"])
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stderr.contains("prog.c"), "the compiler's own message: \(r.stderr)")
        let missing = try plexus(["cc", "x.c"], environment: ["PLEXUS_CC": "no-such-compiler-xyz"])
        #expect(missing.status == 127)
        #expect(missing.stderr.contains("was not found on PATH") && missing.stderr.contains("$PLEXUS_CC"), "\(missing.stderr)")
    }
}

/// A word for /bin/sh.
func quoted(_ s: String) -> String { "'" + s.replacingOccurrences(of: "'", with: "'\\''") + "'" }
