@_exported import MessagePack

/// How `@MessagePackCodable` lays out a struct's stored properties.
public enum MessagePackLayout: Sendable {
    /// A map keyed by the property names, in declaration order, with the keys of nil optionals left
    /// out: exactly the bytes of the struct's synthesized `Codable` conformance through
    /// ``MessagePack/MessagePackEncoder``, so either side of a connection may use plain `Codable`.
    case map
    /// An array of the properties in declaration order (a nil optional is nil): smaller and faster,
    /// but only ForkKit's coders use it; the struct's own `Codable` conformance (used by
    /// `JSONEncoder`, say) is still the synthesized map.
    case array
}

/// Generates a struct's ``MessagePack/MessagePackEncodable`` and ``MessagePack/MessagePackDecodable``
/// conformances, so that ``MessagePack/MessagePackEncoder`` and ``MessagePack/MessagePackDecoder``
/// code it without `Codable`'s containers (several times faster), with no coding code written by hand.
///
/// ```swift
/// import MessagePackMacros
///
/// @MessagePackCodable
/// struct Reading: Sendable {
///     var sensor: String
///     var values: [Double]
///     var note: String?          // nil: the key is left out, as Codable does
/// }
/// let bytes = try MessagePackEncoder().encode(Reading(sensor: "t1", values: [20.5], note: nil))
/// let reading = try MessagePackDecoder().decode(Reading.self, from: bytes)
/// ```
///
/// Every stored property is coded, in declaration order (a `let` with a default value is encoded but
/// not decoded, as with synthesized `Codable`); computed and static properties are not. Properties
/// of the common leaf types (integers, `Double`, `Float`, `Bool`, `String`, `[UInt8]`), arrays and
/// `[String: V]` dictionaries of them, and `@MessagePackCodable` structs are written directly; any
/// other `Codable` property goes through the `Codable` path.
///
/// With the default ``MessagePackLayout/map`` layout the bytes are exactly those of the struct's
/// synthesized `Codable` conformance, and decoding accepts what `Codable` decoding accepts (keys in
/// any order, unknown keys ignored, a missing optional is nil, a missing required key is
/// `DecodingError.keyNotFound` naming it), so a peer using plain `Codable` interoperates.
/// `@MessagePackCodable(layout: .array)` writes the properties as an array instead.
///
/// The struct must not declare `CodingKeys` (the macro does not read them yet), and each decoded
/// property needs its type written out. Enums and classes are refused. The conformance's
/// `Encodable` and `Decodable` are still synthesized, for other coders.
@attached(extension, conformances: MessagePackEncodable, MessagePackDecodable, names: named(encode(to:)), named(init(from:)))
public macro MessagePackCodable(layout: MessagePackLayout = .map) = #externalMacro(module: "MessagePackMacroPlugin", type: "MessagePackCodableMacro")
