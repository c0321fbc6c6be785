// forkkit-shared-table: data loaded once into the template is shared by every worker forked from
// it. An initializer builds a large table inside the template; four pool workers each read all of
// it; each reports its memory from /proc/self/smaps_rollup: RSS counts the shared pages in full,
// PSS divides them among the processes that share them, USS is what the worker has to itself.
import ForkKit
import ForkPool
import ForkRPC
import Foundation

/// The table, filled by the "load-table" initializer inside the template; children inherit it
/// copy-on-write and only read it, so its pages stay shared.
nonisolated(unsafe) var table: [UInt64] = []

/// One worker's view: the table's checksum and its own memory, in kilobytes.
struct Report: Codable, Sendable {
    var pid: Int32
    var checksum: UInt64
    var rss: Int
    var pss: Int
    var uss: Int
}

let readTable = RPCFunction<Int, Report>("read-table")

@main struct SharedTable {
    static func main() async throws {
        ForkTemplate.bootstrap([
            .initializer("load-table") { arguments in
                let megabytes = Int(String(decoding: arguments.first ?? [], as: UTF8.self)) ?? 256
                table = (0..<(megabytes << 17)).map { UInt64($0) &* 2_654_435_761 }
            },
            .rpcWorker("table-reader") { server in
                server.register(readTable) { _ in
                    let checksum = table.reduce(0, &+)
                    let memory = Self.memory()
                    return Report(pid: getpid(), checksum: checksum, rss: memory["Rss"] ?? 0, pss: memory["Pss"] ?? 0,
                                  uss: (memory["Private_Clean"] ?? 0) + (memory["Private_Dirty"] ?? 0))
                }
            },
        ])

        let megabytes = CommandLine.arguments.dropFirst().first.flatMap(Int.init) ?? 256
        let template = try await ForkTemplate.shared
        try await template.initialize("load-table", arguments: ["\(megabytes)"])
        print("template \(template.pid) loaded a table of \(megabytes) MB once")

        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 4
        configuration.idleWorkers = 4
        configuration.load = 1
        let reports = try await withWorkerPool(template: template, running: "table-reader", configuration: configuration) { pool in
            try await withThrowingTaskGroup(of: Report.self) { group in
                for _ in 0..<4 { group.addTask { try await pool.call(readTable, 0) } }
                var reports: [Report] = []
                for try await report in group { reports.append(report) }
                return reports.sorted { $0.pid < $1.pid }
            }
        }
        print("worker      RSS MB   PSS MB   USS MB   checksum")
        for report in reports {
            print(String(format: "%6d   %7.1f  %7.1f  %7.1f   %016llx",
                         report.pid, Double(report.rss) / 1024, Double(report.pss) / 1024, Double(report.uss) / 1024, report.checksum))
        }
        let agree = Set(reports.map(\.checksum)).count == 1
        let ussTotal = reports.map(\.uss).reduce(0, +) / 1024
        print("all four read the same table: \(agree); the four workers hold \(ussTotal) MB of their own, "
              + "against \(4 * megabytes) MB for four private copies")
        if !agree { throw CocoaError(.featureUnsupported) }
    }

    /// The fields of /proc/self/smaps_rollup, in kilobytes.
    static func memory() -> [String: Int] {
        let text = (try? String(contentsOfFile: "/proc/self/smaps_rollup", encoding: .utf8)) ?? ""
        var fields: [String: Int] = [:]
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: " ", omittingEmptySubsequences: true)
            if parts.count >= 2, parts[0].hasSuffix(":"), let value = Int(parts[1]) { fields[String(parts[0].dropLast())] = value }
        }
        return fields
    }
}
