# Shared by benches/tls/https.sh and benches/h2/h2.sh (sourced, not run):
# benches/e2e/common.sh (process bookkeeping, pinning, CPU ticks of a PID)
# plus the certificate, waiting for a quiet machine, and the disturbance
# and per-request figures.
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/common.sh"

# make_cert: one ECDSA P-256 certificate for localhost and 127.0.0.1 in
# $WORK (cert.pem, key.pem, and cert-and-key.pem for HAProxy).
make_cert() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$WORK/key.pem" -out "$WORK/cert.pem" -days 2 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
    cat "$WORK/cert.pem" "$WORK/key.pem" >"$WORK/cert-and-key.pem"
}

# Busy ticks (user, nice, system, irq, softirq, steal) of core 0, and of
# the whole machine, from /proc/stat.
core0_ticks() { awk '/^cpu0 / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
all_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
# other0 CORE0_TICKS GATEWAY_TICKS SECONDS: core 0's busy time not spent by
# the gateway, as a share of the core (another program on the shared VM).
other0() {
    awk -v c="$1" -v g="$2" -v d="$3" -v hz="$CLK_TCK" 'BEGIN { x = 100 * (c - g) / hz / d; printf "%.0f%%", (x < 0 ? 0 : x) }'
}
# others_ticks: CPU ticks (own, and of reaped children) of every process
# but this script, its children and the processes it started: what else
# the machine ran. Unlike other0 this does not count softirq work that
# lands on core 0 while the gateway sleeps (h2 runs, where the gateway is
# not saturated, have a lot of it).
others_ticks() {
    python3 - $$ "${STARTED[@]:-}" <<'PY'
import os, sys
skip = {int(p) for p in sys.argv[1:] if p}
procs = {}
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        s = open(f"/proc/{d}/stat").read()
    except OSError:
        continue
    f = s[s.rindex(")") + 2:].split()
    procs[int(d)] = (int(f[1]), sum(int(x) for x in f[11:15]))
def mine(p):
    seen = 0
    while p > 1 and seen < 64:
        if p in skip:
            return True
        p = procs.get(p, (0, 0))[0]
        seen += 1
    return False
print(sum(t for p, (_, t) in procs.items() if not mine(p)))
PY
}

# share_of TICKS SECONDS: |TICKS| as a share of one core.
share_of() {
    awk -v x="$1" -v d="$2" -v hz="$CLK_TCK" 'BEGIN { if (x < 0) x = -x; printf "%.0f%%", 100 * x / hz / d }'
}

# other_start PID before a run, other_end PID SECONDS after it: other0
# over the run.
other_start() { O_C=$(core0_ticks); O_T=$(cpu_ticks "$1"); }
other_end() { other0 $(($(core0_ticks) - O_C)) $(($(cpu_ticks "$1") - O_T)) "$2"; }
# quiet: before each rep, wait (at most QUIET_WAIT s) until the machine,
# idle as far as this script goes, is below QUIET percent of one core.
quiet() {
    local deadline=$((SECONDS + ${QUIET_WAIT:-900})) a b
    while :; do
        a=$(all_ticks)
        sleep 2
        b=$(all_ticks)
        [ $((b - a)) -le $((2 * CLK_TCK * ${QUIET:-10} / 100)) ] && return 0
        if [ $SECONDS -ge $deadline ]; then
            echo "(still busy after ${QUIET_WAIT:-900} s: measuring anyway)" >&2
            return 0
        fi
    done
}

us_per() { # ticks count
    awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "-" }'
}
busy() { # ticks seconds: share of one core
    awk -v t="$1" -v d="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.0f%%", 100 * t / hz / d }'
}
# rotated REP: $GATEWAYS, rotated by REP - 1, so that no gateway always
# runs first (or last) in a rep: on this VM the noise drifts over minutes,
# and a fixed order would hand one gateway the same slot every time.
rotated() {
    local -a all=($GATEWAYS)
    local k=$((($1 - 1) % ${#all[@]}))
    echo "${all[@]:k}" "${all[@]:0:k}"
}

# row METRIC GATEWAY REP VALUE: kept in $ROWS for medians().
row() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$ROWS"; }

# medians "metric|title|format[|other-metric]" ... -- GATEWAY...: a table
# of the medians over reps of each metric for each gateway, then the ratios
# of each ringway build (ringway, ringway-b) to each peer. With CLEAN=N, a
# rep's value is left out when its other-metric (the share of core 0 that
# something else used during that run, in %) is above N; the counts kept
# are listed under the table.
medians() {
    python3 - "$ROWS" "${CLEAN:-}" "$@" <<'PY'
import statistics, sys
rows, clean = sys.argv[1], sys.argv[2]
args = sys.argv[3:]
sep = args.index("--")
cols = [c.split("|") for c in args[:sep]]
gateways = args[sep + 1:]
raw = {}
for line in open(rows):
    m, g, rep, x = line.rstrip("\n").split("\t")
    try:
        raw[(m, g, rep)] = float(x.rstrip("%"))
    except ValueError:
        pass
v, dropped = {}, {}
for (m, g, rep), x in raw.items():
    col = next((c for c in cols if c[0] == m), None)
    if col is None:
        continue
    other = raw.get((col[3], g, rep)) if len(col) > 3 else None
    if clean and other is not None and other > float(clean):
        dropped.setdefault((m, g), []).append(rep)
        continue
    v.setdefault((m, g), []).append(x)
med = lambda m, g: statistics.median(v[(m, g)]) if (m, g) in v else float("nan")
fmt = lambda f, x: "–" if x != x else f % x  # NaN: no rep kept
print("| gateway | " + " | ".join(c[1] for c in cols) + " |")
print("|---|" + "---:|" * len(cols))
for g in gateways:
    print(f"| {g} | " + " | ".join(fmt(c[2], med(c[0], g)) for c in cols) + " |")
for r in [g for g in gateways if g.startswith("ringway")]:
    for peer in [p for p in gateways if not p.startswith("ringway")]:
        print(f"| {r}/{peer} | " + " | ".join(
            fmt("%.2f", med(c[0], r) / med(c[0], peer)) for c in cols) + " |")
# Paired: the median over reps of each rep's own ratio (reps where both
# were kept), which cancels the drift that moves every gateway of a rep.
kept = lambda m, g, rep: (m, g, rep) in raw and rep not in dropped.get((m, g), [])
reps = sorted({rep for (_, _, rep) in raw}, key=int)
def paired(m, r, peer):
    xs = [raw[(m, r, rep)] / raw[(m, peer, rep)] for rep in reps
          if kept(m, r, rep) and kept(m, peer, rep) and raw[(m, peer, rep)]]
    return statistics.median(xs) if xs else float("nan"), len(xs)
for r in [g for g in gateways if g.startswith("ringway")]:
    for peer in [p for p in gateways if not p.startswith("ringway")]:
        cells = []
        for c in cols:
            x, n = paired(c[0], r, peer)
            cells.append(fmt("%.2f", x) + (f" ({n})" if x == x else ""))
        print(f"| {r}/{peer}, per rep | " + " | ".join(cells) + " |")
if clean:
    print()
    print(f"Reps kept (the run's \"other\" at most {clean}%), per column:")
    for g in gateways:
        print(f"- {g}: " + ", ".join(str(len(v.get((c[0], g), []))) for c in cols))
PY
}

# start_gateway NAME: starts one gateway on core 0 and
# sets PID[NAME]. ringway-b is a second ringway build ($RINGWAY_B) with the
# same configuration on another port, measured side by side.
start_gateway() {
    local g=$1
    case $g in
        ringway) start 0 ringway "$RINGWAY" --config "$WORK/ringway.toml" --workers 1 ;;
        ringway-b)
            sed "s/127.0.0.1:${PORT[ringway]}\"/127.0.0.1:${PORT[ringway-b]}\"/" "$WORK/ringway.toml" >"$WORK/ringway-b.toml"
            start 0 ringway_b "$RINGWAY_B" --config "$WORK/ringway-b.toml" --workers 1
            ;;
        nginx) start 0 nginx nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" ;;
        haproxy) start 0 haproxy haproxy -db -f "$WORK/haproxy.cfg" ;;
        *) echo "unknown gateway $g" >&2; exit 1 ;;
    esac
    wait_port "${PORT[$g]}"
    local pid_var=PID_${g//-/_}
    PID[$g]=${!pid_var}
}

# prepare_configs: the certificate, and the script's gateway configurations
# (ringway.toml, nginx.conf, haproxy.cfg from $HERE, @WORK@ filled in) in
# $WORK.
prepare_configs() {
    make_cert
    cp "$HERE/ringway.toml" "$WORK/ringway.toml"
    mkdir -p "$WORK/nginx/tmp"
    sed "s#@WORK@#$WORK#g" "$HERE/nginx.conf" >"$WORK/nginx/nginx.conf"
    sed "s#@WORK@#$WORK#g" "$HERE/haproxy.cfg" >"$WORK/haproxy.cfg"
}

# start_all BASE: the 1 KiB origin on port BASE (core 1), then every
# gateway of $GATEWAYS (core 0) on the ports after it, as the configs say:
# ringway BASE+1, nginx +2, HAProxy +3, ringway-b +4. Fills PORT and PID,
# which the script declares (`declare -A PORT=() PID=()`).
start_all() {
    local base=$1
    start 1 origin "$RINGLOAD" serve --listen "127.0.0.1:$base" --workers 1 --body-size 1024 --name origin
    wait_port "$base"
    PORT[ringway]=$((base + 1))
    PORT[nginx]=$((base + 2))
    PORT[haproxy]=$((base + 3))
    PORT[ringway-b]=$((base + 4))
    local g
    for g in $GATEWAYS; do
        start_gateway "$g"
    done
}
