import MessagePack
import Synchronization

extension RPCError {
    /// Makes errors of `type` that a worker throws cross back as themselves: a call (or a pool's
    /// map) whose remote function throws one throws it in the owner, re-made from its `Codable`
    /// encoding, instead of an ``RPCError`` of kind ``Kind/remote``.
    ///
    /// Register in the process that catches the error, before the calls: the owner for a worker's
    /// errors, a worker for the errors of the owner's handlers (``RPCHandlers``). The thrower needs
    /// nothing: ForkKit sends every `Encodable` error whole, with its encoding (the `value` of the
    /// error's details, protocol/README.md; left out when over 64 KiB), keyed by the type's full
    /// name, which must be the same on both sides: the same type in the same module, as a worker
    /// forked from the program itself has (a separate worker program shares it through a library).
    /// A registered error thrown in a pool's map is thrown as itself, without the failing item's
    /// index that an ``RPCError`` would carry.
    ///
    /// ```swift
    /// struct BadShape: Error, Codable { var sides: Int }
    /// RPCError.register(BadShape.self)
    /// do {
    ///     _ = try await worker.call(area, shape)
    /// } catch let error as BadShape {
    ///     print("a shape with \(error.sides) sides")
    /// }
    /// ```
    ///
    /// An error whose value does not decode as `type` arrives as an ``RPCError`` as before, with
    /// ``remoteError`` holding what was sent.
    public static func register<Registered: Error & Codable>(_ type: Registered.Type) {
        RegisteredErrors.add(type)
    }
}

extension RPCError {
    /// The remote error re-made as itself, when its type is registered (``register(_:)``) and what
    /// was sent decodes as it: what a single call throws in place of this error. A batch's results
    /// (``RPCClient/callBatch(_:_:timeout:)``) keep the ``RPCError``, which this reaches.
    public var registeredError: (any Error)? {
        guard kind == .remote, let remoteType, case .array(let fields)? = remoteError, fields.count >= 3,
              case .map(let details) = fields[2], let value = details.first(where: { $0.key == "value" })?.value else { return nil }
        return RegisteredErrors.remake(type: remoteType, from: value)
    }
}

/// The error types that cross as themselves (``RPCError/register(_:)``), by full type name, and
/// the encoding of an error for the wire.
enum RegisteredErrors {
    /// Re-makes an error from its encoded value.
    typealias Decoder = @Sendable (MessagePackValue) throws -> any Error

    private static let table = Mutex<[String: Decoder]>([:])

    static func add<Registered: Error & Codable>(_ type: Registered.Type) {
        table.withLock { $0[name(of: type)] = { try MessagePackDecoder().decode(Registered.self, from: $0) } }
    }

    /// The name an error type travels under: its full name, so that a user's type can never be
    /// taken for one of the protocol's own error names (`NoSuchMethod`...).
    static func name(of type: any Error.Type) -> String {
        String(reflecting: type)
    }

    /// The error that `value` (an error's encoding) re-makes, when `type` is registered and the
    /// value decodes as it.
    static func remake(type: String, from value: MessagePackValue) -> (any Error)? {
        guard let decoder = table.withLock({ $0[type] }) else { return nil }
        return try? decoder(value)
    }

    /// The details an error carries on the wire (the third element of `[type, message, details]`):
    /// its `Codable` encoding, when it has one, under `value`.
    static func details(of error: any Error) -> MessagePackValue? {
        guard let encodable = error as? any Encodable, let value = try? MessagePackEncoder().encodeValue(encodable) else { return nil }
        // An error that large would make the whole answer too large: its type and message still go.
        guard value.encoded().count <= maximumDetailsSize else { return nil }
        return .map([MessagePackPair("value", value)])
    }

    /// The largest encoding of an error sent along with it.
    static let maximumDetailsSize = 64 << 10
}
