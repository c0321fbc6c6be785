// What the test targets share: where the built test programs are, and ways to look at processes
// and descriptors without hanging a test.
import ForkKit
import Foundation
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Paths of what the package builds for the tests, next to the test bundle.
public enum Built {
    public static var directory: String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? ""
        return (executable as NSString).deletingLastPathComponent
    }

    /// The test worker: a ForkKit program whose entry points the tests run.
    public static var worker: String { directory + "/forkkit-test-worker" }
    /// A synchronous swift-argument-parser command that calls bootstrap from run().
    public static var command: String { directory + "/forkkit-test-command" }
    /// An AsyncParsableCommand that calls bootstrap from its main().
    public static var asyncCommand: String { directory + "/forkkit-test-async-command" }
    /// A pool run as a swift-service-lifecycle Service (Tests/ForkKitTestService).
    public static var service: String { directory + "/forkkit-test-service" }
    /// The plugin library.
    public static var plugin: String { directory + "/libForkKitTestPlugin.so" }
}

/// A test waited too long for something.
public struct TestTimeout: Error, CustomStringConvertible {
    public let description: String

    /// An error with `description` as its message.
    public init(description: String) {
        self.description = description
    }
}

/// Reads until end of stream, failing after `seconds` rather than hanging the suite.
public func readAll(_ descriptor: FileDescriptor, seconds: Double = 10) throws -> String {
    var output: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        var watched = pollfd(fd: descriptor.rawValue, events: Int16(POLLIN), revents: 0)
        let remaining = Int32(max(0, deadline.timeIntervalSinceNow * 1000))
        guard poll(&watched, 1, remaining) > 0 else {
            throw TestTimeout(description: "no end of stream within \(seconds) s; read so far: \(String(decoding: output, as: UTF8.self))")
        }
        let count = read(descriptor.rawValue, &buffer, buffer.count)
        if count <= 0 { break }
        output += buffer.prefix(count)
    }
    return String(decoding: output, as: UTF8.self)
}

/// The descriptor numbers a process has open.
public func openDescriptors(of pid: Int32) throws -> [Int32] {
    try FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").compactMap { Int32($0) }.sorted()
}

/// Whether `pid` is gone or a zombie (dead, but not yet reaped by its parent).
public func isDead(_ pid: Int32) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
    guard let close = stat.lastIndex(of: ")") else { return true }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state == "Z" || state == "X"
}

/// Whether `pid` no longer exists at all (exited and reaped).
public func isReaped(_ pid: Int32) -> Bool {
    !FileManager.default.fileExists(atPath: "/proc/\(pid)")
}

/// Polls `condition` every 10 ms for up to `seconds`.
public func eventually(within seconds: Double, _ condition: () -> Bool) async -> Bool {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(10))
    }
    return condition()
}

/// A template of the test worker.
public func workerTemplate() async throws -> ForkTemplate {
    try await ForkTemplate.spawn(executable: Built.worker)
}

/// Runs the test worker as a plain program with `arguments`, returning its process and stdout pipe.
public func startWorkerProgram(_ arguments: [String]) throws -> (Process, Pipe) {
    try startProgram(Built.worker, arguments)
}

/// Runs `path` with `arguments` (and `environment` added to this process's), returning its process
/// and one pipe that carries its standard output and, with `mergingErrors`, its standard error.
public func startProgram(
    _ path: String, _ arguments: [String], environment: [String: String] = [:], mergingErrors: Bool = false
) throws -> (Process, Pipe) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let output = Pipe()
    process.standardOutput = output
    if mergingErrors { process.standardError = output }
    try process.run()
    return (process, output)
}

/// A pipe as two descriptors.
public func makePipe() throws -> (read: FileDescriptor, write: FileDescriptor) {
    let pipe = try FileDescriptor.pipe()
    return (pipe.readEnd, pipe.writeEnd)
}

/// Whether `python3` is installed and can import `module` (scripts/setup.sh installs the packages
/// that the tests with peers in Python need; where it could not, those tests say they are skipped).
public func python3CanImport(_ module: String) -> Bool {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", "import \(module)"]
    process.standardError = FileHandle.nullDevice
    guard (try? process.run()) != nil else { return false }
    process.waitUntilExit()
    return process.terminationStatus == 0
}

/// The path of a file in the repository's protocol/examples directory.
public func protocolExample(_ name: String, file: String = #filePath) -> String {
    URL(fileURLWithPath: file).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("protocol/examples/\(name)").path
}

/// Waits for `process` to exit without blocking a thread of Swift's cooperative pool (two on this
/// machine), failing after `seconds`.
public func waitForExit(_ process: Process, seconds: Double = 30) async throws {
    let deadline = ContinuousClock.now + .seconds(seconds)
    while process.isRunning {
        guard ContinuousClock.now < deadline else { throw TestTimeout(description: "process \(process.processIdentifier) still runs after \(seconds) s") }
        try await Task.sleep(for: .milliseconds(5))
    }
}
