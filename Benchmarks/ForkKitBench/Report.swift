import Foundation
import Synchronization

/// What one benchmark measured: raw medians (unit in the name) with the least and greatest round
/// (this VM's noise), peers that were skipped and why, and the issue targets, each a ratio of two
/// medians from this same run.
struct Report: Sendable {
    /// Every report finished in this process, in order, for `forkkit-bench report`.
    static let finished = Mutex<[Report]>([])

    struct Target: Sendable {
        let name: String
        let value: Double?
        let target: Double
        let explanation: String
        /// True when the value must not exceed the target (a latency ratio), false when it must reach it.
        var isCeiling = false
        var met: Bool? { value.map { isCeiling ? $0 <= target : $0 >= target } }
    }

    /// One figure: the median of its rounds, and how far the rounds spread (nil for one round).
    struct Metric: Sendable {
        let name: String
        let value: Double
        var least: Double?
        var greatest: Double?
        var rounds = 1
    }

    let benchmark: String
    var metrics: [Metric] = []
    var skipped: [(name: String, reason: String)] = []
    var targets: [Target] = []
    var notes: [String] = []

    mutating func record(_ name: String, _ value: Double) { metrics.append(Metric(name: name, value: value)) }

    /// Records the median of `values` (one per round), with their least and greatest.
    mutating func record(_ name: String, rounds values: [Double]) {
        guard !values.isEmpty else { return }
        metrics.append(Metric(name: name, value: median(values), least: values.min(), greatest: values.max(), rounds: values.count))
    }

    func metric(_ name: String) -> Double? { metrics.first { $0.name == name }?.value }

    /// Adds a target `numerator / denominator >= goal`, or one without value if either is missing.
    mutating func target(_ name: String, _ numerator: String, over denominator: String, atLeast goal: Double, _ explanation: String) {
        targets.append(Target(name: name, value: ratio(numerator, denominator), target: goal, explanation: explanation))
    }

    /// Adds a target `numerator / denominator <= goal` (for latencies).
    mutating func target(_ name: String, _ numerator: String, over denominator: String, atMost goal: Double, _ explanation: String) {
        targets.append(Target(name: name, value: ratio(numerator, denominator), target: goal, explanation: explanation, isCeiling: true))
    }

    /// Adds a target on a metric itself.
    mutating func target(_ name: String, _ metricName: String, atLeast goal: Double, _ explanation: String) {
        targets.append(Target(name: name, value: metric(metricName), target: goal, explanation: explanation))
    }

    /// Adds a ceiling on a metric itself.
    mutating func target(_ name: String, _ metricName: String, atMost goal: Double, _ explanation: String) {
        targets.append(Target(name: name, value: metric(metricName), target: goal, explanation: explanation, isCeiling: true))
    }

    private func ratio(_ numerator: String, _ denominator: String) -> Double? {
        if let top = metric(numerator), let bottom = metric(denominator), bottom > 0 { top / bottom } else { nil }
    }

    func printTable() {
        print("\n\(benchmark) — \(Machine.description), \(Machine.date)")
        let width = max(metrics.map(\.name.count).max() ?? 0, skipped.map(\.name.count).max() ?? 0)
        print("\nmedian of rounds (least .. greatest):")
        for metric in metrics {
            let spread = metric.least.map { least in String(format: "   (%.1f .. %.1f, %d rounds)", least, metric.greatest ?? least, metric.rounds) } ?? ""
            print("  \(metric.name.padding(toLength: width, withPad: " ", startingAt: 0))  \(String(format: "%12.1f", metric.value))\(spread)")
        }
        for (name, reason) in skipped {
            print("  \(name.padding(toLength: width, withPad: " ", startingAt: 0))  skipped: \(reason)")
        }
        print("\ntargets (ratios within this run):")
        for target in targets {
            let value = target.value.map { String(format: "%.2f", $0) } ?? "n/a"
            let verdict = target.met.map { $0 ? "met" : "NOT met" } ?? "not measured"
            print("  \(target.name): \(value) (target \(target.isCeiling ? "<=" : ">=") \(target.target)) \(verdict) — \(target.explanation)")
        }
        for note in notes { print("note: \(note)") }
    }

    func printJSON() throws {
        var metricsObject: [String: Double] = [:]
        for metric in metrics { metricsObject[metric.name] = (metric.value * 10).rounded() / 10 }
        var targetsObject: [String: Any] = [:]
        for target in targets {
            targetsObject[target.name] = [
                "value": target.value.map { ($0 * 100).rounded() / 100 } as Any? ?? NSNull(),
                "target": target.target,
                "at_most": target.isCeiling,
                "met": target.met as Any? ?? NSNull(),
            ]
        }
        let object: [String: Any] = [
            "benchmark": benchmark, "machine": Machine.description, "date": Machine.date,
            "metrics": metricsObject, "targets": targetsObject,
            "skipped": Dictionary(uniqueKeysWithValues: skipped.map { ($0.name, $0.reason) }),
        ]
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}

/// The median of a non-empty list.
func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    let middle = sorted.count / 2
    return sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2
}

/// The value below which `fraction` of the sorted `values` lie (nearest rank).
func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    return sorted[min(sorted.count - 1, Int((Double(sorted.count) * fraction).rounded(.up)) - 1)]
}

/// The machine, as a benchmark report names it.
enum Machine {
    static var description: String {
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?
            .split(separator: "\n").first { $0.hasPrefix("model name") }?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        var name = utsname()
        uname(&name)
        let kernel = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return "\(ProcessInfo.processInfo.activeProcessorCount) x \(cpu), Linux \(kernel)"
    }

    static var date: String { ISO8601DateFormatter().string(from: Date()) }
}
