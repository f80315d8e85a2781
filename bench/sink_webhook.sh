#!/bin/sh
# bench/sink_webhook.sh -- messages per second through one rule into the
# webhook sink (src/sinks, docs/sinks.md): PUBS QoS 1 publishers send
# MSGS messages in all as fast as their PUBACKs allow, a rule selects every
# one into a webhook sink, and a local receiver (bench/auth_webhook.py:
# asyncio, HTTP/1.1 keep-alive, 204 to every POST) takes the requests.
#
#   bench/sink_webhook.sh [BUILD_DIR] [MSGS] [PUBS] [PERSIST] [INFLIGHT] [RATE]
#   e.g. bench/sink_webhook.sh build 50000 10 true 64
#        bench/sink_webhook.sh build 20000 10 true 64 2000   (paced: latency)
#
# RATE (messages/s in all, 0 = flat out): paced publishers, for the
# latency from a message's publish to the receiver's confirmation, read
# from the sink's histogram (antenna_sink_latency_seconds): p50 and p99 as
# the upper bounds of the buckets they fall in.
#
# PERSIST (true/false): the broker's persistence (records written in the
# publishers' turn batches, deleted when confirmed).  INFLIGHT: the sink's
# max_inflight (its pool_size follows, at most 64).  Prints the publish
# rate (PUBACKs) and the rate at which the sink's records were confirmed
# (from the first publish to the last confirmation, polled on /metrics).
set -eu
BUILD=${1:-build}
MSGS=${2:-50000}
PUBS=${3:-10}
PERSIST=${4:-true}
INFLIGHT=${5:-64}
RATE=${6:-0}
BIN=$(cd "$BUILD" && pwd)/antenna
BENCH=$(cd "$BUILD" && pwd)/antenna-bench
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
BROKER=
HOOK=
cleanup() {
    [ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null || true
    [ -n "$HOOK" ] && kill "$HOOK" 2>/dev/null || true
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
HOOK_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 "$HERE/auth_webhook.py" "$HOOK_PORT" > "$TMP/hook.log" 2>&1 &
HOOK=$!
POOL=$INFLIGHT
[ "$POOL" -le 64 ] || POOL=64
cat > "$TMP/antenna.yaml" <<YAML
workers: 2
log:
  level: info
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: 0
mqtt:
  max_inflight: 100
persistence:
  enabled: $PERSIST
  dir: $TMP/store
api:
  port: 0
  open_metrics: true
sinks:
  sinks:
    - name: bench
      type: webhook
      url: http://127.0.0.1:$HOOK_PORT/in
      pool_size: $POOL
      max_inflight: $INFLIGHT
      buffer:
        max_messages: 10000000
        max_bytes: 4294967296
rules:
  rules:
    - id: bench
      sql: SELECT clientid, topic, qos FROM "bench/#"
      actions:
        - type: sink
          sink: bench
YAML
"$BIN" --config "$TMP/antenna.yaml" > "$TMP/log" 2>&1 &
BROKER=$!
i=0
while ! grep -q "api: listening" "$TMP/log"; do
    i=$((i + 1)); [ $i -lt 200 ] || { cat "$TMP/log"; exit 1; }; sleep 0.1
done
MQTT_PORT=$(sed -n 's/.*listener mqtt: listening on [^ ]*:\([0-9]*\).*/\1/p' "$TMP/log")
API_PORT=$(sed -n 's/.*api: listening on [^ ]*:\([0-9]*\) .*/\1/p' "$TMP/log")
succeeded() {
    curl -s "http://127.0.0.1:$API_PORT/metrics" |
        sed -n 's/^antenna_sink_records_total{sink="bench",result="succeeded"} \([0-9]*\)$/\1/p'
}
PER=$((MSGS / PUBS))
TOTAL=$((PER * PUBS))
T0=$(date +%s.%N)
"$BENCH" pub -p "$MQTT_PORT" -c "$PUBS" -q 1 -s 64 -L "$PER" -d 600 --quiet -r "$RATE" \
    -t 'bench/%i' > "$TMP/bench.log" 2>&1
T1=$(date +%s.%N)
i=0
while [ "$(succeeded)" != "$TOTAL" ]; do
    i=$((i + 1)); [ $i -lt 6000 ] || { echo "sink: $(succeeded) of $TOTAL confirmed"; exit 1; }
    sleep 0.05
done
T2=$(date +%s.%N)
awk -v n="$TOTAL" -v t0="$T0" -v t1="$T1" -v t2="$T2" -v p="$PERSIST" -v f="$INFLIGHT" 'BEGIN {
    printf "persistence %s, max_inflight %s: %d QoS 1 messages\n", p, f, n
    printf "  published (PUBACKed): %.0f msg/s\n", n / (t1 - t0)
    printf "  through the webhook sink (confirmed): %.0f msg/s\n", n / (t2 - t0)
}'
# the latency from publish to confirmation: the sink's histogram
curl -s "http://127.0.0.1:$API_PORT/metrics" | awk -F'[{}" ]+' '
    /^antenna_sink_latency_seconds_bucket\{sink="bench"/ {
        for (i = 1; i <= NF; i++) if ($i ~ /le=$/) le = $(i + 1)
        n++; les[n] = le; cum[n] = $NF }
    /^antenna_sink_latency_seconds_count\{sink="bench"/ { total = $NF }
    END {
        if (!total) exit
        split("0.5 0.99", qs, " ")
        for (q = 1; q <= 2; q++)
            for (i = 1; i <= n; i++)
                if (cum[i] >= qs[q] * total) { printf "  latency p%s <= %s s\n", qs[q] * 100, les[i]; break }
    }'
