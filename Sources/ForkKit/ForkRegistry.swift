import CForkSupport
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// The entry points known to this process: those given to `bootstrap` and those added by plugins.
///
/// It is filled while the process is single-threaded (at start-up, or inside the template's serve
/// loop), and copied into every forked child with the rest of memory.
enum ForkRegistry {
    private static let entries = Mutex<[String: ForkEntryPoint]>([:])
    /// Names a plugin being loaded registered that were already taken.
    private static let pluginClashes = Mutex<[String]>([])

    /// Adds `newEntries`; returns the names that were already taken (by an earlier entry point or
    /// one of `newEntries`), which the new entry points then replace.
    @discardableResult
    static func register(_ newEntries: [ForkEntryPoint]) -> [String] {
        entries.withLock { table in
            var taken: [String] = []
            for entry in newEntries {
                if table[entry.name] != nil { taken.append(entry.name) }
                table[entry.name] = entry
            }
            return taken
        }
    }

    static func entry(named name: String) -> ForkEntryPoint? {
        entries.withLock { $0[name] }
    }

    static var names: [String] {
        entries.withLock { $0.keys.sorted() }
    }

    /// Loads a shared library and calls its `forkkit_plugin_register`, which adds its entry points.
    static func loadPlugin(at path: String) throws(ForkError) {
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown reason"
            throw ForkError(.pluginLoadFailed, "cannot load plugin \(path): \(reason)")
        }
        guard let symbol = dlsym(handle, FORKKIT_PLUGIN_ENTRY_SYMBOL) else {
            throw ForkError(
                .pluginLoadFailed,
                "plugin \(path) loaded but exports no \(FORKKIT_PLUGIN_ENTRY_SYMBOL); "
                    + "define it with @_cdecl(\"\(FORKKIT_PLUGIN_ENTRY_SYMBOL)\") and call ForkPlugin.register")
        }
        let entry = unsafeBitCast(symbol, to: forkkit_plugin_entry.self)
        var registrar = forkkit_registrar(host: nil, add: { _, name, kind, invoke, context in
            guard let name, let invoke else { return }
            let taken = ForkRegistry.register([ForkPlugin.hostEntry(name: String(cString: name), kind: kind, invoke: invoke, context: context)])
            ForkRegistry.pluginClashes.withLock { $0 += taken }
        })
        pluginClashes.withLock { $0 = [] }
        entry(&registrar)
        let clashes = pluginClashes.withLock { $0 }
        guard clashes.isEmpty else {
            throw ForkError(
                .pluginLoadFailed,
                "plugin \(path) registers \(clashes.map { "'\($0)'" }.joined(separator: ", ")), already registered in this process "
                    + "(by bootstrap or another plugin); the plugin's entry points replaced them. Give every entry point its own name")
        }
    }
}
