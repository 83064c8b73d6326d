#!/usr/bin/env python3
"""The origin of the protocol matrix (matrix.rs), HTTP/1.1 and HTTP/2 on
one port, plain or over TLS, and the HTTP/2 client for what curl does not
do (show trailers, open a WebSocket by extended CONNECT); hyper-h2 (`pip
install h2`).

    matrix_peer.py serve PATTERN_FILE [--tls CERT KEY] [--always STATUS]
    matrix_peer.py get ADDR PATH [--ca CA [--name NAME]] [--method M]
                       [--header 'NAME: VALUE']... [--body-hex HEX]
    matrix_peer.py ws ADDR PATH [--ca CA [--name NAME]]

`get` makes one request over HTTP/2 (h2c with prior knowledge, or TLS
trusting CA for NAME, `localhost` by default, with ALPN h2) and prints one
JSON object: `alpn`, `informational` (the 1xx heads), `status`, `headers`,
`body`, `trailers`, and `reset`/`goaway`/`closed` when those happened.
`ws` opens a WebSocket by extended CONNECT (RFC 8441), sends a masked text
frame `hello matrix` and a masked 60000-byte binary frame, and prints
`enable_connect_protocol`, `status`, `frames` (first bytes of the frames
echoed), `text` and `binary_same`. Every socket read has a 10 s deadline.

`serve` prints `listening PORT` and serves until killed or its stdin
closes, one thread per connection. A connection is HTTP/2 when it opens with the
HTTP/2 preface (h2c with prior knowledge, or h2 after TLS, whose ALPN
offers h2 and http/1.1), HTTP/1.1 otherwise. Every request prints
`request PROTO METHOD PATH` (PROTO `h1` or `h2`) on stdout once its head
arrived, before it is answered.

Every request is answered by its path:

  /pattern/N    200, the first N bytes of PATTERN_FILE, with a length
  /echo         200, the request body back, with a length
  /trailers     200 `trailered`, then the trailers `grpc-status: 0`,
                `grpc-message: fine`, `x-trailer: kept`, with no length,
                gRPC style (HTTP/1.1: a chunked body with a trailer
                section)
  /early-hints  103 Early Hints (`link: </style.css>; rel=preload`),
                then 200 `final after 103`
  /delay/MS     200 `slow`, MS milliseconds after the request ended
  /ws           WebSocket echo: an HTTP/1.1 Upgrade gets 101, an
                HTTP/2 extended CONNECT (`:protocol = websocket`, offered
                by SETTINGS_ENABLE_CONNECT_PROTOCOL) gets 200; then every
                masked frame comes back unmasked
  anything else 200, `PROTO SCHEME METHOD PATH` (SCHEME `tls` or `plain`)

With `--always STATUS` every request gets STATUS, body `always STATUS`.
"""

import argparse
import base64
import hashlib
import json
import os
import socket
import ssl
import sys
import threading

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

DEADLINE = 10.0
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TRAILERS = [("grpc-status", "0"), ("grpc-message", "fine"), ("x-trailer", "kept")]
HINTS = [("link", "</style.css>; rel=preload")]
PRINT_LOCK = threading.Lock()


def say(*words):
    with PRINT_LOCK:
        print(*words, flush=True)


class Origin:
    """What every connection shares: the options and the pattern."""

    def __init__(self, args):
        with open(args.pattern, "rb") as f:
            self.pattern = f.read()
        self.always = args.always
        self.tls = args.tls is not None

    def answer(self, proto, method, path, body):
        """(status, headers, body, trailers, informational headers) for a
        request answered at once (`/delay/` is answered by the callers)."""
        parts = path.split("?")[0].strip("/").split("/")
        if self.always:
            return self.always, [], b"always %d" % self.always, None, None
        if parts[0] == "pattern":
            return 200, [], self.pattern[: int(parts[1])], None, None
        if parts[0] == "echo":
            return 200, [], bytes(body), None, None
        if parts[0] == "trailers":
            return 200, [("content-type", "application/grpc")], b"trailered", TRAILERS, None
        if parts[0] == "early-hints":
            return 200, [], b"final after 103", None, HINTS
        scheme = "tls" if self.tls else "plain"
        text = "%s %s %s %s" % (proto, scheme, method, path)
        return 200, [], text.encode(), None, None


def ws_frames(buf):
    """The complete frames at the start of `buf` (masked or not, payloads
    of any length), as (first byte, unmasked payload), and what is left."""
    frames = []
    while len(buf) >= 2:
        n = buf[1] & 0x7F
        at = 2
        if n == 126:
            if len(buf) < 4:
                break
            n, at = int.from_bytes(buf[2:4], "big"), 4
        elif n == 127:
            if len(buf) < 10:
                break
            n, at = int.from_bytes(buf[2:10], "big"), 10
        masked = buf[1] & 0x80
        end = at + (4 if masked else 0) + n
        if len(buf) < end:
            break
        payload = buf[end - n : end]
        if masked:
            mask = buf[at : at + 4]
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        frames.append((buf[0], bytes(payload)))
        buf = buf[end:]
    return frames, buf


def ws_frame(first, payload):
    """A server frame (unmasked)."""
    n = len(payload)
    if n < 126:
        head = bytes([first, n])
    elif n < 1 << 16:
        head = bytes([first, 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([first, 127]) + n.to_bytes(8, "big")
    return head + payload


# ---------------------------------------------------------------- HTTP/1.1


class Reader:
    """Buffered reads from a socket, starting with bytes already read."""

    def __init__(self, sock, data):
        self.sock = sock
        self.buf = bytearray(data)

    def more(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def line(self):
        while b"\n" not in self.buf:
            self.more()
        at = self.buf.index(b"\n") + 1
        out = bytes(self.buf[:at])
        del self.buf[:at]
        return out

    def exact(self, n):
        while len(self.buf) < n:
            self.more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def serve_h1(origin, sock, first):
    r = Reader(sock, first)
    while True:
        try:
            line = r.line()
        except EOFError:
            return
        method, target, _ = line.decode().split(" ", 2)
        headers = {}
        while True:
            h = r.line()
            if h in (b"\r\n", b"\n"):
                break
            name, value = h.decode().split(":", 1)
            headers[name.strip().lower()] = value.strip()
        say("request", "h1", method, target)
        if headers.get("upgrade", "").lower() == "websocket":
            key = headers["sec-websocket-key"].encode()
            accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
            sock.sendall(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                    "connection: upgrade\r\nsec-websocket-accept: %s\r\n\r\n" % accept
                ).encode()
            )
            ws_echo_h1(sock, r)
            return
        body = bytearray()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int(r.line().split(b";")[0].strip(), 16)
                if size == 0:
                    while r.line() not in (b"\r\n", b"\n"):
                        pass
                    break
                body += r.exact(size)
                r.exact(2)
        else:
            body += r.exact(int(headers.get("content-length", "0")))
        parts = target.strip("/").split("/")
        if parts[0] == "delay" and not origin.always:
            threading.Event().wait(int(parts[1]) / 1000.0)
            answer = (200, [], b"slow", None, None)
        else:
            answer = origin.answer("h1", method, target, body)
        status, extra, payload, trailers, hints = answer
        out = b""
        if hints:
            out += b"HTTP/1.1 103 Early Hints\r\n"
            out += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in hints)
            out += b"\r\n"
        out += b"HTTP/1.1 %d Whatever\r\n" % status
        out += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in extra)
        if trailers:
            names = ", ".join(k for k, _ in trailers)
            out += b"transfer-encoding: chunked\r\ntrailer: %s\r\n\r\n" % names.encode()
            out += b"%x\r\n%s\r\n0\r\n" % (len(payload), payload)
            out += b"".join(b"%s: %s\r\n" % (k.encode(), v.encode()) for k, v in trailers)
            out += b"\r\n"
        else:
            out += b"content-length: %d\r\n\r\n" % len(payload)
            out += payload
        sock.sendall(out)
        if headers.get("connection", "").lower() == "close":
            return


def ws_echo_h1(sock, r):
    buf = bytes(r.buf)
    while True:
        frames, buf = ws_frames(buf)
        for first, payload in frames:
            sock.sendall(ws_frame(first, payload))
            if first & 0x0F == 8:
                return
        data = sock.recv(65536)
        if not data:
            return
        buf += data


# ------------------------------------------------------------------ HTTP/2


class H2Conn:
    """One HTTP/2 connection. The reading thread and the timers of delayed
    answers share the connection under `lock`."""

    def __init__(self, origin, sock):
        self.origin = origin
        self.sock = sock
        self.lock = threading.Lock()
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1},
        )
        self.requests = {}  # stream -> (method, path, body)
        self.websockets = {}  # stream -> bytes not yet a whole frame
        self.outbox = {}  # stream -> [data left, trailers, end of stream]

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def run(self, first):
        with self.lock:
            self.conn.initiate_connection()
            self.flush()
        data = first
        while data:
            with self.lock:
                for event in self.conn.receive_data(data):
                    self.handle(event)
                self.pump()
                self.flush()
            data = self.sock.recv(65536)

    def handle(self, event):
        if isinstance(event, h2.events.RequestReceived):
            h = dict(event.headers)
            method, path = h.get(":method"), h.get(":path")
            say("request", "h2", method, path)
            sid = event.stream_id
            if method == "CONNECT" and h.get(":protocol") == "websocket":
                self.conn.send_headers(sid, [(":status", "200")])
                self.websockets[sid] = b""
            else:
                self.requests[sid] = (method, path, bytearray())
        elif isinstance(event, h2.events.DataReceived):
            sid = event.stream_id
            self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            if sid in self.websockets:
                frames, rest = ws_frames(self.websockets[sid] + event.data)
                self.websockets[sid] = rest
                for first, payload in frames:
                    self.queue(sid, ws_frame(first, payload), None, False)
            elif sid in self.requests:
                self.requests[sid][2].extend(event.data)
        elif isinstance(event, h2.events.StreamEnded):
            sid = event.stream_id
            if self.websockets.pop(sid, None) is not None:
                self.queue(sid, b"", None, True)
            elif sid in self.requests:
                self.dispatch(sid, *self.requests.pop(sid))
        elif isinstance(event, h2.events.StreamReset):
            self.requests.pop(event.stream_id, None)
            self.websockets.pop(event.stream_id, None)
            self.outbox.pop(event.stream_id, None)

    def dispatch(self, sid, method, path, body):
        parts = path.strip("/").split("/")
        if parts[0] == "delay" and not self.origin.always:
            timer = threading.Timer(int(parts[1]) / 1000.0, self.later, (sid,))
            timer.daemon = True
            timer.start()
            return
        self.respond(sid, *self.origin.answer("h2", method, path, body))

    def later(self, sid):
        with self.lock:
            try:
                self.respond(sid, 200, [], b"slow", None, None)
                self.flush()
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, OSError):
                pass

    def respond(self, sid, status, extra, body, trailers, hints):
        if hints:
            self.conn.send_headers(sid, [(":status", "103")] + hints)
        head = [(":status", str(status))] + extra
        if not trailers:
            # With trailers, no length: gRPC servers send none, and an
            # HTTP/1.1 client then gets the body chunked, trailers after it.
            head.append(("content-length", str(len(body))))
        ends = not body and not trailers
        self.conn.send_headers(sid, head, end_stream=ends)
        if not ends:
            self.queue(sid, body, trailers, True)

    def queue(self, sid, data, trailers, end):
        """Sends `data` on stream `sid` as the windows allow, then the
        trailers, ending the stream if `end`."""
        if sid in self.outbox:
            self.outbox[sid][0] += data
            self.outbox[sid][1:] = [trailers, end]
        else:
            self.outbox[sid] = [bytes(data), trailers, end]
        self.pump()

    def pump(self):
        """Sends what the flow-control windows let through."""
        for sid in list(self.outbox):
            data, trailers, end = self.outbox[sid]
            try:
                ended = False
                while data:
                    window = min(
                        self.conn.local_flow_control_window(sid),
                        self.conn.max_outbound_frame_size,
                    )
                    if window <= 0:
                        break
                    piece, data = data[:window], data[window:]
                    ended = not data and end and not trailers
                    self.conn.send_data(sid, piece, end_stream=ended)
                if data:
                    self.outbox[sid][0] = data
                    continue
                if trailers:
                    self.conn.send_headers(sid, trailers, end_stream=True)
                elif end and not ended:
                    self.conn.end_stream(sid)
            except h2.exceptions.StreamClosedError:
                pass
            del self.outbox[sid]


# ------------------------------------------------------------- connections


def read_start(sock):
    """The first bytes, up to the length of the HTTP/2 preface or the first
    byte that differs from it."""
    first = b""
    while len(first) < len(PREFACE) and PREFACE.startswith(first):
        data = sock.recv(len(PREFACE) - len(first))
        if not data:
            break
        first += data
    return first


def serve_conn(origin, sock, context):
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        if context is not None:
            sock = context.wrap_socket(sock, server_side=True)
        first = read_start(sock)
        if first == PREFACE:
            H2Conn(origin, sock).run(first)
        elif first:
            serve_h1(origin, sock, first)
    except (OSError, EOFError, ssl.SSLError, h2.exceptions.ProtocolError):
        pass
    finally:
        sock.close()


# ------------------------------------------------------ HTTP/2 clients


def client_conn(args):
    """An HTTP/2 client connection to args.addr: h2c with prior knowledge,
    or TLS trusting args.ca for args.name with ALPN h2."""
    host, port = args.addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=DEADLINE)
    alpn = None
    if args.ca:
        context = ssl.create_default_context(cafile=args.ca)
        context.set_alpn_protocols(["h2"])
        sock = context.wrap_socket(sock, server_hostname=args.name)
        alpn = sock.selected_alpn_protocol()
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    return sock, conn, alpn


def base_headers(args, method):
    return [
        (":method", method),
        (":scheme", "https" if args.ca else "http"),
        (":authority", args.name if args.ca else args.addr),
        (":path", args.path),
    ]


def events(sock, conn, out):
    """The connection's events as they come (acknowledging DATA); at the
    end of the stream of bytes, out["closed"] is set."""
    while True:
        data = sock.recv(65536)
        if not data:
            out["closed"] = True
            return
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.DataReceived):
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                setting = event.changed_settings.get(
                    h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL
                )
                if setting is not None:
                    out["enable_connect_protocol"] = setting.new_value
            elif isinstance(event, h2.events.StreamReset):
                out["reset"] = int(event.error_code)
            elif isinstance(event, h2.events.ConnectionTerminated):
                out["goaway"] = int(event.error_code)
            yield event
        sock.sendall(conn.data_to_send())


def get(args):
    """One request; prints the informational statuses, the final status and
    headers, the body and the trailers as JSON."""
    sock, conn, alpn = client_conn(args)
    out = {"alpn": alpn, "informational": [], "trailers": {}}
    headers = base_headers(args, args.method)
    headers += [tuple(h.split(": ", 1)) for h in args.header]
    body = bytes.fromhex(args.body_hex)
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, headers, end_stream=not body)
    if body:
        conn.send_data(sid, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    got = b""
    for event in events(sock, conn, out):
        if isinstance(event, h2.events.InformationalResponseReceived):
            out["informational"].append(dict(event.headers))
        elif isinstance(event, h2.events.ResponseReceived):
            head = dict(event.headers)
            out["status"] = int(head.pop(":status"))
            out["headers"] = head
        elif isinstance(event, h2.events.DataReceived):
            got += event.data
        elif isinstance(event, h2.events.TrailersReceived):
            out["trailers"] = dict(event.headers)
        if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            break
    out["body"] = got.decode(errors="replace")
    print(json.dumps(out), flush=True)
    sock.close()


def ws(args):
    """WebSocket over HTTP/2 (RFC 8441): an extended CONNECT, a masked text
    frame and a 60000-byte masked binary frame, their echoes; JSON."""
    sock, conn, alpn = client_conn(args)
    out = {"alpn": alpn}
    stream = events(sock, conn, out)
    for event in stream:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            break
    sid = conn.get_next_available_stream_id()
    headers = base_headers(args, "CONNECT") + [
        (":protocol", "websocket"),
        ("sec-websocket-version", "13"),
    ]
    conn.send_headers(sid, headers)
    sock.sendall(conn.data_to_send())
    for event in stream:
        if isinstance(event, h2.events.ResponseReceived):
            out["status"] = int(dict(event.headers)[":status"])
            break
        if isinstance(event, h2.events.StreamReset):
            break
    if out.get("status") == 200:
        text = b"hello matrix"
        binary = bytes((i * 7 + 3) % 251 for i in range(60000))
        mask = os.urandom(4)
        for first, payload in ((0x81, text), (0x82, binary)):
            n = len(payload)
            length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            frame = bytes([first]) + length + mask + masked
            # In DATA frames of the largest size allowed; the windows (64 KiB
            # at least) hold both frames.
            step = conn.max_outbound_frame_size
            for at in range(0, len(frame), step):
                conn.send_data(sid, frame[at : at + step])
        sock.sendall(conn.data_to_send())
        buf = b""
        frames = []
        for event in stream:
            if isinstance(event, h2.events.DataReceived):
                more, buf = ws_frames(buf + event.data)
                frames += more
                if len(frames) >= 2:
                    break
            if isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                break
        out["frames"] = [first for first, _ in frames]
        out["text"] = frames[0][1].decode(errors="replace") if frames else None
        out["binary_same"] = len(frames) > 1 and frames[1][1] == binary
    print(json.dumps(out), flush=True)
    sock.close()


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("pattern")
    serve.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    serve.add_argument("--always", type=int, default=0)
    for name in ("get", "ws"):
        client = sub.add_parser(name)
        client.add_argument("addr")
        client.add_argument("path")
        client.add_argument("--ca")
        client.add_argument("--name", default="localhost")
        client.add_argument("--method", default="GET")
        client.add_argument("--header", action="append", default=[])
        client.add_argument("--body-hex", default="")
    args = parser.parse_args()
    if args.command == "get":
        get(args)
    elif args.command == "ws":
        ws(args)
    else:
        run_origin(args)


def run_origin(args):
    origin = Origin(args)
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls[0], args.tls[1])
        context.set_alpn_protocols(["h2", "http/1.1"])
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)

    def accept_loop():
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=serve_conn, args=(origin, sock, context), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    say("listening", listener.getsockname()[1])
    # Serve until stdin closes (the test's end) or the process is killed.
    sys.stdin.read()


if __name__ == "__main__":
    main()
