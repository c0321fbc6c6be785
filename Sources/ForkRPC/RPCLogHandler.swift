import Logging
import MessagePack

/// A swift-log `LogHandler` for worker processes: each record travels to the owner as a `$log`
/// notification and comes out of the owner's `Logger` (Perl AnyEvent::Fork::RPC's example 4).
///
/// ```swift
/// // in the worker:
/// let logger = server.makeLogger(label: "resizer")
/// logger.info("resized", metadata: ["file": "a.jpg"])
/// // in the owner: RPCClient.start(template, running: "resizer", logger: Logger(label: "app"))
/// ```
///
/// On the wire: `[2, "$log", [level, message, metadata (map of str), label]]`.
public struct RPCLogHandler: LogHandler {
    /// The records' label.
    public let label: String
    /// Records below this level are not sent.
    public var logLevel: Logger.Level = .info
    /// Metadata added to every record.
    public var metadata: Logger.Metadata = [:]
    /// Adds contextual metadata when a record is made.
    public var metadataProvider: Logger.MetadataProvider?
    private let send: @Sendable (RPCMessage) -> Void

    /// A handler that hands each record, as a `$log` notification, to `send`.
    public init(label: String, send: @escaping @Sendable (RPCMessage) -> Void) {
        self.label = label
        self.send = send
    }

    /// Sends one record.
    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let own = event.metadata { merged.merge(own) { $1 } }
        let fields = merged.sorted { $0.key < $1.key }.map { MessagePackPair(.string($0.key), .string("\($0.value)")) }
        send(.notification(method: Self.method, params: [
            .string(event.level.rawValue), .string(event.message.description), .map(fields), .string(label),
        ]))
    }

    /// Reads and writes one metadata value.
    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// The notification's method name.
    static let method = "$log"

    /// Logs a `$log` notification's record to `logger`, or returns false if the message is not one.
    static func forward(_ params: [MessagePackValue], to logger: Logger, pid: Int32?) -> Bool {
        guard params.count == 4, let levelName = params[0].stringValue, let level = Logger.Level(rawValue: levelName),
              let message = params[1].stringValue, case .map(let pairs) = params[2], let label = params[3].stringValue
        else { return false }
        var metadata: Logger.Metadata = [:]
        for pair in pairs {
            if let key = pair.key.stringValue, let value = pair.value.stringValue { metadata[key] = .string(value) }
        }
        if let pid { metadata["worker-pid"] = .stringConvertible(pid) }
        logger.log(level: level, "\(message)", metadata: metadata, source: label)
        return true
    }
}
