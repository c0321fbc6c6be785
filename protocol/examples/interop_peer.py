#!/usr/bin/env python3
"""A MessagePack-RPC peer built on an implementation nobody in ForkKit wrote: the generic
msgpack_rpc layer of pynvim (PyPI `pynvim`, tested with 0.6.0; its Nvim API is not used). The
Swift interop tests run it to check that ForkKit and an independent implementation agree on
requests in both directions, notifications and errors. Its own traffic is MessagePack-RPC on
standard input and output; everything else goes to standard error.

    python3 interop_peer.py serve
        A server on stdin (requests in) and stdout (responses out), for a Swift owner. Methods:
        add(a, b) -> a + b; greet() -> "hello"; concat(a, b, c) -> a + b + c; fail(message) raises
        RuntimeError(message); ask_owner(x) requests `double` [x] from the owner and returns the
        answer + 1; ask_unknown() requests `no_such_method` [] and returns str() of the error it
        got; notify_owner(n) sends the notifications `tick` [0] ... `tick` [n-1], then returns n;
        peer_error() requests `owner_fails` [] and returns str() of the error it got. Anything else
        is answered with the library's error for an exception (below). Exits 0 at end of input.

    python3 interop_peer.py client REPORT_PATH
        A client of a ForkKit worker on descriptors 0 and 1 (one Unix socket). Calls, in order,
        square [7], add3 [1, 2, 3], explode [], nothing_here [], callback [20, 22] (during which it
        serves the worker's `owner_add` [20, 22] with the sum) and progress [3] (collecting the
        `step` notifications), answers any other request with the library's error, and writes a
        JSON report to REPORT_PATH (atomically, by rename):
            {"library": "pynvim 0.6.0", "square": 49, "add3": 6,
             "explode_error": ..., "explode_error_wire": ...,
             "nothing_here_error": ..., "nothing_here_error_wire": ...,
             "callback": 42, "progress": 3, "steps": [[0], [1], [2]],
             "served": [["owner_add", [20, 22]]]}
        A call that failed where a value was expected records the exception's string instead;
        `*_error` is what the library exposes (str() of the exception it raises) and `*_error_wire`
        the error object as it came on the wire. A call not answered within 10 s records
        "TimeoutError: no answer to 'explode' within 10 s" and the later ones, never made, "not
        called: an earlier call timed out"; when the worker hangs up, the calls left record "not
        answered: EOFError: connection_lost". Then it closes its end of the socket and exits 0
        (1 only for a bug in this script).

Errors on the wire, as pynvim makes and reads them:
  - An exception raised by a served method travels as a str (never a [code, message] array):
    repr(exception) + "\\n" + traceback.format_exc(5), e.g. for fail("boom")
        [1, msgid, "RuntimeError('boom')\\nTraceback (most recent call last):\\n  File \\".../pynvim/
        msgpack_rpc/session.py\\", line N, in handler\\n    rv = self._request_cb(name, args)\\n ...
        RuntimeError: boom\\n", nil]
    The same str form answers an unknown method here (a LookupError).
  - An error that arrives is read as [code, message]: Session.request raises Exception(error[1]),
    so ForkKit's ["Type", "message"] or ["Type", "message", {details}] surfaces as
    Exception("message") (type and details dropped); a str error would surface as its second
    character, a non-indexable error as the TypeError or IndexError of indexing it, and a falsy
    error (nil, false, 0, "", []) counts as success.
  - A response whose msgid it never sent is answered with an unsolicited [1, 0, "Traceback (most
    recent call last): ... KeyError: <msgid>\\n", nil]; a message whose type is not 0, 1 or 2 with
    [1, 0, "Received invalid message [...]", nil]. Its own msgids count up from 1.

How it is wired: pynvim's classes are assembled by hand (pynvim.msgpack_rpc.session() would first
send an `nvim_set_client_info` notification). Requests are issued from greenlets while
Session.run serves, so the peer's requests are served while one of ours is pending (a request
made outside run() only queues the peer's requests until its answer, which deadlocks a callback).
pynvim's stdio transport cannot use one socket as both descriptors: asyncio's write-pipe
transport takes readable data on its descriptor for the peer hanging up and closes itself at the
peer's second message. So when descriptors 0 and 1 are one socket, this script gives pynvim's
event loop an ordinary socket transport on it instead; pipes use pynvim's stdio transport. Each
request this script makes times out after 10 s (TimeoutError), so a broken peer cannot hang a
test; the client makes no further call after one timed out (a late answer could reach a later one).
"""
import asyncio
import importlib.metadata
import json
import os
import socket
import stat
import sys
import traceback

import greenlet
from pynvim.msgpack_rpc import AsyncSession, MsgpackStream, Session
from pynvim.msgpack_rpc.event_loop import EventLoop

CALL_TIMEOUT = 10.0
FLUSH_TIMEOUT = 5.0
LIBRARY = "pynvim " + importlib.metadata.version("pynvim")


def log(message):
    print("interop_peer[%d]: %s" % (os.getpid(), message), file=sys.stderr, flush=True)


def stdio_is_one_socket():
    """Whether descriptors 0 and 1 are the same socket (a ForkKit worker's connection)."""
    inp, out = os.fstat(0), os.fstat(1)
    return stat.S_ISSOCK(inp.st_mode) and (inp.st_dev, inp.st_ino) == (out.st_dev, out.st_ino)


class StdioEventLoop(EventLoop):
    """pynvim's asyncio event loop, with a transport for one socket on descriptors 0 and 1."""

    def _connect_stdsocket(self):
        sock = socket.socket(fileno=os.dup(0))
        # Only the transport holds the socket now: closing it ends the stream for the peer, and a
        # stray print cannot corrupt it (pynvim's stdio transport moves descriptor 1 the same way).
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.dup2(2, 1)

        async def connect():
            self._transport, self._protocol = await self._loop.connect_accepted_socket(
                self._protocol_factory, sock)

        self._loop.run_until_complete(connect())

    def call_later(self, delay, function):
        return self._loop.call_later(delay, function)

    def flush_and_close(self):
        """Sends what is still buffered (the loop no longer runs), then closes."""
        async def drained():
            waited = 0.0
            while self._transport is not None and self._transport.get_write_buffer_size() and waited < FLUSH_TIMEOUT:
                await asyncio.sleep(0.01)
                waited += 0.01

        try:
            self._loop.run_until_complete(drained())
        except Exception as error:  # the loop was stopped again: the connection is gone anyway
            log("while flushing: %r" % error)
        self.close()


class Peer:
    """One MessagePack-RPC connection on standard input and output."""

    def __init__(self):
        self.loop = StdioEventLoop("stdsocket" if stdio_is_one_socket() else "stdio")
        self.session = Session(AsyncSession(MsgpackStream(self.loop)))
        library_wrapper = self.session.error_wrapper

        def keep_wire(error):
            try:
                exception = library_wrapper(error)
            except Exception as failure:  # what Session.request raises for an error it cannot index
                exception = failure
            exception.wire = error
            return exception

        self.session.error_wrapper = keep_wire

    def request(self, method, *args):
        """Session.request from a handler greenlet, with a timeout. An error answer raises the
        library's exception, with the error object as it came in its `wire` attribute."""
        current = greenlet.getcurrent()
        timer = self.loop.call_later(CALL_TIMEOUT, lambda: current.throw(
            TimeoutError("no answer to %r within %g s" % (method, CALL_TIMEOUT))))
        try:
            return self.session.request(method, *args)
        finally:
            timer.cancel()

    def notify(self, method, *args):
        self.session.request(method, *args, async_=True)

    def run(self, on_request, on_notification, setup=None):
        """Serves until end of input (or until stopped); returns how it ended, None when stopped."""
        ending = None
        try:
            self.session.run(on_request, on_notification, setup)
        except (EOFError, OSError) as error:  # end of input, or the connection failed
            ending = error
        self.loop.flush_and_close()
        return ending


def serve():
    peer = Peer()

    def error_text(method):
        try:
            result = peer.request(method)
        except Exception as error:
            if not hasattr(error, "wire"):
                raise  # a timeout or a lost connection: the owner gets it as this call's error
            return str(error)
        raise RuntimeError("the owner answered %r with a result, %r, instead of an error" % (method, result))

    def fail(message):
        raise RuntimeError(message)

    def notify_owner(n):
        for i in range(n):
            peer.notify("tick", i)
        return n

    methods = {
        "add": lambda a, b: a + b,
        "greet": lambda: "hello",
        "concat": lambda a, b, c: a + b + c,
        "fail": fail,
        "ask_owner": lambda x: peer.request("double", x) + 1,
        "ask_unknown": lambda: error_text("no_such_method"),
        "notify_owner": notify_owner,
        "peer_error": lambda: error_text("owner_fails"),
    }

    def on_request(name, args):
        method = methods.get(name)
        if method is None:
            raise LookupError("no method named %r; this peer serves %s" % (name, ", ".join(sorted(methods))))
        return method(*args)

    def on_notification(name, args):
        log("notification %r %r" % (name, args))

    ending = peer.run(on_request, on_notification)
    if ending is not None and not isinstance(ending, EOFError):
        log("the connection failed: %r" % ending)
    return 0


def client(report_path):
    peer = Peer()
    report = {"library": LIBRARY}
    steps, served = [], []
    values = [("square", "square", [7]), ("add3", "add3", [1, 2, 3]),
              ("explode_error", "explode", []), ("nothing_here_error", "nothing_here", []),
              ("callback", "callback", [20, 22]), ("progress", "progress", [3])]

    def on_request(name, args):
        served.append([name, args])
        if name == "owner_add":
            return args[0] + args[1]
        raise LookupError("no method named %r; this client serves owner_add" % name)

    def on_notification(name, args):
        if name == "step":
            steps.append(args)
        else:
            log("notification %r %r" % (name, args))

    def calls():
        for key, method, params in values:
            try:
                result = peer.request(method, *params)
                report[key] = ("no error; result: %r" % (result,)) if key.endswith("_error") else result
            except Exception as error:
                if hasattr(error, "wire"):
                    report[key] = str(error)
                    if key.endswith("_error"):
                        report[key + "_wire"] = error.wire
                else:
                    report[key] = "%s: %s" % (type(error).__name__, error)
                if isinstance(error, TimeoutError):
                    break  # a late answer would be taken for the next call's
        peer.session.stop()

    ending = peer.run(on_request, on_notification, calls)
    for key, _, _ in values:
        if ending is None:
            report.setdefault(key, "not called: an earlier call timed out")
        else:
            report.setdefault(key, "not answered: %s: %s" % (type(ending).__name__, ending))
    report["steps"], report["served"] = steps, served
    partial = report_path + ".partial"
    with open(partial, "w") as out:
        json.dump(report, out, indent=1, default=repr)
    os.replace(partial, report_path)
    return 0


def main(argv):
    if len(argv) == 2 and argv[1] == "serve":
        return serve()
    if len(argv) == 3 and argv[1] == "client":
        return client(argv[2])
    print("usage: %s serve | client REPORT_PATH" % argv[0], file=sys.stderr)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Exception:
        traceback.print_exc()
        sys.exit(1)
