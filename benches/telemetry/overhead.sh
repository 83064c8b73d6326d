#!/usr/bin/env bash
# The cost of telling: ringway with metrics only (always on) against
# ringway with metrics, a JSON access log to a file and every request
# traced and exported over OTLP, alternating, same origin, same load.
# Gateway on core 0; nginx origin (1 KiB) and wrk on core 1; an OTLP sink
# (a socket that reads and answers 200) on core 1. Everything on
# 127.0.0.1; every process started here is stopped here by PID.
#
# Usage: [SAMPLE_RATE=0.01] [RATE=20000] benches/telemetry/overhead.sh [reps] [seconds]
# With RATE, load comes from ringload's open loop at that fixed rate (the
# steadier figure, as DESIGN.md says); without, from wrk's closed loop.
set -euo pipefail
cd "$(dirname "$0")/../.."
reps=${1:-5}
secs=${2:-5}
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

head -c 1024 /dev/zero | tr '\0' 'x' > "$work/1k"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  server { listen 127.0.0.1:18990; location / { root $work; try_files /1k =404; } }
  # The OTLP sink: accepts the export and answers 200.
  server { listen 127.0.0.1:18995; location / { return 200; } }
}
NGINX
taskset -c 1 nginx -c "$work/nginx.conf"

base='[[listener]]
name = "edge"
listen = "127.0.0.1:18991"
[[route]]
name = "all"
cluster = "origin"
[cluster.origin]
endpoints = ["127.0.0.1:18990"]'
echo "$base" > "$work/off.toml"
{
  echo "[access_log]"
  echo "path = \"$work/access.log\""
  echo "[tracing]"
  echo "otlp_endpoint = \"http://127.0.0.1:18995/v1/traces\""
  echo "sample_rate = ${SAMPLE_RATE:-1.0}"
  echo "$base"
} > "$work/on.toml"

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

run() { # $1 = label, $2 = config
  taskset -c 0 target/release/ringway --config "$2" --workers 1 2>"$work/rw.err" &
  echo $! > "$work/rw.pid"
  for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:18991/ && break; sleep 0.05; done
  local pid; pid=$(cat "$work/rw.pid")
  local t0; t0=$(cpu_ticks "$pid")
  local out reqs
  if [ -n "${RATE:-}" ]; then
    out=$(taskset -c 1 target/release/ringload run http://127.0.0.1:18991/ -c32 -d"${secs}s" -R "$RATE" -q --json)
    reqs=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  else
    out=$(taskset -c 1 wrk -t1 -c32 -d"${secs}s" http://127.0.0.1:18991/ 2>&1)
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  fi
  local t1; t1=$(cpu_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$work/rw.pid"
  awk -v l="$1" -v r="$reqs" -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$secs" \
    'BEGIN { printf "%-4s %8.0f req/s  %6.2f us CPU/request\n", l, r/s, (b-a)/hz*1e6/r }'
}

echo "ringway $(git rev-parse --short HEAD), nginx $(nginx -v 2>&1 | sed 's/.*\///'), wrk -t1 -c32 ${secs}s, $reps reps"
for _ in $(seq "$reps"); do
  run off "$work/off.toml"
  run on "$work/on.toml"
done
echo "access log lines written: $(wc -l < "$work/access.log")"
