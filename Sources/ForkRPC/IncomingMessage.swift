import MessagePack
import SystemPackage

/// A message as a worker reads it. A request's params are decoded while the message is read, in
/// place (the unpacked view lasts only that long), into `Call`: what the server will run.
enum IncomingMessage<Call> {
    case request(id: UInt32, call: Call)
    /// `$cancel` of request `id`.
    case cancel(id: UInt32)
    /// `$context`: the caller's trace context for request `id`, which comes next.
    case context(id: UInt32, carrier: [String: String])
    /// `$limits`: the largest message either side may send from now on.
    case limits(maximumMessageSize: Int)
    /// The owner's answer to a request the worker sent (`RPCServer.call`).
    case response(id: UInt32, error: MessagePackValue, result: MessagePackValue)
    /// Another notification: the worker has nothing to do with it.
    case ignored

    /// Reads one message. `prepare` decodes a request's params into its call. Descriptors that
    /// arrived with the message are put in place of its markers first (a rare path, through a
    /// value tree). Anything that is not MessagePack-RPC throws, as ``RPCMessage`` does.
    init(
        _ message: MessagePackObject, received: inout [FileDescriptor],
        prepare: (_ method: String, _ params: MessagePackObject) -> Call
    ) throws {
        if received.isEmpty, message.count == 4, message[0].integerValue == 0,
           let id = message[1].integerValue.flatMap(UInt32.init(exactly:)), let method = message[2].stringValue, message[3].count != nil {
            self = .request(id: id, call: prepare(method, message[3]))
            return
        }
        let value = try PassedDescriptor.substitute(try message.value(), from: &received)
        switch try RPCMessage(value) {
        case .request(let id, let method, let params):
            let call = try MessagePackObject.withObject(in: MessagePackValue.array(params).encoded()) { prepare(method, $0) }
            self = .request(id: id, call: call)
        case .notification(RPCMessage.cancelMethod, let params):
            self = params.first?.integerValue.flatMap(UInt32.init(exactly:)).map { .cancel(id: $0) } ?? .ignored
        case .notification(RPCMessage.contextMethod, let params):
            guard params.count == 2, let id = params[0].integerValue.flatMap(UInt32.init(exactly:)),
                  let carrier = CallTrace.carrier(from: params[1]), !carrier.isEmpty else {
                self = .ignored
                return
            }
            self = .context(id: id, carrier: carrier)
        case .notification(RPCMessage.limitsMethod, let params):
            self = params.first?.integerValue.flatMap { $0 > 0 ? .limits(maximumMessageSize: $0) : nil } ?? .ignored
        case .response(let id, let error, let result):
            self = .response(id: id, error: error, result: result)
        case .notification:
            self = .ignored
        }
    }
}
