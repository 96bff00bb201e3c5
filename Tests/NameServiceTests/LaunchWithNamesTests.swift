import Foundation
import NameService
import Testing
import TestSupport

/// `plexus run --names`: every process gets a global PID from the service and
/// is entered in its process table; without it, PIDs stay job-scoped.
@Suite(.serialized) struct LaunchWithNamesTests {
    @Test func jobProcessesGetGlobalPIDsThatAreNeverReused() throws {
        let cluster = try NameCluster(size: 3)
        try cluster.waitForLeader()
        let names = cluster.addresses.joined(separator: ",")
        var seen: [UInt64] = []
        for _ in 0..<2 {
            let r = try runPlexus(["run", "-n", "3", "--names", names, "sh", "-c", "echo PID=$PLEXUS_PID"], timeout: 30)
            #expect(r.status == 0, "\(r.stderr)")
            for line in r.stdout.split(separator: "\n") {
                if let range = line.range(of: "PID=") { seen.append(UInt64(line[range.upperBound...])!) }
            }
        }
        #expect(seen.count == 6)
        #expect(Set(seen).count == 6, "a PID was reused: \(seen)")
        let table = try cluster.client().processes()
        #expect(Set(table.map(\.pid.rawValue)) == Set(seen))
        #expect(table.allSatisfy { $0.state == .exited && $0.exitStatus == 0 }, "\(table)")
        let ps = try runPlexus(["ps", "--names", names])
        #expect(ps.stdout.contains("exited"), "\(ps.stdout)")
    }

    @Test func unreachableNameServiceStopsTheJobBeforeItStarts() throws {
        let marker = uniqueMarker()
        let r = try runPlexus(["run", "-n", "2", "--names", "127.0.0.1:1", "sh", "-c", "sleep 30", marker], timeout: 30)
        #expect(r.status == 1)
        #expect(r.stderr.contains("cannot get global PIDs from the name service"), "\(r.stderr)")
        #expect(processes(containing: marker).isEmpty)
    }

    @Test func withoutANameServicePIDsAreJobScoped() throws {
        let help = try runPlexus(["run", "--help"])
        #expect(help.stdout.contains("PIDs are job-scoped"), "\(help.stdout)")
        let r = try runPlexus(["run", "-n", "2", "sh", "-c", "echo PID=$PLEXUS_PID"])
        #expect(r.status == 0)
        #expect(r.stdout.contains("PID="))
    }
}
