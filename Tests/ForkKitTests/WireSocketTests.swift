import ForkKit
import MessagePack
import SystemPackage
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// ForkKit's one connection type, against real sockets and pipes.
@Suite("WireSocket: bytes with descriptors over sockets and pipes")
struct WireSocketTests {
    func socketPair() throws -> (FileDescriptor, FileDescriptor) {
        var pair: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
        return (FileDescriptor(rawValue: pair[0]), FileDescriptor(rawValue: pair[1]))
    }

    func pipePair() throws -> (read: FileDescriptor, write: FileDescriptor) {
        let pipe = try FileDescriptor.pipe()
        return (pipe.readEnd, pipe.writeEnd)
    }

    /// What a descriptor number refers to now (device and inode), nil when it is closed: tests run
    /// in parallel, so a closed number may already name something else.
    func identity(_ descriptor: FileDescriptor) -> [UInt64]? {
        var status = stat()
        guard fstat(descriptor.rawValue, &status) == 0 else { return nil }
        return [UInt64(status.st_dev), UInt64(status.st_ino)]
    }

    @Test("a message and a descriptor arrive together; the descriptor works in the receiver")
    func messageWithDescriptor() throws {
        let (ours, theirs) = try socketPair()
        let sender = WireSocket(adopting: ours, blocking: false)
        let receiver = WireSocket(adopting: theirs, blocking: true)
        let pipe = try pipePair()
        defer { try? pipe.read.close() }
        try sender.sendAll(MessagePackValue.array(["hello", 42]).encoded(), descriptors: [pipe.write])
        try pipe.write.close()  // the receiver's copy stays open

        var reader = MessagePackFrameReader()
        var descriptors: [FileDescriptor] = []
        let received = try receiver.receive(into: &reader, atMost: 1024, collecting: &descriptors)
        #expect(received == .bytes(MessagePackValue.array(["hello", 42]).encoded().count))
        #expect(try reader.next() == .array(["hello", 42]))
        try #require(descriptors.count == 1)
        _ = try descriptors[0].writeAll(Array("through the passed descriptor".utf8))
        try descriptors[0].close()
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = try buffer.withUnsafeMutableBytes { try pipe.read.read(into: $0) }
        #expect(String(decoding: buffer.prefix(count), as: UTF8.self) == "through the passed descriptor")
    }

    @Test("non-blocking: an empty socket reads as wouldBlock, a full one takes 0 bytes, and the peer's close is end of stream")
    func nonBlocking() throws {
        let (ours, theirs) = try socketPair()
        let socket = WireSocket(adopting: ours, blocking: false)
        var reader = MessagePackFrameReader()
        #expect(try socket.receive(into: &reader, atMost: 1024) == .wouldBlock)
        let chunk = [UInt8](repeating: 7, count: 1 << 20)
        var sent = 0
        var sawFull = false
        for _ in 0..<64 {
            let taken = try chunk.withUnsafeBytes { try socket.sendSome($0) }
            sent += taken
            if taken == 0 { sawFull = true; break }
        }
        #expect(sawFull, "the socket took \(sent) bytes without filling up")
        // shutdown, not only close: a process that another test forks or spawns at this moment
        // holds a copy of the descriptor, which would keep the peer alive.
        shutdown(theirs.rawValue, Int32(SHUT_RDWR))
        try theirs.close()
        #expect(try socket.receive(into: &reader, atMost: 1024) == .endOfStream)
    }

    @Test("writing to a vanished peer is EPIPE, not SIGPIPE: over a socket and over a pipe")
    func noSigpipe() throws {
        let (ours, theirs) = try socketPair()
        shutdown(theirs.rawValue, Int32(SHUT_RDWR))  // as above: a copy elsewhere must not keep it alive
        try theirs.close()
        let socket = WireSocket(adopting: ours, blocking: true)
        #expect(throws: Errno.brokenPipe) { try socket.sendAll([1, 2, 3]) }

        let pipe = try pipePair()
        try pipe.read.close()
        let (input, spare) = try socketPair()
        defer { try? spare.close() }
        let pipes = WireSocket(adoptingInput: input, output: pipe.write, blocking: true)
        let canPass = pipes.canPassDescriptors
        #expect(!canPass)
        #expect(throws: Errno.brokenPipe) { try pipes.sendAll([1, 2, 3]) }
    }

    @Test("descriptors refused over a pipe, with an error instead of silence")
    func descriptorsOverPipe() throws {
        let pipe = try pipePair()
        defer { try? pipe.read.close() }
        let (input, other) = try socketPair()
        defer { try? other.close() }
        let pipes = WireSocket(adoptingInput: input, output: pipe.write, blocking: true)
        #expect(throws: Errno.notSocket) { try pipes.sendAll([1], descriptors: [other]) }
    }

    @Test("a peek leaves the bytes queued; discard takes exactly that many")
    func peekAndDiscard() throws {
        let (ours, theirs) = try socketPair()
        let socket = WireSocket(adopting: ours, blocking: false)
        _ = try theirs.writeAll([1, 2, 3, 4, 5])
        defer { try? theirs.close() }
        var buffer = [UInt8](repeating: 0, count: 16)
        let peeked = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0, peeking: true) }
        #expect(peeked == .bytes(5))
        try socket.discard(2)
        let rest = try buffer.withUnsafeMutableBytes { try socket.receive(into: $0) }
        #expect(rest == .bytes(3))
        #expect(buffer.prefix(3) == [3, 4, 5])
    }

    @Test("a receive takes at most its slice: a large message is read in bounded pieces")
    func boundedSlices() throws {
        let (ours, theirs) = try socketPair()
        let socket = WireSocket(adopting: ours, blocking: false)
        let large = MessagePackValue.binary([UInt8](repeating: 1, count: 100_000)).encoded()
        let writer = Thread {
            _ = try? theirs.writeAll(large)
            try? theirs.close()
        }
        defer { writer.join() }
        var reader = MessagePackFrameReader()
        var slices = 0
        while true {
            switch try socket.receive(into: &reader, atMost: 4096) {
            case .bytes(let count):
                #expect(count <= 4096)
                slices += 1
            case .wouldBlock: _ = socket.waitUntilReadable(upTo: .seconds(5))
            case .endOfStream:
                #expect(slices >= large.count / 4096)
                #expect(try reader.next() == .binary([UInt8](repeating: 1, count: 100_000)))
                return
            }
        }
    }

    @Test("finishing a pipe's sending ends the peer's input while the socket still owns the descriptor; going away closes everything")
    func finishAndClose() throws {
        let toPeer = try pipePair()
        let (input, other) = try socketPair()
        defer { try? other.close(); try? toPeer.read.close() }
        let (inputBefore, outputBefore) = (identity(input), identity(toPeer.write))
        do {
            let socket = WireSocket(adoptingInput: input, output: toPeer.write, blocking: true)
            try socket.sendAll([9])
            socket.finishSending()
            var buffer = [UInt8](repeating: 0, count: 4)
            let first = try buffer.withUnsafeMutableBytes { try toPeer.read.read(into: $0) }
            let end = try buffer.withUnsafeMutableBytes { try toPeer.read.read(into: $0) }
            #expect(first == 1 && end == 0, "the peer read \(first) byte(s), then \(end)")
            #expect(identity(input) == inputBefore && identity(toPeer.write) != nil)
        }
        #expect(identity(input) != inputBefore && identity(toPeer.write) != outputBefore, "the socket closed what it owned when it went away")
    }

    @Test("a socket made by using descriptors leaves them open; release gives an adopted one up without closing it")
    func ownership() throws {
        let (ours, theirs) = try socketPair()
        defer { try? theirs.close() }
        let before = identity(ours)
        do {
            let socket = WireSocket(usingInput: ours, output: ours, blocking: true)
            try socket.sendAll([1])
        }
        #expect(identity(ours) == before)
        let descriptor = WireSocket(adopting: ours, blocking: true).release()
        #expect(identity(descriptor) == before)
        try descriptor.close()
    }
}

/// A plain thread for a test's blocking peer (the cooperative pool has two threads here).
final class Thread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: () -> Void

    init(_ body: @escaping () -> Void) {
        self.body = body
        let box = Unmanaged.passRetained(self).toOpaque()
        pthread_create(&thread, nil, { pointer in
            Unmanaged<Thread>.fromOpaque(pointer!).takeRetainedValue().body()
            return nil
        }, box)
    }

    func join() { pthread_join(thread, nil) }
}
