#!/usr/bin/env python3
"""CPU cost of active health checks: ringway with ENDPOINTS checked
endpoints (interval 1 s, so ENDPOINTS checks a second) and no request
traffic; the gateway's CPU seconds (utime + stime from /proc/PID/stat)
over SECONDS, after a warm-up.

Usage: benches/health/health_cpu.py [path/to/ringway] [reps] [--endpoints N]
           [--seconds S] [--kind http|tcp] [--tls]

The origin is this script: one asyncio HTTP/1.1 server listening on N
ports of 127.0.0.1 (TCP_NODELAY, backlog 1024), answering every request
`200 ok` and closing, and counting the requests it gets. With --tls it
speaks TLS (a CA and a P-256 leaf for localhost made with openssl) and the
cluster has `tls = { ca, server_name = "localhost" }`. Ringway runs with
one worker; each rep starts a new ringway, stops it by PID at the end, and
prints one line; the last line is the median.
"""
import argparse
import asyncio
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

parser = argparse.ArgumentParser()
parser.add_argument("ringway", nargs="?", default="target/release/ringway")
parser.add_argument("reps", nargs="?", type=int, default=3)
parser.add_argument("--endpoints", type=int, default=1000)
parser.add_argument("--seconds", type=float, default=60.0)
parser.add_argument("--warmup", type=float, default=5.0)
parser.add_argument("--kind", default="http", choices=["http", "tcp"])
parser.add_argument("--tls", action="store_true")
args = parser.parse_args()

TICKS = os.sysconf("SC_CLK_TCK")
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
served = [0]
connections = [0]


async def handle(reader, writer):
    connections[0] += 1
    try:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        served[0] += 1
        writer.write(ANSWER)
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError, OSError):
        pass
    finally:
        writer.close()


def pki(d):
    """A CA and a leaf for localhost (P-256), made with openssl, in `d`."""
    def run(*words):
        subprocess.run(words, check=True, cwd=d, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench CA")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=localhost")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost\n")
    run("openssl", "x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "leaf.pem", "-days", "2", "-extfile", "ext")
    return os.path.join(d, "ca.pem")


def origin(n, ready, certs):
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    context = None
    if certs:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(os.path.join(certs, "leaf.pem"), os.path.join(certs, "leaf.key"))
    ports = []
    for _ in range(n):
        server = loop.run_until_complete(
            asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024, ssl=context)
        )
        ports.append(server.sockets[0].getsockname()[1])
    ready.append(ports)
    loop.run_forever()


def cpu_seconds(pid):
    """(utime, stime) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of the whole line.
    return int(fields[11]) / TICKS, int(fields[12]) / TICKS


def threads(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    return 0


def config(ports, ca):
    endpoints = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
    if args.kind == "http":
        health = 'path = "/healthz", '
    else:
        health = 'kind = "tcp", '
    return (
        '[[listener]]\nname = "edge"\nlisten = "127.0.0.1:0"\n'
        '[[route]]\ncluster = "bench"\n'
        f"[cluster.bench]\nendpoints = [{endpoints}]\n"
        f'health = {{ {health}interval = "1s", timeout = "1s" }}\n'
        + (f'tls = {{ ca = "{ca}", server_name = "localhost" }}\n' if ca else "")
    )


def rep(ports, ca):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "ringway.toml")
        with open(path, "w") as f:
            f.write(config(ports, ca))
        env = dict(os.environ, RUNTIME_DIRECTORY=d)
        proc = subprocess.Popen(
            [args.ringway, "--config", path, "--workers", "1"],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        # Drain its log (unhealthy endpoints would say so) so it never blocks.
        log = []
        threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True).start()
        try:
            time.sleep(args.warmup)
            if proc.poll() is not None:
                sys.exit(f"ringway exited: {''.join(log)}")
            cpu0, seen0, conns0, t0 = cpu_seconds(proc.pid), served[0], connections[0], time.monotonic()
            time.sleep(args.seconds)
            cpu1, seen1, conns1, t1 = cpu_seconds(proc.pid), served[0], connections[0], time.monotonic()
            nthreads = threads(proc.pid)
        finally:
            proc.kill()
            proc.wait()
    unhealthy = sum("is unhealthy" in line for line in log)
    elapsed = t1 - t0
    checks = (seen1 - seen0 if args.kind == "http" else conns1 - conns0) / elapsed
    user, system = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    cpu = user + system
    per_1000 = cpu / elapsed / (checks / 1000) if checks else float("nan")
    print(
        f"cpu {cpu:.2f} s (user {user:.2f}, sys {system:.2f}) in {elapsed:.0f} s; checks/s {checks:.0f}; "
        f"cores per 1000 checks/s {per_1000:.4f} ({per_1000 * 100:.2f}% of a core); "
        f"threads {nthreads}; unhealthy lines {unhealthy}",
        flush=True,
    )
    return per_1000


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, max(soft, 4 * args.endpoints + 1024))
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    with tempfile.TemporaryDirectory() as certs:
        ca = pki(certs) if args.tls else None
        ready = []
        threading.Thread(
            target=origin, args=(args.endpoints, ready, certs if ca else None), daemon=True
        ).start()
        while not ready:
            time.sleep(0.05)
        results = [rep(ready[0], ca) for _ in range(args.reps)]
    print(f"median cores per 1000 checks/s: {statistics.median(results):.4f}")


main()
