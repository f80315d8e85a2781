#!/usr/bin/env bash
# bench/store_repl.sh -- durable QoS 1 with persistence.session_store:
# replicated beside the local RocksDB store: bench/compare.sh's durable
# scenario (10 -> 10 persistent sessions, QoS 1, 100 in flight per
# publisher, 64 B, flat out, sync always) on node0 of a 2-node
# tools/cluster.sh cluster, SESSION_STORE=local and SESSION_STORE=replicated
# (node1 holds node0's copy) alternating, --runs each (default 3); the
# medians.  Reported per run: delivered msg/s, p50/p99 latency, node0's CPU
# per message (antenna-bench --broker-pid) and node1's (the replica's, from
# /proc over the same run).  --other BIN adds a third mode, replicated with
# that binary (main's, say), in the same alternation; --nodes N (default
# 2): a cluster of N, node0's sessions spread over the N - 1 others.
#
#   bench/store_repl.sh [--runs N] [--dur S] [--other BIN] [--nodes N]
#
# Needs build/antenna, build/antenna-bench, etcd, haproxy.
# Results: docs/benchmarks.md, "Durable QoS 1 with replicated sessions".
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=3
NODES=2
DUR=8
WARM=2
OTHER=
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --dur) DUR=$2; shift 2 ;;
    --other) OTHER=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    *) echo "usage: $0 [--runs N] [--dur S] [--other BIN] [--nodes N]" >&2; exit 2 ;;
    esac
done
BENCH=$ROOT/build/antenna-bench
export CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/build/store-repl}
OUT=$CLUSTER_DIR.results
mkdir -p "$OUT"
: > "$OUT/all.txt"
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0; }
jget() { sed -n "s/.*\"$1\": *\([0-9.eE+-]*\).*/\1/p" "$2" | head -1; }

one() { # mode run (mode other: replicated with $OTHER)
    local mode=$1 run=$2 store=$1 bin=${ANTENNA_BIN:-$ROOT/build/antenna}
    [ "$mode" = other ] && store=replicated bin=$OTHER
    "$ROOT/tools/cluster.sh" down >/dev/null 2>&1
    rm -rf "$CLUSTER_DIR"
    ANTENNA_BIN=$bin SESSION_STORE=$store CLUSTER_LEASE_TTL=10s "$ROOT/tools/cluster.sh" up "$NODES" >/dev/null ||
        { echo "cluster.sh up failed ($mode)" >&2; return 1; }
    # shellcheck disable=SC1091
    . "$CLUSTER_DIR/cluster.env"
    set -- $NODE_PORTS; local p0=$1
    set -- $NODE_PIDS; local pid0=$1 pid1=$2
    if [ "$store" = replicated ]; then # node0's replica in sync before the run
        local t=0
        until grep -q "has a full copy of this node's store\|sessions are replicated over" \
            "$CLUSTER_DIR/node0/antenna.log"; do
            sleep 0.1; t=$((t + 1))
            [ $t -lt 300 ] || { echo "no replica for node0" >&2; return 1; }
        done
    fi
    local r0 r1 f=$OUT/$mode-$run.json
    r0=$(ticks "$pid1")
    timeout -k 5 $((WARM + DUR + 60)) "$BENCH" pubsub -c 10 -t 'd/%i' --sub-topic 'd/%i' -q 1 \
        -C 0 --client-prefix dur_ -w "$WARM" -d "$DUR" -s 64 --e2e-window 100 \
        --broker-pid "$pid0" -p "$p0" --json --quiet > "$f" 2> "$OUT/$mode-$run.err"
    r1=$(ticks "$pid1")
    local sent rate
    sent=$(jget sent "$f")
    rate=$(jget recv_rate "$f")
    printf '%s run %s: %s msg/s, p50 %s us, p99 %s us, node0 CPU %s us/msg, node1 CPU %s us/msg, lost %s\n' \
        "$mode" "$run" "$rate" "$(jget lat_p50_us "$f")" "$(jget lat_p99_us "$f")" \
        "$(jget broker_cpu_us_per_msg "$f")" \
        "$(awk -v t=$((r1 - r0)) -v hz="$(getconf CLK_TCK)" -v m="${sent:-0}" \
            'BEGIN { printf "%.2f", m ? t * 1e6 / hz / m : 0 }')" "$(jget lost "$f")" |
        tee -a "$OUT/all.txt"
    "$ROOT/tools/cluster.sh" down >/dev/null 2>&1
}

for run in $(seq 1 "$RUNS"); do
    one local "$run"
    one replicated "$run"
    [ -z "$OTHER" ] || one other "$run"
done
echo "medians:"
for mode in local replicated ${OTHER:+other}; do
    for col in 4 7 10 14 18; do
        grep "^$mode run" "$OUT/all.txt" | awk -v c=$col '{ gsub(",", "", $c); print $c }' |
            sort -n | awk '{ v[NR] = $1 } END { printf "%s ", v[int((NR + 1) / 2)] }'
    done | awk -v m="$mode" '{ printf "%s: %s msg/s, p50 %s us, p99 %s us, node0 %s us/msg, node1 %s us/msg\n", m, $1, $2, $3, $4, $5 }'
done
