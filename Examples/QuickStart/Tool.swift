// The README's example, built and run by CI so that it cannot rot.
import ForkKit
import SystemPackage

@main struct Tool {
    static func main() async throws {
        // First line of main: a process started as a template serves here and never returns.
        ForkTemplate.bootstrap([
            .initializer("load-table") { arguments in
                // Runs inside the template: every child forked later shares what it loads.
                let table = try SharedMemoryRegion.create(name: "table", size: 64 << 20)
                table.mutableBytes.initializeMemory(as: UInt8.self, repeating: 7)
            },
            .function("lookup") { child in
                let table = SharedMemoryRegion.named("table")!          // read-only here
                let index = Int(child.argument(0)!)!
                try child.socket.writeAll(Array("\(table.bytes[index]) from \(child.pid)".utf8))
            },
        ])

        let template = try await ForkTemplate.shared                   // this binary, as a template
        try await template.initialize("load-table")
        let child = try await template.fork(running: "lookup", arguments: [Array("42".utf8)])
        var answer = [UInt8](repeating: 0, count: 64)
        let count = try answer.withUnsafeMutableBytes { try child.socket.read(into: $0) }
        print(String(decoding: answer.prefix(count), as: UTF8.self))   // 7 from 12345
        print(try await child.exitStatus())                            // exit code 0
    }
}
