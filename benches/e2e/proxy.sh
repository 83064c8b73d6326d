#!/usr/bin/env bash
# The end-to-end proxy comparison of README.md "Benchmarks":
# ringway, nginx and HAProxy, each pinned to core 0, in front of the same
# `ringload serve` origin (1 KiB responses) on core 1, loaded from core 1
# over keep-alive connections. For each proxy: saturated throughput and
# the proxy's CPU time per request (utime+stime delta from /proc/PID/stat
# divided by requests), measured with ringload and checked with wrk; then
# a fixed-rate open-loop run for latency (and the CPU per request at that
# rate, the steadiest figure on this VM).
#
#   cargo build --release -p ringway -p ringway-loadtest
#   benches/e2e/proxy.sh        # DUR=10 CONNS=64 REPS=3 RATE=10000 by default
#
# RINGWAY_B=/path/to/another/ringway adds that build as "ringway-b" (port
# 19204), measured in the same reps; TARGETS="ringway ringway-b" limits
# the run to the builds (an A/B of two commits).
source "$(dirname "$0")/common.sh"
need wrk wrk
need nginx nginx
need haproxy haproxy
DUR=${DUR:-10}
CONNS=${CONNS:-64}
REPS=${REPS:-3}
RATE=${RATE:-10000}
HERE=$(cd "$(dirname "$0")" && pwd)

start 1 origin "$RINGLOAD" serve --listen 127.0.0.1:19200 --workers 1 --body-size 1024 --name origin
wait_port 19200

start 0 ringway "$RINGWAY" --config "$HERE/ringway.toml" --workers 1
wait_port 19201
mkdir -p "$WORK/nginx/tmp"
cp "$HERE/nginx.conf" "$WORK/nginx/nginx.conf"
start 0 nginx nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf"
wait_port 19202
start 0 haproxy haproxy -db -f "$HERE/haproxy.cfg"
wait_port 19203
if [ -n "${RINGWAY_B:-}" ]; then
    sed 's/127.0.0.1:19201"/127.0.0.1:19204"/' "$HERE/ringway.toml" >"$WORK/ringway-b.toml"
    start 0 ringway_b "$RINGWAY_B" --config "$WORK/ringway-b.toml" --workers 1
    wait_port 19204
fi

declare -A PORT=([direct]=19200 [ringway]=19201 [nginx]=19202 [haproxy]=19203 [ringway-b]=19204)
declare -A PID=([direct]="" [ringway]=$PID_ringway [nginx]=$PID_nginx [haproxy]=$PID_haproxy [ringway-b]=${PID_ringway_b:-})
TARGETS=${TARGETS:-direct ringway ${RINGWAY_B:+ringway-b }nginx haproxy}

# Every proxy must answer through to the origin before anything is measured.
for p in $TARGETS; do
    [ "$p" = direct ] && continue
    curl -sf --max-time 5 -o /dev/null -D - "http://127.0.0.1:${PORT[$p]}/" | grep -qi '^x-ringload-server: origin' \
        || { echo "$p does not reach the origin" >&2; exit 1; }
done

us_per_req() { # ticks requests
    awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }'
}

echo "(load average before: $(busy_other))"
echo
echo "### Saturated, closed loop, $CONNS connections, ${DUR}s per run"
echo
echo "| target | rep | ringload req/s | proxy CPU µs/req (ringload) | wrk req/s | proxy CPU µs/req (wrk) | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for rep in $(seq "$REPS"); do
    for p in $TARGETS; do
        url="http://127.0.0.1:${PORT[$p]}/"
        pid=${PID[$p]}
        t0=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
        taskset -c 1 "$RINGLOAD" run "$url" -t1 -c"$CONNS" -d"${DUR}s" -q --json >"$WORK/sat.json"
        t1=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
        n=$(json requests <"$WORK/sat.json")
        e=$(json errors.total <"$WORK/sat.json")
        rps=$(json achieved_rate <"$WORK/sat.json")
        taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" "$url" >"$WORK/wrk.txt"
        t2=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
        wn=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
        wrps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
        werr=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/wrk.txt" | tr '\n' ' ')
        cpu_rl=$([ -n "$pid" ] && us_per_req $((t1 - t0)) "$n" || echo "-")
        cpu_wrk=$([ -n "$pid" ] && us_per_req $((t2 - t1)) "$wn" || echo "-")
        printf "| %s | %s | %.0f | %s | %.0f | %s | %s %s |\n" "$p" "$rep" "$rps" "$cpu_rl" "$wrps" "$cpu_wrk" "$e" "$werr"
    done
done

echo
echo "### Fixed rate, open loop: $RATE req/s, $CONNS connections, ${DUR}s (latency corrected for coordinated omission)"
echo
echo "| target | rep | achieved req/s | p50 | p90 | p99 | p99.9 | max | proxy CPU µs/req |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
for rep in $(seq "$REPS"); do
    for p in $TARGETS; do
        url="http://127.0.0.1:${PORT[$p]}/"
        pid=${PID[$p]}
        t0=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
        taskset -c 1 "$RINGLOAD" run "$url" -t1 -c"$CONNS" -d"${DUR}s" -R "$RATE" -q --json >"$WORK/fixed.json"
        t1=$([ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
        n=$(json requests <"$WORK/fixed.json")
        cpu=$([ -n "$pid" ] && us_per_req $((t1 - t0)) "$n" || echo "-")
        python3 - "$WORK/fixed.json" "$p" "$rep" "$cpu" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
l = v["latency_us"]
ms = lambda us: f"{us / 1000:.2f} ms"
held = "" if v["target_held"] else " (NOT held)"
print(f"| {sys.argv[2]} | {sys.argv[3]} | {v['achieved_rate']:.0f}{held} | {ms(l['p50'])} | {ms(l['p90'])} | {ms(l['p99'])} "
      f"| {ms(l['p99.9'])} | {ms(l['max'])} | {sys.argv[4]} |")
PY
    done
done
echo
echo "(load average after: $(busy_other))"
