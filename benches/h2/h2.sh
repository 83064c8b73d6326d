#!/usr/bin/env bash
# HTTP/2 over TLS at the edge: h2load (and `ringload run --h2` as the
# check) against nginx, HAProxy and ringway, each pinned to core 0,
# negotiating h2 by ALPN with the same ECDSA P-256 certificate and proxying
# to the same HTTP/1.1 `ringload serve` origin (1 KiB) on core 1 over
# pooled keep-alive connections; the load on core 1 too. Figures as in
# benches/tls/https.sh: requests/s and the gateway's CPU time per request
# (utime+stime of its PIDs, /proc/PID/stat), REPS reps, medians.
#
#   cargo build --release -p ringway -p ringway-loadtest
#   benches/h2/h2.sh    # DUR=8 H2_CONNS=8 H2_STREAMS=16 REPS=5 CLEAN=10 by default
#
# Each rep runs the gateways in a rotated order and waits (QUIET_WAIT s
# at most) for the machine to be idle; runs during which other processes
# used more than CLEAN % of a core are listed but left out of the medians
# (CLEAN= keeps everything). Under the medians, "per rep" rows give the
# median of each rep's own ratio, which the VM's drift moves less.
#
# ringway is measured only if its build accepts `alpn = ["h2", ...]`
# (`ringway check`); otherwise it is left out with a note, so the script
# can be rerun unchanged with RINGWAY=/path/to/a/newer/ringway.
# RINGWAY_B=/path/to/another/ringway adds that build as "ringway-b", side by
# side with the same configuration; GATEWAYS="nginx haproxy" leaves some out.
# UPSTREAM=h2 speaks h2c to the origin instead (ringway's cluster
# `protocol = "h2"`, HAProxy's `server ... proto h2`); nginx, whose
# proxy_pass speaks only HTTP/1.x upstream, is then left out.
# RATE=N runs the ringload column at a fixed N requests/s (open loop)
# instead of saturated; the h2load column stays saturated.
source "$(dirname "$0")/../tls/common.sh"
need h2load nghttp2-client
need nginx nginx
need haproxy haproxy
need openssl openssl
need curl curl
DUR=${DUR:-8}
H2_CONNS=${H2_CONNS:-8}
H2_STREAMS=${H2_STREAMS:-16}
REPS=${REPS:-5}
CLEAN=${CLEAN-10}
GATEWAYS=${GATEWAYS:-ringway${RINGWAY_B:+ ringway-b} nginx haproxy}
HERE=$(cd "$(dirname "$0")" && pwd)
for bin in "$RINGLOAD" "$RINGWAY" ${RINGWAY_B:+"$RINGWAY_B"}; do
    [ -x "$bin" ] || { echo "missing $bin: build it first (see the head of $0)" >&2; exit 1; }
done

prepare_configs
if [ "${UPSTREAM:-http1}" = h2 ]; then
    sed -i 's/^balancer = "round-robin"$/&\nprotocol = "h2"/' "$WORK/ringway.toml"
    sed -i 's/^\(    server origin .*\)$/\1 proto h2/' "$WORK/haproxy.cfg"
    grep -q '^protocol = "h2"$' "$WORK/ringway.toml" && grep -q ' proto h2$' "$WORK/haproxy.cfg" \
        || { echo "UPSTREAM=h2: the configurations did not take the change" >&2; exit 1; }
    GATEWAYS=$(echo " $GATEWAYS " | sed 's/ nginx / /')
    echo "(UPSTREAM=h2: h2c to the origin; nginx left out, its proxy_pass speaks HTTP/1.x only)"
fi

for r in ringway ringway-b; do
    bin=$RINGWAY
    [ "$r" = ringway-b ] && bin=${RINGWAY_B:-}
    if [[ " $GATEWAYS " == *" $r "* ]] && ! "$bin" check "$WORK/ringway.toml" >"$WORK/check.out" 2>&1; then
        echo "($r left out: $bin does not accept ALPN h2 yet:"
        grep -m1 -i 'h2\|error' "$WORK/check.out" | sed 's/^/   /'
        echo " rerun with RINGWAY=/path/to/a/build/with/h2)"
        GATEWAYS=$(echo " $GATEWAYS " | sed "s/ $r / /")
    fi
done

declare -A PORT=() PID=()
start_all 19320

echo "(load average before: $(busy_other))"
echo
# Every gateway must answer over h2 through to the origin.
for g in $GATEWAYS; do
    url="https://127.0.0.1:${PORT[$g]}/"
    curl -sk --http2 --max-time 5 -o /dev/null -D - "$url" >"$WORK/head.txt"
    grep -q '^HTTP/2 200' "$WORK/head.txt" && grep -qi '^x-ringload-server: origin' "$WORK/head.txt" \
        || { echo "$g does not answer over h2 through to the origin:" >&2; cat "$WORK/head.txt" >&2; exit 1; }
    echo "- $g: h2 by ALPN, $(curl -skv --http2 --max-time 5 -o /dev/null "$url" 2>&1 | sed -n 's/.*SSL connection using //p')"
done

ROWS=$WORK/rows.tsv
: >"$ROWS"

echo
echo "### Per rep: $H2_CONNS connections x $H2_STREAMS streams, ${DUR}s each${RATE:+; ringload at a fixed $RATE req/s}"
echo
echo "µs CPU/req is the gateway's own (utime+stime of its PIDs); \"core 0 µs/req\" is all of core 0's"
echo "busy time, which adds the softirq work done on core 0 while the gateway sleeps (the gateway"
echo "is not saturated here). \"other\" is the CPU that other processes used (h2load/ringload runs),"
echo "in % of one core: above a few % the run was disturbed."
echo
echo "| gateway | rep | h2load req/s | µs CPU/req | core 0 µs/req | busy | ringload --h2 req/s | µs CPU/req | other | failed |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"
for rep in $(seq "$REPS"); do
    quiet
    for g in $(rotated "$rep"); do
        url="https://127.0.0.1:${PORT[$g]}/"
        pid=${PID[$g]}
        x0=$(others_ticks)
        c0=$(core0_ticks)
        t0=$(cpu_ticks "$pid")
        taskset -c 1 h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D"$DUR" "$url" >"$WORK/h2load.txt" 2>&1
        t1=$(cpu_ticks "$pid")
        c1=$(core0_ticks)
        x1=$(others_ticks)
        grep -q '^Application protocol: h2' "$WORK/h2load.txt" \
            || { echo "$g: h2load did not negotiate h2" >&2; cat "$WORK/h2load.txt" >&2; exit 1; }
        n=$(awk '/^requests:/ {print $8}' "$WORK/h2load.txt")
        failed=$(awk '/^requests:/ {print $10 "/" $12}' "$WORK/h2load.txt")
        rps=$(awk -v n="$n" -v d="$DUR" 'BEGIN { printf "%.0f", n / d }')
        taskset -c 1 "$RINGLOAD" run "$url" --h2 -k -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -d"${DUR}s" ${RATE:+-R "$RATE"} -q --json >"$WORK/rl.json"
        t2=$(cpu_ticks "$pid")
        c2=$(core0_ticks)
        x2=$(others_ticks)
        rn=$(json requests <"$WORK/rl.json")
        re=$(json errors.total <"$WORK/rl.json")
        rrps=$(json achieved_rate <"$WORK/rl.json")
        # Disturbance: what other processes ran (either core), in % of one
        # core. A negative sum (a process exited unreaped) counts as its size.
        o1=$(share_of $((x1 - x0)) "$DUR")
        o2=$(share_of $((x2 - x1)) "$DUR")
        row other_h2load "$g" "$rep" "$o1"
        row other_ringload "$g" "$rep" "$o2"
        # Core 0's whole busy time (the gateway plus softirq work done while
        # it sleeps) per request: fair only when nothing else ran.
        core_us=$(us_per $((c1 - c0)) "$n")
        row h2load_core_us "$g" "$rep" "$core_us"
        us=$(us_per $((t1 - t0)) "$n")
        rus=$(us_per $((t2 - t1)) "$rn")
        row h2load_rps "$g" "$rep" "$rps"
        row h2load_us "$g" "$rep" "$us"
        row ringload_rps "$g" "$rep" "$rrps"
        row ringload_us "$g" "$rep" "$rus"
        printf "| %s | %s | %s | %s | %s | %s | %.0f | %s | %s | %s |\n" "$g" "$rep" "$rps" "$us" "$core_us" \
            "$(busy $((t1 - t0)) "$DUR")" "$rrps" "$rus" "$o1/$o2" "$failed $re"
    done
done

echo
echo "### Medians of $REPS reps${CLEAN:+, leaving out runs where other processes used more than $CLEAN% of a core}"
echo
medians "h2load_rps|h2load req/s|%.0f|other_h2load" "h2load_us|µs CPU/req (h2load)|%.1f|other_h2load" \
    "h2load_core_us|core 0 µs/req (h2load)|%.1f|other_h2load" \
    "ringload_rps|ringload --h2 req/s|%.0f|other_ringload" "ringload_us|µs CPU/req (ringload)|%.1f|other_ringload" -- $GATEWAYS
echo
echo "(ratios: for req/s above 1 favours ringway; for µs CPU below 1 does)"
echo "(load average after: $(busy_other))"
