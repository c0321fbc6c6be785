// A plugin: a dynamic library (libForkKitWordCountPlugin.so) that a template loads with dlopen,
// as Perl's `require "Module"` loads code into an AnyEvent::Fork template. Its entry point registers
// an RPC worker that children forked afterwards can run.
import ForkKit
import ForkRPC

@_cdecl("forkkit_plugin_register")
public func registerWordCountPlugin(_ registrar: UnsafeMutableRawPointer) {
    ForkPlugin.register([
        .rpcWorker("word-count") { server in
            server.register(RPCFunction<String, Int>("count-words")) { text in
                text.split(whereSeparator: { $0.isWhitespace }).count
            }
        },
    ], with: registrar)
}
