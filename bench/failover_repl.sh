#!/usr/bin/env bash
# bench/failover_repl.sh -- failover of persistent sessions from a replica
# (docs/cluster.md "Replicated sessions"): SESSION_STORE=replicated
# tools/cluster.sh up --nodes (default 3) with a short lease; --sessions
# persistent sessions (MQTT 3.1.1, clean session 0, one subscription each)
# made on the last node V, then offline; V killed with SIGKILL; reported:
#   lease    kill -> the survivors see V out (the lease TTL's part)
#   adopt    V out -> its replicas adopted every session from their copies
#            (polled: the survivors' antenna_cluster_adopted_sessions_total
#            add up to the sessions stored; their log lines: read,
#            installed, committed in its own store, claimed, recorded in
#            etcd), and how many each survivor adopted
#   resume   adopted -> every client connected again with clean session 0
#            to the survivors (antenna-bench sub, round-robin over them)
# ANTENNA_BIN: the binary (main's, to compare: one replica per node).
#
#   bench/failover_repl.sh [--sessions N] [--lease TTL] [--runs N] [--nodes N]
#
# Needs build/antenna, build/antenna-bench, etcd, haproxy.
# Results: docs/benchmarks.md, "Failover of replicated sessions".
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SESSIONS=10000
LEASE=2s
RUNS=1
NODES=3
while [ $# -gt 0 ]; do
    case "$1" in
    --sessions) SESSIONS=$2; shift 2 ;;
    --lease) LEASE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    *) echo "usage: $0 [--sessions N] [--lease TTL] [--runs N] [--nodes N]" >&2; exit 2 ;;
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
    "$ROOT/tools/cluster.sh" up "$NODES" >/dev/null || { echo "cluster.sh up failed" >&2; exit 1; }
    # shellcheck disable=SC1091
    . "$CLUSTER_DIR/cluster.env"
    V=$((NODES - 1))
    read -r -a NP <<< "$NODE_PORTS"
    read -r -a AP <<< "$API_PORTS"
    read -r -a PIDS <<< "$NODE_PIDS"
    PV=${NP[$V]} AV=${AP[$V]} PIDV=${PIDS[$V]}
    SURV=$(IFS=,; echo "${NP[*]:0:$V}")
    "$BENCH" sub -p "$PV" -c "$SESSIONS" -C 0 -q 1 --client-prefix fo_ -t 'fo/%i' \
        -d 1 --drain 0 --quiet >/dev/null 2>&1 || { echo "making the sessions failed" >&2; exit 1; }
    # every session in V's replicas: its stream idle (nothing waits), placed
    until [ "$(metric "$AV" antenna_cluster_replication_lag_seconds)" = "0.000000" ] &&
        grep -q "has a full copy of this node's store\|sessions are replicated over" \
            "$CLUSTER_DIR/node$V/antenna.log"; do
        sleep 0.05
    done
    stored=$(metric "$AV" antenna_sessions)
    adopted() { # the survivors' adopted sessions, summed
        local t=0 i
        for i in $(seq 0 $((V - 1))); do
            t=$((t + $(metric "${AP[$i]}" antenna_cluster_adopted_sessions_total)))
        done
        echo $t
    }
    t_kill=$(now_ms)
    kill -9 "$PIDV"
    # V out, seen by node0
    until grep -q "node node$V left" "$CLUSTER_DIR/node0/antenna.log"; do sleep 0.02; done
    t_out=$(now_ms)
    until [ "$(adopted)" -ge "$stored" ]; do
        sleep 0.02
        [ $(($(now_ms) - t_kill)) -lt 120000 ] || { echo "not all adopted within 120 s" >&2; exit 1; }
    done
    t_adopted=$(now_ms)
    per=""
    for i in $(seq 0 $((V - 1))); do
        per="$per node$i $(metric "${AP[$i]}" antenna_cluster_adopted_sessions_total)"
    done
    "$BENCH" sub -p "$SURV" -c "$SESSIONS" -C 0 -q 1 --client-prefix fo_ -t 'fo/%i' \
        -d 0 --drain 0 --quiet --ready-file "$CLUSTER_DIR/resumed" >/dev/null 2>&1 &
    bpid=$!
    until [ -e "$CLUSTER_DIR/resumed" ]; do
        sleep 0.02
        kill -0 $bpid 2>/dev/null || break
    done
    t_resumed=$(now_ms)
    wait $bpid
    echo "run $run: $NODES nodes, $stored sessions stored on node$V; lease $LEASE:" \
        "kill -> out $((t_out - t_kill)) ms, out -> adopted $((t_adopted - t_out)) ms" \
        "(polled), adopted -> all $SESSIONS reconnected $((t_resumed - t_adopted)) ms;" \
        "kill -> resumed $((t_resumed - t_kill)) ms; adopted by:$per"
    grep -h "adopted the sessions of node node$V" "$CLUSTER_DIR"/node*/antenna.log |
        sed 's/.*info  /  /'
    "$ROOT/tools/cluster.sh" down >/dev/null 2>&1
done
