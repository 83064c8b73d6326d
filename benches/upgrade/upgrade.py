#!/usr/bin/env python3
"""Hot upgrade under load: how long a hand-over takes and what clients see.

ringway (release build, one worker, pinned to CPU 0) proxies to a Python
origin; wrk (keep-alive, CPU 1) and a client that opens a new connection
every 2 ms (CPU 1) run throughout. Every few seconds a new process takes
over with `ringway --upgrade` (alternately with `--workers 1` and `2`, so
that sockets are also spread over a different worker count). For each
upgrade:

- hand-over: from starting the new process to its "upgrade: serving" line,
  printed once its workers accept on the inherited sockets (requests are
  served by it from then on, and may be a little before);
- old exit: from starting the new process to the old one's exit (it
  drains: in-flight requests finish, idle keep-alive connections get a
  second to send one more request);
- and, over the whole run, wrk's errors (connect, read, write, timeout,
  non-2xx) and the new-connection client's failures.

Every process is started here, on 127.0.0.1, and stopped by PID.

  cargo build --release -p ringway
  benches/upgrade/upgrade.py                  # 5 upgrades, about 40 s
  benches/upgrade/upgrade.py --upgrades 9 --gap 2
"""
import argparse
import http.server
import os
import re
import socket
import socketserver
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(ROOT, "target", "release", "ringway")


class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_GET(self):
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass


class ThreadedServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    # Each new ringway process opens its upstream connections afresh, in a
    # burst: with Python's default backlog of 5 some SYNs are dropped and
    # retried a second later, which wrk then counts as timeouts.
    request_queue_size = 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_connections(port, stop, counts):
    """A request on a new connection every 2 ms."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                c.sendall(b"GET /new HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    chunk = c.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            counts["ok" if data.startswith(b"HTTP/1.1 200") else "failed"] += 1
        except OSError:
            counts["failed"] += 1
        time.sleep(0.002)


def start(config, workers, upgrade, log):
    cmd = ["taskset", "-c", "0", BINARY, "--config", config, "--workers", str(workers)]
    if upgrade:
        cmd.append("--upgrade")
    return subprocess.Popen(cmd, stderr=log, stdout=subprocess.DEVNULL)


def wait_line(path, pattern, after, limit=20):
    """Waits for a line matching `pattern` in the file `path` past byte
    `after`; returns the time it was seen."""
    deadline = time.time() + limit
    while time.time() < deadline:
        with open(path, "rb") as f:
            f.seek(after)
            if re.search(pattern, f.read()):
                return time.time()
        time.sleep(0.001)
    raise SystemExit(f"no {pattern!r} in {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--upgrades", type=int, default=5)
    ap.add_argument("--gap", type=float, default=3.0, help="seconds between upgrades")
    args = ap.parse_args()
    if not os.path.exists(BINARY):
        raise SystemExit("build it first: cargo build --release -p ringway")

    origin = ThreadedServer(("127.0.0.1", 0), Origin)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    port, admin = free_port(), free_port()
    work = tempfile.mkdtemp(prefix="ringway-upgrade-bench-")
    config = os.path.join(work, "ringway.toml")
    with open(config, "w") as f:
        f.write(
            f'[runtime]\ndrain_timeout = "5s"\nupgrade_socket = "{work}/upgrade.sock"\n'
            f'[admin]\nlisten = "127.0.0.1:{admin}"\n'
            f'[[listener]]\nname = "edge"\nlisten = "127.0.0.1:{port}"\n'
            f'[[route]]\ncluster = "app"\n'
            f'[cluster.app]\nendpoints = ["127.0.0.1:{origin.server_address[1]}"]\n'
        )
    logs = []

    def log_file(i):
        path = os.path.join(work, f"ringway-{i}.log")
        logs.append(path)
        return path

    path = log_file(0)
    current = start(config, 1, False, open(path, "wb"))
    wait_line(path, rb"upgrade socket", 0)

    duration = int(args.gap * (args.upgrades + 1) + 5)
    wrk = subprocess.Popen(
        ["taskset", "-c", "1", "wrk", "-t1", "-c32", f"-d{duration}s",
         f"http://127.0.0.1:{port}/keep"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    stop = threading.Event()
    counts = {"ok": 0, "failed": 0}
    client = threading.Thread(target=new_connections, args=(port, stop, counts))
    client.start()

    rows = []
    for i in range(1, args.upgrades + 1):
        time.sleep(args.gap)
        path = log_file(i)
        started = time.time()
        new = start(config, 1 + i % 2, True, open(path, "wb"))
        serving = wait_line(path, rb"upgrade: serving", 0)
        try:
            current.wait(timeout=20)
        except subprocess.TimeoutExpired:
            raise SystemExit("the old process did not exit")
        exited = time.time()
        rows.append((i, 1 + i % 2, (serving - started) * 1000, (exited - started) * 1000,
                     current.returncode))
        current = new

    out, _ = wrk.communicate()
    stop.set()
    client.join()
    current.terminate()
    current.wait(timeout=20)
    origin.shutdown()

    print("| upgrade | new workers | hand-over (ms) | old exit (ms) | old exit code |")
    print("|---|---|---|---|---|")
    for i, workers, serving, exited, code in rows:
        print(f"| {i} | {workers} | {serving:.1f} | {exited:.1f} | {code} |")
    requests = re.search(r"(\d+) requests in", out)
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    print()
    print(f"wrk (32 keep-alive connections, {duration} s): "
          f"{requests.group(1) if requests else '?'} requests, "
          f"socket errors: {errors.group(1) if errors else 'none'}, "
          f"non-2xx: {non2xx.group(1) if non2xx else 0}")
    print(f"new-connection client: {counts['ok']} served, {counts['failed']} failed")
    return 0 if not errors and not non2xx and counts["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
