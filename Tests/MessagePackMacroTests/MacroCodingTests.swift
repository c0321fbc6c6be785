import MessagePackMacros
import Testing

/// The same shapes twice: `Macro…` with `@MessagePackCodable`, `Plain…` with synthesized `Codable`
/// only. The macro's bytes must be the plain ones, and each must read the other's.
@MessagePackCodable
struct MacroInner: Equatable {
    var label: String
    var weight: Double
}

struct PlainInner: Codable, Equatable {
    var label: String
    var weight: Double
}

struct CodableLeaf: Codable, Equatable {
    var a: Int8
    var b: [UInt8]
}

@MessagePackCodable
struct MacroRecord: Equatable {
    static let ignored = 1
    var count: Int
    var ratio: Double
    var name: String
    var flag: Bool
    var list: [Int]
    var missing: Int?
    var present: String?
    var leaf: CodableLeaf
    var inner: MacroInner
    var table: [String: Double]
    var small: UInt16 = 7
    var computed: Int { count * 2 }
}

struct PlainRecord: Codable, Equatable {
    var count: Int
    var ratio: Double
    var name: String
    var flag: Bool
    var list: [Int]
    var missing: Int?
    var present: String?
    var leaf: CodableLeaf
    var inner: PlainInner
    var table: [String: Double]
    var small: UInt16 = 7
    var computed: Int { count * 2 }
}

@MessagePackCodable(layout: .array)
struct MacroRequest: Equatable {
    var type: Int
    var id: Int
    var method: String
    var params: [Int]
    var note: String?
}

/// A plain Codable struct that holds macro structs: the coders must use their conformances.
struct Envelope: Codable, Equatable {
    var request: MacroRequest
    var records: [MacroInner]
}

@Suite("@MessagePackCodable against plain Codable")
struct MacroCodingTests {
    let table = ["x": 1.5]
    var macro: MacroRecord {
        MacroRecord(
            count: 3, ratio: -0.5, name: "héllo", flag: true, list: [1, -2, 300], missing: nil, present: "here",
            leaf: CodableLeaf(a: -8, b: [0, 255]), inner: MacroInner(label: "in", weight: 2.25), table: table)
    }
    var plain: PlainRecord {
        PlainRecord(
            count: 3, ratio: -0.5, name: "héllo", flag: true, list: [1, -2, 300], missing: nil, present: "here",
            leaf: CodableLeaf(a: -8, b: [0, 255]), inner: PlainInner(label: "in", weight: 2.25), table: table)
    }

    @Test("the macro's encoding is byte for byte the synthesized Codable one")
    func sameBytes() throws {
        let encoder = MessagePackEncoder()
        let macroBytes = try encoder.encode(macro)
        #expect(macroBytes == (try encoder.encode(plain)))
        // Through the writer directly, too, and with the optional that is nil set.
        var writer = MessagePackWriter()
        try macro.encode(to: &writer)
        #expect(writer.bytes == macroBytes)
        var both = macro, plainBoth = plain
        both.missing = 9
        plainBoth.missing = 9
        #expect(try encoder.encode(both) == (try encoder.encode(plainBoth)))
        // Nested in plain Codable values (the streaming encoder's path, and the tree encoder's).
        #expect(try encoder.encode([macro, macro]) == (try encoder.encode([plain, plain])))
        #expect(try encoder.encodeValue(macro) == (try encoder.encodeValue(plain)))
    }

    @Test("round trips, alone and nested")
    func roundTrip() throws {
        let encoder = MessagePackEncoder(), decoder = MessagePackDecoder()
        #expect(try decoder.decode(MacroRecord.self, from: try encoder.encode(macro)) == macro)
        let request = MacroRequest(type: 0, id: 1, method: "square", params: [12345], note: nil)
        #expect(try decoder.decode(MacroRequest.self, from: try encoder.encode(request)) == request)
        let envelope = Envelope(request: request, records: [MacroInner(label: "a", weight: 1)])
        let bytes = try encoder.encode(envelope)
        #expect(try decoder.decode(Envelope.self, from: bytes) == envelope)
        #expect(try decoder.decode(Envelope.self, from: try encoder.encodeValue(envelope)) == envelope)
    }

    @Test("reads what plain Codable wrote, and plain Codable reads what it wrote")
    func interoperates() throws {
        let encoder = MessagePackEncoder(), decoder = MessagePackDecoder()
        #expect(try decoder.decode(MacroRecord.self, from: try encoder.encode(plain)) == macro)
        #expect(try decoder.decode(PlainRecord.self, from: try encoder.encode(macro)) == plain)
    }

    @Test("keys in another order, unknown keys, a nil optional sent as nil")
    func lenientKeys() throws {
        let value: MessagePackValue = [
            "extra": [1, 2], "weight": 4, "label": "x", "unknown": nil,
        ]
        #expect(try MessagePackDecoder().decode(MacroInner.self, from: value.encoded()) == MacroInner(label: "x", weight: 4))
        let record = try MessagePackDecoder().decode(MacroRecord.self, from: try MessagePackEncoder().encode(macro))
        var withNil = try MessagePackDecoder().decode(MessagePackValue.self, from: try MessagePackEncoder().encode(macro))
        if case .map(var pairs) = withNil {
            pairs.append(MessagePackPair("missing", .nil))
            pairs.reverse()
            withNil = .map(pairs)
        }
        #expect(try MessagePackDecoder().decode(MacroRecord.self, from: withNil.encoded()) == record)
    }

    @Test("a missing required key is keyNotFound naming it, under the path that led there")
    func missingKey() throws {
        let value: MessagePackValue = ["label": "x"]
        let error = try #require(throws: DecodingError.self) { try MessagePackDecoder().decode(MacroInner.self, from: value.encoded()) }
        guard case .keyNotFound(let key, let context) = error else { Issue.record("not keyNotFound: \(error)"); return }
        #expect(key.stringValue == "weight")
        #expect(context.debugDescription == "no value for key 'weight'")
        // The same error as plain Codable's, path included, when the struct is nested.
        let nested: MessagePackValue = [["label": "x"]]
        let macroError = try #require(throws: DecodingError.self) { try MessagePackDecoder().decode([MacroInner].self, from: nested.encoded()) }
        let plainError = try #require(throws: DecodingError.self) { try MessagePackDecoder().decode([PlainInner].self, from: nested.encoded()) }
        #expect(Self.describe(macroError) == Self.describe(plainError))
        // A value of the wrong type, deeper down.
        let wrong: MessagePackValue = [["label": "x", "weight": "heavy"]]
        let macroWrong = try #require(throws: DecodingError.self) { try MessagePackDecoder().decode([MacroInner].self, from: wrong.encoded()) }
        let plainWrong = try #require(throws: DecodingError.self) { try MessagePackDecoder().decode([PlainInner].self, from: wrong.encoded()) }
        #expect(Self.describe(macroWrong) == Self.describe(plainWrong))
    }

    @Test("the array layout: the properties in declaration order, nil as nil, a short array refused")
    func arrayLayout() throws {
        let request = MacroRequest(type: 0, id: 1, method: "square", params: [12345], note: nil)
        let expected: MessagePackValue = [0, 1, "square", [12345], nil]
        #expect(try MessagePackEncoder().encode(request) == expected.encoded())
        let short: MessagePackValue = [0, 1, "square", [12345]]
        #expect(try MessagePackDecoder().decode(MacroRequest.self, from: short.encoded()) == request)
        let tooShort: MessagePackValue = [0, 1]
        let error = try #require(throws: DecodingError.self) { try MessagePackDecoder().decode(MacroRequest.self, from: tooShort.encoded()) }
        #expect(Self.describe(error).contains("Index 2"))
        #expect(throws: DecodingError.self) { try MessagePackDecoder().decode(MacroRequest.self, from: MessagePackValue.map([]).encoded()) }
    }

    /// The kind, the path and the description of a decoding error.
    static func describe(_ error: DecodingError) -> String {
        let context: DecodingError.Context
        switch error {
        case .keyNotFound(let key, let found): context = found; return "key \(key.stringValue) at \(path(context)): \(context.debugDescription)"
        case .typeMismatch(_, let found): context = found
        case .valueNotFound(_, let found): context = found
        case .dataCorrupted(let found): context = found
        @unknown default: return "\(error)"
        }
        return "\(path(context)): \(context.debugDescription)"
    }

    static func path(_ context: DecodingError.Context) -> String {
        context.codingPath.map { $0.intValue.map { "Index \($0)" } ?? $0.stringValue }.joined(separator: "/")
    }
}
