#!/bin/sh
# bench/coap_obs.sh -- Observe notifications per second and broker memory
# per observation of the CoAP gateway (coap:, docs/coap.md).
#
#   bench/coap_obs.sh [BUILD_DIR] [OBSERVERS] [MESSAGES] [PAYLOAD]
#   e.g. bench/coap_obs.sh build 10000 20 64
#
# Starts its own broker (2 workers, auth.default allow), builds
# bench/coap_obs.c, registers OBSERVERS observations of bench/# (one UDP
# session each), reads the broker's RSS before and after, then publishes
# MESSAGES QoS 0 messages over MQTT (mosquitto_pub -l) and counts the
# notifications (expected OBSERVERS x MESSAGES; NON datagrams may be lost).
# Needs libcoap3-dev and mosquitto-clients.
set -eu
BUILD=${1:-build}
OBS=${2:-10000}
MSGS=${3:-20}
PAYLOAD=${4:-64}
BIN=$(cd "$BUILD" && pwd)/antenna
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
BROKER=
CLI=
cleanup() {
    [ -n "$CLI" ] && kill "$CLI" 2>/dev/null || true
    [ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
cc -O2 -o "$TMP/coap_obs" "$HERE/coap_obs.c" $(pkg-config --cflags --libs libcoap-3-openssl)
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
  max_observers: $((OBS + 10))
  max_idle_sessions: $((OBS + 10))
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
rss() { awk '/^VmRSS/ {print $2}' "/proc/$BROKER/status"; }
sleep 0.5
RSS0=$(rss)
"$TMP/coap_obs" 127.0.0.1 "$PORT" "$OBS" "ps/bench/#" 120 > "$TMP/obs" &
CLI=$!
i=0
until grep -qs registered "$TMP/obs"; do
    i=$((i + 1))
    [ $i -lt 1200 ] || { cat "$TMP/obs"; exit 1; }
    sleep 0.1
done
sleep 0.5
RSS1=$(rss)
cat "$TMP/obs"
echo "broker RSS: $RSS0 kB -> $RSS1 kB: $(( (RSS1 - RSS0) * 1024 / OBS )) bytes per observation"
P=$(head -c "$PAYLOAD" /dev/zero | tr '\0' x)
i=0
while [ $i -lt "$MSGS" ]; do echo "$P"; i=$((i + 1)); done > "$TMP/msgs"
CPU0=$(awk '{print $14 + $15}' /proc/$BROKER/stat)
mosquitto_pub -h 127.0.0.1 -p "$MQTT" -t bench/x -q 0 -l < "$TMP/msgs"
wait "$CLI"
CLI=
CPU1=$(awk '{print $14 + $15}' /proc/$BROKER/stat)
cat "$TMP/obs" | tail -1
echo "expected $((OBS * MSGS)); broker CPU $(awk -v c="$((CPU1 - CPU0))" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f s", c / hz}')"
