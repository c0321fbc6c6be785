import Logging
import Synchronization

/// What reached a logger: level, message, metadata and source of each record.
public final class LogRecords: Sendable {
    public let records = Mutex<[(Logger.Level, String, Logger.Metadata, String)]>([])

    public init() {}
}

/// Collects what reaches a logger into ``LogRecords``.
public struct CollectingLogHandler: LogHandler {
    public let sink: LogRecords
    public var logLevel: Logger.Level = .trace
    public var metadata: Logger.Metadata = [:]

    public init(sink: LogRecords) {
        self.sink = sink
    }

    public func log(event: LogEvent) {
        sink.records.withLock { $0.append((event.level, event.message.description, event.metadata ?? [:], event.source)) }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
}
