#!/bin/sh
# bench/http_ingest.sh -- requests/s and messages/s of the device HTTP
# ingest listener (http_ingest, docs/http-ingest.md) with wrk.
#
#   bench/http_ingest.sh [BUILD_DIR] [SECONDS] [BATCH] [CONNS]
#   e.g. bench/http_ingest.sh build 10 1 16; bench/http_ingest.sh build 10 50 16
#
# Starts its own broker (2 workers, auth.default allow, no subscriber:
# the cost of receiving, authenticating and routing), POSTs BATCH messages
# per request (a JSON object when 1, else an array) to /devices/bench/messages
# over CONNS keep-alive connections and prints wrk's report and
# messages/s = requests/s * BATCH.  Needs wrk (Debian package wrk).
set -eu
BUILD=${1:-build}
SECS=${2:-10}
BATCH=${3:-1}
CONNS=${4:-16}
BIN=$(cd "$BUILD" && pwd)/antenna
TMP=$(mktemp -d)
BROKER=
cleanup() {
    [ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$TMP/antenna.yaml" <<YAML
workers: 2
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: 0
api:
  enabled: false
persistence:
  dir: $TMP/store
auth:
  default: allow
http_ingest:
  enabled: true
  bind: 127.0.0.1
  port: $PORT
  max_messages: 100000
YAML
"$BIN" -c "$TMP/antenna.yaml" > "$TMP/log" 2>&1 &
BROKER=$!
i=0
until curl -s -o /dev/null "http://127.0.0.1:$PORT/"; do
    i=$((i + 1))
    [ $i -lt 100 ] || { cat "$TMP/log"; exit 1; }
    sleep 0.1
done
python3 - "$BATCH" > "$TMP/post.lua" <<'PY'
import json, sys
n = int(sys.argv[1])
m = {"topic": "devices/bench/up", "payload": "x" * 64, "qos": 1}
body = json.dumps(m if n == 1 else [m] * n)
print("wrk.method = \"POST\"")
print("wrk.body = %s" % json.dumps(body))
print("wrk.headers[\"Content-Type\"] = \"application/json\"")
print("wrk.headers[\"Authorization\"] = \"Bearer t\"")
PY
wrk -t2 -c"$CONNS" -d"$SECS" -s "$TMP/post.lua" "http://127.0.0.1:$PORT/devices/bench/messages" \
    | tee "$TMP/wrk"
RPS=$(awk '/^Requests\/sec/ {print $2}' "$TMP/wrk")
echo "messages/s: $(awk -v r="$RPS" -v b="$BATCH" 'BEGIN {printf "%.0f", r * b}')"
