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

    public static let etcdMissing = "etcd is not installed: run the tests as root with Scripts/test.sh (it installs etcd-server), or set PLEXUS_ETCD_ENDPOINTS"
    public static let rootMissing = "network namespaces need root: run Scripts/test.sh as root"
}
