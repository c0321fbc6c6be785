// forkkit-remote-functions: calling functions in a child process. Typed calls of one and of three
// arguments, errors thrown in the child caught in the parent (one as itself), progress events
// from the child, and the child's log records coming out of the parent's logger.
import ForkKit
import ForkRPC
import Logging

/// A rectangle to measure; Codable, so it crosses the socket as a MessagePack map.
struct Rectangle: Codable, Sendable {
    var width: Double
    var height: Double
}

/// What the child throws for a rectangle it cannot measure. Codable, and registered in the parent
/// (`RPCError.register`), so it is thrown there as itself.
struct BadShape: Error, Codable, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}

/// An error that is not Codable: it arrives as an `RPCError` with its type's name and message.
struct Overflow: Error, CustomStringConvertible {
    var description: String { "the sum does not fit" }
}

// One value per function, shared by the child (which serves it) and the parent (which calls it).
// The last type is the result; those before it are the arguments.
let area = RPCFunction<Rectangle, Double>("area")
let scaled = RPCFunction<Rectangle, Double, Double, Rectangle>("scaled")
let addAll = RPCFunction<[Int], Int>("add-all")
let countTo = RPCFunction<Int, String>("count-to")

@main struct RemoteFunctions {
    static func main() async throws {
        // First line of main: the child's side, registered before anything else runs.
        ForkTemplate.bootstrap([
            .rpcWorker("geometry") { server in
                let logger = server.makeLogger(label: "geometry")
                server.register(area) { rectangle in
                    guard rectangle.width >= 0, rectangle.height >= 0 else {
                        throw BadShape(reason: "a rectangle cannot be \(rectangle.width) wide and \(rectangle.height) high")
                    }
                    logger.info("measured a rectangle", metadata: ["width": "\(rectangle.width)", "height": "\(rectangle.height)"])
                    return rectangle.width * rectangle.height
                }
                server.register(scaled) { rectangle, horizontal, vertical in
                    Rectangle(width: rectangle.width * horizontal, height: rectangle.height * vertical)
                }
                server.register(addAll) { numbers in
                    try numbers.reduce(0) { sum, number in
                        let (total, overflow) = sum.addingReportingOverflow(number)
                        if overflow { throw Overflow() }
                        return total
                    }
                }
                server.register(countTo) { limit in
                    for step in 1...limit { try server.emit("progress", step) }
                    return "counted to \(limit)"
                }
            },
        ])

        // The parent's logger; the child's records arrive here with the child's pid.
        LoggingSystem.bootstrap { label in StreamLogHandler.standardOutput(label: label) }
        let logger = Logger(label: "parent")
        let child = try await RPCClient.start(try await ForkTemplate.shared, running: "geometry", logger: logger)
        print("child: pid \(child.pid.map(String.init) ?? "?")")

        // 1. Typed calls, of one argument and of three.
        print("area of 3 x 4: \(try await child.call(area, Rectangle(width: 3, height: 4)))")
        let wide = try await child.call(scaled, Rectangle(width: 3, height: 4), 2, 0.5)
        print("3 x 4 scaled by 2 and 0.5: \(wide.width) x \(wide.height)")

        // 2. Errors thrown in the child: a registered Codable one is caught here as itself; another
        //    arrives as an RPCError with its type, message, function and pid.
        RPCError.register(BadShape.self)
        do {
            _ = try await child.call(area, Rectangle(width: -1, height: 2))
        } catch let error as BadShape {
            print("caught BadShape as itself: \(error.reason)")
        }
        do {
            _ = try await child.call(addAll, [Int.max, 1])
        } catch let error as RPCError where error.kind == .remote {
            print("caught: \(error.remoteType ?? "?") from '\(error.function ?? "?")' in \(error.pid.map(String.init) ?? "?"): \(error.message)")
        }

        // 3. Progress events while a call runs.
        let events = Task {
            var steps: [Int] = []
            for await event in child.events where event.name == "progress" {
                steps.append(try event.value(as: Int.self))
                if steps.count == 5 { break }
            }
            return steps
        }
        print("count-to 5: \(try await child.call(countTo, 5)); progress events: \(try await events.value)")

        // 4. Closing: the child finishes what it was given, then exits.
        print("child ended: \(try await child.close().map(String.init(describing:)) ?? "?")")
    }
}
