#!/bin/bash
# bench/queued_mem.sh -- broker bytes per message queued for an offline
# persistent session (docs/benchmarks.md, "Bytes per queued message"; issue
# 20 counts them, issue 16's publish id adds to them).
#
#   bench/queued_mem.sh [N] [SIZE]
#   e.g. bench/queued_mem.sh 200000 64
#        ANTENNA_BIN=/path/to/old/antenna bench/queued_mem.sh     (a "before" binary)
#
# One broker, 1 worker, persistence off (the queue in memory only), log
# level warn, mqtt.max_queued 10,000,000 and no byte limit; with CLUSTER=1
# (the default) a `cluster:` section (a node alone: no etcd, no static
# members), so what is published there carries its publish id (msg.h);
# CLUSTER=0 a single broker.  One persistent session (paho, clean session
# 0) subscribes to q/x at QoS 1 and goes offline; antenna-bench publishes N
# QoS 1 messages of SIZE bytes to q/x (one publisher, every one
# acknowledged), all queued for it.  Prints the broker's VmRSS before and
# after the publish and their difference divided by N.
set -u -o pipefail

N=${1:-200000}
SIZE=${2:-64}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/build/antenna-bench}
BIN=${ANTENNA_BIN:-$ROOT/build/antenna}
for t in "$BENCH" "$BIN"; do
    [ -x "$t" ] || { echo "queued_mem.sh: $t not found: build first" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/antenna-queuedmem.XXXXXX)
BPID=
cleanup() {
    [ -n "$BPID" ] && kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

PORT=$(python3 -c '
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$WORK/antenna.yaml" <<EOF
workers: 1
log:
  level: warn
  file: $WORK/antenna.log
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: $PORT
persistence:
  enabled: false
api:
  enabled: false
mqtt:
  max_queued: 10000000
limits:
  max_queued_bytes: 0
EOF
if [ "${CLUSTER:-1}" = 1 ]; then
    cat >>"$WORK/antenna.yaml" <<EOF
cluster:
  node: q
  name: bench
  etcd: ""
  listen: 127.0.0.1:0
  secret: bench-queued-mem
EOF
fi
"$BIN" --config "$WORK/antenna.yaml" >"$WORK/stderr.log" 2>&1 &
BPID=$!
i=0
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 300 ] && kill -0 "$BPID" 2>/dev/null || { log "the broker did not start"; cat "$WORK/stderr.log" >&2; exit 1; }
    sleep 0.1
done
rss() { awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$BPID/status"; }

/usr/bin/python3 - "$PORT" <<'EOF' || { log "the subscriber failed"; exit 1; }
import sys, time
import paho.mqtt.client as mqtt
c = mqtt.Client(client_id="queued-mem", clean_session=False)
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_start()
r, mid = c.subscribe("q/x", qos=1)
deadline = time.monotonic() + 10
while not c.is_connected() and time.monotonic() < deadline:
    time.sleep(0.01)
time.sleep(0.5)  # the SUBACK
c.disconnect()
c.loop_stop()
EOF
sleep 1
RSS0=$(rss)
"$BENCH" pub -p "$PORT" -c 1 -t q/x -q 1 -s "$SIZE" -L "$N" -r 0 -d 600 --quiet \
    >"$WORK/pub.txt" 2>&1 || { log "the publisher failed:"; tail -n 5 "$WORK/pub.txt" >&2; exit 1; }
sleep 2
RSS1=$(rss)
grep -i -E "sent|acked" "$WORK/pub.txt" | head -n 3 >&2
awk -v a="$RSS0" -v b="$RSS1" -v n="$N" -v s="$SIZE" -v c="${CLUSTER:-1}" 'BEGIN {
    printf "| messages | payload | cluster | VmRSS before | after | bytes per queued message |\n"
    printf "|---:|---:|:-:|---:|---:|---:|\n"
    printf "| %d | %d B | %s | %.1f MB | %.1f MB | %.1f |\n", n, s, c ? "yes" : "no", a / 1e6, b / 1e6, (b - a) / n }'
