// The program that ForkKit's tests start as a template. Each entry point below exercises one verb;
// the tests talk to it through real sockets and descriptors.
import ForkKit
import ForkPool
import Foundation
import ForkRPC
import ForkKitTestSupport
import ForkActors
import ForkKitTestActors
import MessagePack
import Synchronization
import SystemPackage
import Tracing

#if canImport(Glibc)
import Glibc
#endif

/// Set by the "remember" initializer inside the template; children forked later see it.
nonisolated(unsafe) var remembered: [UInt8] = []

// For the duplicate-name test: a program whose bootstrap is given one name twice.
if getenv("FORKKIT_TEST_DUPLICATE_ENTRY") != nil {
    ForkTemplate.bootstrap([.function("twice") { _ in }, .function("twice") { _ in }])
}

ForkTemplate.bootstrap([
    // Hosts the distributed actors of ForkKitTestActors (ForkActorsTests).
    .distributedActors,
    .rpcWorker("registers-twice") { server in
        server.register(RPCFunction<Int, Int>("square")) { $0 * $0 }
        server.register(RPCFunction<Int, Int>("square")) { $0 + $0 }
    },
    .asyncRPCWorker("async-registers-twice") { server in
        server.register(RPCFunction<Int, Int>("square")) { $0 * $0 }
        server.register(RPCFunction<Int, Int>("square")) { $0 + $0 }
    },
    .function("exit-now") { _ in },
    .function("report-template-mark") { child in
        try child.socket.writeAll(Array((getenv("FORKKIT_TEMPLATE").map { String(cString: $0) } ?? "none").utf8))
    },
    .function("exit-with-code") { child in
        exit(Int32(child.argument(0) ?? "") ?? 99)
    },
    .function("throwing") { _ in
        throw TestFailure(message: "deliberate failure")
    },
    .function("crash") { _ in
        // A real invalid memory access, as a buggy function would make.
        UnsafeMutablePointer<Int>(bitPattern: 8)!.pointee = 1
    },
    .function("echo-arguments") { child in
        let text = child.arguments.map { String(decoding: $0, as: UTF8.self) }.joined(separator: "\n")
        try child.socket.writeAll(Array(text.utf8))
    },
    .function("write-pid-to-descriptors") { child in
        for descriptor in child.descriptors {
            try descriptor.writeAll(Array("\(getpid())\n".utf8))
        }
    },
    .function("accept-and-greet") { child in
        // Serves one connection on the listening socket it was given.
        let connection = accept(child.descriptors[0].rawValue, nil, nil)
        guard connection >= 0 else { throw TestFailure(message: "accept failed: errno \(errno)") }
        try FileDescriptor(rawValue: connection).writeAll(Array("served by \(getpid())\n".utf8))
        close(connection)
    },
    .function("report-limits") { child in
        var address = rlimit(), cpu = rlimit(), files = rlimit()
        getrlimit(Int32(RLIMIT_AS.rawValue), &address)
        getrlimit(Int32(RLIMIT_CPU.rawValue), &cpu)
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &files)
        errno = 0
        let nice = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0)
        try child.socket.writeAll(Array("\(address.rlim_cur) \(cpu.rlim_cur) \(files.rlim_cur) \(nice)".utf8))
    },
    .function("report-remembered") { child in
        try child.socket.writeAll(remembered)
    },
    .function("sum-shared-table") { child in
        guard let table = SharedMemoryRegion.named("table") else {
            throw TestFailure(message: "no shared region named table")
        }
        let sum = table.bytes.reduce(UInt64(0)) { $0 &+ UInt64($1) }
        try child.socket.writeAll(Array("\(table.size) \(sum)".utf8))
    },
    .function("write-shared-table") { child in
        SharedMemoryRegion.named("table")!.mutableBytes[0] = 42
        try child.socket.writeAll(Array("wrote".utf8))
    },
    .function("wait-for-eof") { child in
        // Stays alive until the owner closes the socket, so the tests can inspect the process.
        var byte: UInt8 = 0
        while read(child.socket.rawValue, &byte, 1) > 0 {}
    },
    .function("sleep-forever") { _ in
        while true { pause() }
    },
    // Each worker's own start-up arguments, read by its set-up (RPCClient.start(arguments:), a pool's arguments).
    .rpcWorker("rpc-arguments") { server, child in
        let arguments = child.arguments.map { String(decoding: $0, as: UTF8.self) }
        server.register(RPCFunction<Int, [String]>("arguments")) { _ in arguments }
    },
    .asyncRPCWorker("async-arguments") { server, child in
        let arguments = child.arguments.map { String(decoding: $0, as: UTF8.self) }
        server.register(RPCFunction<Int, [String]>("arguments")) { _ in arguments }
    },
    // Workers that call their owner (RPCServer.call): the same functions on both backends.
    .rpcWorker("rpc-calls-owner") { server in
        RPCError.register(BadShape.self)
        server.register(RPCFunction<String, String>("ask-twice")) { method in
            let first = try server.call(RPCFunction<Int, String>(method), 1, timeout: .seconds(20))
            let second = try server.call(RPCFunction<Int, String>(method), 2, timeout: .seconds(20))
            return "\(first) \(second)"
        }
        server.register(RPCFunction<Int, String>("ask-with-descriptor")) { _ in
            OwnerAnswer.describe { String(try server.call(RPCFunction<PassedDescriptor, Int>("take"), PassedDescriptor(.standardError))) }
        }
        // Any number of arguments, both ways.
        server.register(RPCFunction<Int, Int, Int, Int>("add3")) { a, b, c in a + b + c }
        server.register(RPCFunction<String>("greet")) { "hello" }
        server.register(RPCFunction<String, Int, [String]>("repeat")) { text, times in Array(repeating: text, count: times) }
        server.register(RPCFunction<Int, Int, Int>("add-via-owner")) { a, b in try server.call(RPCFunction<Int, Int, Int>("add"), a, b) }
        server.register(RPCFunction<String>("owner-name")) { try server.call(RPCFunction<String>("name")) }
        server.register(RPCFunction<Int, Int>("pull")) { _ in
            var sum = 0
            while let item = try server.call(RPCFunction<Int, Int?>("next-item"), Int(getpid())) { sum += item * item }
            return sum
        }
        server.register(RPCFunction<String, String>("ask")) { method in
            OwnerAnswer.describe { try server.call(RPCFunction<Int, String>(method), 1, timeout: method == "slow" ? .milliseconds(300) : .seconds(20)) }
        }
        server.register(RPCFunction<Int, Int>("throw-shape")) { throw BadShape(sides: $0) }
        server.register(RPCFunction<Int, Int>("throw-plain")) { _ in throw TestFailure(message: "plain failure") }
    },
    .asyncRPCWorker("async-calls-owner") { server in
        RPCError.register(BadShape.self)
        server.register(RPCFunction<String, String>("ask-twice")) { method in
            let first = try await server.call(RPCFunction<Int, String>(method), 1, timeout: .seconds(20))
            let second = try await server.call(RPCFunction<Int, String>(method), 2, timeout: .seconds(20))
            return "\(first) \(second)"
        }
        server.register(RPCFunction<Int, String>("ask-with-descriptor")) { _ in
            await OwnerAnswer.describe { String(try await server.call(RPCFunction<PassedDescriptor, Int>("take"), PassedDescriptor(.standardError))) }
        }
        // Any number of arguments, both ways.
        server.register(RPCFunction<Int, Int, Int, Int>("add3")) { a, b, c in a + b + c }
        server.register(RPCFunction<String>("greet")) { "hello" }
        server.register(RPCFunction<String, Int, [String]>("repeat")) { text, times in Array(repeating: text, count: times) }
        server.register(RPCFunction<Int, Int, Int>("add-via-owner")) { a, b in try await server.call(RPCFunction<Int, Int, Int>("add"), a, b) }
        server.register(RPCFunction<String>("owner-name")) { try await server.call(RPCFunction<String>("name")) }
        server.register(RPCFunction<Int, Int>("pull")) { _ in
            var sum = 0
            while let item = try await server.call(RPCFunction<Int, Int?>("next-item"), Int(getpid())) { sum += item * item }
            return sum
        }
        server.register(RPCFunction<String, String>("ask")) { method in
            await OwnerAnswer.describe { try await server.call(RPCFunction<Int, String>(method), 1, timeout: method == "slow" ? .milliseconds(300) : .seconds(20)) }
        }
        server.register(RPCFunction<Int, Int>("throw-shape")) { throw BadShape(sides: $0) }
        server.register(RPCFunction<Int, Int>("throw-plain")) { _ in throw TestFailure(message: "plain failure") }
    },
    // The worker that pynvim's MessagePack-RPC client calls (protocol/examples/interop_peer.py client).
    .rpcWorker("interop-worker") { server in
        server.register(RPCFunction<Int, Int>("square")) { $0 * $0 }
        server.register(RPCFunction<Int, Int, Int, Int>("add3")) { a, b, c in a + b + c }
        server.register(RPCFunction<Int>("explode")) { throw TestFailure(message: "exploded on purpose") }
        server.register(RPCFunction<Int, Int, Int>("callback")) { a, b in
            try server.call(RPCFunction<Int, Int, Int>("owner_add"), a, b, timeout: .seconds(20))
        }
        server.register(RPCFunction<Int, Int>("progress")) { count in
            for step in 0..<count { try server.emit("step", step) }
            return count
        }
    },
    // Untyped functions (MessagePack values in and out), both ways.
    .rpcWorker("rpc-untyped") { server in
        server.register(method: "echo") { .array($0) }
        server.register(method: "sum") { params in .int(Int64(params.compactMap(\.integerValue).reduce(0, +))) }
        server.register(method: "ask-owner") { params in try server.call(method: "owner-reverse", params: params) }
        server.register(RPCFunction<Int, PassedDescriptor>("descriptor-result")) { _ in PassedDescriptor(.standardError) }
    },
    .asyncRPCWorker("async-untyped") { server in
        server.register(method: "echo") { .array($0) }
        server.register(method: "sum") { params in .int(Int64(params.compactMap(\.integerValue).reduce(0, +))) }
        server.register(method: "ask-owner") { params in try await server.call(method: "owner-reverse", params: params) }
        server.register(RPCFunction<Int, PassedDescriptor>("descriptor-result")) { _ in PassedDescriptor(.standardError) }
    },
    // A synchronous worker whose set-up asks its owner something before it serves.
    .rpcWorker("rpc-asks-at-setup") { server in
        let greeting = try server.call(RPCFunction<String>("greeting"), timeout: .seconds(20))
        server.register(RPCFunction<String>("greeting")) { greeting }
    },
    // The asynchronous one cannot (it reads answers only once it serves): it must say so at once.
    .asyncRPCWorker("async-asks-at-setup") { server in
        let refusal = Mutex("")
        let done = DispatchSemaphore(value: 0)
        Task {
            let answer = await OwnerAnswer.describe { try await server.call(RPCFunction<String>("greeting"), timeout: .seconds(20)) }
            refusal.withLock { $0 = answer }
            done.signal()
        }
        done.wait()
        let answer = refusal.withLock { $0 }
        server.register(RPCFunction<String>("greeting")) { answer }
    },
    .rpcWorker("rpc-math") { server in
        server.register(RPCFunction<Int, Int>("square")) { $0 * $0 }
        server.register(RPCFunction<Division, Int>("divide")) { division in
            guard division.divisor != 0 else { throw MathError.divisionByZero }
            return division.dividend / division.divisor
        }
        server.register(RPCFunction<[UInt8], [UInt8]>("echo-bytes")) { $0 }
        server.register(RPCFunction<Int, [UInt8]>("make-bytes")) { [UInt8](repeating: 7, count: $0) }
        server.register(RPCFunction<Int, Int>("crash")) { _ in
            // A real invalid memory access, as a buggy function would make.
            UnsafeMutablePointer<Int>(bitPattern: 8)!.pointee = 1
            return 0
        }
        server.register(RPCFunction<Int, Int>("sleep-ms")) { milliseconds in
            usleep(UInt32(milliseconds) * 1000)
            return milliseconds
        }
        server.register(RPCFunction<Int, Int>("count-down")) { count in
            for remaining in stride(from: count, to: 0, by: -1) { try server.emit("progress", remaining) }
            return 0
        }
        let logger = server.makeLogger(label: "math-worker")
        server.register(RPCFunction<String, Int>("log")) { text in
            logger.info("\(text)", metadata: ["stage": "testing"])
            logger.debug("below the level, never sent")
            return text.count
        }
        server.register(RPCFunction<PassedDescriptor, Int32>("write-pid-to")) { passed in
            defer { try? passed.descriptor.close() }
            try passed.descriptor.writeAll(Array("\(getpid())\n".utf8))
            return getpid()
        }
        server.register(RPCFunction<Int, Int>("die")) { signal in
            kill(getpid(), Int32(signal))
            return 0
        }
    },
    .asyncRPCWorker("rpc-async", maximumConcurrentCalls: 3) { server in
        server.register(RPCFunction<Int, [UInt8]>("make-bytes")) { [UInt8](repeating: 7, count: $0) }
        server.register(RPCFunction<Int, Int>("square")) { $0 * $0 }
        server.register(RPCFunction<Int, Int>("nap-ms")) { milliseconds in
            let now = AsyncCounters.running.add(1, ordering: .relaxed).newValue
            AsyncCounters.peak.max(now, ordering: .relaxed)
            defer { AsyncCounters.running.subtract(1, ordering: .relaxed) }
            do {
                try await Task.sleep(for: .milliseconds(milliseconds))
            } catch {
                AsyncCounters.cancelled.add(1, ordering: .relaxed)
                throw error
            }
            return milliseconds
        }
        server.register(RPCFunction<Int, Int>("peak")) { _ in AsyncCounters.peak.load(ordering: .relaxed) }
        server.register(RPCFunction<Int, Int>("cancelled")) { _ in AsyncCounters.cancelled.load(ordering: .relaxed) }
        server.register(RPCFunction<Int, String>("count-down")) { count in
            // The Perl documentation's example: a slow count-down that reports as it goes.
            for remaining in stride(from: count, to: 0, by: -1) {
                try server.emit("tick", remaining)
                try await Task.sleep(for: .milliseconds(10))
            }
            return "liftoff"
        }
    },
    .rpcWorker("rpc-printing") { server in
        // A careless function: prints to standard output, which in a remote process is not the stream.
        server.register(RPCFunction<Int, Int>("square")) { number in
            print("squaring \(number)")
            fflush(nil)
            return number * number
        }
    },
    // What ForkPool's tests run in each pool worker.
    .rpcWorker("pool-worker") { server in
        server.register(RPCFunction<Int, Int>("square")) { $0 * $0 }
        server.register(RPCFunction<Int, Int32>("pid")) { _ in getpid() }
        server.register(RPCFunction<Int, [UInt8]>("make-bytes")) { [UInt8](repeating: 7, count: $0) }
        server.register(RPCFunction<Int, Int>("sleep-ms")) { milliseconds in
            usleep(UInt32(milliseconds) * 1000)
            return milliseconds
        }
        server.register(RPCFunction<Int, Int>("slow-square")) { number in
            usleep(2000)
            return number * number
        }
        server.register(RPCFunction<Int, Int>("fail-if-negative")) { number in
            guard number >= 0 else { throw TestFailure(message: "negative input \(number)") }
            return number
        }
        server.register(RPCFunction<Int, Int32>("retire")) { _ in
            try server.retire()
            return getpid()
        }
        server.register(RPCFunction<Int, String>("network-namespace")) { _ in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/ns/net")) ?? "unknown"
        }
        server.register(RPCFunction<Int, Int>("emit-progress")) { count in
            for step in 1...max(1, count) { try server.emit("progress", step) }
            return count
        }
        server.register(RPCFunction<Int, Int>("sleep-us")) { microseconds in
            usleep(UInt32(microseconds))
            return microseconds
        }
        server.register(RPCFunction<Int, Int>("sleep-ms-or-fail")) { milliseconds in
            guard milliseconds >= 0 else { throw TestFailure(message: "negative input \(milliseconds)") }
            usleep(UInt32(milliseconds) * 1000)
            return milliseconds
        }
        // For the output-capture tests: no fflush, so a line arrives only if standard output is
        // line-buffered; standard error gets a second line.
        server.register(RPCFunction<String, Int32>("print")) { text in
            print(text)
            FileHandle.standardError.write(Data("to stderr: \(text)\n".utf8))
            return getpid()
        }
        server.register(RPCFunction<Int, Int32>("print-unterminated")) { length in
            print(String(repeating: "x", count: length), terminator: "")
            return getpid()
        }
        server.register(RPCFunction<Int, Int>("fatal")) { _ in fatalError("deliberate fatalError") }
        server.register(RPCFunction<Int, Int>("slow-fail-if-negative")) { number in
            // 1 ms per item, so that a map keeps both workers busy with small chunks.
            usleep(1000)
            guard number >= 0 else { throw TestFailure(message: "negative input \(number)") }
            return number
        }
    },
    .function("pool-faults") { child in
        // A pool worker that fails on request in every way a process can, for the fault tests.
        let server = RPCServer(socket: child.socket)
        server.register(RPCFunction<Int, Int>("square")) { $0 * $0 }
        server.register(RPCFunction<Int, Int32>("pid")) { _ in getpid() }
        server.register(RPCFunction<Int, Int>("sleep-us")) { microseconds in
            // -1: spin without end instead (for the CPU limit).
            var spins = 0
            while microseconds < 0 { spins &+= 1 }
            usleep(UInt32(microseconds))
            return microseconds + spins
        }
        server.register(RPCFunction<Int, [Int]>("limits")) { _ in
            var address = rlimit(), cpu = rlimit(), files = rlimit()
            getrlimit(Int32(RLIMIT_AS.rawValue), &address)
            getrlimit(Int32(RLIMIT_CPU.rawValue), &cpu)
            getrlimit(Int32(RLIMIT_NOFILE.rawValue), &files)
            return [Int(address.rlim_cur), Int(cpu.rlim_cur), Int(files.rlim_cur), Int(getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0))]
        }
        server.register(RPCFunction<Int, Int>("exit-with")) { code in exit(Int32(code)) }
        server.register(RPCFunction<Int, Int>("fatal")) { _ in fatalError("deliberate fatalError") }
        server.register(RPCFunction<Int, Int>("segfault")) { _ in
            UnsafeMutablePointer<Int>(bitPattern: 8)!.pointee = 1
            return 0
        }
        server.register(RPCFunction<Int, Int>("allocate")) { megabytes in
            // Under an address-space limit, allocating and touching memory stops the process.
            var limit = rlimit(rlim_cur: rlim_t(megabytes) << 20, rlim_max: rlim_t(megabytes) << 20)
            setrlimit(Int32(RLIMIT_AS.rawValue), &limit)
            var hoard: [[UInt8]] = []
            while true { hoard.append([UInt8](repeating: 1, count: 16 << 20)) }
        }
        server.register(RPCFunction<Int, Int>("close-socket")) { _ in
            try child.socket.close()
            while true { sleep(1000) }
        }
        server.register(RPCFunction<Int, Int>("write-garbage")) { _ in
            try child.socket.writeAll([0xc1, 0xc1, 0xc1, 0xc1])
            return 0
        }
        server.register(RPCFunction<Int, Int>("never-answer")) { _ in
            while true { sleep(1000) }
        }
        try server.serve()
    },
    .asyncRPCWorker("pool-async-worker", maximumConcurrentCalls: 4) { server in
        server.register(RPCFunction<Int, Int32>("pid")) { _ in getpid() }
        server.register(RPCFunction<Int, Int>("sleep-ms")) { milliseconds in
            try await Task.sleep(for: .milliseconds(milliseconds))
            return milliseconds
        }
        server.register(RPCFunction<Int, Int>("sleep-us")) { microseconds in
            try await Task.sleep(for: .microseconds(microseconds))
            return microseconds
        }
    },
    // Tracing across processes (ForkRPCTests' TracingTests, ForkPoolTests): spans made in the
    // worker reach the caller's tracer.
    .rpcWorker("rpc-traced") { server in
        server.register(RPCFunction<Int, Int>("parse")) { items in
            withSpan("parse", ofKind: .server) { span in
                span.attributes["items"] = items
                span.addEvent(SpanEvent(name: "halfway", attributes: ["done": .int64(Int64(items / 2))]))
                let tokens = withSpan("tokenize") { span in
                    span.attributes["tokens"] = items * 2
                    return items * 2
                }
                span.setStatus(SpanStatus(code: .ok))
                return tokens
            }
        }
        server.register(RPCFunction<Int, Int>("parse-fails")) { items in
            try withSpan("risky") { _ in throw TracedFailure(items: items) }
        }
        server.register(RPCFunction<Int, Bool>("saw-context")) { _ in ServiceContext.current != nil }
    },
    .asyncRPCWorker("async-traced") { server in
        server.register(RPCFunction<Int, Int>("parse")) { items in
            try await withSpan("parse", ofKind: .server) { span in
                span.attributes["items"] = items
                span.addEvent(SpanEvent(name: "halfway", attributes: ["done": .int64(Int64(items / 2))]))
                let tokens = try await withSpan("tokenize") { span in
                    try await Task.sleep(for: .milliseconds(1))
                    span.attributes["tokens"] = items * 2
                    return items * 2
                }
                span.setStatus(SpanStatus(code: .ok))
                return tokens
            }
        }
        server.register(RPCFunction<Int, Int>("parse-fails")) { items in
            try withSpan("risky") { _ in throw TracedFailure(items: items) }
        }
        server.register(RPCFunction<Int, Bool>("saw-context")) { _ in ServiceContext.current != nil }
    },
    .rpcWorker("rpc-spinning", spinBeforeBlocking: .microseconds(50)) { server in
        server.register(RPCFunction<Int, Int>("square")) { $0 * $0 }
    },
    .function("rpc-misbehaving") { child in
        // A worker that breaks the protocol on request, to test the owner's side.
        let server = RPCServer(socket: child.socket)
        server.register(RPCFunction<Int, Int>("write-garbage")) { _ in
            try child.socket.writeAll([0xc1, 0xc1])
            return 0
        }
        server.register(RPCFunction<Int, Int>("close-and-hang")) { _ in
            // Closes its end of the connection, then never exits.
            try child.socket.close()
            while true { sleep(1000) }
        }
        server.register(RPCFunction<Int, Int>("garbage-and-hang")) { _ in
            // Breaks the protocol, then never exits.
            try child.socket.writeAll([0xc1, 0xc1])
            while true { sleep(1000) }
        }
        server.register(RPCFunction<Int, Int>("answer-unknown-id")) { _ in
            // A well-formed response to a call nobody made.
            try child.socket.writeAll(([1, 99_999, nil, 0] as MessagePackValue).encoded())
            return 0
        }
        try server.serve()
    },
    .initializer("remember") { arguments in
        remembered = arguments.first ?? []
    },
    .initializer("make-table") { arguments in
        let size = Int(String(decoding: arguments[0], as: UTF8.self))!
        let region = try SharedMemoryRegion.create(name: "table", size: size)
        for index in 0..<size { region.mutableBytes[index] = UInt8(truncatingIfNeeded: index) }
    },
    .initializer("fail") { _ in
        throw TestFailure(message: "the table file is missing")
    },
    .initializer("start-thread") { _ in
        var thread = pthread_t()
        pthread_create(&thread, nil, { _ in
            while true { sleep(1000) }
        }, nil)
    },
])

enum AsyncCounters {
    static let running = Atomic<Int>(0)
    static let peak = Atomic<Int>(0)
    static let cancelled = Atomic<Int>(0)
}

struct Division: Codable, Sendable {
    var dividend: Int
    var divisor: Int
}

/// How a worker's call to its owner ended, as one line the tests can check.
enum OwnerAnswer {
    static func describe(_ call: () throws -> String) -> String {
        do { return "ok: \(try call())" } catch { return line(error) }
    }

    static func describe(_ call: () async throws -> String) async -> String {
        do { return "ok: \(try await call())" } catch { return line(error) }
    }

    private static func line(_ error: any Error) -> String {
        switch error {
        case let error as RPCError: "\(error.kind): \(error.message)"
        case let error as BadShape: "BadShape: \(error.sides)"
        default: "other: \(error)"
        }
    }
}

enum MathError: Error, CustomStringConvertible {
    case divisionByZero
    var description: String { "division by zero" }
}

/// What the traced workers' `parse-fails` throws inside a span.
struct TracedFailure: Error, CustomStringConvertible {
    let items: Int
    var description: String { "cannot parse \(items) items" }
}

struct TestFailure: Error, CustomStringConvertible {
    let message: String
    var description: String { message }
}

// Not started as a template: act as an owner process for the tests that need one of their own.
switch CommandLine.arguments.dropFirst().first {
case "crash-owner":
    // For the clean-terminal test: a worker crashes in a call; this owner prints the error, and the
    // test reads what reached this process's standard error.
    let worker = try await RPCClient.start(try await ForkTemplate.spawn(), running: "rpc-math")
    do {
        _ = try await worker.call(RPCFunction<Int, Int>("crash"), 0)
    } catch {
        print("error: \(error)")
    }
case "pipe-server":
    // MessagePack-RPC on standard input and output, as a worker started by any program would be.
    let server = RPCServer(input: .standardInput, output: .standardOutput)
    server.register(RPCFunction<Int, Int>("square")) { $0 * $0 }
    server.register(RPCFunction<Int, [UInt8]>("make-bytes")) { [UInt8](repeating: 7, count: $0) }
    try server.serve()
case "self-template":
    // AnyEvent::Fork::Template: fork this very program while it is still single-threaded.
    let template = try ForkTemplate.forkingCurrentProcess()
    try await template.send(arguments: ["inherited"])
    let child = try await template.fork(running: "echo-arguments", arguments: [Array("given".utf8)])
    var output = [UInt8](repeating: 0, count: 256)
    var received = 0
    while true {
        let count = output.withUnsafeMutableBytes { read(child.socket.rawValue, $0.baseAddress! + received, $0.count - received) }
        if count <= 0 { break }
        received += count
    }
    let status = try await child.exitStatus()
    print("template=\(template.pid) parent=\(getpid()) output=\(String(decoding: output.prefix(received).map { $0 == 10 ? 44 : $0 }, as: UTF8.self)) status=\(status)")
case "owner":
    // For the parent-death test: a template, a busy child and an idle one; prints the pids, then
    // waits to be killed.
    let template = try await ForkTemplate.spawn()
    let child = try await template.fork().run("sleep-forever")
    let idle = try await template.fork()
    print("\(template.pid) \(child.pid) \(idle.pid)")
    fflush(nil)
    while true { sleep(1000) }
case "pool-owner":
    // For the parent-death test with a pool: a template and two pool workers, one of them busy;
    // prints the pids, then waits to be killed.
    var configuration = WorkerPool.Configuration()
    configuration.maximumWorkers = 2
    configuration.idleWorkers = 2
    configuration.metricsPrefix = nil
    let template = try await ForkTemplate.spawn()
    let pool = try await WorkerPool(template: template, running: "pool-worker", configuration: configuration)
    let busy = Task.detached { try await pool.call(RPCFunction<Int, Int>("sleep-ms"), 1_000_000) }
    while pool.statistics.workers.allSatisfy({ $0.callsInFlight == 0 }) { try await Task.sleep(for: .milliseconds(1)) }
    print(([template.pid] + pool.statistics.workers.map(\.pid)).map(String.init).joined(separator: " "))
    fflush(nil)
    while true { sleep(1000) }
    _ = busy
case "pool-scope":
    // For the scoped-lifetime test, in a process of its own so that no other test's descriptors
    // come and go meanwhile: pools ended by withWorkerPool, returning and throwing; prints the
    // workers' pids and the descriptors left open.
    struct Deliberate: Error {}
    func descriptors() -> Set<String> {
        let numbers = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return Set(numbers.compactMap { number in
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(number)")).map { "\(number) -> \($0)" }
        })
    }
    let template = try await ForkTemplate.spawn()
    var configuration = WorkerPool.Configuration()
    configuration.maximumWorkers = 2
    configuration.idleWorkers = 2
    configuration.metricsPrefix = nil
    let square = RPCFunction<Int, Int>("square")
    // What stays open for the process's life (the monitor thread's descriptors) opens here.
    _ = try await withWorkerPool(template: template, running: "pool-worker", configuration: configuration) { try await $0.call(square, 1) }
    let before = descriptors()
    var pids = try await withWorkerPool(template: template, running: "pool-worker", configuration: configuration) { pool in
        _ = try await pool.map(square, 0..<1_000)
        return pool.statistics.workers.map(\.pid)
    }
    do {
        try await withWorkerPool(template: template, running: "pool-worker", configuration: configuration) { pool in
            pids += pool.statistics.workers.map(\.pid)
            async let _ = pool.call(RPCFunction<Int, Int>("sleep-ms"), 10_000)
            try await Task.sleep(for: .milliseconds(50))
            throw Deliberate()
        }
    } catch is Deliberate {}
    var leaked = descriptors().subtracting(before)
    for _ in 0..<200 where !leaked.isEmpty {
        try await Task.sleep(for: .milliseconds(10))
        leaked = descriptors().subtracting(before)
    }
    print("pids=\(pids.map(String.init).joined(separator: ",")) leaked=\(leaked.sorted())")
case "pool-tables":
    // For the bookkeeping test, in a process of its own so that no other test's workers come and
    // go meanwhile: a pool that recycles its workers every 5 calls, with calls, a map, a streaming
    // map and a worker killed; prints how many workers it started and what ForkKit held (RPC
    // clients, children tracked, descriptors watched) before the pool and after it.
    let template = try await ForkTemplate.spawn()
    var configuration = WorkerPool.Configuration()
    configuration.maximumWorkers = 2
    configuration.maximumCallsPerWorker = 5
    configuration.retries = 5
    configuration.metricsPrefix = nil
    let square = RPCFunction<Int, Int>("square")
    func held() -> String { "\(RPCClient.liveCount),\(ForkTemplate.trackedChildCount),\(DescriptorMonitor.shared.watchedCount)" }
    let before = held()
    let started = try await withWorkerPool(template: template, running: "pool-worker", configuration: configuration) { pool in
        for value in 0..<100 { _ = try await pool.call(square, value) }
        _ = try await pool.map(square, 0..<300)
        for try await _ in pool.results(of: square, 0..<300, order: .completion) {}
        if let victim = pool.statistics.workers.first?.pid { kill(victim, SIGKILL) }
        for value in 0..<50 { _ = try await pool.call(square, value) }
        return pool.statistics.counters.workersStarted
    }
    // A killed worker's client lets go once its exit status is known (within a second).
    var after = held()
    for _ in 0..<300 where after != before {
        try await Task.sleep(for: .milliseconds(10))
        after = held()
    }
    print("workers=\(started) before=\(before) after=\(after)")
case "pool-exec":
    // For the close-on-exec test, in a process of its own so that no other test's descriptors come
    // and go meanwhile: starts a pool, then a program by posix_spawn without closing anything (only
    // close-on-exec keeps a descriptor out), and prints which of the pool's sockets it inherited.
    func sockets() -> Set<String> {
        let numbers = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
        return Set(numbers.compactMap { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)") }
            .filter { $0.hasPrefix("socket:") })
    }
    let before = sockets()
    var configuration = WorkerPool.Configuration()
    configuration.maximumWorkers = 2
    configuration.idleWorkers = 2
    configuration.metricsPrefix = nil
    let pool = try await WorkerPool(template: try await ForkTemplate.spawn(), running: "pool-worker", configuration: configuration)
    _ = try await pool.map(RPCFunction<Int, Int>("square"), 0..<100)
    let pools = sockets().subtracting(before)
    let listing = Pipe()
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, listing.fileHandleForWriting.fileDescriptor, 1)
    var pid: pid_t = 0
    let argv: [UnsafeMutablePointer<CChar>?] = [strdup("/bin/sh"), strdup("-c"), strdup("ls -l /proc/$$/fd"), nil]
    guard posix_spawn(&pid, "/bin/sh", &actions, nil, argv, environ) == 0 else { fatalError("posix_spawn failed") }
    try listing.fileHandleForWriting.close()
    let text = String(decoding: listing.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    var status: Int32 = 0
    waitpid(pid, &status, 0)
    print("pool-sockets=\(pools.count) inherited=\(pools.filter { text.contains($0) }.sorted())")
    await pool.shutdown()
case "shared":
    // The lazily started default template (this binary), used twice: one template process serves both.
    let first = try await ForkTemplate.shared
    let second = try await ForkTemplate.shared
    let child = try await first.fork()
    try await child.send(arguments: ["3"])
    let status = try await child.run("exit-with-code").exitStatus()
    print("same-template=\(first === second) status=\(status)")
default:
    break
}
