import MessagePack
import SystemPackage

/// A file descriptor as an argument of a remote call: it travels as SCM_RIGHTS beside the message
/// and arrives in the worker as a working descriptor of its own. Results cannot carry one: a
/// worker function whose result holds a descriptor answers with an `InvalidResult` error.
///
/// ```swift
/// let log = RPCFunction<PassedDescriptor, Int>("write-log")
/// _ = try await worker.call(log, PassedDescriptor(logFile))   // the caller keeps its own copy
/// // in the worker: server.register(log) { passed in try passed.descriptor.writeAll(...); ... }
/// ```
///
/// In the message it is the ext type ``extensionType`` holding the descriptor's number in the
/// sender (4 bytes, big-endian); the receiver replaces it with the number it received, in order.
/// The receiver owns what it received and must close it. Descriptors need a Unix socket; over
/// pipes, or to a worker on another machine, a call with one fails.
public struct PassedDescriptor: Codable, Sendable, Hashable, MessagePackValueConvertible {
    /// The MessagePack ext type that marks a descriptor (70, "F").
    public static let extensionType: Int8 = 70

    /// The descriptor, valid in the process that holds this value.
    public let descriptor: FileDescriptor

    /// Wraps a descriptor to pass.
    public init(_ descriptor: FileDescriptor) {
        self.descriptor = descriptor
    }

    /// The ext value that carries it.
    public var messagePackValue: MessagePackValue {
        let number = UInt32(bitPattern: descriptor.rawValue)
        return .extended(type: Self.extensionType, data: [24, 16, 8, 0].map { UInt8(truncatingIfNeeded: number >> $0) })
    }

    /// Reads the ext value back.
    public init(messagePackValue: MessagePackValue) throws {
        guard case .extended(Self.extensionType, let data) = messagePackValue, data.count == 4 else {
            throw RPCError(.codingFailed, "expected a passed descriptor (ext type \(Self.extensionType), 4 bytes), got \(messagePackValue)")
        }
        descriptor = FileDescriptor(rawValue: Int32(bitPattern: data.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }))
    }

    /// The descriptors a message carries, in order.
    static func descriptors(in value: MessagePackValue) -> [FileDescriptor] {
        switch value {
        case .extended(extensionType, _): return [(try? PassedDescriptor(messagePackValue: value))?.descriptor].compactMap { $0 }
        case .array(let elements): return elements.flatMap(descriptors(in:))
        case .map(let pairs): return pairs.flatMap { descriptors(in: $0.key) + descriptors(in: $0.value) }
        default: return []
        }
    }

    /// Replaces each descriptor marker in `value`, in order, with the next received descriptor.
    /// Throws if fewer arrived than the message names.
    static func substitute(_ value: MessagePackValue, from received: inout [FileDescriptor]) throws -> MessagePackValue {
        switch value {
        case .extended(extensionType, _):
            guard !received.isEmpty else {
                throw RPCError(.protocolViolation, "a message names a passed descriptor, but none arrived with it (SCM_RIGHTS)")
            }
            return PassedDescriptor(received.removeFirst()).messagePackValue
        case .array(let elements):
            return .array(try elements.map { try substitute($0, from: &received) })
        case .map(let pairs):
            return .map(try pairs.map { MessagePackPair(try substitute($0.key, from: &received), try substitute($0.value, from: &received)) })
        default:
            return value
        }
    }
}

extension MessagePackValue {
    /// Whether a descriptor marker (``PassedDescriptor``) is somewhere in the value.
    var containsDescriptor: Bool { !PassedDescriptor.descriptors(in: self).isEmpty }
}
