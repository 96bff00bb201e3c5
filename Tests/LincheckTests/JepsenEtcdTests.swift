import Foundation
import Testing
@testable import Lincheck

@Suite struct JepsenEtcdTests {
    /// Every Jepsen etcd history must get the verdict recorded in verdicts.txt, each within a few
    /// seconds. A missing data directory is a failure, not a skip: silently passing would hide
    /// that the checker was never exercised on real data.
    @Test func allHistoriesMatchKnownVerdicts() throws {
        let directory = jepsenDirectory()
        let verdictsURL = directory.appendingPathComponent("verdicts.txt")
        let verdictsText = try #require(
            try? String(contentsOf: verdictsURL, encoding: .utf8),
            "Jepsen etcd histories not found at \(directory.path) (expected <repository>/../shared/linearizability/jepsen-etcd)")
        let expected: [(file: String, linearizable: Bool)] = try verdictsText
            .split(separator: "\n").map { line in
                let fields = line.split(separator: " ")
                try #require(fields.count == 2, "bad verdicts.txt line: \(line)")
                try #require(["linearizable", "not-linearizable"].contains(fields[1]), "bad verdict: \(line)")
                return (String(fields[0]), fields[1] == "linearizable")
            }
        #expect(expected.count == 102)
        #expect(expected.filter(\.linearizable).count == 23)

        let clock = ContinuousClock()
        var timings: [(file: String, seconds: Double, states: Int)] = []
        let total = clock.measure {
            for (file, linearizable) in expected {
                let path = directory.appendingPathComponent(file).path
                let text: String
                do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
                    Issue.record("cannot read \(path): \(error)")
                    continue
                }
                let history: History<RegisterModel.Input, RegisterModel.Output>
                do { history = try JepsenHistory.parse(text) } catch {
                    Issue.record("\(file): \(error)")
                    continue
                }
                // The bound only guards the test run; a correct, reasonably fast checker never hits it.
                let result = checkLinearizability(
                    model: RegisterModel(), history: history, options: CheckOptions(timeout: .seconds(10)))
                #expect(result.verdict == (linearizable ? .linearizable : .notLinearizable), "\(file)")
                #expect(result.elapsed < .seconds(5), "\(file) took \(result.elapsed)")
                #expect(throws: Never.self, "\(file)") { try validate(result) }
                timings.append((file, seconds(result.elapsed), result.statesExplored))
            }
        }
        #expect(timings.count == 102)
        let slowest = timings.sorted { $0.seconds > $1.seconds }.prefix(3)
            .map { "\($0.file) \(String(format: "%.3f", $0.seconds)) s (\($0.states) states)" }
        print("Jepsen etcd: \(timings.count) histories in \(String(format: "%.2f", seconds(total))) s, "
            + "\(timings.reduce(0) { $0 + $1.states }) states; slowest: "
            + slowest.joined(separator: ", "))
    }

    /// The CLI entry point on a real file: auto-detection, verdict and a readable explanation.
    @Test func checkFileOnJepsenHistory() throws {
        let directory = jepsenDirectory()
        let path = directory.appendingPathComponent("etcd_000.log").path
        try #require(FileManager.default.fileExists(atPath: path), "missing \(path)")
        let (report, linearizable) = try checkFile(path: path, model: "register")
        #expect(!linearizable)  // verdicts.txt: etcd_000.log not-linearizable
        #expect(report.contains("format: Jepsen etcd log"))
        #expect(report.contains("NOT LINEARIZABLE"))
        #expect(report.contains("Longest linearisable prefix found"))
        #expect(report.contains("impossible in this state"))
        #expect(throws: LincheckError.self) { try checkFile(path: path, model: "names") }
    }
}
