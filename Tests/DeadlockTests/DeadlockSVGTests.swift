#if canImport(FoundationXML)
import FoundationXML
#endif
import Foundation
import Testing
@testable import Deadlock

/// Collects the class attribute of every `g` element and all text.
private final class Collector: NSObject, XMLParserDelegate {
    var groups: [String] = []
    var texts: [String] = []
    var current = ""
    func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?,
                attributes: [String: String] = [:]) {
        if name == "g" { groups.append(attributes["class"] ?? "") }
        current = ""
    }
    func parser(_ parser: XMLParser, foundCharacters string: String) { current += string }
    func parser(_ parser: XMLParser, didEndElement name: String, namespaceURI: String?, qualifiedName: String?) {
        if name == "text" { texts.append(current) }
    }
}

private func parse(_ svg: String) throws -> Collector {
    let parser = XMLParser(data: Data(svg.utf8))
    let collector = Collector()
    parser.delegate = collector
    let ok = parser.parse()
    #expect(ok, "not well-formed XML: \(parser.parserError.map { "\($0)" } ?? "?")\n\(svg)")
    return collector
}

@Suite struct DeadlockSVGTests {
    static func lockCycle(_ n: Int) -> DeadlockCycle {
        DeadlockCycle(path: (0..<n).map { i in
            Hop(pid: UInt64(100 + i), sequence: 1, version: 0, node: "10.0.0.\(i % 3 + 1)", resource: .lock(UInt64((i + 1) % n)))
        })
    }

    @Test(arguments: [2, 3, 5, 8])
    func oneNodePerMemberAndOneArrowPerEdge(n: Int) throws {
        let cycle = Self.lockCycle(n)
        let ranks = cycle.hops.map { Int($0.pid) - 100 }
        let c = try parse(cycle.svg(ranks: ranks))
        #expect(c.groups.filter { $0.split(separator: " ").contains("node") }.count == n)
        #expect(c.groups.filter { $0 == "edge" }.count == n)
        #expect(c.groups.filter { $0 == "node victim" }.count == 1)
        // The victim (highest PID) is labelled so, with rank, pid and node.
        let victim = n - 1
        #expect(c.texts.contains("rank \(victim) / pid \(100 + victim) @ 10.0.0.\(victim % 3 + 1) (victim)"), "\(c.texts)")
        for i in 0..<n {
            #expect(c.texts.contains { $0.hasPrefix("rank \(i) / pid \(100 + i) @ ") }, "rank \(i) missing: \(c.texts)")
        }
        // Each arrow names the lock and who holds it: rank i waits for lock
        // (i+1) mod n, held by rank i+1.
        for i in 0..<n {
            #expect(c.texts.contains("lock \((i + 1) % n), held by rank \((i + 1) % n)"), "edge of rank \(i) missing: \(c.texts)")
        }
    }

    @Test func textThatLooksLikeMarkupIsEscaped() throws {
        let cycle = DeadlockCycle(path: [
            Hop(pid: 1, sequence: 1, version: 0, node: "<a&b>\"'", resource: .other(kind: "x<y", id: 2)),
            Hop(pid: 2, sequence: 1, version: 0, node: "n\u{1}", resource: .barrier(3)),
        ])
        let c = try parse(cycle.svg(title: "t & <t>"))
        #expect(c.texts.contains("pid 1 @ <a&b>\"'"), "\(c.texts)")
        #expect(c.texts.contains("x<y 2 for pid 2"), "\(c.texts)")
        #expect(c.texts.contains("barrier 3 for pid 1"), "\(c.texts)")
        // Without ranks the labels fall back to global PIDs.
        #expect(c.texts.contains("pid 2 @ n  (victim)"), "\(c.texts)")
    }
}
