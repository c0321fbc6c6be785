import MessagePack
import Testing

/// Bytes are decoded straight from msgpack-c's objects, a MessagePackValue through the tree; both
/// must accept the same input and refuse the same input with the same message.
@Suite("Decoding from bytes and from a value agree")
struct ObjectDecoderTests {
    struct Point: Codable, Equatable { var x: Int; var y: Int }
    struct Labelled: Codable, Equatable { var name: String; var points: [[Point]]; var note: String? }

    /// The outcome of decoding `value` as `type` both ways, as a value or an error's description.
    func bothWays<Value: Decodable & Equatable>(_ type: Value.Type, _ value: MessagePackValue) -> (tree: String, bytes: String) {
        func outcome(_ body: () throws -> Value) -> String {
            do { return "value \(try body())" } catch { return "error \(error)" }
        }
        let decoder = MessagePackDecoder()
        return (outcome { try decoder.decode(type, from: value) }, outcome { try decoder.decode(type, from: value.encoded()) })
    }

    static let pointInputs: [(String, MessagePackValue)] = [
        ("missing key", ["x": 1]),
        ("wrong field type", ["x": "a", "y": 2]),
        ("integer keys", [1: 5, "y": 6]),
        ("a whole point", ["y": 2, "x": -1]),
        ("nil", .nil),
        ("an array", [1, 2]),
    ]

    @Test("lenient inputs are taken alike; wrong ones fail alike")
    func points() {
        for (name, value) in Self.pointInputs {
            let (tree, bytes) = bothWays(Point.self, value)
            #expect(tree == bytes, "\(name)")
        }
        #expect(bothWays(Point.self, ["y": 2, "x": -1]).bytes == "value \(Point(x: -1, y: 2))")
    }

    @Test("leaves: widths, signs, text and bytes, floats")
    func leaves() {
        #expect(bothWays(Int8.self, .uint(300)).tree == bothWays(Int8.self, .uint(300)).bytes)
        #expect(bothWays(UInt.self, .int(-1)).tree == bothWays(UInt.self, .int(-1)).bytes)
        #expect(bothWays(Int.self, .nil).tree == bothWays(Int.self, .nil).bytes)
        #expect(bothWays([Int].self, .string("no")).tree == bothWays([Int].self, .string("no")).bytes)
        for value: MessagePackValue in [.binary(Array("ok".utf8)), .binary([0xff]), .string("héllo"), .uint(3)] {
            let (tree, bytes) = bothWays(String.self, value)
            #expect(tree == bytes)
        }
        #expect(bothWays([UInt8].self, .string("ok")).bytes == "value [111, 107]")
        #expect(bothWays(Double.self, .uint(3)).bytes == "value 3.0")
        #expect(bothWays(Double.self, .int(-3)).bytes == "value -3.0")
        #expect(bothWays(Float.self, .float32(1.5)).bytes == "value 1.5")
        #expect(bothWays(Int64.self, .int(.min)).bytes == "value \(Int64.min)")
        #expect(bothWays(UInt64.self, .uint(.max)).bytes == "value \(UInt64.max)")
    }

    @Test("an error deep inside names the same path both ways")
    func nestedPath() {
        let good: MessagePackValue = ["name": "a", "points": [[["x": 1, "y": 2]], []], "note": .nil]
        let bad: MessagePackValue = ["name": "a", "points": [[["x": 1, "y": 2]], [["x": 1, "y": true]]]]
        #expect(bothWays(Labelled.self, good).bytes == "value \(Labelled(name: "a", points: [[Point(x: 1, y: 2)], []], note: nil))")
        let (tree, bytes) = bothWays(Labelled.self, bad)
        #expect(tree == bytes)
        #expect(bytes.contains("points") && bytes.contains("found bool"), "\(bytes)")
    }

    @Test("malformed bytes are MessagePack errors")
    func malformedBytes() {
        let decoder = MessagePackDecoder()
        #expect(throws: MessagePackError.self) { try decoder.decode(Int.self, from: [0xc1]) }
        #expect(throws: MessagePackError.self) { try decoder.decode([Int].self, from: [0x92, 0x01]) }
        #expect(throws: MessagePackError.self) { try decoder.decode(Int.self, from: [0x01, 0x02]) }
    }
}
