#!/usr/bin/env python3
"""A ForkRPC worker written in Python, from protocol/README.md alone: MessagePack-RPC on standard
input and output, with the msgpack package from PyPI (pip install msgpack).

Serves "square" (int -> int), "greet" (str -> str), "fail" (raises) and the $batch extension;
emits a "progress" event before answering "greet"; ends at end of input.
"""
import sys

import msgpack


def square(x):
    return x * x


def greet(name):
    return "hello, " + name


def fail(_):
    raise ValueError("deliberate failure in Python")


FUNCTIONS = {"square": square, "greet": greet, "fail": fail}


def call(method, params, write):
    """[error, result] for one call: error is [type, message] or nil."""
    function = FUNCTIONS.get(method)
    if function is None:
        return ["NoSuchMethod", "no function named '%s'; it serves: %s" % (method, ", ".join(sorted(FUNCTIONS)))], None
    if len(params) != 1:
        return ["InvalidArguments", "expects 1 argument, got %d" % len(params)], None
    try:
        if method == "greet":
            write([2, "progress", [1]])
        return None, function(params[0])
    except Exception as error:  # the error travels to the caller as [type, message]
        return [type(error).__name__, str(error)], None


def main():
    out = sys.stdout.buffer

    def write(message):
        out.write(msgpack.packb(message, use_bin_type=True))
        out.flush()

    unpacker = msgpack.Unpacker(raw=False)
    while True:
        data = sys.stdin.buffer.read1(65536)
        if not data:
            return
        unpacker.feed(data)
        for message in unpacker:
            if message[0] != 0:  # notifications ($cancel): nothing to cancel here
                continue
            _, msgid, method, params = message
            if method == "$batch":
                target, calls = params
                pairs = [list(call(target, call_params, write)) for call_params in calls]
                write([1, msgid, None, pairs])
            else:
                error, result = call(method, params, write)
                write([1, msgid, error, result])


if __name__ == "__main__":
    main()
