import ForkPool

#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress bar on standard error, drawn from a ``MapProgress`` read as a stream of
/// updates (at most ten redraws a second); on a terminal only, so that logs stay clean.
struct ProgressBar {
    let label: String
    let isTerminal = isatty(STDERR_FILENO) == 1

    /// Runs `body`, drawing the bar from every update of `progress` until `progress` finishes (a
    /// pool map finishes its own; other work calls `finish()`).
    func show<Result>(progress: MapProgress, _ body: () async throws -> Result) async rethrows -> Result {
        guard isTerminal else { return try await body() }
        let drawing = Task { [self] in
            var lastDrawn = ContinuousClock.now - .seconds(1)
            for await update in progress where update.isFinished || ContinuousClock.now - lastDrawn >= .milliseconds(100) {
                draw(update)
                lastDrawn = .now
            }
            Self.write("\n")
        }
        defer { progress.finish() }
        let result = try await body()
        progress.finish()
        await drawing.value
        return result
    }

    private func draw(_ update: MapProgress.Update) {
        let width = 30
        let total = update.total ?? 0
        let fraction = update.fractionCompleted ?? 0
        let filled = min(width, Int(fraction * Double(width)))
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let percent = Int(fraction * 100)
        let padded = label + String(repeating: " ", count: max(0, 26 - label.count))
        Self.write("\r\(padded) [\(bar)] \(percent)% \(update.completed)/\(total)")
    }

    /// Unbuffered, so the bar appears at once.
    private static func write(_ text: String) {
        var text = text
        _ = text.withUTF8 { Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}
