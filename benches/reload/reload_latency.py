#!/usr/bin/env python3
"""Reload latency: from the moment a new config file is in place (renamed
over the old one, as editors and deployment tools do) to the first request
answered by the route it adds.

Usage: benches/reload/reload_latency.py [path/to/ringway] [rounds]
Starts its own ringway on 127.0.0.1 (port 0), bounded in rounds and time,
and stops it by PID at the end.
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ringway = sys.argv[1] if len(sys.argv) > 1 else "target/release/ringway"
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 100

CONFIG = """[[listener]]
name = "edge"
listen = "127.0.0.1:0"

[[route]]
match = {{ path = "/probe" }}
respond = {{ status = 200, body = "v{n}" }}

[[route]]
match = {{ path_prefix = "/filler/" }}
respond = {{ status = 200, body = "filler" }}
"""


def get(addr, path):
    with socket.create_connection(addr, timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[1].decode()


with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "ringway.toml")
    with open(path, "w") as f:
        f.write(CONFIG.format(n=0))
    proc = subprocess.Popen(
        [ringway, "--config", path, "--workers", "2"], stderr=subprocess.PIPE, text=True
    )
    try:
        addr = None
        deadline = time.time() + 10
        while addr is None and time.time() < deadline:
            line = proc.stderr.readline()
            if line.startswith("ringway: listener edge on "):
                host, port = line.strip().rsplit(" ", 1)[1].rsplit(":", 1)
                addr = (host, int(port))
        assert addr, "ringway did not start"
        latencies = []
        for n in range(1, rounds + 1):
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                f.write(CONFIG.format(n=n))
            start = time.perf_counter()
            os.rename(tmp, path)
            while True:
                if get(addr, "/probe") == f"v{n}":
                    break
                if time.perf_counter() - start > 5:
                    raise SystemExit(f"round {n}: new route not served within 5 s")
            latencies.append((time.perf_counter() - start) * 1000)
        latencies.sort()
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
        print(
            f"reload latency over {rounds} rounds (ms): "
            f"p50 {p(0.5):.2f}  p90 {p(0.9):.2f}  p99 {p(0.99):.2f}  max {latencies[-1]:.2f}  "
            f"mean {statistics.mean(latencies):.2f}"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=15)
