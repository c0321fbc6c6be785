// forkkit-plugin-host: loads a plugin (Examples/Plugin/Library, built by the package as
// libForkKitWordCountPlugin.so next to this program) into a template, then forks a worker that
// runs the function the plugin brought, and calls it.
import ForkKit
import ForkRPC
import Foundation

@main struct PluginHost {
    static func main() async throws {
        ForkTemplate.bootstrap([])  // this program registers nothing itself; the plugin does
        let directory = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().deletingLastPathComponent()
        let plugin = directory.appendingPathComponent("libForkKitWordCountPlugin.so").path

        let template = try await ForkTemplate.shared
        try await template.loadPlugin(at: plugin)
        print("template \(template.pid) loaded \(plugin)")
        let worker = try await RPCClient.start(template, running: "word-count")
        let words = try await worker.call(RPCFunction<String, Int>("count-words"), "the quick brown fox jumps over the lazy dog")
        print("the plugin's count-words, in worker \(worker.pid.map(String.init) ?? "?"): \(words) words")
        print("worker ended: \(try await worker.close().map(String.init(describing:)) ?? "?")")
    }
}
