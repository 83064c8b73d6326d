#!/usr/bin/env bash
# HTTPS at the edge: ringway, nginx and HAProxy, each pinned to core 0,
# terminating TLS on 127.0.0.1 with the same ECDSA P-256 certificate (made
# here with openssl) and proxying HTTP/1.1 over pooled keep-alive
# connections to the same `ringload serve` origin (1 KiB) on core 1. The
# load runs on core 1 too. Method of benches/e2e/proxy.sh: the decisive
# figure is the gateway's CPU time (utime+stime of its PIDs and children,
# /proc/PID/stat) per request or per handshake; peers side by side in the
# same run; REPS repetitions, medians at the end.
#
#  a) keep-alive: many requests per TLS connection, `ringload run -k`
#     (rustls client) and `wrk` (OpenSSL) as the check, CONNS connections.
#  b) handshakes: one request per connection (`Connection: close`), a new
#     full handshake every time, TLS 1.3 and TLS 1.2, from
#     `tls_handshakes` (benches/examples), HS_CONNS connections. wrk and
#     h2load cannot do this: they resume the previous session on reconnect.
#
#   cargo build --release -p ringway -p ringway-loadtest
#   cargo build --release -p ringway-benches --example tls_handshakes
#   benches/tls/https.sh    # DUR=8 CONNS=64 HS_CONNS=8 REPS=5 CLEAN=10 by default
#
# Each rep runs the gateways in a rotated order and waits (QUIET_WAIT s
# at most) for the machine to be idle; runs during which something else
# used more than CLEAN % of core 0 are listed but left out of the medians
# (CLEAN= keeps everything). Under the medians, "per rep" rows give the
# median of each rep's own ratio, which the VM's drift moves less.
#
# RINGWAY=/path/to/ringway picks another gateway build; RINGWAY_B=/path
# adds a second build as "ringway-b", side by side with the same
# configuration on another port; GATEWAYS="nginx haproxy" leaves some out.
# RATE=N runs the ringload keep-alive column at a fixed N requests/s (open
# loop) instead of saturated; wrk and the handshake columns stay saturated.
source "$(dirname "$0")/common.sh" # ../e2e/common.sh and the TLS helpers
need wrk wrk
need nginx nginx
need haproxy haproxy
need openssl openssl
need curl curl
DUR=${DUR:-8}
CONNS=${CONNS:-64}
HS_CONNS=${HS_CONNS:-8}
HS_PROVIDER=${HS_PROVIDER:-aws-lc-rs}
REPS=${REPS:-5}
CLEAN=${CLEAN-10}
GATEWAYS=${GATEWAYS:-ringway${RINGWAY_B:+ ringway-b} nginx haproxy}
HANDSHAKES=${HANDSHAKES:-$TARGET_DIR/release/examples/tls_handshakes}
HERE=$(cd "$(dirname "$0")" && pwd)
for bin in "$RINGLOAD" "$RINGWAY" "$HANDSHAKES" ${RINGWAY_B:+"$RINGWAY_B"}; do
    [ -x "$bin" ] || { echo "missing $bin: build it first (see the head of $0)" >&2; exit 1; }
done

prepare_configs
declare -A PORT=() PID=()
start_all 19310

# Every gateway must answer through to the origin over TLS; the OpenSSL
# client's view of what is negotiated is printed.
echo "(load average before: $(busy_other))"
echo
for g in $GATEWAYS; do
    url="https://127.0.0.1:${PORT[$g]}/"
    curl -sk --max-time 5 -o /dev/null -D - "$url" | grep -qi '^x-ringload-server: origin' \
        || { echo "$g does not reach the origin over TLS" >&2; exit 1; }
    echo "- $g: curl (OpenSSL) negotiates $(curl -skv --max-time 5 -o /dev/null "$url" 2>&1 | sed -n 's/.*SSL connection using //p')"
done

ROWS=$WORK/rows.tsv
: >"$ROWS"

echo
echo "### Per rep"
echo
echo "Keep-alive: ringload \`-k -t1 -c$CONNS${RATE:+ -R $RATE}\` and wrk \`-t1 -c$CONNS\`, ${DUR}s each; handshakes:"
echo "tls_handshakes \`-c$HS_CONNS --provider $HS_PROVIDER\`, ${DUR}s each, one request per connection."
echo
echo "\"busy\" is the gateway's share of core 0; \"other\" is core 0's busy time spent by anything"
echo "else (ringload/wrk/TLS 1.3/TLS 1.2 runs): above a few % the run was disturbed."
echo
echo "| gateway | rep | keep-alive req/s (ringload) | µs/req | busy | req/s (wrk) | µs/req (wrk) | TLS 1.3 handshakes/s | µs/handshake | busy | client µs/handshake | TLS 1.2 handshakes/s | µs/handshake | other on core 0 | errors |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
for rep in $(seq "$REPS"); do
    quiet
    for g in $(rotated "$rep"); do
        url="https://127.0.0.1:${PORT[$g]}/"
        addr="127.0.0.1:${PORT[$g]}"
        pid=${PID[$g]}

        c0=$(core0_ticks)
        t0=$(cpu_ticks "$pid")
        taskset -c 1 "$RINGLOAD" run "$url" -k -t1 -c"$CONNS" -d"${DUR}s" ${RATE:+-R "$RATE"} -q --json >"$WORK/ka.json"
        t1=$(cpu_ticks "$pid")
        c1=$(core0_ticks)
        n=$(json requests <"$WORK/ka.json")
        e=$(json errors.total <"$WORK/ka.json")
        rps=$(json achieved_rate <"$WORK/ka.json")
        other_start "$pid"
        taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" "$url" >"$WORK/wrk.txt"
        owrk=$(other_end "$pid" "$DUR")
        wn=$(awk '/requests in/ {print $1}' "$WORK/wrk.txt")
        wrps=$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.txt")
        werr=$(awk '/Non-2xx|Socket errors/ {print}' "$WORK/wrk.txt" | tr '\n' ' ')

        t2=$(cpu_ticks "$pid")
        c2=$(core0_ticks)
        hcpu=$(cpu_of "$WORK/hs13.json" taskset -c 1 "$HANDSHAKES" "$addr" -c "$HS_CONNS" -d "$DUR" --provider "$HS_PROVIDER")
        t3=$(cpu_ticks "$pid")
        c3=$(core0_ticks)
        hn=$(json handshakes <"$WORK/hs13.json")
        he=$(json errors <"$WORK/hs13.json")
        hsecs=$(json secs <"$WORK/hs13.json")
        [ "$rep" = 1 ] && echo "$g: TLS 1.3 $(json suite <"$WORK/hs13.json") $(json kx <"$WORK/hs13.json")" >>"$WORK/negotiated.txt"
        taskset -c 1 "$HANDSHAKES" "$addr" -c "$HS_CONNS" -d "$DUR" --provider "$HS_PROVIDER" --tls12 >"$WORK/hs12.json" 2>"$WORK/hs12.err"
        t4=$(cpu_ticks "$pid")
        c4=$(core0_ticks)
        h2n=$(json handshakes <"$WORK/hs12.json")
        h2e=$(json errors <"$WORK/hs12.json")
        h2secs=$(json secs <"$WORK/hs12.json")
        [ "$rep" = 1 ] && echo "$g: TLS 1.2 $(json suite <"$WORK/hs12.json") $(json kx <"$WORK/hs12.json")" >>"$WORK/negotiated.txt"

        ka_us=$(us_per $((t1 - t0)) "$n")
        wrk_us=$(us_per $((t2 - t1)) "$wn")
        hs_us=$(us_per $((t3 - t2)) "$hn")
        hs12_us=$(us_per $((t4 - t3)) "$h2n")
        hs_rate=$(awk -v n="$hn" -v s="$hsecs" 'BEGIN { printf "%.0f", n / s }')
        hs12_rate=$(awk -v n="$h2n" -v s="$h2secs" 'BEGIN { printf "%.0f", n / s }')
        client_us=$(awk -v c="$hcpu" -v n="$hn" 'BEGIN { if (n > 0) printf "%.1f", c * 1e6 / n; else print "-" }')
        row ka_rps "$g" "$rep" "$rps"
        row ka_us "$g" "$rep" "$ka_us"
        row wrk_rps "$g" "$rep" "$wrps"
        row wrk_us "$g" "$rep" "$wrk_us"
        row hs13_rate "$g" "$rep" "$hs_rate"
        row hs13_us "$g" "$rep" "$hs_us"
        row hs12_rate "$g" "$rep" "$hs12_rate"
        row hs12_us "$g" "$rep" "$hs12_us"
        oka=$(other0 $((c1 - c0)) $((t1 - t0)) "$DUR")
        ohs13=$(other0 $((c3 - c2)) $((t3 - t2)) "$hsecs")
        ohs12=$(other0 $((c4 - c3)) $((t4 - t3)) "$h2secs")
        row other_ka "$g" "$rep" "$oka"
        row other_wrk "$g" "$rep" "$owrk"
        row other_hs13 "$g" "$rep" "$ohs13"
        row other_hs12 "$g" "$rep" "$ohs12"
        other="$oka/$owrk/$ohs13/$ohs12"
        printf "| %s | %s | %.0f | %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" \
            "$g" "$rep" "$rps" "$ka_us" "$(busy $((t1 - t0)) "$DUR")" "$wrps" "$wrk_us" \
            "$hs_rate" "$hs_us" "$(busy $((t3 - t2)) "$hsecs")" "$client_us" "$hs12_rate" "$hs12_us" \
            "$other" "$e/$he/$h2e $werr"
    done
done

echo
echo "Negotiated by tls_handshakes (rustls client, $HS_PROVIDER):"
sed 's/^/- /' "$WORK/negotiated.txt"
echo
echo "### Medians of $REPS reps${CLEAN:+, leaving out runs disturbed by more than $CLEAN% of core 0}"
echo
medians "ka_rps|keep-alive req/s (ringload)|%.0f|other_ka" "ka_us|µs CPU/req|%.1f|other_ka" \
    "wrk_rps|req/s (wrk)|%.0f|other_wrk" "wrk_us|µs CPU/req (wrk)|%.1f|other_wrk" \
    "hs13_rate|TLS 1.3 handshakes/s|%.0f|other_hs13" "hs13_us|µs CPU/handshake|%.1f|other_hs13" \
    "hs12_rate|TLS 1.2 handshakes/s|%.0f|other_hs12" "hs12_us|µs CPU/handshake|%.1f|other_hs12" -- $GATEWAYS
echo
echo "(ratios: for req/s and handshakes/s above 1 favours ringway; for µs CPU below 1 does)"
echo "(load average after: $(busy_other))"
