#!/usr/bin/env python3
"""Soak with connection churn: does ringway's memory stay where it settled?

Clients arrive at a fixed rate, each opens a connection, makes a few
requests, goes idle for a while and leaves, for --minutes (default 10).
Kinds mix as an edge sees them: HTTP/1.1 and HTTP/1.1 over TLS (ALPN
http/1.1). ringway runs with one worker pinned to CPU 0, the origin
(`ringload serve`) and this client on CPU 1. ringway's RSS (VmRSS) is
sampled every 5 s; the verdict compares the last sample with the median of
the samples around the end of the first minute (where it settled): the
issue asks for the end to be within 5% of that.

  cargo build --release -p ringway -p ringway-loadtest
  benches/idle/soak.py                    # 10 minutes, 200 clients/s
  benches/idle/soak.py --minutes 2 --rate 100

Every process is started here and stopped by PID; traffic stays on
127.0.0.1.
"""
import argparse
import asyncio
import os
import random
import resource
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    """VmRSS of `pid` in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_port(port, deadline_s=10):
    """Waits until something accepts on 127.0.0.1:port."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Tally:
    """What the clients did."""

    def __init__(self):
        self.clients = 0
        self.requests = 0
        self.errors = 0
        self.open = 0


async def client(plain, tls, ctx, requests, idle_s, tally):
    """One visitor: connect, `requests` keep-alive GETs, idle, leave."""
    tally.open += 1
    writer = None
    try:
        if ctx is not None:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", tls, ssl=ctx, server_hostname="localhost")
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", plain)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(requests):
            writer.write(f"GET /soak/{i} HTTP/1.1\r\nHost: soak\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await asyncio.wait_for(reader.readexactly(length), 10)
            if not head.startswith(b"HTTP/1.1 200"):
                tally.errors += 1
            tally.requests += 1
        await asyncio.sleep(idle_s)
        tally.clients += 1
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
        tally.errors += 1
    finally:
        tally.open -= 1
        if writer is not None:
            writer.close()


async def load(args, plain, tls, ctx, gateway_pid):
    """Arrivals at args.rate per second until the end; RSS samples."""
    tally = Tally()
    samples = []
    rng = random.Random(7)
    start = time.monotonic()
    end = start + args.minutes * 60
    next_arrival = start
    next_sample = start
    tasks = set()
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_sample:
            samples.append((now - start, rss_kib(gateway_pid), tally.open))
            next_sample += 5
        while next_arrival <= now:
            use_tls = rng.random() < args.tls_share
            t = asyncio.create_task(client(
                plain, tls, ctx if use_tls else None,
                rng.randint(1, 5), rng.uniform(1, args.max_idle), tally))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
            next_arrival += 1 / args.rate
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks, return_exceptions=True)
    samples.append((time.monotonic() - start, rss_kib(gateway_pid), tally.open))
    return tally, samples


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ringway", default=os.path.join(ROOT, "target", "release", "ringway"))
    p.add_argument("--ringload", default=os.path.join(ROOT, "target", "release", "ringload"))
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--rate", type=float, default=200, help="clients arriving per second")
    p.add_argument("--max-idle", type=float, default=8, help="longest idle time of a client, s")
    p.add_argument("--tls-share", type=float, default=0.3, help="share of clients over TLS")
    args = p.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {1})
    work = tempfile.mkdtemp(prefix="ringway-soak-")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", f"{work}/key.pem", "-out", f"{work}/cert.pem", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    origin_port, plain, tls = free_port(), free_port(), free_port()
    with open(f"{work}/ringway.toml", "w") as f:
        f.write(f"""[runtime]
workers = 1
[[listener]]
name = "plain"
listen = "127.0.0.1:{plain}"
idle_timeout = "60s"
[[listener]]
name = "tls"
listen = "127.0.0.1:{tls}"
idle_timeout = "60s"
tls = {{ cert = "{work}/cert.pem", key = "{work}/key.pem", alpn = ["http/1.1"] }}
[[route]]
name = "all"
cluster = "origin"
[cluster.origin]
endpoints = ["127.0.0.1:{origin_port}"]
""")
    procs = []
    try:
        procs.append(subprocess.Popen(
            ["taskset", "-c", "1", args.ringload, "serve", "--listen", f"127.0.0.1:{origin_port}",
             "--workers", "1", "--body-size", "1024"], stdout=subprocess.DEVNULL))
        gateway = subprocess.Popen(
            ["taskset", "-c", "0", args.ringway, "--config", f"{work}/ringway.toml"],
            stderr=open(f"{work}/ringway.err", "w"))
        procs.append(gateway)
        wait_port(origin_port)
        wait_port(plain)
        wait_port(tls)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
        tally, samples = asyncio.run(load(args, plain, tls, ctx, gateway.pid))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()

    print(f"soak: {args.minutes:g} min, {args.rate:g} clients/s ({args.tls_share:.0%} TLS), "
          f"1-5 requests each, idle 1-{args.max_idle:g} s")
    print(f"clients done {tally.clients}, requests {tally.requests}, errors {tally.errors}")
    print("| t (s) | RSS (MiB) | open connections |")
    print("|---:|---:|---:|")
    for t, kib, open_ in samples[::6] + [samples[-1]]:
        print(f"| {t:.0f} | {kib / 1024:.1f} | {open_} |")
    settled = [kib for t, kib, _ in samples if 50 <= t <= 70]
    if not settled:
        print("too short to have a settled sample after one minute")
        return 1
    base = statistics.median(settled)
    # The last sample during load, not after the clients left.
    last = [kib for t, kib, _ in samples if t <= args.minutes * 60][-1]
    drift = (last - base) / base
    verdict = "within" if abs(drift) <= 0.05 else "NOT within"
    print(f"RSS after the first minute {base / 1024:.1f} MiB, at the end {last / 1024:.1f} MiB: "
          f"{drift:+.1%}, {verdict} 5%")
    return 0 if abs(drift) <= 0.05 and tally.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
