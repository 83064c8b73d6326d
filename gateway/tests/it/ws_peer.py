#!/usr/bin/env python3
"""A real WebSocket echo server and clients (`pip install websockets`).

    ws_peer.py serve             prints `listening PORT`; echoes every
                                 message; prints `closed CODE` when a
                                 connection ends
    ws_peer.py echo URL          text, binary and 1 MiB messages, then a
                                 client close; one JSON object
    ws_peer.py idle URL ACTIVE WAIT
                                 keeps the tunnel busy for ACTIVE seconds
                                 (a message every 0.3 s), then sends nothing
                                 and measures how long until it is closed
                                 (waiting at most WAIT seconds)

    ws_peer.py h2 HOST:PORT PATH
                                 WebSocket over HTTP/2 (RFC 8441) with
                                 hyper-h2: extended CONNECT, one masked
                                 text frame, its echo; one JSON object
    ws_peer.py serve-h2          prints `listening PORT`; an HTTP/2 server
                                 (hyper-h2, h2c) that offers extended
                                 CONNECT, answers a WebSocket CONNECT with
                                 200 and echoes each client frame unmasked;
                                 prints `connect PATH PROTOCOL KEY` for each
                                 (KEY: the sec-websocket-key seen, or -)

Keep-alive pings are off on both sides so that an idle tunnel is really
idle.
"""

import json
import logging
import sys
import threading
import time

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.sync.server import serve as ws_serve

DEADLINE = 10.0


def serve():
    logging.basicConfig(level=logging.CRITICAL)

    def handler(ws):
        try:
            for message in ws:
                ws.send(message)
        except ConnectionClosed:
            pass
        code = ws.close_code if ws.close_code is not None else "none"
        print("closed %s" % code, flush=True)

    server = ws_serve(handler, "127.0.0.1", 0, ping_interval=None, max_size=16 << 20)
    print("listening %d" % server.socket.getsockname()[1], flush=True)
    threading.Thread(target=lambda: (sys.stdin.read(), server.shutdown()), daemon=True).start()
    server.serve_forever()


def open_ws(url):
    return connect(
        url,
        open_timeout=DEADLINE,
        close_timeout=5,
        ping_interval=None,
        max_size=16 << 20,
        additional_headers={"x-ws-test": "1"},
    )


def echo(url):
    with open_ws(url) as ws:
        echo_on(ws)


def echo_on(ws):
    out = {}
    out["upgrade_header"] = ws.response.headers.get("upgrade")
    out["status"] = ws.response.status_code
    ws.send("hello websocket")
    out["text"] = ws.recv(timeout=DEADLINE)
    payload = bytes(range(256)) * 4
    ws.send(payload)
    got = ws.recv(timeout=DEADLINE)
    out["binary_same"] = got == payload
    out["binary_type"] = type(got).__name__
    big = bytes((i * 7 + 3) % 251 for i in range(1 << 20))
    ws.send(big)
    got = ws.recv(timeout=DEADLINE)
    out["big_len"] = len(got)
    out["big_same"] = got == big
    # Many small messages in one burst, answered in order.
    for i in range(200):
        ws.send("n%d" % i)
    out["burst_in_order"] = all(ws.recv(timeout=DEADLINE) == "n%d" % i for i in range(200))
    start = time.monotonic()
    ws.close(code=1000, reason="done")
    out["close_seconds"] = time.monotonic() - start
    out["close_code"] = ws.close_code
    out["close_rcvd"] = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None
    print(json.dumps(out), flush=True)


def idle(url, active, wait):
    with open_ws(url) as ws:
        idle_on(ws, active, wait)


def idle_on(ws, active, wait):
    out = {}
    start = time.monotonic()
    last = start
    n = 0
    try:
        while True:
            ws.send("tick%d" % n)
            if ws.recv(timeout=DEADLINE) != "tick%d" % n:
                out["bad_echo"] = n
            last = time.monotonic()
            n += 1
            if last - start >= active:
                break
            time.sleep(0.3)
        out["active_ok"] = True
    except ConnectionClosed as e:
        out["active_ok"] = False
        out["closed_while_active_after"] = time.monotonic() - start
        out["close"] = str(e)
    out["ticks"] = n
    # Idleness starts with the last byte moved: the last echo's arrival.
    idle_from = last
    try:
        ws.recv(timeout=wait)
        out["idle_closed"] = False
        out["unexpected_message"] = True
    except ConnectionClosed:
        out["idle_closed"] = True
    except TimeoutError:
        out["idle_closed"] = False
    out["idle_seconds"] = time.monotonic() - idle_from
    print(json.dumps(out), flush=True)


def h2_connect(addr, path):
    import os
    import socket

    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=DEADLINE)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    out = {}

    def events_until(done):
        while True:
            data = sock.recv(65536)
            if not data:
                out["closed"] = True
                return None
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RemoteSettingsChanged):
                    setting = event.changed_settings.get(
                        h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL
                    )
                    if setting is not None:
                        out["enable_connect_protocol"] = setting.new_value
                if isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                if done(event):
                    sock.sendall(conn.data_to_send())
                    return event
            sock.sendall(conn.data_to_send())

    events_until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    stream = conn.get_next_available_stream_id()
    conn.send_headers(
        stream,
        [
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "http"),
            (":path", path),
            (":authority", addr),
            ("sec-websocket-version", "13"),
        ],
    )
    sock.sendall(conn.data_to_send())
    response = events_until(lambda e: isinstance(e, h2.events.ResponseReceived))
    out["status"] = dict(response.headers).get(b":status", b"").decode() if response else None
    if out["status"] == "200":
        payload = b"hello over h2"
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        conn.send_data(stream, bytes([0x81, 0x80 | len(payload)]) + mask + masked)
        sock.sendall(conn.data_to_send())
        got = b""
        while len(got) < 2 + len(payload):
            event = events_until(lambda e: isinstance(e, h2.events.DataReceived))
            if event is None:
                break
            got += event.data
        out["echo"] = got[2:].decode(errors="replace")
        out["echo_header"] = list(got[:2])
    print(json.dumps(out), flush=True)
    sock.close()


def serve_h2():
    import socket

    import h2.config
    import h2.connection
    import h2.events
    import h2.settings

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    print(f"listening {listener.getsockname()[1]}", flush=True)

    def serve_conn(sock):
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1},
        )
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        pending = {}
        while True:
            data = sock.recv(65536)
            if not data:
                return
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.RequestReceived):
                    headers = dict(event.headers)
                    if headers.get(":method") == "CONNECT" and headers.get(":protocol") == "websocket":
                        print(
                            "connect",
                            headers.get(":path"),
                            headers.get(":protocol"),
                            headers.get("sec-websocket-key", "-"),
                            flush=True,
                        )
                        conn.send_headers(event.stream_id, [(":status", "200")])
                        pending[event.stream_id] = b""
                    else:
                        conn.send_headers(
                            event.stream_id, [(":status", "404")], end_stream=True
                        )
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                    buf = pending.get(event.stream_id, b"") + event.data
                    # Short masked frames only (what the tests send).
                    while len(buf) >= 6 and len(buf) >= 6 + (buf[1] & 0x7F):
                        n = buf[1] & 0x7F
                        mask, payload = buf[2:6], buf[6 : 6 + n]
                        text = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
                        conn.send_data(event.stream_id, bytes([buf[0], n]) + text)
                        buf = buf[6 + n :]
                    pending[event.stream_id] = buf
                elif isinstance(event, h2.events.StreamEnded):
                    if event.stream_id in pending:
                        conn.end_stream(event.stream_id)
            sock.sendall(conn.data_to_send())

    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve_conn, args=(sock,), daemon=True).start()


def main():
    cmd = sys.argv[1]
    if cmd == "serve":
        serve()
    elif cmd == "echo":
        echo(sys.argv[2])
    elif cmd == "idle":
        idle(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    elif cmd == "h2":
        h2_connect(sys.argv[2], sys.argv[3])
    elif cmd == "serve-h2":
        serve_h2()
    else:
        raise SystemExit("usage: ws_peer.py serve | serve-h2 | echo URL | idle URL ACTIVE WAIT | h2 HOST:PORT PATH")


if __name__ == "__main__":
    main()
