import ForkKit
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// The functions the demo's children run.
enum DemoFunctions {
    /// Accepts connections on the listening socket it was given and answers each with its pid,
    /// until the owner closes the child's socket.
    @Sendable static func serve(_ child: ChildContext) throws {
        let listener = child.descriptors[0].rawValue
        while true {
            var watched = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0),
                           pollfd(fd: child.socket.rawValue, events: Int16(POLLIN), revents: 0)]
            guard poll(&watched, 2, -1) >= 0 else { continue }
            if watched[1].revents != 0 { return }  // The owner is done with us.
            guard watched[0].revents != 0 else { continue }
            // Every server wakes for a connection and only one gets it: the listener is
            // non-blocking, so the others go back to waiting instead of blocking in accept.
            let connection = accept(listener, nil, nil)
            guard connection >= 0 else { continue }
            let stream = FileDescriptor(rawValue: connection)
            var buffer = [UInt8](repeating: 0, count: 256)
            let count = (try? buffer.withUnsafeMutableBytes { try stream.read(into: $0) }) ?? 0
            let request = String(decoding: buffer.prefix(count), as: UTF8.self)
            _ = try? stream.writeAll(Array("served by pid \(child.pid): \(request)".utf8))
            try? stream.close()
        }
    }

    /// Runs a program: arguments are its path and argv, descriptor 0 becomes its standard output,
    /// and the socket becomes its standard error, so the owner reads what it complains about.
    @Sendable static func exec(_ child: ChildContext) throws {
        dup2(child.descriptors[0].rawValue, 1)
        dup2(child.socket.rawValue, 2)
        let arguments = child.arguments.map { String(decoding: $0, as: UTF8.self) }
        var argv = arguments.map { strdup($0) }
        argv.append(nil)
        execv(arguments[0], &argv)
        let message = "exec \(arguments[0]) failed: \(String(cString: strerror(errno)))\n"
        _ = try? FileDescriptor.standardError.writeAll(Array(message.utf8))
        _exit(127)
    }
}
