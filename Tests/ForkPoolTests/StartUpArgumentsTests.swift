import ForkKitTestSupport
import ForkPool
import Testing

/// Each worker's start-up arguments reach its set-up (`rpcWorker { server, child in }`), from
/// `RPCClient.start(arguments:)` and from a pool's configuration, on both backends. This file
/// imports ForkPool alone: `PassedDescriptor`'s `FileDescriptor` and `MessagePackValue` come with it.
@Suite("Start-up arguments reach each worker's set-up", .noZombieChildren)
struct StartUpArgumentsTests {
    let arguments = RPCFunction<Int, [String]>("arguments")

    @Test("RPCClient.start(arguments:) reaches a synchronous and an asynchronous worker's set-up", arguments: ["rpc-arguments", "async-arguments"])
    func client(function: String) async throws {
        let worker = try await RPCClient.start(try await workerTemplate(), running: function, arguments: [Array("de".utf8), Array("7".utf8)])
        #expect(try await worker.call(arguments, 0) == ["de", "7"])
        _ = try await worker.close()
    }

    @Test("a pool's configured arguments reach every worker's set-up")
    func pool() async throws {
        var configuration = WorkerPool.Configuration()
        configuration.maximumWorkers = 2
        configuration.metricsPrefix = nil
        configuration.arguments = [Array("fr".utf8)]
        let pool = try await WorkerPool(template: try await workerTemplate(), running: "rpc-arguments", configuration: configuration)
        let answers = try await pool.map(arguments, 0..<20)
        #expect(answers.allSatisfy { $0 == ["fr"] })
        await pool.shutdown()
    }

    @Test("the re-exported types are usable without importing their modules")
    func reExports() {
        let value: MessagePackValue = ["ok", 1]
        let descriptor = FileDescriptor.standardInput
        #expect(value.arrayValue?.count == 2 && descriptor.rawValue == 0)
    }
}
