#!/usr/bin/env python3
"""A real gRPC server and client (grpcio, `pip install grpcio`), without
generated code: methods are registered by name with identity (bytes)
serializers.

    grpc_peer.py serve                      prints `listening PORT`, serves
                                            until killed or stdin closes
    grpc_peer.py client ADDR [CA NAME]      runs every check against ADDR
                                            (over TLS trusting CA, for
                                            server name NAME, when given)
                                            and prints one JSON object
    grpc_peer.py cancel ADDR ID             calls Endless with ID, cancels
                                            after 2 messages, prints JSON

Service `test.Echo`:
  Unary         answers the request back
  Metadata      answers the client's metadata as JSON
  ServerStream  request `N`: answers N messages `msg-0` .. `msg-(N-1)`
  ClientStream  answers `count=N bytes=B` for the messages it got
  Bidi          answers every message with `echo:` + message, as it comes
  Fail          sets trailing metadata, then fails with NOT_FOUND "nope"
  Endless       request `ID`: answers `tick-0`, `tick-1`, ... every 20 ms
                for 20 s; when the call ends, the server prints
                `ended ID finished=BOOL active=BOOL sent=N` on stdout
                (finished=False: it ended before the last tick, cancelled)
"""

import json
import sys
import threading
from concurrent import futures

import grpc

SERVICE = "test.Echo"
DEADLINE = 10.0


def unary(request, context):
    return request


def metadata(request, context):
    got = {}
    for key, value in context.invocation_metadata():
        if isinstance(value, bytes):
            value = value.hex()
        got[key] = value
    return json.dumps(got).encode()


def server_stream(request, context):
    for i in range(int(request.decode())):
        yield b"msg-%d" % i


def client_stream(request_iterator, context):
    count = 0
    size = 0
    for message in request_iterator:
        count += 1
        size += len(message)
    return b"count=%d bytes=%d" % (count, size)


def bidi(request_iterator, context):
    for message in request_iterator:
        yield b"echo:" + message


def fail(request, context):
    context.set_trailing_metadata(
        (
            ("x-trailer", "kept"),
            ("x-detail-bin", b"\x00\x01\xfe\xff"),
        )
    )
    context.abort(grpc.StatusCode.NOT_FOUND, "nope")


def endless(request, context):
    call_id = request.decode()
    ended = threading.Event()
    state = {"sent": 0, "finished": False}

    def on_end():
        # Runs when the RPC terminates: by cancellation (the client's
        # RST_STREAM reached this server) or after the last tick.
        print(
            "ended %s finished=%s active=%s sent=%d"
            % (call_id, state["finished"], context.is_active(), state["sent"]),
            flush=True,
        )
        ended.set()

    context.add_callback(on_end)
    for i in range(1000):
        yield b"tick-%d" % i
        state["sent"] = i + 1
        # The pace of the stream; a cancellation ends the wait at once.
        if ended.wait(0.02):
            return
    state["finished"] = True


def serve():
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Metadata": grpc.unary_unary_rpc_method_handler(metadata),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "Endless": grpc.unary_stream_rpc_method_handler(endless),
    }
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        handlers=[grpc.method_handlers_generic_handler(SERVICE, handlers)],
        options=[
            ("grpc.max_receive_message_length", 16 << 20),
            ("grpc.max_send_message_length", 16 << 20),
        ],
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print("listening %d" % port, flush=True)
    # Serve until stdin closes (the test's end) or the process is killed.
    threading.Thread(target=lambda: (sys.stdin.read(), server.stop(0)), daemon=True).start()
    server.wait_for_termination()


def method(channel, kind, name):
    path = "/%s/%s" % (SERVICE, name)
    return getattr(channel, kind)(path, request_serializer=None, response_deserializer=None)


def check(results, name, f):
    """Runs one check; an exception becomes its result, so that one broken
    call does not hide the others."""
    try:
        results[name] = f()
    except grpc.RpcError as e:
        results[name] = {"error": str(e.code()), "details": e.details()}
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        results[name] = {"error": repr(e)}


def client(addr, ca=None, name=None):
    options = [
        ("grpc.max_receive_message_length", 16 << 20),
        ("grpc.max_send_message_length", 16 << 20),
        # One connection, no proxy from the environment.
        ("grpc.enable_http_proxy", 0),
    ]
    if ca:
        with open(ca, "rb") as f:
            creds = grpc.ssl_channel_credentials(root_certificates=f.read())
        options.append(("grpc.ssl_target_name_override", name))
        channel = grpc.secure_channel(addr, creds, options=options)
    else:
        channel = grpc.insecure_channel(addr, options=options)
    grpc.channel_ready_future(channel).result(timeout=DEADLINE)
    results = {}

    check(
        results,
        "unary",
        lambda: method(channel, "unary_unary", "Unary")(b"hello grpc", timeout=DEADLINE).decode(),
    )

    big = bytes(range(256)) * (4 << 10)  # 1 MiB

    def big_unary():
        got = method(channel, "unary_unary", "Unary")(big, timeout=DEADLINE)
        return {"len": len(got), "same": got == big}

    check(results, "big_unary", big_unary)

    def meta():
        got = method(channel, "unary_unary", "Metadata")(
            b"",
            timeout=DEADLINE,
            metadata=(("x-client-meta", "from-client"), ("x-client-bin", b"\x01\x02")),
        )
        return json.loads(got)

    check(results, "metadata", meta)

    check(
        results,
        "server_stream",
        lambda: [m.decode() for m in method(channel, "unary_stream", "ServerStream")(b"25", timeout=DEADLINE)],
    )

    check(
        results,
        "client_stream",
        lambda: method(channel, "stream_unary", "ClientStream")(
            iter([b"x" * i for i in range(1, 41)]), timeout=DEADLINE
        ).decode(),
    )

    def bidi_check():
        # Each answer is read before the next message is sent: the messages
        # cross the gateway one at a time, both ways, on one open stream.
        outbox = []
        ready = threading.Semaphore(0)

        def requests():
            for i in range(10):
                ready.acquire()
                msg = b"ping-%d" % i
                outbox.append(msg.decode())
                yield msg

        call = method(channel, "stream_stream", "Bidi")(requests(), timeout=DEADLINE)
        got = []
        ready.release()
        for answer in call:
            got.append(answer.decode())
            ready.release()
        return {"sent": outbox, "got": got}

    check(results, "bidi", bidi_check)

    def failing():
        try:
            method(channel, "unary_unary", "Fail")(b"x", timeout=DEADLINE)
        except grpc.RpcError as e:
            trailing = {}
            for key, value in e.trailing_metadata() or ():
                trailing[key] = value.hex() if isinstance(value, bytes) else value
            return {"code": e.code().name, "details": e.details(), "trailing": trailing}
        return {"code": "OK"}

    check(results, "fail", failing)

    def unknown():
        try:
            method(channel, "unary_unary", "NoSuchMethod")(b"x", timeout=DEADLINE)
        except grpc.RpcError as e:
            return {"code": e.code().name}
        return {"code": "OK"}

    check(results, "unimplemented", unknown)
    channel.close()
    print(json.dumps(results), flush=True)


def cancel(addr, call_id):
    """Starts Endless, reads two messages, cancels the call: the client
    sends RST_STREAM(CANCEL)."""
    channel = grpc.insecure_channel(addr, options=[("grpc.enable_http_proxy", 0)])
    grpc.channel_ready_future(channel).result(timeout=DEADLINE)
    call = method(channel, "unary_stream", "Endless")(call_id.encode(), timeout=30.0)
    received = [next(call).decode(), next(call).decode()]
    call.cancel()
    try:
        for _ in call:
            pass
        code = "OK"
    except grpc.RpcError as e:
        code = e.code().name
    channel.close()
    print(json.dumps({"received": received, "code": code}), flush=True)


def main():
    if sys.argv[1] == "serve":
        serve()
    elif sys.argv[1] == "cancel":
        cancel(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "client":
        if len(sys.argv) > 3:
            client(sys.argv[2], sys.argv[3], sys.argv[4])
        else:
            client(sys.argv[2])
    else:
        raise SystemExit("usage: grpc_peer.py serve | client ADDR [CA NAME] | cancel ADDR ID")


if __name__ == "__main__":
    main()
