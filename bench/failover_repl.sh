#!/usr/bin/env bash
# bench/failover_repl.sh -- failover of persistent sessions from a replica
# (docs/cluster.md "Replicated sessions"): SESSION_STORE=replicated
# tools/cluster.sh up 3 with a short lease; --sessions persistent sessions
# (MQTT 3.1.1, clean session 0, one subscription each) made on node2, then
# offline; node2 killed with SIGKILL; reported:
#   lease    kill -> the survivors see node2 out (the lease TTL's part)
#   adopt    node2 out -> its replica adopted every session from its copy
#            (its log line: read, installed, committed in its own store,
#            claimed, recorded in etcd)
#   resume   adopted -> every client connected again with clean session 0
#            to the survivors (antenna-bench sub, round-robin over both)
#
#   bench/failover_repl.sh [--sessions N] [--lease TTL] [--runs N]
#
# Needs build/antenna, build/antenna-bench, etcd, haproxy.
# Results: docs/benchmarks.md, "Failover of replicated sessions".
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SESSIONS=10000
LEASE=2s
RUNS=1
while [ $# -gt 0 ]; do
    case "$1" in
    --sessions) SESSIONS=$2; shift 2 ;;
    --lease) LEASE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "usage: $0 [--sessions N] [--lease TTL] [--runs N]" >&2; exit 2 ;;
    esac
done
BENCH=$ROOT/build/antenna-bench
export CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/build/failover-repl}
export SESSION_STORE=replicated CLUSTER_LEASE_TTL=$LEASE
now_ms() { date +%s%3N; }
metric() { # API port, metric name
    curl -s -H "Authorization: Bearer $API_KEY" "http://127.0.0.1:$1/metrics" |
        awk -v m="$2" '$1 == m { print $2 }'
}
ulimit -n 65536 2>/dev/null || true

for run in $(seq 1 "$RUNS"); do
    "$ROOT/tools/cluster.sh" down >/dev/null 2>&1
    rm -rf "$CLUSTER_DIR"
    "$ROOT/tools/cluster.sh" up 3 >/dev/null || { echo "cluster.sh up failed" >&2; exit 1; }
    # shellcheck disable=SC1091
    . "$CLUSTER_DIR/cluster.env"
    set -- $NODE_PORTS; P0=$1 P1=$2 P2=$3
    set -- $API_PORTS; A0=$1 A1=$2 A2=$3
    set -- $NODE_PIDS; PID2=$3
    "$BENCH" sub -p "$P2" -c "$SESSIONS" -C 0 -q 1 --client-prefix fo_ -t 'fo/%i' \
        -d 1 --drain 0 --quiet >/dev/null 2>&1 || { echo "making the sessions failed" >&2; exit 1; }
    # every session in node2's replica: its stream idle (nothing waits)
    until [ "$(metric "$A2" antenna_cluster_replication_lag_seconds)" = "0.000000" ] &&
        grep -q "has a full copy of this node's store" "$CLUSTER_DIR/node2/antenna.log"; do
        sleep 0.05
    done
    stored=$(metric "$A2" antenna_sessions)
    t_kill=$(now_ms)
    kill -9 "$PID2"
    # node2 out, seen by node0
    until grep -q "node node2 left" "$CLUSTER_DIR/node0/antenna.log"; do sleep 0.02; done
    t_out=$(now_ms)
    until [ "$(metric "$A0" antenna_cluster_adoptions_total)$(metric "$A1" antenna_cluster_adoptions_total)" != "00" ]; do
        sleep 0.02
        [ $(($(now_ms) - t_kill)) -lt 120000 ] || { echo "no adoption within 120 s" >&2; exit 1; }
    done
    t_adopted=$(now_ms)
    line=$(grep -h "adopted the sessions of node node2" "$CLUSTER_DIR"/node[01]/antenna.log | tail -1)
    "$BENCH" sub -p "$P0,$P1" -c "$SESSIONS" -C 0 -q 1 --client-prefix fo_ -t 'fo/%i' \
        -d 0 --drain 0 --quiet --ready-file "$CLUSTER_DIR/resumed" >/dev/null 2>&1 &
    bpid=$!
    until [ -e "$CLUSTER_DIR/resumed" ]; do
        sleep 0.02
        kill -0 $bpid 2>/dev/null || break
    done
    t_resumed=$(now_ms)
    wait $bpid
    echo "run $run: $stored sessions stored on node2; lease $LEASE:" \
        "kill -> out $((t_out - t_kill)) ms, out -> adopted $((t_adopted - t_out)) ms" \
        "(polled), adopted -> all $SESSIONS reconnected $((t_resumed - t_adopted)) ms;" \
        "kill -> resumed $((t_resumed - t_kill)) ms"
    echo "  ${line#*info  }"
    "$ROOT/tools/cluster.sh" down >/dev/null 2>&1
done
