#!/bin/bash
# bench/cluster_scale.sh -- issue 20's scale run, at any size: NODES cluster
# nodes on loopback hold PER_NODE devices each, every device subscribed to
# its own topic dev/<client id>/in and to one broadcast topic; one message
# to the broadcast topic must reach every device, and one message to each of
# RANDOM random device topics must arrive (docs/benchmarks.md, "Cluster:
# scale").
#
#   bench/cluster_scale.sh [NODES] [PER_NODE] [HOLD_S] [RANDOM]
#   e.g. bench/cluster_scale.sh 4 15000 60 10000      (60,000 devices)
#        bench/cluster_scale.sh 53 18900 600 10000    (1,000,000: the issue's run)
#
# The cluster: tools/cluster.sh up NODES with etcd, CLUSTER_WORKERS (1) per
# node, no store (CLUSTER_PERSISTENCE=0), log level warn, max_connections
# 19,800.  The devices: one `antenna-bench sub` per node, connected straight
# to that node's own port (client ids n<K>_s<I>, --extra-sub for the
# broadcast topic, clean sessions, QoS 1), source addresses spread over
# 127.0.1.0/24 so no address runs out of ephemeral ports.  The run: all
# connect at once (time until every generator wrote its ready file), then
# wait until every node has learnt every other node's routes, then
# mosquitto_pub sends the broadcast and a paho client sends RANDOM QoS 1
# messages to random devices' topics (through node 0: forwarded to the
# device's node), then the devices are held until HOLD_S seconds after they
# connected.  Reported: connect time, routes, broker RSS per device (sum over
# the nodes of VmRSS with the devices minus without, divided by the
# devices; with the routes complete, right after the messages and SETTLE_S
# (5) seconds later), the kernel's slab memory (/proc/meminfo Slab, with the devices
# minus before: both ends' sockets, machine-wide), messages received against
# expected, and drops.  While connecting also: the nodes' CPU per device
# (all, and by thread: workers, link thread, etcd client), their wake-ups
# per device by thread (voluntary context switches), etcd's, the etcd
# txns and batches, the route rounds, the links' bytes and send(2)/recv(2)
# calls per device and peer, a device's mean CONNECT-to-SUBACK time (Little's
# law over the generators' 200 handshakes in progress) and, at the end, the
# generators' CONNACK latency and the nodes' lease losses (their logs).
# Exit status 1 if any device failed, dropped or missed a message.
set -u -o pipefail

NODES=${1:-4}
PER=${2:-15000}
HOLD=${3:-60}
RANDOM_MSGS=${4:-10000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/build/antenna-bench}
export ANTENNA_BIN=${ANTENNA_BIN:-$ROOT/build/antenna}
DEVICES=$((NODES * PER))
PENDING=200 # handshakes (CONNECT to SUBACK) in progress per generator

for t in "$BENCH" "$ANTENNA_BIN"; do
    [ -x "$t" ] || { echo "cluster_scale.sh: $t not found: build first" >&2; exit 2; }
done
command -v mosquitto_pub >/dev/null || { echo "cluster_scale.sh: mosquitto_pub needed" >&2; exit 2; }
[ "$PER" -le 19000 ] || { echo "cluster_scale.sh: PER_NODE at most 19000 (open files)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/antenna-scale.XXXXXX)
export CLUSTER_DIR=$WORK/cluster CLUSTER_WORKERS=${CLUSTER_WORKERS:-1} CLUSTER_PERSISTENCE=0
export CLUSTER_LOG_LEVEL=warn CLUSTER_LEASE_TTL=${CLUSTER_LEASE_TTL:-30s}
# etcd first for the CPU: on this machine it shares two cores with every node
# and generator; a starved etcd lets leases expire and the nodes close their
# doors (docs/cluster.md, "a node cut off from etcd")
[ "$(id -u)" = 0 ] && export CLUSTER_ETCD_NICE=${CLUSTER_ETCD_NICE:--10}
export CLUSTER_WAIT_S=$((60 + NODES * 3))
GENS=()
cleanup() {
    for p in "${GENS[@]}"; do kill "$p" 2>/dev/null; done
    "$ROOT/tools/cluster.sh" down >/dev/null 2>&1
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

cat >"$WORK/extra.yaml" <<EOF
limits:
  max_connections: 19800
EOF
export CLUSTER_EXTRA_YAML=$WORK/extra.yaml
log "cluster: $NODES nodes, $CLUSTER_WORKERS worker(s) each"
"$ROOT/tools/cluster.sh" up "$NODES" >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; exit 1; }
. "$CLUSTER_DIR/cluster.env"
read -r -a PORTS <<<"$NODE_PORTS"
read -r -a APIS <<<"$API_PORTS"
read -r -a PIDS <<<"$NODE_PIDS"

rss_sum() {
    local s=0 p
    for p in "${PIDS[@]}"; do
        s=$((s + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status")))
    done
    echo "$s"
}
slab_kb() { awk '/^Slab:/ {print $2}' /proc/meminfo; }
# the nodes' CPU so far (utime + stime, clock ticks)
cpu_sum() {
    local s=0 p
    for p in "${PIDS[@]}"; do
        s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$s"
}
# etcd's CPU so far (utime + stime, clock ticks)
etcd_cpu() { awk '{print $14 + $15}' "/proc/$(cat "$CLUSTER_DIR/etcd.pid")/stat"; }
# the nodes' etcd txns, the batches that carried them, their rounds of route
# marks, the SUBACKs held by the route barrier and those let go by its bound
# (0 when a binary does not count them), summed: "txns batches marks holds
# timeouts"
node_counts() {
    local p
    for p in "${APIS[@]}"; do
        curl -s -m 5 -H "Authorization: Bearer $API_KEY" "http://127.0.0.1:$p/metrics" |
            awk '$1 == "antenna_cluster_etcd_batched_txns_total" { t = $2 }
                 $1 == "antenna_cluster_etcd_txn_batches_total" { b = $2 }
                 $1 == "antenna_cluster_route_mark_rounds_total" { m = $2 }
                 $1 == "antenna_route_barrier_holds_total" { h = $2 }
                 $1 == "antenna_route_barrier_timeouts_total" { o = $2 }
                 END { print t + 0, b + 0, m + 0, h + 0, o + 0 }'
    done | awk '{ t += $1; b += $2; m += $3; h += $4; o += $5 } END { print t + 0, b + 0, m + 0, h + 0, o + 0 }'
}
# the nodes' CPU by thread name, summed over the nodes (utime + stime, clock
# ticks): one "name ticks" line each; the workers and the main thread are
# "antenna", the link thread "an-cluster", the etcd client "an-etcd"
thread_cpu() {
    local p
    for p in "${PIDS[@]}"; do cat /proc/"$p"/task/*/stat 2>/dev/null; done |
        awk '{ c = $0; sub(/^[0-9]+ \(/, "", c); i = index(c, ") ");
               split(substr(c, i + 2), f, " "); t[substr(c, 1, i - 1)] += f[12] + f[13] }
             END { for (n in t) print n, t[n] }' | sort
}
# the nodes' wake-ups by thread name, summed over the nodes (voluntary
# context switches: each time a thread slept in epoll_wait, poll or a lock
# and was woken): one "name count" line each, names as in thread_cpu
thread_wakes() {
    local p
    for p in "${PIDS[@]}"; do cat /proc/"$p"/task/*/status 2>/dev/null; done |
        awk '$1 == "Name:" { n = $2 } $1 == "voluntary_ctxt_switches:" { t[n] += $2 }
             END { for (n in t) print n, t[n] }' | sort
}
# the nodes' links, summed over every node and peer: "bytes_out sends recvs"
# (send(2) and recv(2) calls; 0 0 0 for the calls with a binary that does
# not count them)
link_counts() {
    local p
    for p in "${APIS[@]}"; do
        curl -s -m 5 -H "Authorization: Bearer $API_KEY" "http://127.0.0.1:$p/api/v1/nodes" |
            python3 -c 'import json,sys; d=json.load(sys.stdin); ls=[n.get("link_state",{}) for n in d["nodes"] if not n["self"]]; print(sum(l.get("bytes_out",0) for l in ls), sum(l.get("send_calls",0) for l in ls), sum(l.get("recv_calls",0) for l in ls))'
    done | awk '{ b += $1; s += $2; r += $3 } END { print b + 0, s + 0, r + 0 }'
}
# the nodes' logs: leases lost and keep-alives failed
leases_log() {
    log "nodes' logs: $(cat "$CLUSTER_DIR"/node*/antenna.log 2>/dev/null | grep -c 'lease lost') \"lease lost\", $(cat "$CLUSTER_DIR"/node*/antenna.log 2>/dev/null | grep -c 'keep-alive failed') \"keep-alive failed\" lines"
}
# SCALE_MEM=1: where the nodes' memory is (bench/node_mem.py: every node's
# mappings, malloc_info of node 0 and node 1) and the links' buffers; at the
# end nodes 0 and 1 again after a malloc_trim(0)
mem_detail() {
    [ -n "${SCALE_MEM:-}" ] || return 0
    log "memory ($1):"
    "$ROOT/bench/node_mem.py" "${PIDS[@]}" | tail -1 >&2
    "$ROOT/bench/node_mem.py" --malloc "${PIDS[0]}" "${PIDS[1]}" >&2
    local p
    for p in "${APIS[0]}" "${APIS[1]}"; do
        curl -s -m 5 -H "Authorization: Bearer $API_KEY" "http://127.0.0.1:$p/api/v1/nodes" |
            python3 -c 'import json,sys; d=json.load(sys.stdin); ls=[n.get("link_state",{}) for n in d["nodes"] if not n["self"]]; print("  links: buffers %d kB now, %d kB at their peaks; Bloom filters %d kB" % (sum(l.get("buffer_bytes",0) for l in ls)//1024, sum(l.get("buffer_peak",0) for l in ls)//1024, sum(l.get("route_bloom_bytes",0) for l in ls)//1024))' >&2
    done
}

RSS0=$(rss_sum)
SLAB0=$(slab_kb)
mem_detail "idle nodes"
CPU0=$(cpu_sum)
ETCD0=$(etcd_cpu)
read -r TXN0 BAT0 MARK0 HOLD0 HTO0 <<<"$(node_counts)"
read -r LB0 LS0 LR0 <<<"$(link_counts)"
THR0=$(thread_cpu)
WAK0=$(thread_wakes)
IFADDRS=$(seq -s, -f '127.0.1.%g' 1 60)
log "devices: $DEVICES ($PER per node), held $HOLD s"
T0=$(date +%s.%N)
for k in $(seq 0 $((NODES - 1))); do
    "$BENCH" sub -p "${PORTS[$k]}" -c "$PER" --client-prefix "n${k}_" --sub-topic 'dev/%c/in' \
        --extra-sub bcast -q 1 --ifaddr "$IFADDRS" -d "$HOLD" --drain 10 \
        --setup-timeout $((HOLD + 600)) --conn-pending "$PENDING" --ready-file "$WORK/ready.$k" \
        --json --quiet >"$WORK/sub.$k.json" 2>"$WORK/sub.$k.err" &
    GENS+=("$!")
done
deadline=$(($(date +%s) + 900))
while :; do
    n=$(ls "$WORK"/ready.* 2>/dev/null | wc -l)
    [ "$n" -eq "$NODES" ] && break
    for p in "${GENS[@]}"; do
        kill -0 "$p" 2>/dev/null || { log "a generator exited early:"; tail -n 3 "$WORK"/sub.*.err >&2; exit 1; }
    done
    [ "$(date +%s)" -lt "$deadline" ] || { log "not all connected in 900 s"; exit 1; }
    sleep 0.2
done
T1=$(date +%s.%N)
CPU1=$(cpu_sum)
ETCD1=$(etcd_cpu)
THR1=$(thread_cpu)
WAK1=$(thread_wakes)
read -r TXN1 BAT1 MARK1 HOLD1 HTO1 <<<"$(node_counts)"
read -r LB1 LS1 LR1 <<<"$(link_counts)"
CONNECT_S=$(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.1f", b - a }')
log "all generators ready in $CONNECT_S s"
HZ=$(getconf CLK_TCK)
log "nodes' CPU per device while connecting: $(awk -v a="$CPU0" -v b="$CPU1" -v hz="$HZ" -v d="$DEVICES" \
    'BEGIN { printf "%.0f us", (b - a) * 1e6 / hz / d }')"
log "etcd's CPU per device while connecting: $(awk -v a="$ETCD0" -v b="$ETCD1" -v hz="$HZ" -v d="$DEVICES" \
    'BEGIN { printf "%.0f us (%.1f s in all)", (b - a) * 1e6 / hz / d, (b - a) / hz }'); the nodes' etcd txns $((TXN1 - TXN0)) in $((BAT1 - BAT0)) batches; route mark rounds $((MARK1 - MARK0)); SUBACKs held for the routes $((HOLD1 - HOLD0)), let go by the 2 s bound $((HTO1 - HTO0))"
log "nodes' CPU per device while connecting, by thread: $(join -a 1 -a 2 -e 0 -o 0,1.2,2.2 \
    <(echo "$THR0") <(echo "$THR1") 2>/dev/null | awk -v hz="$HZ" -v d="$DEVICES" \
    '{ v = ($3 - $2) * 1e6 / hz / d; if (v >= 0.5) printf "%s%s %.0f us", sep, $1, v; sep = ", " }')"
log "nodes' wake-ups per device while connecting, by thread: $(join -a 1 -a 2 -e 0 -o 0,1.2,2.2 \
    <(echo "$WAK0") <(echo "$WAK1") 2>/dev/null | awk -v d="$DEVICES" \
    '{ v = ($3 - $2) / d; if (v >= 0.005) printf "%s%s %.2f", sep, $1, v; sep = ", " }')"
log "links while connecting, per device and peer: $(awk -v b0="$LB0" -v b1="$LB1" -v s0="$LS0" \
    -v s1="$LS1" -v r0="$LR0" -v r1="$LR1" -v d="$DEVICES" -v n="$NODES" \
    'BEGIN { k = d * (n - 1); printf "%.1f B sent, %.3f send(2), %.3f recv(2) calls", (b1 - b0) / k, (s1 - s0) / k, (r1 - r0) / k }')"
log "a device's CONNECT to SUBACK: $(awk -v t="$CONNECT_S" -v p="$PENDING" -v per="$PER" \
    'BEGIN { printf "%.2f s on average (%d in progress per generator)", t * p / per, p }')"

short=$(awk -v want="$PER" '$2 != want { n++ } END { print n + 0 }' "$WORK"/ready.*)
if [ "$short" -gt 0 ]; then
    log "$short generator(s) connected fewer than $PER devices:"
    head -q -n 1 "$WORK"/ready.* | sort | uniq -c | sort -rn | head -5 >&2
    tail -q -n 2 "$WORK"/sub.*.err | sort | uniq -c | sort -rn | head -5 >&2
    leases_log
    exit 1
fi

# every node has every other node's routes: (NODES - 1) * PER exact ones
# (the broadcast filter is one route per peer on top)
want_routes=$(((NODES - 1) * PER))
routes_ok() {
    local p
    for p in "${APIS[@]}"; do
        r=$(curl -s -m 5 -H "Authorization: Bearer $API_KEY" "http://127.0.0.1:$p/api/v1/nodes" |
            python3 -c 'import json,sys; d=json.load(sys.stdin); print(sum(n.get("link_state",{}).get("routes",0) for n in d["nodes"] if not n["self"]))')
        [ "${r:-0}" -ge "$want_routes" ] || return 1
    done
}
deadline=$(($(date +%s) + 300))
until routes_ok; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        log "routes not complete in 300 s; each node's (want $want_routes):"
        for p in "${APIS[@]}"; do
            curl -s -m 5 -H "Authorization: Bearer $API_KEY" "http://127.0.0.1:$p/api/v1/nodes" |
                python3 -c 'import json,sys; d=json.load(sys.stdin); ps=[n for n in d["nodes"] if not n["self"]]; print(sum(n.get("link_state",{}).get("routes",0) for n in ps), len(ps), "peers")' 2>&1 | tail -1
        done | sort | uniq -c | sort -rn | head -10 >&2
        exit 1
    fi
    sleep 1
done
T2=$(date +%s.%N)
log "routes complete on every node $(awk -v a="$T1" -v b="$T2" 'BEGIN { printf "%.1f", b - a }') s later"
RSS1=$(rss_sum)
SLAB1=$(slab_kb)
CPU2=$(cpu_sum)
log "nodes' CPU per device: $(awk -v a="$CPU0" -v b="$CPU1" -v c="$CPU2" -v hz="$HZ" -v d="$DEVICES" \
    'BEGIN { printf "%.0f us connecting, %.0f us with the routes complete", (b - a) * 1e6 / hz / d, (c - a) * 1e6 / hz / d }')"
log "broker RSS per device with the routes complete: $(awk -v a="$RSS0" -v b="$RSS1" -v d="$DEVICES" \
    'BEGIN { printf "%.0f B", (b - a) * 1024 / d }')"
mem_detail "routes complete"

mosquitto_pub -p "${PORTS[0]}" -t bcast -m broadcast -q 1 || { log "broadcast publish failed"; exit 1; }
/usr/bin/python3 - "${PORTS[0]}" "$NODES" "$PER" "$RANDOM_MSGS" >"$WORK/random.txt" <<'EOF'
import random, sys, time
import paho.mqtt.client as mqtt
port, nodes, per, n = map(int, sys.argv[1:])
c = mqtt.Client(client_id="scale-random", clean_session=True)
c.max_inflight_messages_set(1000)
c.connect("127.0.0.1", port)
c.loop_start()
rng = random.Random(20)
infos = []
for _ in range(n):
    k, i = rng.randrange(nodes), rng.randrange(per)
    infos.append(c.publish("dev/n%d_s%d/in" % (k, i), b"one", qos=1))
deadline = time.monotonic() + 120
for info in infos:
    info.wait_for_publish(max(0.1, deadline - time.monotonic()))
print(sum(1 for i in infos if i.is_published()))
c.loop_stop()
c.disconnect()
EOF
ACKED=$(cat "$WORK/random.txt")
log "broadcast sent; $ACKED of $RANDOM_MSGS random device messages acknowledged"
RSS2=$(rss_sum)
log "broker RSS per device after the messages: $(awk -v a="$RSS0" -v b="$RSS2" -v d="$DEVICES" \
    'BEGIN { printf "%.0f B", (b - a) * 1024 / d }')"
mem_detail "after the messages"
# and once what a burst leaves is given back (a second after it at the
# earliest: the workers' trims, worker.c); SETTLE_S (5) later
sleep "${SETTLE_S:-5}"
RSS3=$(rss_sum)
log "broker RSS per device ${SETTLE_S:-5} s after the messages: $(awk -v a="$RSS0" -v b="$RSS3" -v d="$DEVICES" \
    'BEGIN { printf "%.0f B", (b - a) * 1024 / d }')"
if [ -n "${SCALE_MEM:-}" ]; then
    log "nodes 0 and 1 after malloc_trim(0) (what malloc kept free):"
    "$ROOT/bench/node_mem.py" --trim --malloc "${PIDS[0]}" "${PIDS[1]}" >&2
fi

for p in "${GENS[@]}"; do wait "$p"; done
GENS=()
log "CONNACK p50 / p99 (the median over the generators): $(for k in $(seq 0 $((NODES - 1))); do
    tail -n 1 "$WORK/sub.$k.json"; done | python3 -c 'import json,statistics,sys
d=[json.loads(l) for l in sys.stdin if l.strip()]
print("%.0f / %.0f ms" % (statistics.median(x.get("conn_p50_us",0) for x in d) / 1e3, statistics.median(x.get("conn_p99_us",0) for x in d) / 1e3))' 2>/dev/null)"
leases_log
python3 - "$WORK" "$NODES" "$PER" "$RANDOM_MSGS" "$ACKED" "$CONNECT_S" "$RSS0" "$RSS1" "$SLAB0" "$SLAB1" <<'EOF'
import json, sys
work, nodes, per, rnd, acked, conn_s, rss0, rss1, slab0, slab1 = sys.argv[1:]
nodes, per, rnd, acked = int(nodes), int(per), int(rnd), int(acked)
ok = fail = recv = drops = errors = 0
for k in range(nodes):
    d = json.loads(open("%s/sub.%d.json" % (work, k)).read().strip().splitlines()[-1])
    ok += d.get("conn_ok", 0)
    fail += d.get("conn_fail", 0)
    recv += d.get("recv", 0)
    drops += d.get("drops", 0) + (per - d.get("connected_end", per))
    errors += d.get("errors", 0)
devices = nodes * per
want = devices + rnd
rss = (int(rss1) - int(rss0)) * 1024 / devices
slab = (int(slab1) - int(slab0)) * 1024 / devices
print("| nodes | devices | connected | failed | connect s | broker RSS/device | kernel slab/device | received | expected | dropped |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
print("| %d | %d | %d | %d | %s | %.0f B | %.0f B | %d | %d | %d |"
      % (nodes, devices, ok, fail, conn_s, rss, slab, recv, want, drops + errors))
sys.exit(0 if ok == devices and fail == 0 and recv == want and acked == rnd
         and drops + errors == 0 else 1)
EOF
