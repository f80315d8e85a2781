#!/bin/sh
# bench/api.sh -- requests per second of the management API (GET
# /api/v1/stats) with wrk, while antenna-bench holds CONNS MQTT connections.
#
#   bench/api.sh [BUILD_DIR] [CONNS] [SECONDS] [PATH]
#   e.g. bench/api.sh build 3000 10 /api/v1/stats
#
# Starts its own broker (2 workers, ephemeral ports, temp dir), creates an
# API key, waits until every connection is up, runs
#   wrk -t2 -c16 -dSECONDS -H 'Authorization: Bearer KEY' URL
# and prints wrk's report.  Needs wrk (Debian package wrk).
set -eu
BUILD=${1:-build}
CONNS=${2:-3000}
SECS=${3:-10}
URLPATH=${4:-/api/v1/stats}
BIN=$(cd "$BUILD" && pwd)/antenna
BENCH=$(cd "$BUILD" && pwd)/antenna-bench
TMP=$(mktemp -d)
BROKER=
HOLDER=
cleanup() {
    [ -n "$HOLDER" ] && kill "$HOLDER" 2>/dev/null || true
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
    address: 0.0.0.0
    port: 0
api:
  port: 0
  keys_file: $TMP/keys
YAML
ulimit -n 65536 2>/dev/null || true
"$BIN" --config "$TMP/antenna.yaml" > "$TMP/log" 2>&1 &
BROKER=$!
i=0
while ! grep -q "api: listening" "$TMP/log"; do
    i=$((i + 1)); [ $i -lt 100 ] || { cat "$TMP/log"; exit 1; }; sleep 0.1
done
MQTT_PORT=$(sed -n 's/.*listener mqtt: listening on [^ ]*:\([0-9]*\).*/\1/p' "$TMP/log")
API_PORT=$(sed -n 's/.*api: listening on [^ ]*:\([0-9]*\) .*/\1/p' "$TMP/log")
"$BENCH" conn -p "$MQTT_PORT" -c "$CONNS" -d $((SECS + 30)) --quiet \
    --ready-file "$TMP/ready" > "$TMP/bench.log" 2>&1 &
HOLDER=$!
i=0
while [ ! -f "$TMP/ready" ]; do
    i=$((i + 1)); [ $i -lt 600 ] || { cat "$TMP/bench.log"; exit 1; }; sleep 0.1
done
URL="http://127.0.0.1:$API_PORT$URLPATH"
echo "connections held: $(curl -s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$API_PORT/api/v1/stats" | sed 's/.*"current":\([0-9]*\).*/\1/')"
echo "wrk -t2 -c16 -d${SECS}s -H 'Authorization: Bearer KEY' $URL"
wrk -t2 -c16 -d"${SECS}s" -H "Authorization: Bearer $KEY" "$URL"
