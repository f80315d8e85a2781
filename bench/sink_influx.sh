#!/bin/sh
# bench/sink_influx.sh -- the `sink-influx` bench kind: points per second
# through one rule into a local InfluxDB (the influxdb sink, docs/sinks.md),
# and nothing lost.
#
#   bench/sink_influx.sh [BUILD_DIR] [PUBLISHERS] [MESSAGES_EACH] [BATCH] [PERSIST]
#   e.g. bench/sink_influx.sh build 20 50000 256 off
#   environment: GZIP=false turns gzip off, INFLIGHT (20000) the sink's
#   max_inflight, POINTS (5000) the driver's max_request_points
#
# Starts its own influxd (Debian's influxdb, temp dir, free ports, the
# service's settings otherwise) and its own antenna (2 workers, ephemeral
# ports, persistence on or off (PERSIST, default off: the sink's buffer in
# memory), one rule
#     SELECT topic(2) AS dev, topic(3) AS n FROM "b/+/+"
# feeding the influxdb sink: measurement bench, tag dev, integer field n,
# timestamp n (so each message is its own point: series dev, time n), a
# batch of BATCH points (linger 100 ms; the framework allows at most 256),
# joined by the driver into requests of up to POINTS, INFLIGHT records in
# flight, gzip).
# PUBLISHERS antenna-bench publishers send MESSAGES_EACH QoS 1 messages each,
# flat out, on b/<publisher>/<message number>.  The time runs from the
# first publish until influxd counts every point (SELECT count(n)); it
# prints points/s, the publish phase alone, CPU seconds of antenna and
# influxd, and the sink's figures from the API.  Exits 1 when a point is
# missing.
set -eu
BUILD=${1:-build}
PUBS=${2:-20}
EACH=${3:-50000}
BATCH=${4:-5000}
PERSIST=${5:-off}
BIN=$(cd "$BUILD" && pwd)/antenna
BENCH=$(cd "$BUILD" && pwd)/antenna-bench
TOTAL=$((PUBS * EACH))
TMP=$(mktemp -d)
BROKER=
INFLUXD=
cleanup() {
    [ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null || true
    [ -n "$INFLUXD" ] && kill "$INFLUXD" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
cpu_s() { # utime + stime of a process, seconds
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"
}
now() { date +%s.%N; }

IPORT=$(free_port)
RPORT=$(free_port)
mkdir -p "$TMP/influx"
cat > "$TMP/influx/influxdb.conf" <<EOF
reporting-disabled = true
bind-address = "127.0.0.1:$RPORT"
[meta]
  dir = "$TMP/influx/meta"
[data]
  dir = "$TMP/influx/data"
  wal-dir = "$TMP/influx/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:$IPORT"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
EOF
influxd run -config "$TMP/influx/influxdb.conf" > "$TMP/influxd.log" 2>&1 &
INFLUXD=$!
IURL="http://127.0.0.1:$IPORT"
i=0
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$IURL/ping")" = 204 ]; do
    i=$((i + 1)); [ $i -lt 600 ] || { cat "$TMP/influxd.log"; exit 1; }; sleep 0.1
done
curl -s -XPOST "$IURL/query" --data-urlencode 'q=CREATE DATABASE bench' > /dev/null

KEY=$("$BIN" apikey create "$TMP/keys" bench)
if [ "$PERSIST" = on ]; then
    PERSISTENCE="persistence:
  enabled: true
  dir: $TMP/store"
else
    PERSISTENCE="persistence:
  enabled: false"
fi
cat > "$TMP/antenna.yaml" <<YAML
workers: 2
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: 0
api:
  port: 0
  keys_file: $TMP/keys
$PERSISTENCE
sinks:
  sinks:
    - name: tsdb
      type: influxdb
      url: $IURL
      database: bench
      precision: ns
      gzip: ${GZIP:-true}
      max_inflight: ${INFLIGHT:-20000}
      max_request_points: ${POINTS:-5000}
      batch:
        max_messages: $BATCH
        linger: 100ms
      buffer:
        max_messages: 1000000
        overflow: backpressure
      retry:
        max_attempts: 1000
        backoff: 100ms
        max_backoff: 2s
rules:
  rules:
    - id: influx
      sql: SELECT topic(2) AS dev, topic(3) AS n FROM "b/+/+"
      actions:
        - type: sink
          sink: tsdb
          measurement: bench
          tags.dev: "\${dev}"
          fields.n: "\${n}"
          fields.n.type: integer
          timestamp: "\${n}"
YAML
ulimit -n 65536 2>/dev/null || true
"$BIN" --config "$TMP/antenna.yaml" > "$TMP/log" 2>&1 &
BROKER=$!
i=0
while ! grep -q "api: listening" "$TMP/log"; do
    i=$((i + 1)); [ $i -lt 300 ] || { cat "$TMP/log"; exit 1; }; sleep 0.1
done
MQTT_PORT=$(sed -n 's/.*listener mqtt: listening on [^ ]*:\([0-9]*\).*/\1/p' "$TMP/log")
API_PORT=$(sed -n 's/.*api: listening on [^ ]*:\([0-9]*\) .*/\1/p' "$TMP/log")

count() {
    curl -s -XPOST "$IURL/query" --data-urlencode 'db=bench' \
        --data-urlencode 'q=SELECT count(n) FROM bench' |
        sed -n 's/.*"values":\[\[[^,]*,\([0-9]*\)\]\].*/\1/p'
}

A0=$(cpu_s "$BROKER")
I0=$(cpu_s "$INFLUXD")
T0=$(now)
"$BENCH" pub -p "$MQTT_PORT" -c "$PUBS" -t 'b/%i/%n' -q 1 -s 16 -L "$EACH" -d 600 \
    --quiet --json > "$TMP/pub.json" 2> "$TMP/pub.log"
T1=$(now)
i=0
N=0
while :; do
    N=$(count)
    [ "${N:-0}" -ge "$TOTAL" ] && break
    i=$((i + 1))
    [ $i -lt 1200 ] || break # 10 minutes
    sleep 0.5
done
T2=$(now)
A1=$(cpu_s "$BROKER")
I1=$(cpu_s "$INFLUXD")
SINK=$(curl -s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$API_PORT/api/v1/sinks/tsdb")
MET=$(curl -s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$API_PORT/metrics" |
    grep '^antenna_sink_influx_' | grep -v ' 0$' | tr '\n' ' ')
awk -v n="${N:-0}" -v total="$TOTAL" -v t0="$T0" -v t1="$T1" -v t2="$T2" \
    -v a="$(echo "$A1 - $A0" | bc)" -v ic="$(echo "$I1 - $I0" | bc)" \
    -v pubs="$PUBS" -v batch="$BATCH" -v persist="$PERSIST" -v gz="${GZIP:-true}" \
    -v pts="${POINTS:-5000}" -v infl="${INFLIGHT:-20000}" 'BEGIN {
    printf "sink-influx: %d publishers x %d QoS 1 messages, batch %d, request %d, in flight %d, gzip %s, persistence %s\n",
        pubs, total / pubs, batch, pts, infl, gz, persist
    printf "points in influxd: %d of %d (%s)\n", n, total, n == total ? "nothing lost" : "MISSING"
    printf "publish phase: %.2f s (%.0f msg/s)\n", t1 - t0, total / (t1 - t0)
    printf "publish -> last point in influxd: %.2f s = %.0f points/s\n", t2 - t0, n / (t2 - t0)
    printf "CPU: antenna %.2f s (%.2f us/point), influxd %.2f s (%.2f us/point)\n",
        a, a * 1e6 / (n ? n : 1), ic, ic * 1e6 / (n ? n : 1)
}'
echo "sink: $(echo "$SINK" | sed 's/.*"metrics"://')"
echo "driver: $MET"
[ "${N:-0}" -eq "$TOTAL" ]
