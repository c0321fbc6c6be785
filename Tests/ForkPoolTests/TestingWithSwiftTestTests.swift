// How a user tests their own pool code with `swift test`: public API only (no test-support helpers),
// as the README and "Getting started" show it.
import ForkPool
import Testing

@Suite("Testing pool code with swift test (public API only)")
struct TestingWithSwiftTestTests {
    @Test("withWorkerPool(executable:) runs an executable product of the package, found next to the test runner")
    func poolFromExecutableProduct() async throws {
        let square = RPCFunction<Int, Int>("square")
        let total = try await withWorkerPool(executable: try ForkTemplate.executable(named: "forkkit-test-worker"), running: "pool-worker") { pool in
            try await pool.map(square, 1...100).reduce(0, +)
        }
        #expect(total == 338_350)
    }

    @Test("ForkTemplate.shared in a test runner fails at once, saying how to test instead")
    func sharedTemplateInTestRunnerExplains() async throws {
        let error = await #expect(throws: ForkError.self) { _ = try await ForkTemplate.shared }
        #expect(error?.kind == .notATemplate)
        #expect(error?.message.contains("ForkTemplate.executable(named:") == true, "\(String(describing: error))")
    }

    @Test("a missing executable product is named, with what to do")
    func missingExecutableProduct() throws {
        let error = #expect(throws: ForkError.self) { _ = try ForkTemplate.executable(named: "no-such-tool") }
        #expect(error?.message.contains("no executable named 'no-such-tool'") == true)
        #expect(error?.message.contains("swift build") == true)
    }
}
