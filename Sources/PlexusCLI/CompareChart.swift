import Foundation
import Plexus

/// The chart of `plexus compare --svg`, for a slide: small multiples, one
/// panel per figure, each with its own axis; in every panel one bar per
/// configuration (its median), a whisker from the smallest to the largest
/// run, the value above the bar and its ratio to the first configuration.
/// Colours (Okabe-Ito, readable by the colour-blind) are the
/// configurations', the same in every panel and in the legend.
///
/// Hand-written SVG 1.1: bars are `<rect class="bar">` carrying
/// `data-configuration`, panels `<g class="panel" data-metric="...">`.
struct CompareChart {
    var report: CompareReport

    static let palette = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"]
    static let font = "DejaVu Sans, Helvetica, Arial, sans-serif"

    // Geometry, in px.
    static let margin = 24.0
    static let plotHeight = 180.0
    static let barWidth = 36.0
    static let barGap = 20.0
    /// Above the plot: the panel's title and room for the labels of a full-height bar.
    static let panelTop = 62.0
    /// Below the plot: two lines of bar labels.
    static let panelBottom = 46.0
    static let axisWidth = 58.0

    /// Wall time, messages and pages always (when reported); the others
    /// only when some configuration's median is not zero.
    func metrics() -> [ComparisonMetric] {
        let always: [ComparisonMetric] = [.wallSeconds, .messages, .pagesTransferred]
        let summaries = report.results.compactMap(\.summary)
        return (always + ComparisonMetric.allCases.filter { !always.contains($0) }).filter { m in
            let medians = summaries.compactMap { $0[m]?.median }
            return always.contains(m) ? !medians.isEmpty : medians.contains { $0 != 0 }
        }
    }

    /// Each configuration's label under its bar: the protocol and the page
    /// size, leaving out what every configuration shares.
    func labels() -> [[String]] {
        let configurations = report.results.map(\.configuration)
        let oneProtocol = Set(configurations.map(\.protocol)).count == 1 && configurations.count > 1
        let oneSize = Set(configurations.map(\.pageSize)).count == 1
        return configurations.map { c in
            var lines: [String] = []
            if !oneProtocol { lines.append(c.protocol) }
            if !oneSize || oneProtocol { lines.append(Self.bytes(c.pageSize)) }
            return lines
        }
    }

    func svg() -> String {
        let metrics = metrics()
        let results = report.results
        let labels = labels()
        let n = Double(max(1, results.count))
        let panelWidth = max(250, Self.axisWidth + n * (Self.barWidth + Self.barGap) + Self.barGap + 12)
        let panelHeight = Self.panelTop + Self.plotHeight + Self.panelBottom
        let columns = Self.columns(metrics.count)
        let rows = (metrics.count + columns - 1) / columns
        let width = max(800, 2 * Self.margin + Double(columns) * panelWidth)
        let headerHeight = 128.0
        let height = headerHeight + Double(max(1, rows)) * (panelHeight + 16) + Self.margin

        var s = """
            <?xml version="1.0" encoding="UTF-8"?>
            <svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="\(Self.f(width))" height="\(Self.f(height))" \
            viewBox="0 0 \(Self.f(width)) \(Self.f(height))" font-family="\(Self.font)">
            <title>\(Self.escape("plexus compare: " + report.title))</title>
            <rect x="0" y="0" width="\(Self.f(width))" height="\(Self.f(height))" fill="#ffffff"/>

            """
        s += text(Self.margin, 36, report.title, size: 22, weight: "bold")
        let sizes = Set(results.map(\.configuration.pageSize))
        let protocols = Set(results.map(\.configuration.protocol))
        var subtitle = "\(report.processes) process\(report.processes == 1 ? "" : "es"), median of \(report.repeats) run\(report.repeats == 1 ? "" : "s")"
        if sizes.count == 1, let size = sizes.first { subtitle += ", page size \(Self.bytes(size))" }
        if protocols.count == 1, let p = protocols.first, results.count > 1 { subtitle += ", protocol \(p)" }
        s += text(Self.margin, 60, subtitle, size: 14, color: "#444444")
        let reference = labels.first.map { " (" + $0.joined(separator: " ") + ")" } ?? ""
        let whiskers = report.repeats > 1 ? "; whiskers: smallest to largest run" : ""
        s += text(Self.margin, 78, "Bars: medians\(whiskers); ×: ratio to the first configuration\(reference)", size: 14, color: "#444444")

        // Legend.
        var x = Self.margin
        for (i, r) in results.enumerated() {
            let name = labels[i].joined(separator: " ") + (r.failure == nil ? "" : " (failed)")
            s += "<rect class=\"legend\" x=\"\(Self.f(x))\" y=\"94\" width=\"14\" height=\"14\" fill=\"\(Self.color(i))\"/>\n"
            s += text(x + 20, 106, name, size: 13)
            x += 20 + Double(name.count) * 8 + 24
        }

        if metrics.isEmpty {
            s += text(Self.margin, headerHeight + 30, "No figures: no run reported statistics (does the program call finalize?)", size: 15)
        }
        for (k, m) in metrics.enumerated() {
            let px = Self.margin + Double(k % columns) * panelWidth
            let py = headerHeight + Double(k / columns) * (panelHeight + 16)
            s += panel(m, x: px, y: py, width: panelWidth, labels: labels)
        }
        s += "</svg>\n"
        return s
    }

    /// One figure's panel: title, axis with gridlines, bars, whiskers, labels.
    private func panel(_ m: ComparisonMetric, x: Double, y: Double, width: Double, labels: [[String]]) -> String {
        let spreads = report.results.map { $0.summary?[m] }
        let (top, step) = Self.axis(spreads.compactMap { $0?.max }.max() ?? 0, whole: m.unit.isEmpty || m.unit == "B")
        let plotLeft = x + Self.axisWidth
        let plotTop = y + Self.panelTop
        let plotBottom = plotTop + Self.plotHeight
        func yOf(_ v: Double) -> Double { plotBottom - v / top * Self.plotHeight }

        var s = "<g class=\"panel\" data-metric=\"\(m.rawValue)\">\n"
        s += text(x + 8, y + 22, m.title + (m.unit.isEmpty ? "" : " (\(m.unit))"), size: 16, weight: "bold")
        // Gridlines and tick labels.
        var tick = 0.0
        while tick <= top * (1 + 1e-9) {
            let ty = yOf(tick)
            s += "<line x1=\"\(Self.f(plotLeft))\" y1=\"\(Self.f(ty))\" x2=\"\(Self.f(x + width - 12))\" y2=\"\(Self.f(ty))\" "
                + "stroke=\"\(tick == 0 ? "#333333" : "#dddddd")\" stroke-width=\"1\"/>\n"
            s += text(plotLeft - 6, ty + 4, Self.compact(tick), size: 12, color: "#444444", anchor: "end")
            tick += step
        }
        let first = spreads.first.flatMap { $0?.median }
        // The bars, centred in the plot.
        let barsWidth = Double(spreads.count) * (Self.barWidth + Self.barGap) - Self.barGap
        let barsLeft = plotLeft + (x + width - 12 - plotLeft - barsWidth) / 2
        for (i, spread) in spreads.enumerated() {
            let bx = barsLeft + Double(i) * (Self.barWidth + Self.barGap)
            let cx = bx + Self.barWidth / 2
            for (line, label) in labels[i].enumerated() {
                s += text(cx, plotBottom + 18 + Double(line) * 16, label, size: 13, anchor: "middle")
            }
            guard let spread else {
                s += text(cx, plotBottom - 8, report.results[i].failure == nil ? "-" : "failed", size: 12, color: "#aa0000", anchor: "middle")
                continue
            }
            let barTop = yOf(spread.median)
            s += "<rect class=\"bar\" data-configuration=\"\(Self.escape(report.results[i].configuration.name))\" "
                + "x=\"\(Self.f(bx))\" y=\"\(Self.f(barTop))\" width=\"\(Self.f(Self.barWidth))\" height=\"\(Self.f(plotBottom - barTop))\" "
                + "fill=\"\(Self.color(i))\"><title>\(Self.escape(report.results[i].configuration.name)): median \(Self.compact(spread.median))"
                + "\(m.unit.isEmpty ? "" : " " + m.unit), min \(Self.compact(spread.min)), max \(Self.compact(spread.max))</title></rect>\n"
            var labelY = barTop - 6
            if spread.max > spread.min {
                let (w0, w1) = (yOf(spread.min), yOf(spread.max))
                s += "<g class=\"whisker\" stroke=\"#222222\" stroke-width=\"1.5\">"
                    + "<line x1=\"\(Self.f(cx))\" y1=\"\(Self.f(w0))\" x2=\"\(Self.f(cx))\" y2=\"\(Self.f(w1))\"/>"
                    + "<line x1=\"\(Self.f(cx - 6))\" y1=\"\(Self.f(w0))\" x2=\"\(Self.f(cx + 6))\" y2=\"\(Self.f(w0))\"/>"
                    + "<line x1=\"\(Self.f(cx - 6))\" y1=\"\(Self.f(w1))\" x2=\"\(Self.f(cx + 6))\" y2=\"\(Self.f(w1))\"/></g>\n"
                labelY = min(labelY, w1 - 6)
            }
            s += text(cx, labelY, Self.compact(spread.median), size: 13, weight: "bold", anchor: "middle")
            if i > 0, let first, first > 0 {
                s += text(cx, labelY - 16, "×" + Self.ratio(spread.median / first), size: 12, color: "#444444", anchor: "middle")
            }
        }
        s += "</g>\n"
        return s
    }

    private func text(_ x: Double, _ y: Double, _ content: String, size: Int, weight: String = "normal", color: String = "#111111",
                      anchor: String = "start") -> String {
        "<text x=\"\(Self.f(x))\" y=\"\(Self.f(y))\" font-size=\"\(size)\" font-weight=\"\(weight)\" fill=\"\(color)\" "
            + "text-anchor=\"\(anchor)\">\(Self.escape(content))</text>\n"
    }

    static func color(_ i: Int) -> String { palette[i % palette.count] }

    /// Panels per row: wide rather than tall, as a slide is.
    static func columns(_ panels: Int) -> Int {
        switch panels {
        case ...3: max(1, panels)
        case 4: 2
        case 5...6: 3
        case 7...8: 4
        default: 5
        }
    }

    /// The top of an axis holding `maxValue` and its tick step: 1, 2, 2.5 or
    /// 5 times a power of ten, about four ticks; with `whole` (counts) the
    /// step is a whole number.
    static func axis(_ maxValue: Double, whole: Bool = false) -> (top: Double, step: Double) {
        guard maxValue > 0, maxValue.isFinite else { return (1, whole ? 1 : 0.25) }
        let raw = maxValue / 4
        let magnitude = pow(10, (log10(raw)).rounded(.down))
        let multiples: [Double] = whole && magnitude < 10 ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]
        var step = multiples.map { $0 * magnitude }.first { $0 >= raw * (1 - 1e-12) } ?? 10 * magnitude
        if whole { step = max(1, step) }
        return (max(step, (maxValue / step - 1e-9).rounded(.up) * step), step)
    }

    /// 3 significant digits with k, M, G for thousands, millions, billions.
    static func compact(_ v: Double) -> String {
        let a = abs(v)
        for (scale, suffix) in [(1e9, "G"), (1e6, "M"), (1e3, "k")] where a >= scale {
            return trimmed(String(format: "%.3g", v / scale)) + suffix
        }
        if v == v.rounded() { return String(format: "%.0f", v) }
        return trimmed(String(format: a >= 1 ? "%.3g" : "%.2g", v))
    }

    static func ratio(_ r: Double) -> String { r >= 10 ? String(format: "%.0f", r) : String(format: "%.2f", r) }

    private static func trimmed(_ s: String) -> String {
        guard s.contains("."), !s.contains("e") else { return s }
        var t = s
        while t.hasSuffix("0") { t.removeLast() }
        if t.hasSuffix(".") { t.removeLast() }
        return t
    }

    /// "4 KiB", "64 KiB", "2 MiB", or bytes.
    static func bytes(_ n: Int) -> String {
        if n >= 1 << 20, n % (1 << 20) == 0 { return "\(n >> 20) MiB" }
        if n >= 1 << 10, n % (1 << 10) == 0 { return "\(n >> 10) KiB" }
        return "\(n) B"
    }

    static func f(_ v: Double) -> String { trimmed(String(format: "%.1f", v)) }

    static func escape(_ s: String) -> String {
        var out = ""
        for c in s {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            default: out.append(c)
            }
        }
        return out
    }
}
