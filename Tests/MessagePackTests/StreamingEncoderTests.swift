import MessagePack
import Testing

/// The encoder writes straight into msgpack-c and patches container headers afterwards; these check
/// it against the tree it falls back to, byte for byte, where the two could differ.
@Suite("Streaming encoder")
struct StreamingEncoderTests {
    struct Point: Codable, Equatable { var x: Int; var y: Int }

    /// The encoder's bytes, and the bytes of the tree it would otherwise build.
    func bothWays<Value: Encodable>(_ value: Value) throws -> (streamed: [UInt8], tree: [UInt8]) {
        let encoder = MessagePackEncoder()
        return (try encoder.encode(value), try encoder.encodeValue(value).encoded())
    }

    @Test("every header size: 15, 16, 65,535 and 65,536 elements, arrays and maps, nested")
    func headerSizes() throws {
        for count in [0, 1, 15, 16, 17, 65_535, 65_536] {
            let array = Array(0..<count)
            let (streamed, tree) = try bothWays(array)
            #expect(streamed == tree, "array of \(count)")
            #expect(try MessagePackDecoder().decode([Int].self, from: streamed) == array)
            let map = Dictionary(uniqueKeysWithValues: (0..<min(count, 20_000)).map { ("k\($0)", $0) })
            let decoded = try MessagePackDecoder().decode([String: Int].self, from: try MessagePackEncoder().encode(map))
            #expect(decoded == map, "map of \(map.count)")
        }
        let nested = (0..<20).map { row in (0..<row).map { Point(x: $0, y: row) } }
        let (streamed, tree) = try bothWays(nested)
        #expect(streamed == tree)
    }

    struct Interleaved: Encodable {
        // Writes to the outer container after a nested one was opened and finished, which streams,
        // then writes to the nested one again, which cannot.
        let reopen: Bool
        enum Keys: String, CodingKey { case a, b, c }
        func encode(to encoder: any Encoder) throws {
            var outer = encoder.container(keyedBy: Keys.self)
            var inner = outer.nestedUnkeyedContainer(forKey: .a)
            try inner.encode(1)
            try inner.encode(2)
            try outer.encode("x", forKey: .b)
            if reopen { try inner.encode(3) }
            try outer.encode(true, forKey: .c)
        }
    }

    @Test("containers written out of order fall back to the tree and still come out right")
    func outOfOrder() throws {
        let sequential = try bothWays(Interleaved(reopen: false))
        #expect(sequential.streamed == sequential.tree)
        let reopened = try bothWays(Interleaved(reopen: true))
        #expect(reopened.streamed == reopened.tree)
        #expect(try MessagePackValue(decoding: reopened.streamed) == ["a": [1, 2, 3], "b": "x", "c": true])
    }

    class Animal: Codable {
        var legs = 4
    }

    final class Dog: Animal {
        var name = "Rex"
        enum Keys: String, CodingKey { case name }
        override init() { super.init() }
        required init(from decoder: any Decoder) throws { try super.init(from: decoder) }
        override func encode(to encoder: any Encoder) throws {
            // The subclass and its superclass ask the same encoder for a container: one map.
            try super.encode(to: encoder)
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(name, forKey: .name)
        }
    }

    final class SuperDog: Animal {
        enum Keys: String, CodingKey { case tag }
        override func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: Keys.self)
            try container.encode(7, forKey: .tag)
            try super.encode(to: container.superEncoder())
        }
    }

    @Test("a subclass sharing its superclass's container, and a super encoder")
    func inheritance() throws {
        let dog = try bothWays(Dog())
        #expect(dog.streamed == dog.tree)
        #expect(try MessagePackValue(decoding: dog.streamed) == ["legs": 4, "name": "Rex"])
        let superDog = try bothWays(SuperDog())
        #expect(superDog.streamed == superDog.tree)
        #expect(try MessagePackValue(decoding: superDog.streamed) == ["tag": 7, "super": ["legs": 4]])
    }

    struct Empty: Codable {}
    struct Silent: Encodable { func encode(to encoder: any Encoder) throws {} }

    @Test("an empty struct is an empty map; a value that writes nothing is nil")
    func emptyValues() throws {
        #expect(try MessagePackEncoder().encode(Empty()) == [0x80])
        #expect(try MessagePackEncoder().encode(Silent()) == [0xc0])
        #expect(try MessagePackEncoder().encode([Silent(), Silent()]) == [0x92, 0xc0, 0xc0])
    }

    @Test("an error thrown while encoding comes out as itself, not as a fallback")
    func userErrors() throws {
        struct Refuses: Encodable {
            struct Refusal: Error {}
            func encode(to encoder: any Encoder) throws { throw Refusal() }
        }
        #expect(throws: Refuses.Refusal.self) { try MessagePackEncoder().encode([Refuses()]) }
    }
}
