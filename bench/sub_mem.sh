#!/bin/bash
# bench/sub_mem.sh -- broker bytes per subscribed device, the 1,000,000 run's
# per-device shape on one broker (docs/benchmarks.md, "Bytes per subscribed
# device", issue 20).
#
#   bench/sub_mem.sh [N] [RANDOM] [WAIT_S]
#   e.g. bench/sub_mem.sh 18000 10000 60
#        ANTENNA_BIN=/path/to/old/antenna bench/sub_mem.sh     (a "before" binary)
#
# One broker like a cluster node of bench/cluster_scale.sh but alone (1
# worker, persistence off, the API on: SUB_MEM_API=0 turns it off, log level
# warn, max_connections 19,800).  N devices from one `antenna-bench sub`,
# client ids d_s<I>, each subscribed to dev/<client id>/in and to bcast in
# one SUBSCRIBE, QoS 1, clean sessions.  Then one QoS 1 message to bcast
# (mosquitto_pub) and RANDOM QoS 1 messages to random devices' topics
# (paho), and the broker's VmRSS per device (minus the fresh broker's,
# divided by N):
#   (a) every device connected and subscribed;
#   (b) every message delivered and acknowledged (the broker's PUBACKs in
#       GET /api/v1/stats, or its CPU idle for 2 s without the API);
#   (c) WAIT_S seconds after (b).
# MEM_DETAIL=1 adds bench/node_mem.py --malloc at (a), (b) and (c): the RSS by
# mapping and the bytes malloc holds free.  Exit status 1 if a device failed
# or a message was missing.
set -u -o pipefail

N=${1:-18000}
RANDOM_MSGS=${2:-10000}
WAIT_S=${3:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/build/antenna-bench}
BIN=${ANTENNA_BIN:-$ROOT/build/antenna}
API=${SUB_MEM_API:-1}

for t in "$BENCH" "$BIN"; do
    [ -x "$t" ] || { echo "sub_mem.sh: $t not found: build first" >&2; exit 2; }
done
command -v mosquitto_pub >/dev/null || { echo "sub_mem.sh: mosquitto_pub needed" >&2; exit 2; }
[ "$N" -le 19000 ] || { echo "sub_mem.sh: N at most 19000 (open files)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/antenna-submem.XXXXXX)
BPID= GEN=
cleanup() {
    [ -n "$GEN" ] && kill "$GEN" 2>/dev/null
    [ -n "$BPID" ] && kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

set -- $(python3 -c '
import socket
ss = [socket.socket() for _ in range(2)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
PORT=$1 APIPORT=$2
KEY=$("$BIN" apikey create "$WORK/api.keys" bench)
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
  enabled: $([ "$API" = 1 ] && echo true || echo false)
  bind: 127.0.0.1
  port: $APIPORT
  keys_file: $WORK/api.keys
limits:
  max_connections: 19800
EOF
"$BIN" --config "$WORK/antenna.yaml" >"$WORK/stderr.log" 2>&1 &
BPID=$!
i=0
until (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; do
    i=$((i + 1))
    [ $i -lt 300 ] && kill -0 "$BPID" 2>/dev/null || { log "the broker did not start"; cat "$WORK/stderr.log" >&2; exit 1; }
    sleep 0.1
done
sleep 1

rss() { awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$BPID/status"; }
per() { awk -v a="$RSS0" -v b="$1" -v n="$N" 'BEGIN { printf "%.0f", (b - a) / n }'; }
detail() {
    [ -n "${MEM_DETAIL:-}" ] || return 0
    log "memory ($1):"
    "$ROOT/bench/node_mem.py" --malloc "$BPID" >&2
}
stat() { # a field of GET /api/v1/stats, by a Python expression on d
    curl -s -m 5 -H "Authorization: Bearer $KEY" "http://127.0.0.1:$APIPORT/api/v1/stats" |
        python3 -c "import json,sys; d=json.load(sys.stdin); print($1)" 2>/dev/null || echo 0
}
cpu() { awk '{print $14 + $15}' "/proc/$BPID/stat"; }

RSS0=$(rss)
log "broker $BIN (pid $BPID): VmRSS $RSS0 B fresh; $N devices"
T0=$(date +%s.%N)
"$BENCH" sub -p "$PORT" -c "$N" --client-prefix d_ --sub-topic 'dev/%c/in' --extra-sub bcast -q 1 \
    --ifaddr "$(seq -s, -f '127.0.1.%g' 1 20)" -d $((WAIT_S + 600)) --drain 5 --setup-timeout 300 \
    --conn-pending 200 --ready-file "$WORK/ready" --json --quiet \
    >"$WORK/sub.json" 2>"$WORK/sub.err" &
GEN=$!
deadline=$(($(date +%s) + 400))
until [ -s "$WORK/ready" ]; do
    kill -0 "$GEN" 2>/dev/null || { log "the generator exited early:"; tail -n 3 "$WORK/sub.err" >&2; exit 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { log "not all connected in 400 s"; exit 1; }
    sleep 0.2
done
got=$(awk '{print $2}' "$WORK/ready")
[ "$got" = "$N" ] || { log "only $got of $N devices connected"; exit 1; }
log "all $N connected and subscribed in $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
sleep 2
RSSA=$(rss)
detail "(a) subscribed"

mosquitto_pub -p "$PORT" -t bcast -m broadcast -q 1 || { log "broadcast publish failed"; exit 1; }
/usr/bin/python3 - "$PORT" "$N" "$RANDOM_MSGS" >"$WORK/random.txt" <<'EOF'
import random, sys, time
import paho.mqtt.client as mqtt
port, per, n = map(int, sys.argv[1:])
c = mqtt.Client(client_id="submem-random", clean_session=True)
c.max_inflight_messages_set(1000)
c.connect("127.0.0.1", port)
c.loop_start()
rng = random.Random(20)
infos = [c.publish("dev/d_s%d/in" % rng.randrange(per), b"one", qos=1) for _ in range(n)]
deadline = time.monotonic() + 120
for info in infos:
    info.wait_for_publish(max(0.1, deadline - time.monotonic()))
print(sum(1 for i in infos if i.is_published()))
c.loop_stop()
c.disconnect()
EOF
ACKED=$(cat "$WORK/random.txt")
# (b): every delivery acknowledged by its device (the broker's PUBACKs in
# from the devices, plus the two publishers' own), or without the API the
# broker idle for 2 s
deadline=$(($(date +%s) + 120))
if [ "$API" = 1 ]; then
    want=$((N + ACKED))
    until [ "$(stat 'd["packets"]["received"]["puback"]')" -ge "$want" ]; do
        [ "$(date +%s)" -lt "$deadline" ] || { log "deliveries not acknowledged in 120 s"; break; }
        sleep 0.5
    done
else
    prev=$(cpu)
    while sleep 2; do
        now=$(cpu)
        [ "$now" -eq "$prev" ] && break
        prev=$now
        [ "$(date +%s)" -lt "$deadline" ] || break
    done
fi
sleep 1
RSSB=$(rss)
detail "(b) after the messages"
log "waiting $WAIT_S s"
sleep "$WAIT_S"
RSSC=$(rss)
detail "(c) $WAIT_S s later"

kill -INT "$GEN" 2>/dev/null
wait "$GEN"
GEN=
python3 - "$WORK/sub.json" "$N" "$RANDOM_MSGS" "$ACKED" "$RSS0" "$RSSA" "$RSSB" "$RSSC" "$WAIT_S" <<'EOF'
import json, sys
f, n, rnd, acked, r0, ra, rb, rc, wait = sys.argv[1:]
n, rnd, acked, r0, ra, rb, rc = map(int, (n, rnd, acked, r0, ra, rb, rc))
d = json.loads(open(f).read().strip().splitlines()[-1])
recv, ok, fail = d.get("recv", 0), d.get("conn_ok", 0), d.get("conn_fail", 0)
want = n + rnd
pd = lambda r: "%.0f" % ((r - r0) / n)
print("| devices | fresh VmRSS | (a) subscribed | (b) after the messages | (c) %s s later | received / expected |" % wait)
print("|---:|---:|---:|---:|---:|---:|")
print("| %d | %.1f MB | %s B | %s B | %s B | %d / %d |" % (n, r0 / 1e6, pd(ra), pd(rb), pd(rc), recv, want))
sys.exit(0 if ok == n and fail == 0 and recv == want and acked == rnd else 1)
EOF
