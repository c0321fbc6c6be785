// forkkit-async-countdown: the asynchronous backend, as in AnyEvent::Fork::RPC's count-down
// example. One child runs several slow calls at once; each reports its count-down as events.
import ForkKit
import ForkRPC

let countDown = RPCFunction<Int, String>("count-down")

@main struct AsyncCountDown {
    static func main() async throws {
        ForkTemplate.bootstrap([
            // Up to 4 calls run at once in this one child, each in its own task.
            .asyncRPCWorker("timer", maximumConcurrentCalls: 4) { server in
                server.register(countDown) { steps in
                    for remaining in stride(from: steps, to: 0, by: -1) {
                        try server.emit("tick", "\(steps)-step count-down: \(remaining) left")
                        try await Task.sleep(for: .milliseconds(100))
                    }
                    return "\(steps)-step count-down done"
                }
            },
        ])

        let child = try await RPCClient.start(try await ForkTemplate.shared, running: "timer")
        let ticks = Task {
            var count = 0
            for await event in child.events {
                print("  tick: \(try event.value(as: String.self))")
                count += 1
            }
            return count
        }
        let clock = ContinuousClock()
        let start = clock.now
        // Three count-downs of 3, 5 and 4 steps, all in flight at once in the same child.
        let results = try await withThrowingTaskGroup(of: String.self) { group in
            for steps in [3, 5, 4] { group.addTask { try await child.call(countDown, steps) } }
            var results: [String] = []
            for try await result in group { results.append(result) }
            return results
        }
        let elapsed = clock.now - start
        _ = try await child.close()
        let tickCount = try await ticks.value
        print("results: \(results.sorted().joined(separator: ", "))")
        // Run one after another they would take 12 steps; concurrently, as long as the longest (5).
        let steps = Int((Double(elapsed.components.seconds) * 10 + Double(elapsed.components.attoseconds) / 1e17).rounded())
        print("\(tickCount) ticks; about \(steps) steps of 100 ms for count-downs of 3 + 5 + 4 steps: "
              + (steps < 9 ? "they ran concurrently" : "they did NOT run concurrently"))
    }
}
