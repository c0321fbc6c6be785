import MessagePack

/// One message of the control protocol between an owner and a template or a not-yet-running child
/// (see `protocol/README.md`). Every command is answered by exactly one reply, in order; `exited`
/// notices may come in between.
enum ControlMessage: Equatable, Sendable {
    // Owner → process.
    case load(path: String)
    case initialize(name: String, arguments: [[UInt8]])
    case arguments([[UInt8]])
    /// Announces `count` descriptors attached to this message as SCM_RIGHTS.
    case descriptors(count: Int)
    /// Carries the new child's socket as SCM_RIGHTS; `parentDeathSignal` 0 means none.
    case fork(parentDeathSignal: Int32)
    /// Forks a child that at once runs `function` with `arguments` and `descriptorCount` descriptors
    /// added; SCM_RIGHTS carries the child's socket, then those descriptors. Nothing travels on the
    /// child's socket before the function owns it. With `capturesOutput`, the two descriptors right
    /// after the socket become the child's standard output and standard error (an optional fifth
    /// operand, `true`, so the message is unchanged without capture).
    case forkRun(parentDeathSignal: Int32, function: String, arguments: [[UInt8]], descriptorCount: Int, capturesOutput: Bool = false)
    case run(name: String)
    /// Resource limits for the receiving process (and every child it forks afterwards).
    case limits(ResourceLimits)

    // Process → owner.
    case hello(version: Int, pid: Int32)
    case ok
    case forked(pid: Int32)
    case running(pid: Int32)
    case error(code: String, message: String)
    case exited(pid: Int32, status: ExitStatus)

    /// The protocol version a template announces in `hello`.
    static let version = 1

    var value: MessagePackValue {
        switch self {
        case .load(let path): ["load", .string(path)]
        case .initialize(let name, let arguments): ["initialize", .string(name), .array(arguments.map(MessagePackValue.binary))]
        case .arguments(let arguments): ["arguments", .array(arguments.map(MessagePackValue.binary))]
        case .descriptors(let count): ["descriptors", .uint(UInt64(count))]
        case .fork(let signal): ["fork", .int64(Int64(signal))]
        case .forkRun(let signal, let function, let arguments, let count, let capturesOutput):
            .array(["fork-run", .int64(Int64(signal)), .string(function), .array(arguments.map(MessagePackValue.binary)), .uint(UInt64(count))]
                + (capturesOutput ? [true] : []))
        case .run(let name): ["run", .string(name)]
        case .limits(let limits):
            .array([.string("limits")] + [limits.addressSpaceBytes, limits.cpuSeconds, limits.openFiles, limits.niceness].map { .int64(Int64($0 ?? -1)) })
        case .hello(let version, let pid): ["hello", .int64(Int64(version)), .int64(Int64(pid))]
        case .ok: ["ok"]
        case .forked(let pid): ["forked", .int64(Int64(pid))]
        case .running(let pid): ["running", .int64(Int64(pid))]
        case .error(let code, let message): ["error", .string(code), .string(message)]
        case .exited(let pid, let status):
            switch status {
            case .exited(let code): ["exited", .int64(Int64(pid)), .int64(Int64(code)), 0]
            case .signaled(let signal): ["exited", .int64(Int64(pid)), .int64(-1), .int64(Int64(signal))]
            }
        }
    }

    /// The message's bytes on the wire.
    var encoded: [UInt8] { value.encoded() }

    /// Reads a message, or explains in one sentence why the value is not one.
    init(_ value: MessagePackValue) throws(ControlProtocolError) {
        guard case .array(let fields) = value, let command = fields.first?.stringValue else {
            throw ControlProtocolError("expected an array whose first element is a command name, got \(value.typeName)")
        }
        let operands = Array(fields.dropFirst())
        func expect(_ count: Int) throws(ControlProtocolError) {
            guard operands.count == count else {
                throw ControlProtocolError("'\(command)' takes \(count) operand(s), got \(operands.count)")
            }
        }
        func string(_ index: Int) throws(ControlProtocolError) -> String {
            guard let text = operands[index].stringValue else {
                throw ControlProtocolError("operand \(index + 1) of '\(command)' must be a string, got \(operands[index].typeName)")
            }
            return text
        }
        func integer(_ index: Int) throws(ControlProtocolError) -> Int {
            guard let number = operands[index].integerValue else {
                throw ControlProtocolError("operand \(index + 1) of '\(command)' must be an integer, got \(operands[index].typeName)")
            }
            return number
        }
        func pid(_ index: Int) throws(ControlProtocolError) -> Int32 {
            guard let pid = Int32(exactly: try integer(index)), pid > 0 else {
                throw ControlProtocolError("operand \(index + 1) of '\(command)' is not a process id")
            }
            return pid
        }
        func signal(_ index: Int) throws(ControlProtocolError) -> Int32 {
            guard let signal = Int32(exactly: try integer(index)), (0..<65).contains(signal) else {
                throw ControlProtocolError("'\(command)' names an invalid parent-death signal")
            }
            return signal
        }
        func byteStrings(_ index: Int) throws(ControlProtocolError) -> [[UInt8]] {
            guard case .array(let elements) = operands[index] else {
                throw ControlProtocolError("operand \(index + 1) of '\(command)' must be an array of byte strings")
            }
            var result: [[UInt8]] = []
            for element in elements {
                guard let bytes = element.bytesValue else {
                    throw ControlProtocolError("'\(command)' arguments must be binary or string, got \(element.typeName)")
                }
                result.append(bytes)
            }
            return result
        }

        switch command {
        case "load": try expect(1); self = .load(path: try string(0))
        case "initialize": try expect(2); self = .initialize(name: try string(0), arguments: try byteStrings(1))
        case "arguments": try expect(1); self = .arguments(try byteStrings(0))
        case "descriptors":
            try expect(1)
            let count = try integer(0)
            guard (1...253).contains(count) else {
                throw ControlProtocolError("'descriptors' announces \(count) descriptors; 1 to 253 may travel in one message")
            }
            self = .descriptors(count: count)
        case "fork":
            try expect(1)
            self = .fork(parentDeathSignal: try signal(0))
        case "fork-run":
            let capturesOutput = operands.count == 5
            if capturesOutput {
                guard operands[4] == true else {
                    throw ControlProtocolError("operand 5 of 'fork-run' (capture output) must be true or absent, got \(operands[4])")
                }
            } else {
                try expect(4)
            }
            let count = try integer(3)
            let most = capturesOutput ? 250 : 252
            guard (0...most).contains(count) else {
                throw ControlProtocolError(
                    "'fork-run' announces \(count) descriptors; 0 to \(most) may travel with the child's socket"
                        + (capturesOutput ? " and its two output pipes" : ""))
            }
            self = .forkRun(
                parentDeathSignal: try signal(0), function: try string(1), arguments: try byteStrings(2), descriptorCount: count,
                capturesOutput: capturesOutput)
        case "run": try expect(1); self = .run(name: try string(0))
        case "limits":
            try expect(4)
            // -1 leaves a limit as it is (so a nice value of -1 cannot be asked for this way).
            func optional(_ index: Int) throws(ControlProtocolError) -> Int? {
                let value = try integer(index)
                guard value >= -1 || index == 3 else {
                    throw ControlProtocolError("operand \(index + 1) of 'limits' must be -1 (unchanged) or a limit, got \(value)")
                }
                return value == -1 ? nil : value
            }
            self = .limits(ResourceLimits(addressSpaceBytes: try optional(0), cpuSeconds: try optional(1), openFiles: try optional(2), niceness: try optional(3)))
        case "hello": try expect(2); self = .hello(version: try integer(0), pid: try pid(1))
        case "ok": try expect(0); self = .ok
        case "forked": try expect(1); self = .forked(pid: try pid(0))
        case "running": try expect(1); self = .running(pid: try pid(0))
        case "error": try expect(2); self = .error(code: try string(0), message: try string(1))
        case "exited":
            try expect(3)
            let code = try integer(1), signal = try integer(2)
            let status: ExitStatus = signal != 0 ? .signaled(Int32(clamping: signal)) : .exited(Int32(clamping: code))
            self = .exited(pid: try pid(0), status: status)
        default:
            throw ControlProtocolError("unknown command '\(command)'")
        }
    }
}

/// A control message that breaks the protocol; the connection that carried it is closed.
struct ControlProtocolError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The control protocol's reader, for the fuzz harness (which lives outside this module).
package enum ControlMessageReader {
    /// Reads one control message from `value` and writes it back: throws where a template would
    /// refuse the message.
    package static func roundTrip(_ value: MessagePackValue) throws -> [UInt8] {
        try ControlMessage(value).encoded
    }
}
