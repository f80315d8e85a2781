#!/bin/sh
# bench/coap_pub.sh -- CoAP publishes per second through the CoAP gateway
# (coap:, docs/coap.md) into one MQTT subscriber.
#
#   bench/coap_pub.sh [BUILD_DIR] [SECONDS] [SESSIONS] [WINDOW] [PAYLOAD]
#   e.g. bench/coap_pub.sh build 10 16 8 64
#
# Starts its own broker (2 workers, auth.default allow: anonymous devices,
# the auth chain without backends), builds bench/coap_pub.c (a libcoap
# client: SESSIONS UDP sessions, WINDOW non-confirmable QoS 0 PUTs
# outstanding on each) and counts what a mosquitto_sub on bench/# receives.
# GEN=flood uses bench/coap_flood.c instead (the same requests encoded by
# hand on plain UDP sockets, sendmmsg/recvmmsg: a generator that leaves the
# cores to the broker; SESSIONS sockets, WINDOW at most 64).
# Needs libcoap3-dev and mosquitto-clients.
set -eu
BUILD=${1:-build}
SECS=${2:-10}
SESS=${3:-16}
WIN=${4:-8}
PAYLOAD=${5:-64}
BIN=$(cd "$BUILD" && pwd)/antenna
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
BROKER=
SUB=
cleanup() {
    [ -n "$SUB" ] && kill "$SUB" 2>/dev/null || true
    [ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
GEN=${GEN:-libcoap}
if [ "$GEN" = flood ]; then
    cc -O2 -o "$TMP/coap_pub" "$HERE/coap_flood.c"
else
    cc -O2 -o "$TMP/coap_pub" "$HERE/coap_pub.c" $(pkg-config --cflags --libs libcoap-3-openssl)
fi
MQTT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$TMP/antenna.yaml" <<YAML
workers: 2
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: $MQTT
api:
  enabled: false
persistence:
  dir: $TMP/store
auth:
  default: allow
coap:
  enabled: true
  bind: 127.0.0.1
  port: 0
YAML
"$BIN" -c "$TMP/antenna.yaml" > "$TMP/log" 2>&1 &
BROKER=$!
i=0
until grep -qs "coap: listening on udp" "$TMP/log"; do
    i=$((i + 1))
    [ $i -lt 100 ] || { cat "$TMP/log"; exit 1; }
    sleep 0.1
done
PORT=$(sed -n 's/.*coap: listening on udp [0-9.]*:\([0-9]*\).*/\1/p' "$TMP/log")
mosquitto_sub -h 127.0.0.1 -p "$MQTT" -t 'bench/#' -q 0 > "$TMP/sub" &
SUB=$!
sleep 1
CPU0=$(awk '{print $14 + $15}' /proc/$BROKER/stat)
"$TMP/coap_pub" 127.0.0.1 "$PORT" "$SECS" "$SESS" "$WIN" "$PAYLOAD"
CPU1=$(awk '{print $14 + $15}' /proc/$BROKER/stat)
sleep 1
N=$(wc -l < "$TMP/sub")
echo "MQTT subscriber received: $N messages ($(awk -v n="$N" -v s="$SECS" 'BEGIN {printf "%.0f", n / s}')/s)"
echo "broker CPU: $(awk -v c="$((CPU1 - CPU0))" -v n="$N" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {if (n) printf "%.1f us per message", c / hz * 1e6 / n; else print "-"}')"
