import ForkKitTestSupport
import ForkRPC
import Foundation
import MessagePack
import SystemPackage
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Every shape of error object a MessagePack-RPC peer may answer with reaches the caller as sent.
/// The peer is a thread on the other end of a real socket pair that answers each request with its
/// first parameter as the error object.
@Suite("Error objects of every shape from a peer")
struct ErrorShapesTests {
    /// A client whose peer answers `[0, id, method, [error]]` with `[1, id, error, nil]`.
    static func echoingErrorPeer() throws -> RPCClient {
        var ends: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &ends) == 0 else { throw Errno(rawValue: errno) }
        let peer = ends[1]
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 64 << 10)
            // Each request is small and sent whole: one read is one message.
            while case let count = read(peer, &buffer, buffer.count), count > 0 {
                guard let request = try? MessagePackValue(decoding: buffer[..<count]), case .array(let fields) = request,
                      fields.count == 4, let id = fields[1].integerValue else { break }
                let error = fields[3].arrayValue?.first ?? .nil
                let response = RPCMessage.response(id: UInt32(id), error: error, result: .nil).value.encoded()
                _ = response.withUnsafeBytes { write(peer, $0.baseAddress, $0.count) }
            }
            close(peer)
        }
        return RPCClient(input: FileDescriptor(rawValue: ends[0]), output: FileDescriptor(rawValue: dup(ends[0])))
    }

    static func failure(answering error: MessagePackValue, from client: RPCClient) async throws -> any Error {
        do {
            _ = try await client.call(method: "fail", params: [error])
        } catch {
            return error
        }
        throw TestTimeout(description: "the call succeeded")
    }

    @Test("a string, [code, message], a map, a number, and ForkKit's [type, message, details], each kept as sent")
    func shapes() async throws {
        let client = try Self.echoingErrorPeer()

        let text = try #require(try await Self.failure(answering: "boom", from: client) as? RPCError)
        #expect(text.kind == .remote && text.message == "boom" && text.remoteType == nil && text.remoteError == "boom")
        #expect(text.description == "'fail' threw: boom")

        let coded = try #require(try await Self.failure(answering: [404, "not found"], from: client) as? RPCError)
        #expect(coded.kind == .remote && coded.remoteCode == 404 && coded.message == "not found" && coded.remoteType == nil)
        #expect(coded.description == "error 404: 'fail' threw: not found")

        let map: MessagePackValue = ["type": "Refused", "message": "no", "code": 3]
        let mapped = try #require(try await Self.failure(answering: map, from: client) as? RPCError)
        #expect(mapped.remoteType == "Refused" && mapped.message == "no" && mapped.remoteCode == 3 && mapped.remoteError == map)

        let number = try #require(try await Self.failure(answering: 17, from: client) as? RPCError)
        #expect(number.kind == .remote && number.remoteError == 17)

        // A protocol error name chooses the kind; a user's type travels under its full name.
        let unknown = try #require(try await Self.failure(answering: ["NoSuchMethod", "no function named 'fail'"], from: client) as? RPCError)
        #expect(unknown.kind == .unknownFunction && unknown.message == "no function named 'fail'")

        // ForkKit's own form with a Codable error's value: re-made as itself once registered.
        RPCError.register(BadShape.self)
        let shape: MessagePackValue = ["ForkKitTestSupport.BadShape", "a shape cannot have 2 sides", ["value": ["sides": 2]]]
        #expect(try await Self.failure(answering: shape, from: client) as? BadShape == BadShape(sides: 2))
        // A value that does not decode as the registered type stays an RPCError, with what was sent.
        let garbled: MessagePackValue = ["ForkKitTestSupport.BadShape", "garbled", ["value": "not a shape"]]
        let kept = try #require(try await Self.failure(answering: garbled, from: client) as? RPCError)
        #expect(kept.remoteType == "ForkKitTestSupport.BadShape" && kept.remoteError == garbled && kept.registeredError == nil)

        // The connection lived through all of them.
        #expect(try await client.call(method: "fail", params: [nil]) == .nil)
        _ = try await client.close()
    }
}
