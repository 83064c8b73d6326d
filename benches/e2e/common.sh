# Shared helpers for the end-to-end benchmark scripts (sourced, not run).
# Every process a script starts is recorded in STARTED and killed by PID on
# exit; nothing else is touched. All traffic stays on 127.0.0.1.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RINGLOAD=${RINGLOAD:-$TARGET_DIR/release/ringload}
RINGWAY=${RINGWAY:-$TARGET_DIR/release/ringway}
WORK=$(mktemp -d /tmp/ringway-e2e.XXXXXX)
STARTED=()
CLK_TCK=$(getconf CLK_TCK)

cleanup() {
    for pid in "${STARTED[@]:-}"; do
        [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${STARTED[@]:-}"; do
        [ -n "$pid" ] && wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

need() {
    command -v "$1" >/dev/null || { echo "missing: $1 (apt-get install $2)" >&2; exit 1; }
}

# start CPU NAME CMD... : runs CMD pinned to CPU in the background, records
# its PID in STARTED and in the variable PID_<NAME>.
start() {
    local cpu=$1 name=$2
    shift 2
    taskset -c "$cpu" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
    local pid=$!
    STARTED+=("$pid")
    printf -v "PID_$name" '%s' "$pid"
}

# wait_port PORT: until something accepts on 127.0.0.1:PORT (10 s deadline).
wait_port() {
    local deadline=$((SECONDS + 10))
    until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            echo "nothing listens on port $1 after 10 s" >&2
            exit 1
        fi
        sleep 0.05
    done
}

# cpu_ticks PID...: utime+stime (all threads) summed over the PIDs and
# their children (nginx's and haproxy's workers).
cpu_ticks() {
    local total=0 p kids
    for p in "$@"; do
        kids=$(cat /proc/"$p"/task/*/children 2>/dev/null || true)
        for q in $p $kids; do
            if [ -r /proc/"$q"/stat ]; then
                # Fields after the ")" that ends the command name: utime is
                # the 12th, stime the 13th.
                total=$((total + $(sed 's/.*) //' /proc/"$q"/stat | awk '{print $12 + $13}')))
            fi
        done
    done
    echo "$total"
}

# json FIELD < ringload --json output
json() {
    python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v[k]
print(v)' "$1"
}

# cpu_of OUT CMD...: runs CMD with stdout in OUT and prints the CPU
# seconds (user + system) it used, from the shell's `times`.
cpu_of() {
    local out=$1
    shift
    ( "$@" >"$out" 2>"$out.err"; times ) | tail -1 | awk '
        function s(x,   m) { m = x; sub(/m.*/, "", m); sub(/^[0-9]+m/, "", x); sub(/s$/, "", x); return m * 60 + x }
        { printf "%.3f\n", s($1) + s($2) }'
}

# busy_other: what else loaded the machine, as the 1-minute load average
# (this VM is shared with builds; a busy machine makes every figure noisy).
busy_other() {
    cut -d' ' -f1 /proc/loadavg
}

# Lines for RESULTS.md.
versions() {
    echo "- $(nginx -v 2>&1)"
    echo "- $(haproxy -v | head -1)"
    echo "- $(wrk --version 2>&1 | head -1 | cut -c1-40)"
    echo "- $(h2load --version | head -1)"
    echo "- kernel $(uname -r), $(nproc) cores"
}
