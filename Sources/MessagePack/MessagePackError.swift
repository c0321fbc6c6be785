/// Why bytes could not be read as MessagePack.
public enum MessagePackError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The bytes are not valid MessagePack (or nest deeper than the reader allows).
    case malformed(String)
    /// The bytes end in the middle of a value.
    case truncated
    /// A single message is larger than the reader's limit; nothing of it was kept.
    case messageTooLarge(size: Int, limit: Int)
    /// A complete value was followed by more bytes where exactly one value was expected.
    case trailingBytes(count: Int)

    /// A sentence for people.
    public var description: String {
        switch self {
        case .malformed(let reason):
            "malformed MessagePack: \(reason)"
        case .truncated:
            "truncated MessagePack: the bytes end inside a value"
        case .messageTooLarge(let size, let limit):
            "MessagePack message of at least \(size) bytes exceeds the limit of \(limit) bytes; "
                + "raise the reader's maximumMessageSize if such messages are expected"
        case .trailingBytes(let count):
            "\(count) unexpected bytes follow the MessagePack value"
        }
    }
}
