#!/bin/sh
# bench/cluster_routes_mem.sh -- memory of remote routes (docs/benchmarks.md
# "Cluster: memory per remote route", issue 20): nodes a and b (1 worker
# each, persistence off, static members, the API on for the route count),
# N antenna-bench subscribers on a, each on its own topic dev/<client>/in;
# prints b's VmRSS before, once b knows all N routes (GET /api/v1/nodes),
# and the growth per route.
#
#   bench/cluster_routes_mem.sh [BUILD_DIR] [N]     e.g. bench/cluster_routes_mem.sh build 18000
#
# N stays under ~18,600 (limits.max_connections derives from the 20,000
# open files).  ANTENNA=path runs another broker binary (a "before" build).
# KEEP=1 keeps the temporary directory.
set -eu
BUILD=${1:-build}
N=${2:-18000}
BIN=${ANTENNA:-$(cd "$BUILD" && pwd)/antenna}
BENCH=$(cd "$BUILD" && pwd)/antenna-bench
TMP=$(mktemp -d)
WORKERS=1
. "$(dirname "$0")/lib_pair.sh"
trap pair_cleanup EXIT INT TERM
pair_setup
pair_node a "$MQ_A" "$API_A" "$LINK_A"
pair_node b "$MQ_B" "$API_B" "$LINK_B"
PID_B=$PAIR_PID
routes() { # b's view of a: "<state> <routes>"
    pair_link_of_a | python3 -c 'import json,sys
ls = json.load(sys.stdin)
print(ls["state"], ls["routes"])' 2>/dev/null || echo "down 0"
}
rss() { awk '/^VmRSS/ {print $2 * 1024}' "/proc/$PID_B/status"; }
i=0
until routes | grep -q '^up'; do
    i=$((i + 1))
    [ $i -lt 300 ] || { echo "cluster_routes_mem.sh: the link did not come up in 30 s" >&2; exit 1; }
    sleep 0.1
done
sleep 1
BEFORE=$(rss)
"$BENCH" sub -p "$MQ_A" -c "$N" --sub-topic 'dev/%c/in' --setup-timeout 50 -d 600 --quiet \
    >"$TMP/sub.txt" 2>&1 &
PIDS="$PIDS $!"
i=0
until [ "$(routes | cut -d' ' -f2)" -ge "$N" ]; do
    i=$((i + 1))
    [ $i -lt 1200 ] || { echo "cluster_routes_mem.sh: b has $(routes) after 120 s" >&2; exit 1; }
    sleep 0.1
done
sleep 1
AFTER=$(rss)
echo "b: VmRSS $BEFORE -> $AFTER B for $(routes | cut -d' ' -f2) remote routes:" \
    "$(( (AFTER - BEFORE) / N )) B per route"
