#!/usr/bin/env bash
# ringload against wrk (HTTP/1.1) and h2load (h2): same `ringload serve`
# origin pinned to core 0, each generator pinned to core 1 with one thread
# and the same connections. Figures: requests/s, the generator's own CPU
# seconds, and requests per CPU-second of the generator (req/s per core).
# Then ringload's open-loop rate accuracy: offered against achieved.
#
#   cargo build --release -p ringway-loadtest   (CARGO_TARGET_DIR as in common.sh)
#   benches/e2e/loadgen.sh            # DUR=10 CONNS=64 REPS=3 by default
source "$(dirname "$0")/common.sh"
need wrk wrk
need h2load nghttp2-client
DUR=${DUR:-10}
CONNS=${CONNS:-64}
REPS=${REPS:-3}
H2_CONNS=${H2_CONNS:-8}
H2_STREAMS=${H2_STREAMS:-16}
PORT=19100
URL=http://127.0.0.1:$PORT/

start 0 origin "$RINGLOAD" serve --listen 127.0.0.1:$PORT --workers 1 --body-size 1024
wait_port $PORT

row() { # tool reqs secs cpu
    awk -v t="$1" -v n="$2" -v d="$3" -v c="$4" 'BEGIN {
        printf "| %s | %.0f | %.2f | %.0f |\n", t, n / d, c, (c > 0 ? n / c : 0) }'
}

echo "(load average before: $(busy_other))"
echo
echo "### HTTP/1.1, $CONNS connections, 1 thread, ${DUR}s, 1 KiB responses"
echo
echo "| generator | req/s | generator CPU s | req per generator CPU-s |"
echo "|---|---:|---:|---:|"
for rep in $(seq "$REPS"); do
    cpu=$(cpu_of "$WORK/wrk.txt" taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" "$URL")
    n=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
    row "wrk (rep $rep)" "$n" "$DUR" "$cpu"
    cpu=$(cpu_of "$WORK/rl.json" taskset -c 1 "$RINGLOAD" run "$URL" -t1 -c"$CONNS" -d"${DUR}s" -q --json)
    n=$(json requests <"$WORK/rl.json")
    e=$(json errors.total <"$WORK/rl.json")
    [ "$e" = 0 ] || echo "ringload reported $e errors" >&2
    row "ringload (rep $rep)" "$n" "$DUR" "$cpu"
done

echo
echo "### h2c, $H2_CONNS connections x $H2_STREAMS streams, 1 thread, ${DUR}s"
echo
echo "| generator | req/s | generator CPU s | req per generator CPU-s |"
echo "|---|---:|---:|---:|"
for rep in $(seq "$REPS"); do
    cpu=$(cpu_of "$WORK/h2load.txt" taskset -c 1 h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D"$DUR" "$URL")
    n=$(awk '/^requests:/ {print $8}' "$WORK/h2load.txt")
    row "h2load (rep $rep)" "$n" "$DUR" "$cpu"
    cpu=$(cpu_of "$WORK/rl2.json" taskset -c 1 "$RINGLOAD" run "$URL" --h2 -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -d"${DUR}s" -q --json)
    n=$(json requests <"$WORK/rl2.json")
    row "ringload --h2 (rep $rep)" "$n" "$DUR" "$cpu"
done

echo
echo "### Open loop: offered against achieved ($CONNS connections, ${DUR}s)"
echo
echo "| offered req/s | achieved req/s | achieved/offered | unsent | p50 | p99 | p99.9 | send lag p99 | generator CPU s |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for rate in ${RATES:-1000 10000 30000 60000 90000}; do
    cpu=$(cpu_of "$WORK/open.json" taskset -c 1 "$RINGLOAD" run "$URL" -t1 -c"$CONNS" -d"${DUR}s" -R "$rate" -q --json)
    python3 - "$WORK/open.json" "$cpu" <<'PY'
import json, sys
v = json.load(open(sys.argv[1]))
l, g = v["latency_us"], v["send_lag_us"]
ms = lambda us: f"{us / 1000:.2f} ms"
print(f"| {v['offered_rate']:.0f} | {v['achieved_rate']:.1f} | {100 * v['achieved_rate'] / v['offered_rate']:.2f}% | {v['unsent']} "
      f"| {ms(l['p50'])} | {ms(l['p99'])} | {ms(l['p99.9'])} | {ms(g['p99'])} | {sys.argv[2]} |")
PY
done
echo
echo "(load average after: $(busy_other))"
