import Testing
@testable import Deadlock

@Suite struct DeadlockCycleTests {
    static let cycle = DeadlockCycle(path: [
        Hop(pid: 3, sequence: 4, version: 0, node: "node-a", resource: .lock(7)),
        Hop(pid: 11, sequence: 2, version: 1, node: "node-b", resource: .barrier(1)),
        Hop(pid: 5, sequence: 9, version: 0, node: "node \"c\"", resource: .receive(from: 3)),
    ])

    @Test func theVictimIsTheHighestPIDAndComesFirst() {
        #expect(Self.cycle.victim == 11)
        #expect(Self.cycle.processes == [11, 5, 3])
        // Every rotation names the same cycle.
        let rotated = DeadlockCycle(path: Array(Self.cycle.hops[1...] + Self.cycle.hops[..<1]))
        #expect(rotated == Self.cycle)
    }

    @Test func dotDrawsTheWaitForGraph() {
        #expect(Self.cycle.dot() == """
            digraph "deadlock" {
              rankdir=LR;
              node [shape=box];
              "p11" [label="pid 11@node-b (victim)", color=red, fontcolor=red, penwidth=2];
              "p5" [label="pid 5@node \\"c\\""];
              "p3" [label="pid 3@node-a"];
              "p11" -> "p5" [label="barrier 1"];
              "p5" -> "p3" [label="receive from pid 3"];
              "p3" -> "p11" [label="lock 7"];
            }

            """)
    }

    @Test func theErrorNamesProcessesNodesAndResources() {
        let text = "\(DeadlockError.victim(of: Self.cycle))"
        for part in ["pid 11@node-b", "pid 5@node \"c\"", "pid 3@node-a", "lock 7", "barrier 1", "receive from pid 3", "victim"] {
            #expect(text.contains(part), "\(part) missing from: \(text)")
        }
    }
}
