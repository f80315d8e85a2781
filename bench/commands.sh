#!/bin/sh
# bench/commands.sh -- one group command to N devices (docs/benchmarks.md,
# "Commands"): seconds until every device replied, the broker's CPU, its
# RSS before/after and the bytes per tracked command.
#
#   bench/commands.sh [BUILD_DIR] [DEVICES] [CONCURRENCY] [PERSIST]
#   e.g. bench/commands.sh build 10000 1000 true
#
# Starts its own broker (2 workers, ephemeral ports, temp dir; commands
# on, max_commands 4 x DEVICES, persistence PERSIST, default true),
# `antenna-bench device` with DEVICES MQTT 3.1.1 devices (dev-00000...) that
# answer each command at once, waits until all are subscribed, POSTs
# /api/v1/groups/commands with {"selector": {"client_id_prefix": "dev-"},
# "concurrency": CONCURRENCY}, polls the group's progress every 100 ms
# until all finished, and prints the figures.  Needs curl.
set -eu
BUILD=${1:-build}
N=${2:-10000}
CONC=${3:-1000}
PERSIST=${4:-true}
BIN=$(cd "$BUILD" && pwd)/antenna
DEVS=$(cd "$BUILD" && pwd)/antenna-bench
TMP=$(mktemp -d)
BROKER=
DEVPID=
cleanup() {
    [ -n "$DEVPID" ] && kill "$DEVPID" 2>/dev/null || true
    [ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
KEY=$("$BIN" apikey create "$TMP/keys" bench)
cat > "$TMP/antenna.yaml" <<YAML
workers: 2
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: 0
api:
  port: 0
  keys_file: $TMP/keys
persistence:
  enabled: $PERSIST
  dir: $TMP/store
commands:
  enabled: true
  max_commands: $((N * 4))
  reply_timeout: 60s
YAML
ulimit -n 65536 2>/dev/null || ulimit -n 20000 2>/dev/null || true
"$BIN" --config "$TMP/antenna.yaml" > "$TMP/log" 2>&1 &
BROKER=$!
i=0
while ! grep -qs "api: listening" "$TMP/log"; do
    i=$((i + 1)); [ $i -lt 300 ] || { cat "$TMP/log"; exit 1; }; sleep 0.1
done
MQTT_PORT=$(sed -n 's/.*listener mqtt: listening on [^ ]*:\([0-9]*\).*/\1/p' "$TMP/log")
API_PORT=$(sed -n 's/.*api: listening on [^ ]*:\([0-9]*\) .*/\1/p' "$TMP/log")
API="http://127.0.0.1:$API_PORT/api/v1"
"$DEVS" device -p "$MQTT_PORT" -n "$N" -t 2 --prefix dev- --ready-file "$TMP/ready" \
    --seconds 600 > "$TMP/devices.log" 2>&1 &
DEVPID=$!
i=0
while [ ! -f "$TMP/ready" ]; do
    i=$((i + 1)); [ $i -lt 1200 ] || { cat "$TMP/devices.log"; exit 1; }; sleep 0.1
done
READY=$(cat "$TMP/ready")
[ "$READY" -eq "$N" ] || { echo "only $READY of $N devices connected"; cat "$TMP/devices.log"; exit 1; }

cpu() { # utime + stime of the broker, in clock ticks
    awk '{print $14 + $15}' "/proc/$BROKER/stat"
}
rss() { # kB
    awk '/^VmRSS/ {print $2}' "/proc/$BROKER/status"
}
now() { date +%s.%N; }
TICKS=$(getconf CLK_TCK)
RSS0=$(rss)
CPU0=$(cpu)
T0=$(now)
curl -s -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" -X POST "$API/groups/commands" -o "$TMP/post.json" \
    -d "{\"selector\": {\"client_id_prefix\": \"dev-\"}, \"name\": \"ping\", \"qos\": 1, \"concurrency\": $CONC}"
GROUP=$(sed -n 's/.*"group": *"\(g[0-9a-f]*\)".*/\1/p' "$TMP/post.json")
[ -n "$GROUP" ] || { echo "the POST failed: $(head -c 300 "$TMP/post.json")"; exit 1; }
T1=$(now)
i=0
while :; do
    P=$(curl -sf -H "Authorization: Bearer $KEY" "$API/groups/commands/$GROUP")
    TOTAL=$(echo "$P" | sed -n 's/.*"total": *\([0-9]*\).*/\1/p')
    FIN=$(echo "$P" | sed -n 's/.*"finished": *\([0-9]*\).*/\1/p')
    [ -n "$TOTAL" ] && [ "$FIN" = "$TOTAL" ] && break
    i=$((i + 1)); [ $i -lt 1200 ] || { echo "not finished after 120 s: $P"; exit 1; }
    sleep 0.1
done
T2=$(now)
CPU1=$(cpu)
RSS1=$(rss)
OK=$(echo "$P" | sed -n 's/.*"succeeded": *\([0-9]*\).*/\1/p')
echo "devices: $N, group $GROUP: $TOTAL commands, $OK succeeded (concurrency $CONC, persistence $PERSIST)"
echo "by status: $(echo "$P" | sed -n 's/.*"by_status": *\({[^}]*}\).*/\1/p')"
awk -v t0="$T0" -v t1="$T1" -v t2="$T2" -v c0="$CPU0" -v c1="$CPU1" -v hz="$TICKS" \
    -v r0="$RSS0" -v r1="$RSS1" -v n="$TOTAL" 'BEGIN {
    printf "POST answered in %.2f s; all replied %.2f s after the POST\n", t1 - t0, t2 - t0
    printf "broker CPU: %.2f s (utime + stime)\n", (c1 - c0) / hz
    printf "broker RSS: %d kB before, %d kB after: %.0f bytes per tracked command\n", r0, r1, (r1 - r0) * 1024 / n
}'
