@testable import MessagePack
import Testing

/// A type whose `Codable` conformance refuses to run: every coder must take its own MessagePack
/// conformance instead, alone, nested in plain `Codable` values, and through the tree coders.
struct Tagged: MessagePackCodable, Equatable {
    struct CodableUsed: Error {}
    var number: Int
    var extra: MessagePackValue

    init(number: Int, extra: MessagePackValue = .nil) {
        self.number = number
        self.extra = extra
    }

    func encode(to encoder: any Encoder) throws { throw CodableUsed() }
    init(from decoder: any Decoder) throws { throw CodableUsed() }

    func encode(to writer: inout MessagePackWriter) throws {
        writer.writeArrayHeader(count: 3)
        try writer.encode("tagged")
        try writer.encode(number)
        try writer.encode(extra)
    }

    init(from object: MessagePackObject) throws {
        let elements = try object.elements(of: Tagged.self)
        guard try elements.element(0).decode(String.self) == "tagged" else {
            throw DecodingError.dataCorrupted(DecodingError.Context(codingPath: [], debugDescription: "not tagged"))
        }
        number = try elements.element(1).decode(Int.self)
        extra = try elements.element(2).decode(MessagePackValue.self)
    }
}

struct Holder: Codable, Equatable {
    var tagged: Tagged
    var many: [Tagged]
    var byName: [String: Tagged]
}

@Suite("MessagePackEncodable and MessagePackDecodable")
struct OwnConformanceTests {
    let holder = Holder(tagged: Tagged(number: 1), many: [Tagged(number: 2)], byName: ["x": Tagged(number: 3)])

    @Test("the coders use the type's own conformance, alone and nested, streaming and as a tree")
    func usedEverywhere() throws {
        let encoder = MessagePackEncoder(), decoder = MessagePackDecoder()
        let alone = try encoder.encode(Tagged(number: 7))
        #expect(alone == MessagePackValue.array(["tagged", 7, nil]).encoded())
        #expect(try decoder.decode(Tagged.self, from: alone) == Tagged(number: 7))
        let bytes = try encoder.encode(holder)
        #expect(try decoder.decode(Holder.self, from: bytes) == holder)
        let tree = try encoder.encodeValue(holder)
        #expect(tree.encoded() == bytes)
        #expect(try decoder.decode(Holder.self, from: tree) == holder)
        // The writer's generic entry, and its array and dictionary overloads.
        var writer = MessagePackWriter()
        try writer.encode(holder.many)
        try writer.encode(holder.byName)
        try writer.encode(Optional(holder))
        #expect(writer.bytes == (try encoder.encode(holder.many)) + (try encoder.encode(holder.byName)) + bytes)
    }

    @Test("values written in their own form inside such a type still reach the encoder's caller")
    func directValues() throws {
        let stamp = MessagePackValue.timestamp(seconds: 1, nanoseconds: 2)
        do {
            let value = Holder(tagged: Tagged(number: 1, extra: stamp), many: [], byName: [:])
            var writer = MessagePackWriter()
            var direct: [MessagePackValue] = []
            try MessagePackEncoder().encode(value, into: &writer, directValues: &direct)
            #expect(direct.contains(stamp))
            direct = []
            try MessagePackEncoder().encode(value.tagged, into: &writer, directValues: &direct)
            #expect(direct == [stamp])
        }
    }

    @Test("errors from inside name the path that led there")
    func errorPaths() throws {
        let bad: MessagePackValue = ["tagged": ["tagged", "seven", nil], "many": [], "byName": [:]]
        let error = try #require(throws: DecodingError.self) { try MessagePackDecoder().decode(Holder.self, from: bad.encoded()) }
        guard case .typeMismatch(_, let context) = error else { Issue.record("\(error)"); return }
        #expect(context.codingPath.map(\.stringValue) == ["tagged", "Index 1"])
    }
}
