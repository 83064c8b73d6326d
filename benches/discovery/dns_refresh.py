#!/usr/bin/env python3
"""CPU cost of following DNS: ringway's own CPU seconds while it re-asks
100 names every second (dnsmasq on a loopback port, local TTL 1 s,
`min_ttl = "1s"`), in two cases, interleaved over the reps:

- steady: the answers stay the same (the common case: an asking that
  changes nothing costs only the question);
- churn:  every name's addresses change every second (the hosts file is
  rewritten and dnsmasq re-reads it), so every refresh also gives the
  workers a new snapshot.

No request traffic. ringway is pinned to CPU 0, dnsmasq and this script
to CPU 1. Prints CPU ms per refresh of the 100 names.

Usage: benches/discovery/dns_refresh.py [path/to/ringway] [reps] [seconds]
Needs dnsmasq (apt-get install dnsmasq-base). Starts and stops its own
processes by PID.
"""
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ringway = sys.argv[1] if len(sys.argv) > 1 else "target/release/ringway"
reps = int(sys.argv[2]) if len(sys.argv) > 2 else 5
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 20
NAMES = 100
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    while True:
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            tcp.close()
            udp.close()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def hosts(generation):
    # Two addresses per name, moving with the generation in churn mode.
    lines = []
    for i in range(NAMES):
        for j in range(2):
            lines.append(f"127.1.{(generation + j) % 200}.{i + 1} n{i}.test")
    return "\n".join(lines) + "\n"


def run_case(churn, d):
    port = free_port()
    hosts_file = os.path.join(d, "hosts")
    with open(hosts_file, "w") as f:
        f.write(hosts(0))
    dns = subprocess.Popen(
        ["taskset", "-c", "1", "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
         "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
         "--local=/test/", "--local-ttl=1", "--user=root", "--pid-file=",
         "--log-facility=-", f"--port={port}", f"--addn-hosts={hosts_file}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = os.path.join(d, "ringway.toml")
    clusters = "".join(
        f'[cluster.c{i}]\nendpoints = ["n{i}.test:8080"]\n' for i in range(NAMES))
    with open(config, "w") as f:
        f.write(f'[runtime]\nresolvers = ["127.0.0.1:{port}"]\n'
                'dns = { min_ttl = "1s", max_ttl = "60s" }\n'
                '[[listener]]\nname = "edge"\nlisten = "127.0.0.1:0"\n'
                '[[route]]\ncluster = "c0"\n' + clusters)
    log_path = os.path.join(d, "ringway.log")
    log = open(log_path, "w")
    gw = subprocess.Popen(["taskset", "-c", "0", ringway, "--config", config, "--workers", "1"],
                          stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.time() + 15
        while time.time() < deadline:
            with open(log_path) as f:
                if "listener edge on" in f.read():
                    break
            time.sleep(0.1)
        time.sleep(3)  # first answers in, steady state
        generation = 0
        start_cpu, start = cpu_seconds(gw.pid), time.time()
        while time.time() - start < seconds:
            if churn:
                generation += 1
                tmp = hosts_file + ".tmp"
                with open(tmp, "w") as f:
                    f.write(hosts(generation))
                os.rename(tmp, hosts_file)
                dns.send_signal(1)  # SIGHUP: re-read the hosts file
            time.sleep(1)
        used = cpu_seconds(gw.pid) - start_cpu
        elapsed = time.time() - start
        with open(log_path) as f:
            applied = f.read().count("loaded (DNS)")
        # ms of CPU per second = per refresh of 100 names
        return used / elapsed * 1000, applied / elapsed
    finally:
        gw.terminate()
        gw.wait(timeout=15)
        log.close()
        dns.terminate()
        dns.wait(timeout=5)


results = {"steady": [], "churn": []}
with tempfile.TemporaryDirectory() as d:
    for rep in range(reps):
        for case in ("steady", "churn"):
            ms, applied = run_case(case == "churn", d)
            results[case].append(ms)
            print(f"rep {rep + 1} {case}: {ms:.1f} ms CPU per refresh of {NAMES} names "
                  f"({applied:.1f} new configurations per second)", flush=True)
for case, values in results.items():
    print(f"{case}: median {statistics.median(values):.1f} ms, min {min(values):.1f}, "
          f"max {max(values):.1f} (CPU ms per second, one refresh of {NAMES} names per second)")
