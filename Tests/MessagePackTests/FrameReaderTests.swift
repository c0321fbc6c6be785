@testable import MessagePack
import Testing

@Suite("MessagePack frame reader")
struct FrameReaderTests {
    let messages: [MessagePackValue] = [
        [0, 1, "square", [12345]],
        ["fork-run", 9, "resize", [.binary([1, 2, 3])], 0],
        .map([MessagePackPair("nested", [[1, 2], ["k": .float64(2.5)]])]),
        .string(String(repeating: "x", count: 70_000)),
        .timestamp(seconds: -1, nanoseconds: 999_999_999),
    ]

    @Test("whole messages come out however the bytes are split", arguments: [1, 2, 3, 7, 64, 4096, 1 << 20])
    func anySplit(chunk: Int) throws {
        let stream = messages.flatMap { $0.encoded() }
        var reader = MessagePackFrameReader()
        var received: [MessagePackValue] = []
        var offset = 0
        while offset < stream.count {
            reader.append(Array(stream[offset..<min(offset + chunk, stream.count)]))
            offset += chunk
            while let message = try reader.next() { received.append(message) }
        }
        #expect(received == messages)
    }

    @Test("a message over the limit is refused with both sizes named")
    func tooLarge() throws {
        var reader = MessagePackFrameReader(maximumMessageSize: 1000)
        reader.append(MessagePackValue.binary([UInt8](repeating: 7, count: 5000)).encoded().prefix(2000).map { $0 })
        let error = try #require(throws: MessagePackError.self) { _ = try reader.next() }
        guard case .messageTooLarge(let size, let limit) = error else {
            Issue.record("expected messageTooLarge, got \(error)")
            return
        }
        #expect(size >= 2000 && limit == 1000)
        #expect(error.description.contains("maximumMessageSize"))
    }

    @Test("a large part inside an RPC response is refused by its header, before its body has arrived")
    func tooLargeInside() throws {
        var reader = MessagePackFrameReader(maximumMessageSize: 1000)
        let response: MessagePackValue = [1, 7, .nil, .binary([UInt8](repeating: 7, count: 5000))]
        reader.append(Array(response.encoded().prefix(16)))
        let error = try #require(throws: MessagePackError.self) { _ = try reader.next() }
        guard case .messageTooLarge(let size, 1000) = error else {
            Issue.record("expected messageTooLarge, got \(error)")
            return
        }
        #expect(size >= 5000, "the header announces 5000 bytes of body; the error says \(size)")
    }

    @Test("the least size of a message, from its headers alone", arguments: [
        // Whole messages: their exact size.
        MessagePackValue.array([0, 1, "square", [12345]]),
        .map([MessagePackPair("k", .float64(2.5)), MessagePackPair(.int(-3), .binary([1, 2]))]),
        .timestamp(seconds: 1, nanoseconds: 2),
    ])
    func leastSizeOfWholeMessages(message: MessagePackValue) {
        let bytes = message.encoded()
        let least = bytes.withUnsafeBytes { MessagePackFrameReader.leastSize(ofMessageAt: $0) }
        #expect(least.size == bytes.count && least.headersComplete)
    }

    @Test("the least size of a message whose large body has not arrived: what its headers announce")
    func leastSizeOfPartialMessages() {
        let response = MessagePackValue.array([1, 7, .nil, .binary([UInt8](repeating: 7, count: 100_000))]).encoded()
        let head = Array(response.prefix(12)).withUnsafeBytes { MessagePackFrameReader.leastSize(ofMessageAt: $0) }
        #expect(head.size == response.count && head.headersComplete, "inside the body, the headers are known")
        // Cut inside the bin's length: the headers are not all there.
        let cut = Array(response.prefix(6)).withUnsafeBytes { MessagePackFrameReader.leastSize(ofMessageAt: $0) }
        #expect(!cut.headersComplete)
        // An array of many small values: one byte each for those not seen yet.
        let numbers = MessagePackValue.array((0..<1000).map { .int($0) }).encoded()
        let least = Array(numbers.prefix(3)).withUnsafeBytes { MessagePackFrameReader.leastSize(ofMessageAt: $0) }
        #expect(least.size == 3 + 1000 && !least.headersComplete)
        #expect(least.size <= numbers.count)
    }

    @Test("a header that arrives a byte at a time is still checked: its announced size is refused", arguments: [
        [UInt8]([0xc6, 0xff, 0xff, 0xff, 0xff]),   // bin 32 of 4 GiB
        [0xdb, 0xff, 0xff, 0xff, 0xff],             // str 32
        [0xdd, 0xff, 0xff, 0xff, 0xff],             // array 32 of 4 billion values
        [0x94, 0x01, 0x07, 0xc0, 0xc6, 0x00, 0x10, 0x00, 0x00],  // a response whose result is 1 MiB
    ])
    func splitHeader(header: [UInt8]) throws {
        var reader = MessagePackFrameReader(maximumMessageSize: 1000)
        for byte in header.dropLast() {
            reader.append([byte])
            #expect(try reader.next() == nil)
        }
        reader.append([header.last!])
        let error = try #require(throws: MessagePackError.self) { _ = try reader.next() }
        guard case .messageTooLarge(let size, 1000) = error else {
            Issue.record("expected messageTooLarge, got \(error)")
            return
        }
        #expect(size > 1000)
    }

    @Test("fill writes straight into the buffer, at most the limit, and the bytes frame as appended ones do")
    func fill() throws {
        var reader = MessagePackFrameReader()
        let bytes = MessagePackValue.array(["fill", .binary([UInt8](repeating: 3, count: 300))]).encoded()
        var offset = 0
        while offset < bytes.count {
            var copied = 0
            let filled = reader.fill(atMost: 100) { room in
                #expect(room.count <= 100 && room.count > 0)
                copied = min(room.count, bytes.count - offset)
                bytes.withUnsafeBytes { raw in room.copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[offset..<offset + copied])) }
                return copied
            }
            #expect(filled)
            offset += copied
            if offset < bytes.count { #expect(try reader.next() == nil) }
        }
        #expect(try reader.next() == ["fill", .binary([UInt8](repeating: 3, count: 300))])
    }

    @Test("garbage is refused, and the reader stays failed")
    func garbage() throws {
        var reader = MessagePackFrameReader()
        reader.append([0xc1])
        #expect(throws: MessagePackError.self) { _ = try reader.next() }
        reader.append(MessagePackValue.nil.encoded())
        #expect(throws: MessagePackError.self) { _ = try reader.next() }
    }

    @Test("nesting beyond the unpacker's depth is refused, not a crash")
    func deepNesting() throws {
        var reader = MessagePackFrameReader()
        reader.append([UInt8](repeating: 0x91, count: 10_000) + [0xc0])
        #expect(throws: MessagePackError.self) { _ = try reader.next() }
    }

    @Test("a str that is not UTF-8 is refused")
    func invalidUTF8() {
        #expect(throws: MessagePackError.self) { _ = try MessagePackValue(decoding: [0xa2, 0xff, 0xfe]) }
    }

    @Test("hex helpers read and write the vectors' form")
    func hex() {
        #expect([UInt8](hex: "94 00 01 ff") == [0x94, 0x00, 0x01, 0xff])
        #expect([UInt8](hex: "abc") == nil)
        #expect([UInt8](hex: "zz") == nil)
        #expect([UInt8]([0x0f, 0xa0]).hexString == "0fa0")
    }

    @Test("one value with trailing bytes, or a truncated one, is an error")
    func exactlyOne() {
        #expect(throws: MessagePackError.trailingBytes(count: 1)) { _ = try MessagePackValue(decoding: [0xc0, 0xc0]) }
        #expect(throws: MessagePackError.truncated) { _ = try MessagePackValue(decoding: [0x92, 0x01]) }
    }
}
