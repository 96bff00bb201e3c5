#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// What some suites need from the machine beyond Swift, and whether this run
/// has it. A suite that needs something missing is skipped, named by
/// `Scripts/test.sh`, which prints the command that enables it; with
/// `PLEXUS_TEST_REQUIRE_ALL=1` (set by `.ci/run`) nothing is skipped: a
/// missing requirement fails the suite instead.
public enum Requirement {
    static var requireAll: Bool { ProcessInfo.processInfo.environment["PLEXUS_TEST_REQUIRE_ALL"] == "1" }

    /// etcd for the etcd backend's conformance tests: a running cluster in
    /// `PLEXUS_ETCD_ENDPOINTS`, or Debian's etcd-server to start one.
    public static var etcd: Bool {
        requireAll || !(ProcessInfo.processInfo.environment["PLEXUS_ETCD_ENDPOINTS"] ?? "").isEmpty
            || FileManager.default.isExecutableFile(atPath: "/usr/bin/etcd")
    }

    /// Root, for network namespaces (the multi-host tests).
    public static var root: Bool { requireAll || getuid() == 0 }

    /// Root and CRIU 4.2 or later (`PLEXUS_CRIU`, else `criu` on PATH), for
    /// checkpoint and restore: older CRIU fails on the kernels this runs on.
    public static var criu: Bool { requireAll || (getuid() == 0 && criuUsable) }

    static let criuUsable: Bool = {
        let env = ProcessInfo.processInfo.environment
        let candidates = env["PLEXUS_CRIU"].map { [$0] }
            ?? (env["PATH"] ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin").split(separator: ":").map { "\($0)/criu" }
        guard let path = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else { return false }
        let p = Process(), out = Pipe()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = ["--version"]
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        guard (try? p.run()) != nil else { return false }
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("Version:") }) else { return false }
        let parts = line.dropFirst("Version:".count).trimmingCharacters(in: .whitespaces).split(separator: ".").compactMap { Int($0) }
        return parts.count >= 2 && (parts[0], parts[1]) >= (4, 2)
    }()

    public static let etcdMissing = "etcd is not installed: run the tests as root with Scripts/test.sh (it installs etcd-server), or set PLEXUS_ETCD_ENDPOINTS"
    public static let rootMissing = "network namespaces need root: run Scripts/test.sh as root"
    public static let criuMissing = "checkpoint and restore need root and CRIU 4.2 or later: run Scripts/test.sh as root (it runs Scripts/install-criu.sh)"
}
