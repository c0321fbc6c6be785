import CForkSupport
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Registers a plugin's entry points with the template that loads it.
///
/// A plugin is a SwiftPM dynamic library (`.library(type: .dynamic)`) that exports one C symbol:
///
/// ```swift
/// import ForkKit
///
/// @_cdecl("forkkit_plugin_register")
/// public func registerPlugin(_ registrar: UnsafeMutableRawPointer) {
///     ForkPlugin.register([
///         .function("plugin-hello") { child in try child.socket.writeAll(Array("hi\n".utf8)) },
///     ], with: registrar)
/// }
/// ```
///
/// The library carries its own copy of ForkKit, so entry points cross into the host through a small
/// C interface (`forkkit_registrar` in CForkSupport) rather than through Swift types. The host must
/// use the shared Swift runtime (not `-static-stdlib`), as the plugin does.
public enum ForkPlugin {
    /// Hands `entries` to the loading template; call it from `forkkit_plugin_register`.
    public static func register(_ entries: [ForkEntryPoint], with registrar: UnsafeMutableRawPointer) {
        let registrar = registrar.assumingMemoryBound(to: forkkit_registrar.self)
        for entry in entries {
            let kind: Int32
            switch entry.body {
            case .function: kind = Int32(FORKKIT_KIND_FUNCTION)
            case .initializer: kind = Int32(FORKKIT_KIND_INITIALIZER)
            }
            // Plugins stay loaded for the life of the process, so the box is never released.
            let context = Unmanaged.passRetained(EntryBox(entry)).toOpaque()
            entry.name.withCString { name in
                registrar.pointee.add(registrar.pointee.host, name, kind, invokeBoxedEntry, context)
            }
        }
    }

    /// Wraps a plugin's C entry point as an entry point of the host.
    static func hostEntry(name: String, kind: Int32, invoke: forkkit_invoke, context: UnsafeMutableRawPointer?) -> ForkEntryPoint {
        // The plugin's box lives as long as the process; carry its address as a plain number.
        let contextAddress = UInt(bitPattern: context)
        @Sendable func call(input: Int32, output: Int32, arguments: [[UInt8]], descriptors: [Int32]) throws {
            var error = [CChar](repeating: 0, count: 4096)
            let status = withCallRecord(input: input, output: output, arguments: arguments, descriptors: descriptors) { record in
                invoke(UnsafeMutableRawPointer(bitPattern: contextAddress), record, &error, error.count)
            }
            if status != 0 {
                let text = error.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }
                throw PluginError(message: String(decoding: text, as: UTF8.self))
            }
        }
        if kind == Int32(FORKKIT_KIND_INITIALIZER) {
            return .initializer(name) { arguments in try call(input: -1, output: -1, arguments: arguments, descriptors: []) }
        }
        return .function(name) { child in
            try call(
                input: child.input.rawValue, output: child.output.rawValue, arguments: child.arguments,
                descriptors: child.descriptors.map(\.rawValue))
        }
    }

    private final class EntryBox {
        let entry: ForkEntryPoint
        init(_ entry: ForkEntryPoint) { self.entry = entry }
    }

    private struct PluginError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    /// The C side of a boxed entry: rebuilds Swift values from the call record and runs the entry.
    private static let invokeBoxedEntry: forkkit_invoke = { context, record, errorBuffer, capacity in
        guard let context, let record, let errorBuffer else { return -1 }
        let entry = Unmanaged<EntryBox>.fromOpaque(context).takeUnretainedValue().entry
        let call = record.pointee
        let arguments = (0..<call.argument_count).map { index in
            Array(UnsafeBufferPointer(start: call.arguments[index], count: call.argument_lengths[index]))
        }
        let descriptors = (0..<call.descriptor_count).map { FileDescriptor(rawValue: call.descriptors[$0]) }
        do {
            switch entry.body {
            case .function(let body):
                try body(ChildContext(
                    input: FileDescriptor(rawValue: call.socket), output: FileDescriptor(rawValue: call.output),
                    arguments: arguments, descriptors: descriptors))
            case .initializer(let body):
                try body(arguments)
            }
            return 0
        } catch {
            _ = "\(error)".withCString { strncpy(errorBuffer, $0, capacity - 1) }
            errorBuffer[capacity - 1] = 0
            return 1
        }
    }

    private static func withCallRecord<R>(
        input: Int32, output: Int32, arguments: [[UInt8]], descriptors: [Int32], _ body: (UnsafePointer<forkkit_call>) -> R
    ) -> R {
        let copies = arguments.map { bytes -> UnsafeMutablePointer<UInt8> in
            let copy = UnsafeMutablePointer<UInt8>.allocate(capacity: max(bytes.count, 1))
            copy.initialize(from: bytes, count: bytes.count)
            return copy
        }
        defer { copies.forEach { $0.deallocate() } }
        let pointers: [UnsafePointer<UInt8>?] = copies.map { UnsafePointer($0) }
        let lengths = arguments.map(\.count)
        return pointers.withUnsafeBufferPointer { pointers in
            lengths.withUnsafeBufferPointer { lengths in
                descriptors.withUnsafeBufferPointer { descriptors in
                    var record = forkkit_call(
                        socket: input, arguments: pointers.baseAddress, argument_lengths: lengths.baseAddress,
                        argument_count: arguments.count, descriptors: descriptors.baseAddress,
                        descriptor_count: descriptors.count, output: output)
                    return body(&record)
                }
            }
        }
    }
}
