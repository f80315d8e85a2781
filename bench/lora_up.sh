#!/bin/sh
# bench/lora_up.sh -- uplinks/s from Semtech packet forwarders into an MQTT
# subscriber through the lora gateway (docs/lora.md).
#
#   bench/lora_up.sh [BUILD_DIR] [SECONDS] [RXPK] [GATEWAYS] [RATE]
#   e.g. bench/lora_up.sh build 5 8 4 0      (flat out: the gateway's ceiling)
#        bench/lora_up.sh build 5 8 4 8000   (8,000 datagrams/s: 64,000 rxpk/s)
#
# Starts its own broker (2 workers, auth.default allow, lora on a UDP port),
# one antenna-bench subscriber on lora/+/up (QoS 0), then bench/lora_load.py
# (GATEWAYS forwarders, RXPK rxpk per PUSH_DATA, RATE datagrams/s in all, 0 =
# as fast as Python sends: datagrams beyond what the lora thread reads are
# dropped by the kernel, which the acks count shows).  Prints what was
# offered and acknowledged, what the subscriber received, and the broker's
# CPU seconds.
set -eu
BUILD=${1:-build}
SECS=${2:-5}
RXPK=${3:-8}
GWS=${4:-4}
RATE=${5:-0}
BIN=$(cd "$BUILD" && pwd)/antenna
BENCH=$(cd "$BUILD" && pwd)/antenna-bench
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d)
BROKER=
cleanup() {
    [ -n "$BROKER" ] && kill "$BROKER" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MQTT=$(free)
UDP=$(python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
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
lora:
  enabled: true
  bind: 127.0.0.1
  port: $UDP
YAML
"$BIN" -c "$TMP/antenna.yaml" > "$TMP/log" 2>&1 &
BROKER=$!
i=0
until grep -qs "lora: listening" "$TMP/log"; do
    i=$((i + 1))
    [ $i -lt 100 ] || { cat "$TMP/log"; exit 1; }
    sleep 0.1
done
"$BENCH" sub -p "$MQTT" -c 1 --sub-topic 'lora/+/up' -t unused -d $((SECS + 4)) > "$TMP/sub" 2>&1 &
SUB=$!
sleep 1
cpu0=$(awk '{print $14 + $15}' /proc/$BROKER/stat)
python3 "$HERE/lora_load.py" "$UDP" "$SECS" "$RXPK" "$GWS" "$RATE"
wait $SUB || true
cpu1=$(awk '{print $14 + $15}' /proc/$BROKER/stat)
grep -E "^  received" "$TMP/sub"
echo "broker CPU: $(echo "($cpu1 - $cpu0) / $(getconf CLK_TCK)" | bc -l | cut -c1-5) s"
