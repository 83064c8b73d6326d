# Shared by the one-core gateway benchmarks (benches/uring/flags.sh,
# benches/telemetry/overhead.sh); sourced, not run. ringway is pinned to
# core 0; an nginx origin serving 1 KiB and the load generator run on core
# 1; everything on 127.0.0.1; every process started here is stopped here
# by PID. Expects `reps` and `secs` set; defines `work`, `start_origin`,
# `measure`.
set -euo pipefail
work=$(mktemp -d)
trap 'kill $(cat "$work"/*.pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

ORIGIN=127.0.0.1:18990
EDGE=127.0.0.1:18991

# The origin on core 1; $1: extra nginx `server { ... }` blocks.
start_origin() {
  head -c 1024 /dev/zero | tr '\0' 'x' > "$work/1k"
  cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 10000000;
  server { listen $ORIGIN; location / { root $work; try_files /1k =404; } }
  ${1:-}
}
NGINX
  taskset -c 1 nginx -c "$work/nginx.conf"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

# One run: $1 label, $2 config file, $3 environment assignment (or "").
# Load: wrk's closed loop, or ringload's open loop at $RATE when set.
# Prints throughput and ringway's CPU time (every thread) per request.
measure() {
  env ${3:-} taskset -c 0 target/release/ringway --config "$2" --workers 1 2>"$work/rw.err" &
  echo $! > "$work/rw.pid"
  for _ in $(seq 100); do curl -fs -o /dev/null "http://$EDGE/" && break; sleep 0.05; done
  local pid; pid=$(cat "$work/rw.pid")
  local t0; t0=$(cpu_ticks "$pid")
  local out reqs
  if [ -n "${RATE:-}" ]; then
    out=$(taskset -c 1 target/release/ringload run "http://$EDGE/" -c32 -d"${secs}s" -R "$RATE" -q --json)
    reqs=$(echo "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests"])')
  else
    out=$(taskset -c 1 wrk -t1 -c32 -d"${secs}s" "http://$EDGE/" 2>&1)
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  fi
  local t1; t1=$(cpu_ticks "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -f "$work/rw.pid"
  awk -v l="$1" -v r="$reqs" -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$secs" \
    'BEGIN { printf "%-6s %8.0f req/s  %6.2f us CPU/request\n", l, r/s, (b-a)/hz*1e6/r }'
}

load_name() {
  if [ -n "${RATE:-}" ]; then echo "ringload -c32 -R $RATE ${secs}s"; else echo "wrk -t1 -c32 ${secs}s"; fi
}
