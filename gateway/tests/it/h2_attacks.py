#!/usr/bin/env python3
"""Hostile and inspecting HTTP/2 clients (h2c, prior knowledge) for the
gateway's tests, built on hyper-h2 (`pip install h2`) and raw frames.

    h2_attacks.py settings ADDR              the server's first SETTINGS
    h2_attacks.py rapid-reset ADDR STREAMS   HEADERS + RST_STREAM, many times
    h2_attacks.py continuation ADDR BYTES PIECE
                                             one header block of BYTES, sent
                                             as HEADERS and CONTINUATION
                                             frames of PIECE bytes
    h2_attacks.py get ADDR PATH              one plain request: its status,
                                             body, and the code of a reset
                                             of its stream, if any
    h2_attacks.py repeat ADDR PATH COUNT [PAUSE]
                                             COUNT requests one after the
                                             other on one connection, PAUSE
                                             seconds apart (default 0)
    h2_attacks.py reset-midway ADDR CODE KEY a response reset by the origin
                                             (h2_origin.py) with CODE once
                                             its start was received

Each prints one JSON object on stdout. Every read has a deadline: a server
that neither answers nor closes is reported as such (`"timeout": true`, or
no GOAWAY and `"closed": false`) instead of hanging the test.
"""

import json
import socket
import struct
import sys
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import hpack

DEADLINE = 10.0


def connect(addr):
    host, port = addr.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=DEADLINE)
    sock.settimeout(1.0)
    return sock


def new_conn():
    config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    return conn


def request_headers(addr, path, extra=()):
    return [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", addr),
        (":path", path),
    ] + list(extra)


def pump(sock, conn, until, deadline=DEADLINE):
    """Reads and feeds events until `until(event)` is true, the peer
    closes, or the deadline passes. Returns (events, closed, timed_out)."""
    seen = []
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return seen, True, False
        if not data:
            return seen, True, False
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            seen.append(("protocol-error", str(e)))
            return seen, False, False
        out = conn.data_to_send()
        if out:
            try:
                sock.sendall(out)
            except OSError:
                pass
        for ev in events:
            seen.append(ev)
            if until(ev):
                return seen, False, False
    return seen, False, True


def read_until_close(sock, stop=lambda f: False, deadline=DEADLINE):
    """Raw frames until the peer closes, or `stop(frame)` holds; after a
    GOAWAY, waits at most 3 s more for the close. Returns (frames, closed)."""
    buf = b""
    frames = []
    end = time.monotonic() + deadline
    closed = False
    stopped = False
    while time.monotonic() < end and not stopped:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        if not data:
            closed = True
            break
        buf += data
        while len(buf) >= 9:
            length = int.from_bytes(buf[0:3], "big")
            if len(buf) < 9 + length:
                break
            ftype, flags = buf[3], buf[4]
            stream = int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
            frames.append((ftype, flags, stream, buf[9 : 9 + length]))
            buf = buf[9 + length :]
            if ftype == FRAME_GOAWAY:
                end = min(end, time.monotonic() + 3.0)
            if stop(frames[-1]):
                stopped = True
    return frames, closed


def frame(ftype, flags, stream, payload):
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


FRAME_HEADERS = 0x1
FRAME_RST_STREAM = 0x3
FRAME_SETTINGS = 0x4
FRAME_GOAWAY = 0x7
FRAME_CONTINUATION = 0x9
END_STREAM = 0x1
END_HEADERS = 0x4


def goaway_of(frames):
    for ftype, _, _, payload in frames:
        if ftype == FRAME_GOAWAY and len(payload) >= 8:
            last = int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF
            code = int.from_bytes(payload[4:8], "big")
            return {"last_stream_id": last, "error_code": code}
    return None


def settings(addr):
    sock = connect(addr)
    conn = new_conn()
    sock.sendall(conn.data_to_send())
    events, closed, timed_out = pump(sock, conn, lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    got = {}
    for ev in events:
        if isinstance(ev, h2.events.RemoteSettingsChanged):
            for code, change in ev.changed_settings.items():
                try:
                    name = h2.settings.SettingCodes(code).name
                except ValueError:
                    name = str(int(code))
                got[name] = change.new_value
    sock.close()
    return {"settings": got, "closed": closed, "timeout": timed_out}


def exchange(sock, conn, addr, path):
    """One GET on an open connection, read to its end: its status, body,
    and the error code of a reset of the stream (None when it ended
    cleanly) or of a GOAWAY that ended the connection."""
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, request_headers(addr, path), end_stream=True)
    sock.sendall(conn.data_to_send())
    status = None
    body = b""

    def done(ev):
        if isinstance(ev, h2.events.ConnectionTerminated):
            return True
        return isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == sid

    events, closed, timed_out = pump(sock, conn, done)
    reset = None
    goaway = None
    ended = False
    for ev in events:
        if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
            status = int(dict(ev.headers)[":status"])
        if isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
            body += ev.data
            conn.acknowledge_received_data(ev.flow_controlled_length, sid)
        if isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
            ended = True
        if isinstance(ev, h2.events.StreamReset) and ev.stream_id == sid:
            reset = int(ev.error_code)
        if isinstance(ev, h2.events.ConnectionTerminated):
            goaway = {"last_stream_id": ev.last_stream_id, "error_code": int(ev.error_code)}
    out = conn.data_to_send()
    if out:
        sock.sendall(out)
    return {
        "status": status,
        "body": body.decode("utf-8", "replace"),
        "body_len": len(body),
        "ended": ended,
        "reset": reset,
        "goaway": goaway,
        "closed": closed,
        "timeout": timed_out,
    }


def get(addr, path):
    sock = connect(addr)
    conn = new_conn()
    result = exchange(sock, conn, addr, path)
    sock.close()
    return result


def reset_midway(addr, code, key):
    """A response the client sees start, then reset: GET
    /reset-on-trigger/CODE/KEY (h2_origin.py answers its head and a first
    piece of body, then waits), and once that first piece is here, GET
    /trigger/KEY on a second stream, which makes the origin reset the
    first with CODE."""
    sock = connect(addr)
    conn = new_conn()
    first = conn.get_next_available_stream_id()
    conn.send_headers(first, request_headers(addr, "/reset-on-trigger/%s/%s" % (code, key)), end_stream=True)
    sock.sendall(conn.data_to_send())
    got = {"status": None, "body": "", "reset": None, "ended": False, "trigger_status": None}

    def started(ev):
        if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == first:
            got["status"] = int(dict(ev.headers)[":status"])
        if isinstance(ev, h2.events.DataReceived) and ev.stream_id == first:
            got["body"] += ev.data.decode("utf-8", "replace")
            conn.acknowledge_received_data(ev.flow_controlled_length, first)
        if isinstance(ev, h2.events.StreamEnded) and ev.stream_id == first:
            got["ended"] = True
        if isinstance(ev, h2.events.StreamReset) and ev.stream_id == first:
            got["reset"] = int(ev.error_code)
        return isinstance(ev, (h2.events.DataReceived, h2.events.StreamEnded, h2.events.StreamReset, h2.events.ConnectionTerminated))

    _, closed, timed_out = pump(sock, conn, started)
    got["started"] = {"status": got["status"], "body": got["body"], "closed": closed, "timeout": timed_out}
    if closed or timed_out or got["ended"] or got["reset"] is not None:
        sock.close()
        return got
    trigger = conn.get_next_available_stream_id()
    conn.send_headers(trigger, request_headers(addr, "/trigger/%s" % key), end_stream=True)
    sock.sendall(conn.data_to_send())
    trigger_done = [False]

    def finished(ev):
        started(ev)
        if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == trigger:
            got["trigger_status"] = int(dict(ev.headers)[":status"])
        if isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)) and ev.stream_id == trigger:
            trigger_done[0] = True
        if isinstance(ev, h2.events.ConnectionTerminated):
            return True
        first_done = got["ended"] or got["reset"] is not None
        return first_done and trigger_done[0]

    _, closed, timed_out = pump(sock, conn, finished)
    sock.close()
    got["closed"] = closed
    got["timeout"] = timed_out
    return got


def repeat(addr, path, count, pause=0.0):
    """`count` GETs one after the other on one connection, each read to
    its end before the next is sent, `pause` seconds after the previous
    one ended. Stops early when the connection ends."""
    sock = connect(addr)
    conn = new_conn()
    results = []
    for i in range(count):
        if i > 0 and pause > 0:
            time.sleep(pause)
        result = exchange(sock, conn, addr, path)
        results.append(result)
        if result["closed"] or result["timeout"] or result["goaway"]:
            break
    sock.close()
    return {
        "statuses": [r["status"] for r in results],
        "resets": [r["reset"] for r in results if r["reset"] is not None],
        "bodies": [r["body"] for r in results],
        "unfinished": [i for i, r in enumerate(results) if not r["ended"]],
    }


def rapid_reset(addr, streams):
    """CVE-2023-44487: every stream is opened and at once cancelled, all in
    one burst, so the server keeps starting work the client never waits
    for. A protected server answers GOAWAY and closes. After the burst, one
    plain GET on the same connection: a client that cancels a few streams
    must still be served."""
    sock = connect(addr)
    conn = new_conn()
    sock.sendall(conn.data_to_send())
    # Wait for the server's SETTINGS so that the burst is not refused as
    # an early protocol error instead.
    pump(sock, conn, lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    # The client's SETTINGS ACK and any frames h2 queued.
    sock.sendall(conn.data_to_send())
    encoder = hpack.Encoder()
    burst = bytearray()
    sent = 0
    failed = False
    for i in range(streams):
        sid = 1 + 2 * i
        block = encoder.encode(request_headers(addr, "/rapid-reset"))
        burst += frame(FRAME_HEADERS, END_STREAM | END_HEADERS, sid, block)
        burst += frame(FRAME_RST_STREAM, 0, sid, struct.pack(">I", 0x8))  # CANCEL
        sent += 1
        if len(burst) > 64 * 1024:
            try:
                sock.sendall(burst)
            except OSError:
                failed = True
                break
            burst = bytearray()
    last = 1 + 2 * streams
    if not failed:
        block = encoder.encode(request_headers(addr, "/after-resets"))
        burst += frame(FRAME_HEADERS, END_STREAM | END_HEADERS, last, block)
        try:
            sock.sendall(burst)
        except OSError:
            failed = True
    frames, closed = read_until_close(sock, lambda f: f[0] == FRAME_HEADERS and f[2] == last)
    sock.close()
    decoder = hpack.Decoder()
    statuses = {}
    for t, _, s, p in frames:
        if t == FRAME_HEADERS:
            try:
                statuses[s] = [v for (k, v) in decoder.decode(p) if k == ":status"]
            except Exception:
                statuses[s] = ["undecodable"]
    return {
        "streams_sent": sent,
        "goaway": goaway_of(frames),
        "closed": closed or failed,
        "responses": len(statuses),
        "final_status": (statuses.get(last) or [None])[0],
    }


def continuation(addr, total, piece):
    """A header block of `total` bytes that never ends in one frame: HEADERS
    without END_HEADERS, then CONTINUATION frames of `piece` bytes, the last
    with END_HEADERS. A server that buffers it all is open to a memory flood
    (CVE-2024-27316 and kin); a protected one gives up at its limit."""
    sock = connect(addr)
    conn = new_conn()
    sock.sendall(conn.data_to_send())
    pump(sock, conn, lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
    encoder = hpack.Encoder()
    # Distinct literal headers, never indexed, so that the block's size is
    # what goes on the wire.
    headers = request_headers(addr, "/continuation")
    i = 0
    block = encoder.encode(headers)
    extra = bytearray()
    while len(block) + len(extra) < total:
        extra += encoder.encode([hpack.NeverIndexedHeaderTuple("x-flood-%06d" % i, "v" * 1000)])
        i += 1
    block = bytes(block + extra)
    sent = 0
    closed_early = False
    try:
        sock.sendall(frame(FRAME_HEADERS, END_STREAM, 1, block[:piece]))
        sent = piece
        rest = block[piece:]
        out = bytearray()
        while rest:
            chunk, rest = rest[:piece], rest[piece:]
            flags = END_HEADERS if not rest else 0
            out += frame(FRAME_CONTINUATION, flags, 1, chunk)
            sent += len(chunk)
            if len(out) >= 64 * 1024 or not rest:
                sock.sendall(out)
                out = bytearray()
    except OSError:
        closed_early = True
    # An answer on the stream alone (431, or a reset) ends the wait; the
    # connection's fate is then read from what came.
    frames, closed = read_until_close(sock, lambda f: f[2] == 1 and f[0] in (FRAME_HEADERS, FRAME_RST_STREAM))
    sock.close()
    resets = [int.from_bytes(p[0:4], "big") for (t, _, s, p) in frames if t == FRAME_RST_STREAM and s == 1]
    statuses = []
    for t, _, s, p in frames:
        if t == FRAME_HEADERS and s == 1:
            try:
                statuses += [v for (k, v) in hpack.Decoder().decode(p) if k == ":status"]
            except Exception:
                statuses.append("undecodable")
    return {
        "block_bytes": len(block),
        "bytes_sent": sent,
        "goaway": goaway_of(frames),
        "rst_stream": resets,
        "statuses": statuses,
        "closed": closed or closed_early,
    }


def main():
    cmd, addr = sys.argv[1], sys.argv[2]
    if cmd == "settings":
        out = settings(addr)
    elif cmd == "rapid-reset":
        out = rapid_reset(addr, int(sys.argv[3]))
    elif cmd == "continuation":
        out = continuation(addr, int(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "get":
        out = get(addr, sys.argv[3])
    elif cmd == "reset-midway":
        out = reset_midway(addr, sys.argv[3], sys.argv[4])
    elif cmd == "repeat":
        pause = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
        out = repeat(addr, sys.argv[3], int(sys.argv[4]), pause)
    else:
        raise SystemExit("unknown command " + cmd)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
