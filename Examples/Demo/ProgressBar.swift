#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress bar on standard error, redrawn ten times a second while work runs; on a
/// terminal only, so that logs stay clean.
struct ProgressBar {
    let label: String
    let isTerminal = isatty(STDERR_FILENO) == 1

    /// Runs `body`, drawing the bar from `progress` (completed, total) until it ends.
    func show<Result>(
        progress: @escaping @Sendable () -> (completed: Int, total: Int), _ body: () async throws -> Result
    ) async rethrows -> Result {
        guard isTerminal else { return try await body() }
        let drawing = Task { [self] in
            while !Task.isCancelled {
                draw(progress())
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        defer {
            drawing.cancel()
            draw(progress())
            Self.write("\n")
        }
        return try await body()
    }

    private func draw(_ progress: (completed: Int, total: Int)) {
        let width = 30
        let fraction = progress.total == 0 ? 1 : Double(progress.completed) / Double(progress.total)
        let filled = min(width, Int(fraction * Double(width)))
        let bar = String(repeating: "#", count: filled) + String(repeating: "-", count: width - filled)
        let percent = Int(fraction * 100)
        let padded = label + String(repeating: " ", count: max(0, 26 - label.count))
        Self.write("\r\(padded) [\(bar)] \(percent)% \(progress.completed)/\(progress.total)")
    }

    /// Unbuffered, so the bar appears at once.
    private static func write(_ text: String) {
        var text = text
        _ = text.withUTF8 { Glibc.write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}
