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
PIDS=
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
set -- $(python3 -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
MQ_A=$1 MQ_B=$2 API_A=$3 API_B=$4 LINK_A=$5 LINK_B=$6
KEY=$("$BIN" apikey create "$TMP/api.keys" bench)
node() { # name mqtt_port api_port link_port
    cat >"$TMP/$1.yaml" <<YAML
workers: 1
log:
  level: info
  file: $TMP/$1.log
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: $2
persistence:
  enabled: false
api:
  bind: 127.0.0.1
  port: $3
  keys_file: $TMP/api.keys
cluster:
  node: $1
  etcd: ""
  listen: 127.0.0.1:$4
  secret: s
  static_members: [a@127.0.0.1:$LINK_A, b@127.0.0.1:$LINK_B]
YAML
    "$BIN" --config "$TMP/$1.yaml" >"$TMP/$1.out" 2>&1 &
    PIDS="$PIDS $!"
    echo $!
}
node a "$MQ_A" "$API_A" "$LINK_A" >/dev/null
PID_B=$(node b "$MQ_B" "$API_B" "$LINK_B")
routes() { # b's view of a: "<state> <routes>"
    curl -s -m 2 -H "Authorization: Bearer $KEY" "http://127.0.0.1:$API_B/api/v1/nodes" 2>/dev/null |
        python3 -c 'import json,sys
ls = [n["link_state"] for n in json.load(sys.stdin)["nodes"] if n["node"] == "a"][0]
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
