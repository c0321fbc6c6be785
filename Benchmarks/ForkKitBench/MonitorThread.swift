import Foundation

/// CPU time of ForkKit's monitor threads (`forkkit-monitor`, and `forkkit-io-N` when connections
/// are spread over more), which read every worker's replies, from /proc: what the I/O thread
/// spends per result.
enum MonitorThread {
    /// Runs `body` and returns its result with the CPU seconds the monitor thread used meanwhile
    /// (nil when the thread cannot be found).
    static func cpuSeconds<Result>(during body: () async throws -> Result) async throws -> (Result, Double?) {
        let before = cpuSeconds()
        let result = try await body()
        guard let before, let after = cpuSeconds() else { return (result, nil) }
        return (result, after - before)
    }

    /// The run time of the monitor threads, in seconds (schedstat: nanoseconds).
    static func cpuSeconds() -> Double? {
        let tasks = "/proc/self/task"
        guard let ids = try? FileManager.default.contentsOfDirectory(atPath: tasks) else { return nil }
        var total: Double?
        for id in ids {
            guard let name = try? String(contentsOfFile: "\(tasks)/\(id)/comm", encoding: .utf8),
                  name.hasPrefix("forkkit-monitor") || name.hasPrefix("forkkit-io-") else { continue }
            // The first field of schedstat is the time spent on a CPU, in nanoseconds.
            guard let stat = try? String(contentsOfFile: "\(tasks)/\(id)/schedstat", encoding: .utf8),
                  let nanoseconds = stat.split(separator: " ").first.flatMap({ Double($0) }) else { continue }
            total = (total ?? 0) + nanoseconds / 1e9
        }
        return total
    }
}
