import MessagePack
import Testing

@Suite("Codable over MessagePack")
struct CodableTests {
    struct Point: Codable, Equatable { var x: Int; var y: Int }

    struct Everything: Codable, Equatable {
        enum Shape: Codable, Equatable { case circle(radius: Double), square(side: Int), none }
        var flag: Bool
        var i8: Int8, i16: Int16, i32: Int32, i64: Int64, int: Int
        var u8: UInt8, u16: UInt16, u32: UInt32, u64: UInt64, uint: UInt
        var float: Float, double: Double
        var text: String
        var bytes: [UInt8]
        var list: [Point]
        var table: [String: Int]
        var maybe: String?
        var nothing: Int?
        var shapes: [Shape]
        var raw: MessagePackValue
    }

    let everything = Everything(
        flag: true, i8: .min, i16: .min, i32: .min, i64: .min, int: -1,
        u8: .max, u16: .max, u32: .max, u64: .max, uint: 0,
        float: 1.5, double: -0.25, text: "héllo ✓", bytes: [0, 1, 255],
        list: [Point(x: 1, y: 2), Point(x: -3, y: 4)], table: ["a": 1, "b": 2],
        maybe: "here", nothing: nil, shapes: [.circle(radius: 2), .square(side: 3), .none],
        raw: .timestamp(seconds: 1_700_000_000, nanoseconds: 500))

    @Test("every kind of value round-trips")
    func roundTrip() throws {
        let bytes = try MessagePackEncoder().encode(everything)
        #expect(try MessagePackDecoder().decode(Everything.self, from: bytes) == everything)
    }

    @Test("large containers round-trip: 20,000 structs in an array, 5,000 keys in a map")
    func largeContainers() throws {
        let points = (0..<20_000).map { Point(x: $0, y: -$0) }
        let table = Dictionary(uniqueKeysWithValues: (0..<5_000).map { ("key \($0)", $0) })
        let encoder = MessagePackEncoder(), decoder = MessagePackDecoder()
        #expect(try decoder.decode([Point].self, from: try encoder.encode(points)) == points)
        #expect(try decoder.decode([String: Int].self, from: try encoder.encode(table)) == table)
    }

    @Test("a struct is a map in its smallest encoding, bytes are bin")
    func exactBytes() throws {
        #expect(try MessagePackEncoder().encode(Point(x: 1, y: 2)) == [0x82, 0xa1, 0x78, 0x01, 0xa1, 0x79, 0x02])
        #expect(try MessagePackEncoder().encode([UInt8]([7, 8])) == [0xc4, 0x02, 0x07, 0x08])
        #expect(try MessagePackEncoder().encode([1, -1, 300]) == [0x93, 0x01, 0xff, 0xcd, 0x01, 0x2c])
        #expect(try MessagePackEncoder().encode(Optional<Int>.none) == [0xc0])
    }

    @Test("text sent as bin is accepted when it is UTF-8; bytes sent as str are accepted")
    func lenientStrings() throws {
        let decoder = MessagePackDecoder()
        #expect(try decoder.decode(String.self, from: MessagePackValue.binary(Array("ok".utf8))) == "ok")
        #expect(try decoder.decode([UInt8].self, from: MessagePackValue.string("ok")) == Array("ok".utf8))
        #expect(try decoder.decode(Double.self, from: MessagePackValue.uint(3)) == 3)
        #expect(throws: DecodingError.self) { try decoder.decode(String.self, from: MessagePackValue.binary([0xff])) }
    }

    @Test("a mismatch names the path, the expected type and what was found")
    func mismatch() throws {
        let wrong: MessagePackValue = ["x": 1, "y": "two"]
        do {
            _ = try MessagePackDecoder().decode(Point.self, from: wrong)
            Issue.record("decoding should have failed")
        } catch DecodingError.typeMismatch(_, let context) {
            #expect(context.codingPath.map(\.stringValue) == ["y"])
            #expect(context.debugDescription.contains("expected an integer"))
            #expect(context.debugDescription.contains("found string"))
        }
    }

    @Test("missing keys, nil for a value, and overflow are errors")
    func errors() {
        let decoder = MessagePackDecoder()
        #expect(throws: DecodingError.self) { try decoder.decode(Point.self, from: ["x": 1] as MessagePackValue) }
        #expect(throws: DecodingError.self) { try decoder.decode(Int.self, from: MessagePackValue.nil) }
        #expect(throws: DecodingError.self) { try decoder.decode(Int8.self, from: MessagePackValue.uint(300)) }
        #expect(throws: DecodingError.self) { try decoder.decode(UInt.self, from: MessagePackValue.int(-1)) }
        #expect(throws: DecodingError.self) { try decoder.decode([Int].self, from: MessagePackValue.string("no")) }
    }
}
