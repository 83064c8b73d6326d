#!/usr/bin/env bash
# The cost of telling: ringway with metrics only (always on) against
# ringway with metrics, a JSON access log to a file and tracing exported
# over OTLP to a sink (an nginx `return 200` on core 1), alternating.
# Setup and method in benches/one_core.sh.
#
# Usage: [SAMPLE_RATE=0.01] [RATE=20000] benches/telemetry/overhead.sh [reps] [seconds]
# With RATE, load comes from ringload's open loop at that fixed rate (the
# steadier figure, as README.md "Benchmarks" says); without, from wrk's closed loop.
cd "$(dirname "$0")/../.."
reps=${1:-5}
secs=${2:-5}
. benches/one_core.sh

start_origin "server { listen 127.0.0.1:18995; location / { return 200; } }"
base="[[listener]]
name = \"edge\"
listen = \"$EDGE\"
[[route]]
name = \"all\"
cluster = \"origin\"
[cluster.origin]
endpoints = [\"$ORIGIN\"]"
echo "$base" > "$work/off.toml"
{
  echo "[access_log]"
  echo "path = \"$work/access.log\""
  echo "[tracing]"
  echo "otlp_endpoint = \"http://127.0.0.1:18995/v1/traces\""
  echo "sample_rate = ${SAMPLE_RATE:-1.0}"
  echo "$base"
} > "$work/on.toml"

echo "ringway $(git rev-parse --short HEAD), nginx $(nginx -v 2>&1 | sed 's/.*\///'), $(load_name), $reps reps"
for _ in $(seq "$reps"); do
  measure off "$work/off.toml" ""
  measure on "$work/on.toml" ""
done
echo "access log lines written: $(wc -l < "$work/access.log")"
