/// A value that only one ``DescriptorMonitor``'s thread may touch, checked on every access (in the
/// spirit of SwiftNIO's `NIOLoopBound`): the state a connection's reader keeps between the
/// readable events of its descriptor, which that monitor's thread alone delivers.
///
/// It may be made on any thread, before the monitor starts reading with it; every later access
/// from another thread stops the program with a message instead of racing.
///
/// ```swift
/// let reader = MonitorBound(MessagePackFrameReader(), on: .shared)
/// DescriptorMonitor.shared.watch(socket) {
///     reader.withValue { reader in reader.append(...) }
/// }
/// ```
package final class MonitorBound<Value: ~Copyable>: @unchecked Sendable {
    // Safe to share: every read and write goes through `withValue`, which checks the thread.
    private var value: Value
    private let monitor: DescriptorMonitor

    /// Wraps `value` for `monitor`'s thread.
    package init(_ value: consuming Value, on monitor: DescriptorMonitor) {
        self.value = value
        self.monitor = monitor
    }

    /// Calls `body` with the value; must be called on the monitor thread.
    package func withValue<Result: ~Copyable, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        precondition(
            monitor.isCurrentThread,
            "a MonitorBound value was touched off ForkKit's monitor thread; only that thread's handlers and jobs may use it")
        return try body(&value)
    }
}
