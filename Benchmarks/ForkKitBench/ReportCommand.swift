import ArgumentParser
import Foundation

/// `forkkit-bench report`: every benchmark, then the chart measurements, written as
/// `docs/benchmarks.md` (tables with ratios to the peers, the machine and the date) and SVG charts
/// in `docs/charts/`.
struct ReportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report",
        abstract: "Run every benchmark and the chart measurements; write benchmarks.md and charts/*.svg.",
        discussion: "scripts/bench.sh report writes docs/benchmarks.md; --quick is a smoke run whose figures mean little."
    )

    @OptionGroup var options: BenchmarkOptions

    @Option(help: "The directory that receives benchmarks.md and charts/.")
    var output = "docs"

    func run() async throws {
        var arguments = options.quick ? ["--quick"] : []
        if let rounds = options.rounds { arguments += ["--rounds", "\(rounds)"] }
        try await AllBenchmarks.parse(arguments).run()
        let reports = Report.finished.withLock { $0 }

        let run = try BenchmarkRun("charts", options: options)
        let charts = ChartMeasurements(quick: options.quick, rounds: run.rounds, log: run.log)
        let scaling = try await charts.scaling()
        let latency = try await charts.latency()
        let creation = try await charts.creationRate(templatePath: run.templatePath)

        let directory = URL(fileURLWithPath: output)
        let chartDirectory = directory.appendingPathComponent("charts")
        try FileManager.default.createDirectory(at: chartDirectory, withIntermediateDirectories: true)
        let metric = { (benchmark: String, name: String) in
            reports.first { $0.benchmark == benchmark }?.metric(name)
        }
        let files: [(String, SVGChart)] = [
            ("scaling.svg", Self.scalingChart(scaling)),
            ("latency.svg", Self.latencyChart(latency, floor: metric("rpc", "c_pingpong_rtt_us"))),
            ("creation-rate.svg", Self.creationChart(creation, perl: metric("spawn", "perl_anyevent_fork_new_run_exit_per_s"))),
            ("work-per-item.svg", Self.sweepChart(.work, metric: { metric("sweep", $0) })),
            ("payload-per-item.svg", Self.sweepChart(.payload, metric: { metric("sweep", $0) })),
        ]
        for (name, chart) in files {
            try chart.render().write(to: chartDirectory.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        let markdown = Self.markdown(reports: reports, scaling: scaling, latency: latency, creation: creation, quick: options.quick)
        try markdown.write(to: directory.appendingPathComponent("benchmarks.md"), atomically: true, encoding: .utf8)
        print("wrote \(directory.appendingPathComponent("benchmarks.md").path) and \(files.count) charts in \(chartDirectory.path)")
    }

    /// The sweeps' charts and tables: items/s of each way at each level, and the ratios.
    static func sweepSection(_ report: Report) -> String {
        var text = """

            ## Processes or threads: from what work per item?

            `forkkit-bench sweep`: a map over 2 worker processes (ForkPool, automatic chunks), 2 threads (a \
            TaskGroup of two lanes, no task per item) and Python's `Pool(2).map` (default chunks), measured \
            in the same rounds. First the CPU work per item (a busy wait on the monotonic clock, the same in \
            Swift and Python), then the payload per item (that many bytes in, its length back).

            """
        for sweep in [Sweep.work, .payload] {
            let chart = sweep == .work ? "work-per-item" : "payload-per-item"
            text += """

                ![\(chart)](charts/\(chart).svg)

                | \(sweep == .work ? "work per item" : "payload per item") | processes (items/s) | threads (items/s) | Python Pool(2) (items/s) | processes / threads | processes / Python |
                |---:|---:|---:|---:|---:|---:|

                """
            for level in sweep.levels {
                let values = ["processes", "threads", "python"].map { report.metric(sweep.metric(level, $0)) }
                func cell(_ value: Double?) -> String { value.map { String(format: "%.0f", $0) } ?? "n/a" }
                func ratio(_ top: Double?, _ bottom: Double?) -> String {
                    guard let top, let bottom, bottom > 0 else { return "n/a" }
                    return String(format: "%.2f", top / bottom)
                }
                text += "| \(sweep.label(level)) | \(cell(values[0])) | \(cell(values[1])) | \(cell(values[2])) | \(ratio(values[0], values[1])) | \(ratio(values[0], values[2])) |\n"
            }
        }
        for note in report.notes { text += "\n\(note).\n" }
        return text
    }

    // MARK: - Charts

    /// One of the two sweeps of `forkkit-bench sweep`.
    enum Sweep {
        case work, payload

        var levels: [Int] { self == .work ? SweepBenchmark.workLevels : SweepBenchmark.payloadLevels }

        func label(_ level: Int) -> String { self == .work ? SweepBenchmark.duration(level) : SweepBenchmark.bytes(level) }

        /// The metric of `way` (processes, threads, python) at `level`.
        func metric(_ level: Int, _ way: String) -> String {
            self == .work ? "work_\(level)ns_\(way)_items_per_s" : "payload_\(level)b_\(way)_items_per_s"
        }
    }

    /// Throughput relative to 2 threads at each level of a sweep: processes and Python's Pool(2).
    static func sweepChart(_ sweep: Sweep, metric: (String) -> Double?) -> SVGChart {
        var chart = SVGChart(
            title: sweep == .work ? "Map throughput by CPU work per item, relative to 2 threads" : "Map throughput by payload per item, relative to 2 threads",
            xLabel: sweep == .work ? "CPU work per item" : "payload per item (bytes in, an Int back)", yLabel: "items/s over 2 threads' items/s")
        func ratios(_ way: String) -> [(x: Double, y: Double)] {
            sweep.levels.enumerated().compactMap { index, level in
                guard let value = metric(sweep.metric(level, way)), let threads = metric(sweep.metric(level, "threads")), threads > 0 else { return nil }
                return (Double(index), value / threads)
            }
        }
        chart.series = [
            .init(name: "ForkPool, 2 processes", points: ratios("processes")),
            .init(name: "Python Pool(2)", points: ratios("python")),
            .init(name: "2 threads", points: sweep.levels.indices.map { (Double($0), 1.0) }, isReference: true),
        ]
        chart.xTickLabels = sweep.levels.enumerated().map { (Double($0), sweep.label($1)) }
        return chart
    }

    static func scalingChart(_ scaling: ChartMeasurements.Scaling) -> SVGChart {
        var chart = SVGChart(title: "CPU-bound map: processes vs threads", xLabel: "workers (processes or threads)", yLabel: "ranges of primes per second")
        chart.series = [
            .init(name: "ForkPool processes", points: zip(scaling.workers, scaling.processes).map { (Double($0), $1) }),
            .init(name: "TaskGroup threads", points: zip(scaling.workers, scaling.threads).map { (Double($0), $1) }),
        ]
        chart.xTickLabels = scaling.workers.map { (Double($0), "\($0)") }
        return chart
    }

    static func latencyChart(_ latency: ChartMeasurements.Latency, floor: Double?) -> SVGChart {
        var chart = SVGChart(title: "One call at a time: latency percentiles", xLabel: "percentile", yLabel: "round trip (microseconds)")
        let positions = ChartMeasurements.Latency.percentiles.indices.map(Double.init)
        chart.series = latency.series.map { series in
            SVGChart.Series(name: series.name, points: zip(positions, series.microseconds).map { ($0, $1) })
        }
        if let floor {
            chart.series.append(.init(name: "C ping-pong (median)", points: [(positions.first!, floor), (positions.last!, floor)], isReference: true))
        }
        chart.xTickLabels = zip(positions, ChartMeasurements.Latency.percentiles).map { ($0, "p\(SVGChart.format($1))") }
        return chart
    }

    static func creationChart(_ creation: ChartMeasurements.CreationRate, perl: Double?) -> SVGChart {
        var chart = SVGChart(title: "Processes created per second vs parent size", xLabel: "MB touched in the parent (beyond its own)", yLabel: "processes per second")
        let sizes = creation.parentMegabytes.map(Double.init)
        chart.series = [
            .init(name: "fork from the template", points: zip(sizes, creation.template).map { ($0, $1) }),
            .init(name: "fork of the parent", points: zip(sizes, creation.manualFork).map { ($0, $1) }),
        ]
        if let perl, let first = sizes.first, let last = sizes.last {
            chart.series.append(.init(name: "Perl AnyEvent::Fork", points: [(first, perl), (last, perl)], isReference: true))
        }
        return chart
    }

    // MARK: - Markdown

    static func markdown(
        reports: [Report], scaling: ChartMeasurements.Scaling, latency: ChartMeasurements.Latency,
        creation: ChartMeasurements.CreationRate, quick: Bool
    ) -> String {
        var text = """
            # ForkKit benchmarks

            Written by `scripts/bench.sh report` (`forkkit-bench report`, release build) on \(Machine.date), \
            \(Machine.description). Every figure is the median of its rounds; peers ran in the same rounds. \
            A target is a ratio of two figures of this same run. This shared 2-core VM is noisy: each \
            benchmark's table gives the least and the greatest round beside the median.\(quick ? "\n\n**Smoke run (`--quick`): too few iterations for the figures to mean much.**" : "")

            ## Targets

            | benchmark | target | value | goal | |
            |---|---|---:|---:|---|

            """
        for report in reports {
            for target in report.targets {
                let value = target.value.map { String(format: "%.2f", $0) } ?? "n/a"
                let verdict = target.met.map { $0 ? "met" : "**not met**" } ?? "not measured"
                text += "| \(report.benchmark) | \(target.explanation) | \(value) | \(target.isCeiling ? "≤" : "≥") \(target.target) | \(verdict) |\n"
            }
        }
        text += """

            ## Charts

            ![processes vs threads](charts/scaling.svg)

            Ranges of primes per second (the demo's workload) on 1 to \(scaling.workers.last ?? 0) worker processes \
            (ForkPool) and threads (TaskGroup). Both stop growing at the machine's \(ProcessInfo.processInfo.activeProcessorCount) cores.

            | workers | processes (ranges/s) | threads (ranges/s) | processes / threads |
            |---:|---:|---:|---:|

            """
        for (index, workers) in scaling.workers.enumerated() {
            text += "| \(workers) | \(String(format: "%.1f", scaling.processes[index])) | \(String(format: "%.1f", scaling.threads[index])) | \(String(format: "%.2f", scaling.processes[index] / scaling.threads[index])) |\n"
        }
        text += """

            ![latency percentiles](charts/latency.svg)

            One call of x*x at a time to one worker, rounds of each way in turn; the dashed line is the C \
            socketpair ping-pong's median from the RPC benchmark. On `ioExecutor` the reply resumes the caller \
            on the thread that read it (one thread wake-up less); how much that saves depends on where the \
            scheduler puts that thread and the worker (from 13 us to 50 us at the median, seen on this machine).

            | way | \(ChartMeasurements.Latency.percentiles.map { "p\(SVGChart.format($0))" }.joined(separator: " | ")) |
            |---|\(ChartMeasurements.Latency.percentiles.map { _ in "---:" }.joined(separator: "|"))|

            """
        for series in latency.series {
            text += "| \(series.name) | \(series.microseconds.map { String(format: "%.1f us", $0) }.joined(separator: " | ")) |\n"
        }
        text += """

            ![creation rate vs parent size](charts/creation-rate.svg)

            Fork a child that runs a function and exits, one at a time, with the parent grown by touching \
            memory: from the template the rate does not care; a fork of the parent itself slows with its size \
            (the shape of the table in Perl's AnyEvent::Fork documentation).

            | MB touched in the parent | from the template (per s) | fork of the parent (per s) |
            |---:|---:|---:|

            """
        for (index, size) in creation.parentMegabytes.enumerated() {
            text += "| \(size) | \(String(format: "%.0f", creation.template[index])) | \(String(format: "%.0f", creation.manualFork[index])) |\n"
        }
        if let sweep = reports.first(where: { $0.benchmark == "sweep" }) {
            text += sweepSection(sweep)
        }
        for report in reports {
            text += "\n## \(report.benchmark)\n\n| metric | median | least | greatest | rounds |\n|---|---:|---:|---:|---:|\n"
            for metric in report.metrics {
                let spread = [metric.least, metric.greatest].map { $0.map { String(format: "%.1f", $0) } ?? "" }
                text += "| `\(metric.name)` | \(String(format: "%.1f", metric.value)) | \(spread[0]) | \(spread[1]) | \(metric.rounds) |\n"
            }
            for (name, reason) in report.skipped { text += "| `\(name)` | skipped: \(reason) |\n" }
            for note in report.notes { text += "\nNote: \(note)\n" }
        }
        return text
    }
}
