import ForkKit
import ForkRPC
import MessagePack

/// What the fuzzer (Tests/Fuzz, `scripts/fuzz.sh`) and the ordinary tests (the committed corpus in
/// Tests/FuzzCorpus) run on arbitrary bytes: every decoder an untrusted peer can reach. Bad input
/// must end in a thrown error; a crash, a hang or a trap is a bug.
public enum FuzzHarness {
    /// A struct of every common field type, as a typed call's argument would be decoded.
    struct Probe: Codable {
        var flag: Bool?
        var number: Int?
        var small: Int8?
        var unsigned: UInt64?
        var real: Double?
        var text: String?
        var bytes: [UInt8]?
        var list: [Int]?
        var table: [String: String]?
        var nested: [Probe]?
    }

    /// Feeds `bytes` through the frame reader (in pieces whose size the first byte chooses), then
    /// reads every message as MessagePack-RPC, as a control message and as typed values.
    public static func exercise(_ bytes: [UInt8]) {
        guard !bytes.isEmpty else { return }
        let piece = Int(bytes[0] % 7) + 1
        var reader = MessagePackFrameReader(maximumMessageSize: 1 << 16)
        var offset = 1
        messages: while offset < bytes.count {
            let end = min(bytes.count, offset + piece)
            reader.append(Array(bytes[offset..<end]))
            offset = end
            while true {
                let value: MessagePackValue?
                do {
                    value = try reader.next()
                } catch {
                    break messages
                }
                guard let value else { break }
                _ = try? RPCMessage(value)
                _ = try? ControlMessageReader.roundTrip(value)
                _ = try? MessagePackDecoder().decode(Probe.self, from: value)
                let encoded = value.encoded()
                _ = try? MessagePackDecoder().decode(Probe.self, from: encoded)
                _ = try? MessagePackDecoder().decode([MessagePackValue].self, from: encoded)
            }
        }
        // The whole input as one value, decoded in place.
        _ = try? MessagePackDecoder().decode(Probe.self, from: Array(bytes.dropFirst()))
        _ = try? MessagePackObject.withObject(in: Array(bytes.dropFirst())) { object in
            _ = try? object.decode([String: Int].self)
            _ = try? object.value()
        }
    }
}
