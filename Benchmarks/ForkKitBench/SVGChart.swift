import Foundation

/// A line chart as a standalone SVG file: a few series over a shared x axis, with axes, grid lines,
/// tick labels and a legend. Small on purpose: the report needs three charts, no plotting package
/// on this machine writes SVG, and the output must diff well in git (fixed precision, no ids).
struct SVGChart {
    struct Series {
        let name: String
        let points: [(x: Double, y: Double)]
        /// Drawn dashed: a reference (a peer's or a floor's figure) rather than a measurement series.
        var isReference = false
    }

    let title: String
    let xLabel: String
    let yLabel: String
    var series: [Series] = []
    /// Labels for the x ticks, by x value; when empty, ticks are chosen from the data.
    var xTickLabels: [(x: Double, label: String)] = []

    private let width = 720.0, height = 420.0
    private let left = 80.0, right = 200.0, top = 50.0, bottom = 60.0
    private static let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]

    init(title: String, xLabel: String, yLabel: String) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
    }

    /// The chart as SVG text.
    func render() -> String {
        let points = series.flatMap(\.points)
        let xs = points.map(\.x) + xTickLabels.map(\.x)
        let (xMin, xMax) = (xs.min() ?? 0, max(xs.max() ?? 1, (xs.min() ?? 0) + 1e-9))
        let yTicks = Self.niceTicks(upTo: max(points.map(\.y).max() ?? 1, 1e-9))
        let yMax = yTicks.last ?? 1
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        func px(_ x: Double) -> Double { left + (xMax == xMin ? 0.5 : (x - xMin) / (xMax - xMin)) * plotWidth }
        func py(_ y: Double) -> Double { top + plotHeight - y / yMax * plotHeight }

        var svg = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
            viewBox="0 0 \(Int(width)) \(Int(height))" font-family="sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(f(left))" y="24" font-size="15" font-weight="bold">\(escape(title))</text>

            """
        for tick in yTicks {
            svg += "<line x1=\"\(f(left))\" y1=\"\(f(py(tick)))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(py(tick)))\" stroke=\"#e5e5e5\"/>\n"
            svg += "<text x=\"\(f(left - 8))\" y=\"\(f(py(tick) + 4))\" text-anchor=\"end\">\(Self.format(tick))</text>\n"
        }
        let xTicks = xTickLabels.isEmpty ? Self.niceTicks(from: xMin, upTo: xMax).map { ($0, Self.format($0)) } : xTickLabels
        for (x, label) in xTicks {
            svg += "<line x1=\"\(f(px(x)))\" y1=\"\(f(top + plotHeight))\" x2=\"\(f(px(x)))\" y2=\"\(f(top + plotHeight + 5))\" stroke=\"#333\"/>\n"
            svg += "<text x=\"\(f(px(x)))\" y=\"\(f(top + plotHeight + 20))\" text-anchor=\"middle\">\(escape(label))</text>\n"
        }
        svg += "<line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(top + plotHeight))\" stroke=\"#333\"/>\n"
        svg += "<line x1=\"\(f(left))\" y1=\"\(f(top + plotHeight))\" x2=\"\(f(left + plotWidth))\" y2=\"\(f(top + plotHeight))\" stroke=\"#333\"/>\n"
        svg += "<text x=\"\(f(left + plotWidth / 2))\" y=\"\(f(height - 14))\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        svg += "<text transform=\"translate(18 \(f(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\">\(escape(yLabel))</text>\n"

        for (index, line) in series.enumerated() {
            let color = Self.colors[index % Self.colors.count]
            let path = line.points.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
            let dash = line.isReference ? " stroke-dasharray=\"6 4\"" : ""
            svg += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\"\(dash)/>\n"
            if !line.isReference {
                for point in line.points {
                    svg += "<circle cx=\"\(f(px(point.x)))\" cy=\"\(f(py(point.y)))\" r=\"3\" fill=\"\(color)\"/>\n"
                }
            }
            let legendY = top + 10 + Double(index) * 20
            svg += "<line x1=\"\(f(width - right + 15))\" y1=\"\(f(legendY))\" x2=\"\(f(width - right + 40))\" y2=\"\(f(legendY))\" stroke=\"\(color)\" stroke-width=\"2\"\(dash)/>\n"
            svg += "<text x=\"\(f(width - right + 46))\" y=\"\(f(legendY + 4))\">\(escape(line.name))</text>\n"
        }
        return svg + "</svg>\n"
    }

    /// Round tick values from 0 to at least `maximum` (1, 2 or 5 times a power of ten apart).
    static func niceTicks(from minimum: Double = 0, upTo maximum: Double) -> [Double] {
        let span = max(maximum - minimum, 1e-9)
        let rough = span / 5
        let magnitude = pow(10, floor(log10(rough)))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
        let first = (minimum / step).rounded(.down) * step
        return Array(stride(from: first, through: maximum + step * 0.999, by: step))
    }

    /// A tick label: integers without decimals, thousands as k and M.
    static func format(_ value: Double) -> String {
        switch abs(value) {
        case 1_000_000...: return trim(value / 1_000_000) + "M"
        case 10_000...: return trim(value / 1_000) + "k"
        default: return trim(value)
        }
    }

    private static func trim(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value)
    }

    private func f(_ value: Double) -> String { String(format: "%.1f", value) }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
