@testable import ForkKit
import Foundation
import MessagePack
import Testing

/// `protocol/vectors/control.json`: control messages encoded by Python's msgpack. Each must decode to
/// a control message that encodes back to exactly the same bytes.
@Suite("Control protocol vectors")
struct ControlVectorTests {
    static let vectors: [(name: String, hex: String)] = {
        let url = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("protocol/vectors/control.json")
        let root = try! JSONSerialization.jsonObject(with: Data(contentsOf: url)) as! [String: Any]
        return (root["vectors"] as! [[String: Any]]).map { ($0["name"] as! String, $0["hex"] as! String) }
    }()

    @Test("every vector round-trips byte for byte", arguments: vectors.map(\.name))
    func roundTrip(name: String) throws {
        let hex = Self.vectors.first { $0.name == name }!.hex
        let bytes = try #require([UInt8](hex: hex))
        let message = try ControlMessage(try MessagePackValue(decoding: bytes))
        #expect(message.encoded == bytes)
        #expect(message.value.arrayValue?.first?.stringValue == name.split(separator: " ").first.map(String.init))
    }

    @Test("all fifteen messages are covered (fork-run also with its capture operand)")
    func coverage() {
        #expect(Self.vectors.count == 16)
    }
}
