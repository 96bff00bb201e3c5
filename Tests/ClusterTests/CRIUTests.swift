import Foundation
import Testing
import TestSupport

/// Checkpoint and restore with CRIU, the base of process migration:
/// Scripts/criu-smoke.sh dumps a C and a Swift program (two threads, 100 MiB
/// of memory with a known pattern, each the init of its own PID namespace and
/// leader of its own session), restores them, and checks that they go on
/// where they stopped with their memory intact.
@Suite struct CRIUTests {
    static let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Scripts/criu-smoke.sh").path

    @Test(.enabled(if: Requirement.criu, Comment(rawValue: Requirement.criuMissing)))
    func dumpedProgramsGoOnWhereTheyStoppedAfterRestore() throws {
        let smoke = try Child("/bin/bash", [Self.script])
        let status = try smoke.wait(timeout: 300)
        #expect(status == 0, "\(smoke.stdout)\(smoke.stderr)")
        #expect(smoke.stdout.contains("criu-smoke: c ok"), "\(smoke.stdout)\(smoke.stderr)")
        if !smoke.stderr.contains("swiftc is not on PATH") {
            #expect(smoke.stdout.contains("criu-smoke: swift ok"), "\(smoke.stdout)\(smoke.stderr)")
        }
        #expect(smoke.stdout.contains("criu-smoke: all round trips passed"))
    }
}
