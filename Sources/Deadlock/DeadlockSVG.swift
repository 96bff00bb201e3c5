#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension DeadlockCycle {
    /// The cycle's wait-for graph as a standalone SVG document (no Graphviz
    /// needed): one node per process on a circle, labelled "rank R / pid P
    /// @ node" (just "pid P @ node" without `ranks`), the victim drawn in
    /// red; one arrow per wait from the waiter to the process it waits for,
    /// labelled by the resource and, for a lock, its holder ("lock 2, held
    /// by rank 0"). Arrows bend to one side so that the two of a 2-cycle do
    /// not overlap.
    ///
    /// `ranks`: the job rank of each hop, in `hops` order (a negative rank
    /// or a missing list leaves the rank out). Elements carry classes for
    /// styling and tests: `node` (and `victim`) groups, `edge` groups.
    public func svg(ranks: [Int]? = nil, title: String = "deadlock") -> String {
        let n = hops.count
        func rank(_ i: Int) -> Int? { ranks.flatMap { i < $0.count && $0[i] >= 0 ? $0[i] : nil } }
        func who(_ i: Int) -> String { rank(i).map { "rank \($0)" } ?? "pid \(hops[i].pid)" }
        let labels: [String] = hops.indices.map { i in
            let pidNode = "pid \(hops[i].pid) @ \(hops[i].node)"
            return (rank(i).map { "rank \($0) / " } ?? "") + pidNode + (i == 0 ? " (victim)" : "")
        }
        let edgeLabels: [String] = hops.indices.map { i in
            let next = (i + 1) % n
            if case .lock(let id) = hops[i].resource { return "lock \(id), held by \(who(next))" }
            return "\(hops[i].resource) for \(who(next))"
        }
        // Geometry: text widths estimated at 7 px per character (13 px sans-serif).
        let charWidth = 7.0
        let ry = 20.0
        let rxs = labels.map { Double($0.count) * charWidth / 2 + 14 }
        let widest = (rxs.max() ?? 60) * 2
        let longestEdge = Double(edgeLabels.map(\.count).max() ?? 10) * charWidth
        // A circle large enough that neighbouring nodes do not touch.
        let spacing = max(widest, 2 * ry) + 40
        let radius = max(n == 2 ? 110 : 90, spacing / (2 * sin(Double.pi / Double(max(n, 2)))) * (n == 2 ? 0.5 : 1))
        let margin = max(widest / 2, longestEdge / 2) + 30
        let size = 2 * (radius + margin)
        let cx = size / 2, cy = size / 2 + 10
        let points: [(x: Double, y: Double)] = (0..<n).map { i in
            let a = -Double.pi / 2 + 2 * Double.pi * Double(i) / Double(n)
            return (cx + radius * cos(a), cy + radius * sin(a))
        }
        var out = """
            <?xml version="1.0" encoding="UTF-8"?>
            <svg xmlns="http://www.w3.org/2000/svg" width="\(f(size))" height="\(f(size + 20))" viewBox="0 0 \(f(size)) \(f(size + 20))" font-family="sans-serif" font-size="13">
            <title>\(Self.escaped(title))</title>
            <defs>
            <marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#333"/></marker>
            <marker id="arrow-victim" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#c00"/></marker>
            </defs>
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(f(size / 2))" y="22" text-anchor="middle" font-size="15" font-weight="bold">\(Self.escaped("\(title): \(n) processes, each waiting for the next"))</text>

            """
        // Edges first, so that nodes are drawn over their ends.
        for i in 0..<n {
            let j = (i + 1) % n
            let (a, b) = (points[i], points[j])
            let (dx, dy) = (b.x - a.x, b.y - a.y)
            let length = max((dx * dx + dy * dy).squareRoot(), 1)
            // Bend to the right of the direction of travel.
            let bend = n == 2 ? 0.35 * length : 0.18 * length
            let control = (x: (a.x + b.x) / 2 - dy / length * bend, y: (a.y + b.y) / 2 + dx / length * bend)
            let start = Self.boundary(from: a, towards: control, rx: rxs[i], ry: ry)
            let end = Self.boundary(from: b, towards: control, rx: rxs[j], ry: ry)
            // The curve's midpoint.
            let mid = (x: 0.25 * start.x + 0.5 * control.x + 0.25 * end.x, y: 0.25 * start.y + 0.5 * control.y + 0.25 * end.y)
            let victim = i == 0
            let stroke = victim ? "#c00" : "#333"
            out += "<g class=\"edge\" id=\"e\(hops[i].pid)-\(hops[j].pid)\">"
            out += "<path d=\"M \(f(start.x)) \(f(start.y)) Q \(f(control.x)) \(f(control.y)) \(f(end.x)) \(f(end.y))\" fill=\"none\" stroke=\"\(stroke)\" stroke-width=\"1.5\" marker-end=\"url(#\(victim ? "arrow-victim" : "arrow"))\"/>"
            // Labels on the circle's left end at the curve, on its right start there.
            let anchor = mid.x < cx - 1 ? "end" : mid.x > cx + 1 ? "start" : "middle"
            let labelX = anchor == "end" ? mid.x - 6 : anchor == "start" ? mid.x + 6 : mid.x
            out += "<text x=\"\(f(labelX))\" y=\"\(f(mid.y + 4))\" text-anchor=\"\(anchor)\" fill=\"\(stroke)\" stroke=\"white\" stroke-width=\"3\" paint-order=\"stroke\">\(Self.escaped(edgeLabels[i]))</text>"
            out += "</g>\n"
        }
        for i in 0..<n {
            let victim = i == 0
            let p = points[i]
            out += "<g class=\"node\(victim ? " victim" : "")\" id=\"p\(hops[i].pid)\">"
            out += "<ellipse cx=\"\(f(p.x))\" cy=\"\(f(p.y))\" rx=\"\(f(rxs[i]))\" ry=\"\(f(ry))\" fill=\"\(victim ? "#fee" : "#eef")\" stroke=\"\(victim ? "#c00" : "#336")\" stroke-width=\"\(victim ? 2.5 : 1.5)\"/>"
            out += "<text x=\"\(f(p.x))\" y=\"\(f(p.y + 4.5))\" text-anchor=\"middle\" fill=\"\(victim ? "#c00" : "black")\">\(Self.escaped(labels[i]))</text>"
            out += "</g>\n"
        }
        out += "</svg>\n"
        return out
    }

    /// Where the ray from `center` towards `target` leaves the ellipse of
    /// radii `rx`, `ry` around `center`.
    static func boundary(from center: (x: Double, y: Double), towards target: (x: Double, y: Double), rx: Double, ry: Double) -> (x: Double, y: Double) {
        let (dx, dy) = (target.x - center.x, target.y - center.y)
        let scale = ((dx / rx) * (dx / rx) + (dy / ry) * (dy / ry)).squareRoot()
        guard scale > 0 else { return center }
        return (center.x + dx / scale, center.y + dy / scale)
    }

    /// Text for XML character data and attribute values.
    static func escaped(_ s: String) -> String {
        var out = ""
        for c in s.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&apos;"
            // Control characters other than tab are not allowed in XML 1.0.
            case _ where c.value < 0x20 && c != "\t": out += " "
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }
}

/// A coordinate with one decimal.
private func f(_ v: Double) -> String {
    let tenths = (v * 10).rounded()
    let whole = Int(tenths) / 10, frac = abs(Int(tenths) % 10)
    return tenths < 0 && whole == 0 ? "-0.\(frac)" : "\(whole).\(frac)"
}
