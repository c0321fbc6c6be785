import Foundation
import Testing

/// The repository's root, from this file's path.
private let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

/// Runs the toolchain's clang (next to swiftc, or on PATH) on `arguments` in the repository; returns
/// its exit status and what it wrote, or nil when there is no clang.
private func clang(_ arguments: [String]) throws -> (status: Int32, output: String)? {
    let candidates = ["/opt/swift/usr/bin/clang"] + (ProcessInfo.processInfo.environment["PATH"] ?? "")
        .split(separator: ":").map { "\($0)/clang" }
    guard let path = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else { return nil }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    process.currentDirectoryURL = repository
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    return (process.terminationStatus, text)
}

@Suite("Building on a platform other than Linux")
struct PlatformTests {
    @Test("stops at the first header every module imports, with one sentence")
    func oneClearError() throws {
        // What another platform's compiler sees: no __linux__.
        let header = try #require(try clang(["-fsyntax-only", "-U__linux__", "-x", "c", "Sources/CMsgPack/shim.h"]), "no clang")
        #expect(header.status != 0)
        let errors = header.output.split(separator: "\n").filter { $0.contains("error:") }
        #expect(errors.count == 1, "\(header.output)")
        #expect(errors.first?.contains("ForkKit runs on Linux only") == true)
        // The C support file compiles to nothing there, so it adds no errors of its own.
        let support = try #require(try clang(["-fsyntax-only", "-U__linux__", "-ISources/CForkSupport/include", "Sources/CForkSupport/CForkSupport.c"]))
        #expect(support.status == 0, "\(support.output)")
        // On Linux the header is msgpack's.
        let linux = try #require(try clang(["-fsyntax-only", "-x", "c", "Sources/CMsgPack/shim.h"]))
        #expect(linux.status == 0, "\(linux.output)")
    }
}
