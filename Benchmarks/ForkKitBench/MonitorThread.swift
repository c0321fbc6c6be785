import Foundation

/// CPU time of ForkKit's monitor thread (`forkkit-monitor`, which reads every worker's replies),
/// from /proc: what one I/O thread spends per result.
enum MonitorThread {
    /// Runs `body` and returns its result with the CPU seconds the monitor thread used meanwhile
    /// (nil when the thread cannot be found).
    static func cpuSeconds<Result>(during body: () async throws -> Result) async throws -> (Result, Double?) {
        let before = cpuSeconds()
        let result = try await body()
        guard let before, let after = cpuSeconds() else { return (result, nil) }
        return (result, after - before)
    }

    /// The run time of the thread named forkkit-monitor, in seconds (schedstat: nanoseconds).
    static func cpuSeconds() -> Double? {
        let tasks = "/proc/self/task"
        guard let ids = try? FileManager.default.contentsOfDirectory(atPath: tasks) else { return nil }
        for id in ids {
            guard let name = try? String(contentsOfFile: "\(tasks)/\(id)/comm", encoding: .utf8),
                  name.trimmingCharacters(in: .whitespacesAndNewlines) == "forkkit-monitor" else { continue }
            // The first field of schedstat is the time spent on a CPU, in nanoseconds.
            guard let stat = try? String(contentsOfFile: "\(tasks)/\(id)/schedstat", encoding: .utf8),
                  let nanoseconds = stat.split(separator: " ").first.flatMap({ Double($0) }) else { return nil }
            return nanoseconds / 1e9
        }
        return nil
    }
}
