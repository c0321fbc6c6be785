import Foundation
import MessagePack
import Testing

/// The 71 canonical encodings in `protocol/vectors/msgpack-canonical.json`, made by an independent
/// implementation (Python's msgpack): every value must encode to exactly those bytes and decode back.
@Suite("MessagePack canonical vectors")
struct CanonicalVectorTests {
    struct Vector: CustomTestStringConvertible {
        let name: String
        let value: MessagePackValue
        let hex: String?
        let length: Int?
        let prefix: String?
        let sha256: String?
        var testDescription: String { name }
    }

    static let vectors: [Vector] = {
        let url = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("protocol/vectors/msgpack-canonical.json")
        let root = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return (root["vectors"] as! [[String: Any]]).map { entry in
            Vector(
                name: entry["name"] as! String, value: describedValue(entry["value"] as! [String: Any]),
                hex: entry["hex"] as? String, length: entry["length"] as? Int,
                prefix: entry["hex_prefix"] as? String, sha256: entry["sha256"] as? String)
        }
    }()

    @Test("all 71 vectors are present")
    func count() {
        #expect(Self.vectors.count == 71)
    }

    @Test("encodes to exactly the canonical bytes", arguments: vectors)
    func encodes(_ vector: Vector) throws {
        let bytes = vector.value.encoded()
        if let hex = vector.hex {
            #expect(bytes.hexString == hex)
        } else {
            #expect(bytes.count == vector.length)
            #expect(Array(bytes.prefix(32)).hexString == vector.prefix)
            #expect(try sha256(bytes) == vector.sha256)
        }
    }

    @Test("decodes the canonical bytes back to the value", arguments: vectors)
    func decodes(_ vector: Vector) throws {
        let bytes = vector.value.encoded()
        #expect(try MessagePackValue(decoding: bytes) == vector.value)
    }
}

/// SHA-256 by the system's sha256sum (coreutils), an implementation independent of ours.
func sha256(_ bytes: [UInt8]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
    let input = Pipe(), output = Pipe()
    process.standardInput = input
    process.standardOutput = output
    try process.run()
    input.fileHandleForWriting.write(Data(bytes))
    try input.fileHandleForWriting.close()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return String(text.prefix(64))
}

/// Builds the value a vector's JSON description stands for.
func describedValue(_ description: [String: Any]) -> MessagePackValue {
    // RPC descriptions have several keys; every other kind has exactly one.
    let (kind, payload) = description["rpc"].map { ("rpc", $0) } ?? description.first!
    switch kind {
    case "nil": return .nil
    case "bool": return .bool(payload as! Bool)
    case "int":
        let text = payload as! String
        return text.hasPrefix("-") ? .int(Int64(text)!) : .uint(UInt64(text)!)
    case "float64":
        if let text = payload as? String { return .float64(Double(text)!) }
        return .float64((payload as! NSNumber).doubleValue)
    case "float32": return .float32((payload as! NSNumber).floatValue)
    case "str": return .string(payload as! String)
    case "str_repeat":
        let parts = payload as! [Any]
        return .string(String(repeating: parts[0] as! String, count: parts[1] as! Int))
    case "bin_repeat":
        let parts = payload as! [Any]
        return .binary([UInt8](repeating: [UInt8](hex: parts[0] as! String)![0], count: parts[1] as! Int))
    case "array_of_zero": return .array(Array(repeating: 0, count: payload as! Int))
    case "map_int_to_zero": return .map((0..<(payload as! Int)).map { MessagePackPair(.uint(UInt64($0)), 0) })
    case "json_like": return jsonLike(payload)
    case "ext":
        let parts = payload as! [Any]
        let data = [UInt8](repeating: [UInt8](hex: parts[1] as! String)![0], count: parts[2] as! Int)
        return .extended(type: Int8(parts[0] as! Int), data: data)
    case "timestamp":
        let parts = payload as! [NSNumber]
        return .timestamp(seconds: parts[0].int64Value, nanoseconds: parts[1].uint32Value)
    case "rpc":
        let message = description
        switch payload as! String {
        case "request":
            return [0, .uint(UInt64(message["msgid"] as! Int)), .string(message["method"] as! String), jsonLike(message["params"]!)]
        case "response":
            return [1, .uint(UInt64(message["msgid"] as! Int)), jsonLike(message["error"]!), jsonLike(message["result"]!)]
        default:
            return [2, .string(message["method"] as! String), jsonLike(message["params"]!)]
        }
    default:
        fatalError("unknown vector kind \(kind)")
    }
}

/// JSON to MessagePack: objects become maps with sorted keys, except `{"bin": hex}`, which is binary.
func jsonLike(_ json: Any) -> MessagePackValue {
    switch json {
    case is NSNull: return .nil
    case let number as NSNumber:
        if String(cString: number.objCType) == "c" { return .bool(number.boolValue) }
        return number.int64Value < 0 ? .int(number.int64Value) : .uint(number.uint64Value)
    case let text as String: return .string(text)
    case let array as [Any]: return .array(array.map(jsonLike))
    case let object as [String: Any]:
        if object.count == 1, let hex = object["bin"] as? String { return .binary([UInt8](hex: hex)!) }
        return .map(object.keys.sorted().map { MessagePackPair(.string($0), jsonLike(object[$0]!)) })
    default: fatalError("unexpected JSON \(json)")
    }
}
