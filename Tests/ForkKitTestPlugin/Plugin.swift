// A plugin that the tests load into a template with `dlopen`.
import ForkKit

@_cdecl("forkkit_plugin_register")
public func registerPlugin(_ registrar: UnsafeMutableRawPointer) {
    ForkPlugin.register([
        .function("plugin-greet") { child in
            try child.socket.writeAll(Array("hello from the plugin, \(child.argument(0) ?? "nobody")".utf8))
        },
        .initializer("plugin-fail") { _ in
            throw PluginFailure()
        },
    ], with: registrar)
}

struct PluginFailure: Error, CustomStringConvertible {
    var description: String { "the plugin's initializer refused" }
}
