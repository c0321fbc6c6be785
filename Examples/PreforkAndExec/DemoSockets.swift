import Foundation
import SystemPackage

/// The plain TCP plumbing of the demo's client side.
enum DemoSockets {
    /// A non-blocking listening socket on 127.0.0.1 with a port the kernel chose.
    static func listen() throws -> (FileDescriptor, UInt16) {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(listener, $0, length) == 0 && Glibc.listen(listener, 64) == 0 && getsockname(listener, $0, &length) == 0
            }
        }
        guard listener >= 0, ok else { throw Errno(rawValue: errno) }
        return (FileDescriptor(rawValue: listener), UInt16(bigEndian: address.sin_port))
    }

    /// Connects, sends `text`, and returns the whole answer.
    static func request(_ text: String, port: UInt16) throws -> String {
        let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard client >= 0, connected == 0 else { throw Errno(rawValue: errno) }
        let stream = FileDescriptor(rawValue: client)
        defer { try? stream.close() }
        try stream.writeAll(Array(text.utf8))
        return try readToEnd(stream)
    }

    /// Reads until end of stream.
    static func readToEnd(_ descriptor: FileDescriptor) throws -> String {
        var output: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = try buffer.withUnsafeMutableBytes { try descriptor.read(into: $0) }
            if count == 0 { break }
            output += buffer.prefix(count)
        }
        return String(decoding: output, as: UTF8.self)
    }

    private static func loopback(port: UInt16) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }
}
