#!/usr/bin/env bash
# io_uring setup flags, measured: ringway with COOP_TASKRUN + SINGLE_ISSUER +
# DEFER_TASKRUN against ringway with a plain ring (RINGWAY_PLAIN_RING=1),
# alternating, comparing the gateway's CPU time per request. Setup and
# method in benches/one_core.sh.
#
# Usage: [RATE=20000] benches/uring/flags.sh [reps] [seconds]
cd "$(dirname "$0")/../.."
reps=${1:-5}
secs=${2:-5}
. benches/one_core.sh

start_origin
cat > "$work/ringway.toml" <<TOML
[[listener]]
name = "edge"
listen = "$EDGE"
[[route]]
cluster = "origin"
[cluster.origin]
endpoints = ["$ORIGIN"]
TOML

echo "ringway $(git rev-parse --short HEAD), nginx $(nginx -v 2>&1 | sed 's/.*\///'), $(load_name), $reps reps"
for _ in $(seq "$reps"); do
  measure tuned "$work/ringway.toml" ""
  measure plain "$work/ringway.toml" "RINGWAY_PLAIN_RING=1"
done
