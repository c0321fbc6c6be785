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
        ]
        for (name, chart) in files {
            try chart.render().write(to: chartDirectory.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        let markdown = Self.markdown(reports: reports, scaling: scaling, latency: latency, creation: creation, quick: options.quick)
        try markdown.write(to: directory.appendingPathComponent("benchmarks.md"), atomically: true, encoding: .utf8)
        print("wrote \(directory.appendingPathComponent("benchmarks.md").path) and \(files.count) charts in \(chartDirectory.path)")
    }

    // MARK: - Charts

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
            A target is a ratio of two figures of this same run.\(quick ? "\n\n**Smoke run (`--quick`): too few iterations for the figures to mean much.**" : "")

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
        for report in reports {
            text += "\n## \(report.benchmark)\n\n| metric | median |\n|---|---:|\n"
            for (name, value) in report.metrics { text += "| `\(name)` | \(String(format: "%.1f", value)) |\n" }
            for (name, reason) in report.skipped { text += "| `\(name)` | skipped: \(reason) |\n" }
            for note in report.notes { text += "\nNote: \(note)\n" }
        }
        return text
    }
}
