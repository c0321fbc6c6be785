import CForkSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// One background thread that watches descriptors with epoll and calls a handler when one is readable.
///
/// Connections to templates and not-yet-running children must be read as soon as anything arrives
/// (replies, and notices of exited children that would otherwise fill the socket and block the
/// template), without tying up a thread of Swift's cooperative pool. One thread serves them all.
/// Handlers run on that thread and must not block.
final class DescriptorMonitor: Sendable {
    /// Called when the descriptor is readable (or hung up). A handler that is done calls `unwatch`
    /// itself, before it resumes anyone who might close the descriptor.
    typealias Handler = @Sendable () -> Void

    static let shared = DescriptorMonitor()

    private let epoll: Int32
    private let handlers = Mutex<[Int32: Handler]>([:])

    private init() {
        epoll = forkkit_epoll_create()
        precondition(epoll >= 0, "epoll_create1 failed: errno \(errno)")
        var thread = pthread_t()
        let result = pthread_create(&thread, nil, { _ in
            DescriptorMonitor.shared.run()
        }, nil)
        precondition(result == 0, "cannot start the ForkKit monitor thread: error \(result)")
        pthread_detach(thread)
    }

    /// Starts calling `handler` whenever `descriptor` is readable.
    func watch(_ descriptor: Int32, _ handler: @escaping Handler) {
        handlers.withLock { $0[descriptor] = handler }
        if forkkit_epoll_add(epoll, descriptor) != 0 {
            // Only a closed or invalid descriptor gets here; its handler sees the error when it reads.
            handler()
            handlers.withLock { _ = $0.removeValue(forKey: descriptor) }
        }
    }

    /// Stops watching; call before closing the descriptor.
    func unwatch(_ descriptor: Int32) {
        _ = handlers.withLock { $0.removeValue(forKey: descriptor) }
        forkkit_epoll_remove(epoll, descriptor)
    }

    private func run() -> Never {
        var ready = [Int32](repeating: -1, count: 64)
        while true {
            let count = forkkit_epoll_wait(epoll, &ready, Int32(ready.count))
            guard count > 0 else { continue }
            for descriptor in ready.prefix(Int(count)) {
                guard let handler = handlers.withLock({ $0[descriptor] }) else { continue }
                handler()
            }
        }
    }
}
