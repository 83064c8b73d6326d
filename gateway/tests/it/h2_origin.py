#!/usr/bin/env python3
"""A raw HTTP/2 origin (h2c, prior knowledge) on hyper-h2 (`pip install
h2`), for what a well-behaved library server never does on request:
resetting a stream with a chosen code, refusing streams, GOAWAY.

    h2_origin.py [--ports N] [--goaway-after N [--goaway-late]] [--linger MS]
                 [--sick I] [--authorities]

prints `listening PORT...` (one port per listener, N of them; default 1)
and serves until killed or its stdin closes. One thread per connection.

Every request is answered by its path:

  /reset-after-headers/CODE   HEADERS 200, one DATA `partial`, then
                              RST_STREAM(CODE): a response that started
  /reset-before-headers/CODE  RST_STREAM(CODE) at once
  /reset-on-trigger/CODE/KEY  HEADERS 200 and one DATA `partial` at once;
                              RST_STREAM(CODE) only once a request for
                              /trigger/KEY arrived (on any connection): a
                              response the client saw start, then reset
  /trigger/KEY                200, and the stream waiting for KEY is reset
  /refuse-once/KEY            the first stream with this KEY (across every
                              connection and listener) gets
                              RST_STREAM(REFUSED_STREAM); later ones 200
  /goaway-once/KEY            the first stream with this KEY gets a GOAWAY
                              whose last stream is the one before it (it
                              was not processed), and the connection closes
  /refuse-always              RST_STREAM(REFUSED_STREAM), every time
  anything else               200, body `origin PORT CONN STREAM PATH`

With `--sick I`, listener I (0-based) answers everything 503 instead
(health checks of it fail). With `--authorities`, each request also
prints `authority C SID AUTHORITY`.

With `--goaway-after N`, after a connection's Nth answered request the
origin sends GOAWAY(NO_ERROR, last stream = that request's) with it, then
closes its side at once, or with `--linger MS` keeps the connection open
MS milliseconds more (reading, answering nothing), as servers draining on
shutdown do. With `--goaway-late` the GOAWAY goes out only when the next
request's HEADERS arrive, and refuses that stream: the race of a client
opening a stream while the server decides to go away, made certain.

Each thing that happens is one line on stdout, which the tests wait for:

  conn C PORT                 connection C accepted on PORT
  stream C SID PATH           a request's HEADERS arrived
  authority C SID AUTHORITY   its :authority (with --authorities)
  answered C SID STATUS
  refused C SID PATH
  reset C SID CODE            this origin reset the stream with CODE
  client-reset C SID CODE     the client reset the stream with CODE
  goaway C LAST CODE          this origin sent GOAWAY
  after-goaway C BYTES        bytes the client sent after our GOAWAY
  closed C

A connection whose first bytes are `MARK TOKEN\n` instead of the HTTP/2
preface prints `mark TOKEN`: once the test has read that line, it has
every line printed before it.
"""

import argparse
import socket
import sys
import threading
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

PRINT_LOCK = threading.Lock()
STATE_LOCK = threading.Lock()
SEEN_KEYS = set()
TRIGGERED = set()
NEXT_CONN = [0]


def say(*words):
    with PRINT_LOCK:
        print(*words, flush=True)


def first_time(key):
    """True the first time `key` is asked about, process-wide."""
    with STATE_LOCK:
        if key in SEEN_KEYS:
            return False
        SEEN_KEYS.add(key)
        return True


class Origin:
    def __init__(self, sock, port, cid, args):
        self.sock = sock
        self.port = port
        self.cid = cid
        self.args = args
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.paths = {}
        self.done = set()
        self.answered = 0
        self.last_answered = 0
        self.closing = False
        # Streams waiting for their trigger: KEY -> (stream, code).
        self.waiting = {}

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def reset(self, sid, code):
        try:
            self.conn.reset_stream(sid, error_code=code)
        except h2.exceptions.StreamClosedError:
            say("already-closed", self.cid, sid)
            return
        self.done.add(sid)
        say("reset", self.cid, sid, code)

    def goaway(self, last, code=0):
        self.conn.close_connection(error_code=code, last_stream_id=last)
        say("goaway", self.cid, last, code)
        self.closing = True

    def answer(self, sid, status, body):
        self.conn.send_headers(
            sid,
            [(":status", str(status)), ("content-length", str(len(body))), ("x-origin", str(self.port))],
        )
        self.conn.send_data(sid, body, end_stream=True)
        self.done.add(sid)
        self.answered += 1
        self.last_answered = sid
        say("answered", self.cid, sid, status)
        late = self.args.goaway_late
        if self.args.goaway_after and self.answered == self.args.goaway_after and not late:
            self.goaway(sid)

    def on_request(self, sid, path):
        """Headers arrived: the answers that do not wait for the body."""
        parts = path.strip("/").split("/")
        late = self.args.goaway_late and self.args.goaway_after
        if late and self.answered == self.args.goaway_after:
            self.done.add(sid)
            self.goaway(self.last_answered)
        elif parts[0] == "reset-before-headers":
            self.reset(sid, int(parts[1]))
        elif parts[0] == "refuse-always":
            say("refused", self.cid, sid, path)
            self.reset(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
        elif parts[0] == "refuse-once" and first_time(path):
            say("refused", self.cid, sid, path)
            self.reset(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
        elif parts[0] == "goaway-once" and first_time(path):
            self.done.add(sid)
            self.goaway(max(sid - 2, 0))

    def on_end(self, sid):
        """The whole request arrived: answer it."""
        if sid in self.done or self.closing:
            return
        path = self.paths.get(sid, "/")
        parts = path.strip("/").split("/")
        if parts[0] in ("reset-after-headers", "reset-on-trigger"):
            self.conn.send_headers(sid, [(":status", "200"), ("x-origin", str(self.port))])
            self.conn.send_data(sid, b"partial")
            if parts[0] == "reset-after-headers":
                self.reset(sid, int(parts[1]))
            else:
                self.waiting[parts[2]] = (sid, int(parts[1]))
            return
        if parts[0] == "trigger":
            with STATE_LOCK:
                TRIGGERED.add(parts[1])
            self.fire_triggers()
        body = ("origin %d %d %d %s" % (self.port, self.cid, sid, path)).encode()
        self.answer(sid, 503 if self.port in self.args.sick_ports else 200, body)

    def fire_triggers(self):
        """Resets the streams whose trigger arrived."""
        with STATE_LOCK:
            fired = [k for k in self.waiting if k in TRIGGERED]
        for key in fired:
            sid, code = self.waiting.pop(key)
            self.reset(sid, code)

    def handle(self, event):
        if isinstance(event, h2.events.RequestReceived):
            path = dict(event.headers).get(":path", "/")
            self.paths[event.stream_id] = path
            say("stream", self.cid, event.stream_id, path)
            if self.args.authorities:
                say("authority", self.cid, event.stream_id, dict(event.headers).get(":authority"))
            self.on_request(event.stream_id, path)
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.on_end(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            say("client-reset", self.cid, event.stream_id, int(event.error_code))
            self.done.add(event.stream_id)
            self.waiting = {k: v for k, v in self.waiting.items() if v[0] != event.stream_id}

    def run(self):
        self.conn.initiate_connection()
        self.flush()
        self.sock.settimeout(0.02)
        while not self.closing:
            # Short reads, so that a trigger that came on another
            # connection is seen soon.
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                if self.waiting:
                    self.fire_triggers()
                    self.flush()
                continue
            if not data:
                return
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                say("protocol-error", self.cid, repr(e))
                self.flush()
                return
            for event in events:
                if self.closing:
                    break
                self.handle(event)
            self.flush()
        self.linger()

    def linger(self):
        """After our GOAWAY: close at once, or keep reading (and answering
        nothing) for --linger ms first."""
        end = time.monotonic() + self.args.linger / 1000.0
        seen = 0
        try:
            while time.monotonic() < end:
                self.sock.settimeout(max(end - time.monotonic(), 0.001))
                try:
                    data = self.sock.recv(65536)
                except socket.timeout:
                    break
                if not data:
                    break
                seen += len(data)
        except OSError:
            pass
        if self.args.linger:
            say("after-goaway", self.cid, seen)


def is_mark(sock):
    """A connection that starts with `MARK ` is no HTTP/2 client (whose
    preface starts with `PRI `) but the test asking for a line in order:
    `MARK TOKEN` is echoed as `mark TOKEN` after every line printed before
    it."""
    if sock.recv(1, socket.MSG_PEEK) != b"M":
        return False
    line = b""
    while not line.endswith(b"\n"):
        more = sock.recv(256)
        if not more:
            break
        line += more
    say("mark", line.decode().split()[1])
    sock.close()
    return True


def serve_conn(sock, port, args):
    try:
        if is_mark(sock):
            return
    except OSError:
        sock.close()
        return
    with STATE_LOCK:
        NEXT_CONN[0] += 1
        cid = NEXT_CONN[0]
    say("conn", cid, port)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        Origin(sock, port, cid, args).run()
    except OSError:
        pass
    finally:
        try:
            # Closing our side first: the client sees the end at once, and
            # what it still sends is not answered with a TCP reset that
            # could destroy the last frames we sent.
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(0.5)
            while sock.recv(65536):
                pass
        except OSError:
            pass
        sock.close()
        say("closed", cid)


def accept_loop(listener, args):
    port = listener.getsockname()[1]
    while True:
        sock, _ = listener.accept()
        threading.Thread(target=serve_conn, args=(sock, port, args), daemon=True).start()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ports", type=int, default=1)
    parser.add_argument("--goaway-after", type=int, default=0)
    parser.add_argument("--goaway-late", action="store_true")
    parser.add_argument("--linger", type=int, default=0)
    parser.add_argument("--sick", type=int, default=-1)
    parser.add_argument("--authorities", action="store_true")
    args = parser.parse_args()
    args.sick_ports = set()
    ports = []
    for _ in range(args.ports):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        ports.append(listener.getsockname()[1])
        if len(ports) - 1 == args.sick:
            args.sick_ports.add(ports[-1])
        threading.Thread(target=accept_loop, args=(listener, args), daemon=True).start()
    say("listening", *ports)
    # Serve until stdin closes (the test's end) or the process is killed.
    sys.stdin.read()


if __name__ == "__main__":
    main()
