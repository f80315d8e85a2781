#!/usr/bin/env bash
# bench/failover_redis.sh -- failover of persistent sessions through Redis
# (docs/cluster.md "A dead node's sessions"): SESSION_STORE=redis
# tools/cluster.sh up 3 with a short lease; --sessions persistent sessions
# (MQTT 3.1.1, clean session 0, one subscription each) made on node2, then
# offline; node2 killed with SIGKILL; reported:
#   lease    kill -> the survivors see node2 out (the lease TTL's part)
#   adopt    node2 out -> a survivor adopted every session (its log line:
#            read, installed, committed in its own store, claimed, deleted)
#   resume   adopted -> every client connected again with clean session 0
#            to the survivors (antenna-bench sub --reconnect, round-robin
#            over both: a client refused, 0x88 while a survivor still waits
#            for the adoption or 0x89, retries with antenna-bench's
#            back-off: at once, then uniform in [0, 1 s], [0, 2 s], then
#            [5, 15 s]; the time ends when every one of them is back)
#   kill -> resumed, and the clients' failed attempts, the survivors'
#            claims refused for a pending adoption and take-overs asked
# --at kill: the clients start reconnecting at the kill, as devices whose
# connection broke do (refused with 0x88 until the adoption, retrying with
# the back-off), instead of once the adoption is done.  --bin DIR (repeat
# it): the build directories (antenna, antenna-bench) to compare, one run
# of each in turn per round (default: build).  --to adopter: every client
# reconnects to the adopter (no take-over: the floor of the reconnection),
# instead of round-robin over both survivors (with --at adopted only).
# --client-opts "...": more antenna-bench options for the clients that
# reconnect, e.g. their back-off ("--backoff-base 0.25 --backoff-min 0.5
# --backoff-max 1": a retry every 0.5-1 s after the first three).
#
#   bench/failover_redis.sh [--sessions N] [--lease TTL] [--runs N]
#                           [--at adopted|kill] [--to both|adopter]
#                           [--client-opts OPTS] [--bin DIR]...
#
# Needs antenna, antenna-bench, etcd, haproxy, redis-server.
# Results: docs/benchmarks.md, "Failover of sessions from Redis".
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SESSIONS=10000
LEASE=2s
RUNS=1
AT=adopted
TO=both
CLIENT_OPTS=
BINS=()
while [ $# -gt 0 ]; do
    case "$1" in
    --sessions) SESSIONS=$2; shift 2 ;;
    --lease) LEASE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --at) AT=$2; shift 2 ;;
    --to) TO=$2; shift 2 ;;
    --client-opts) CLIENT_OPTS=$2; shift 2 ;;
    --bin) BINS+=("$(cd "$2" && pwd)"); shift 2 ;;
    *) echo "usage: $0 [--sessions N] [--lease TTL] [--runs N] [--at adopted|kill] [--bin DIR]..." >&2
        exit 2 ;;
    esac
done
[ "$AT" = adopted ] || [ "$AT" = kill ] || { echo "--at: adopted or kill" >&2; exit 2; }
[ ${#BINS[@]} -gt 0 ] || BINS=("$ROOT/build")
export CLUSTER_DIR=${CLUSTER_DIR:-$ROOT/build/failover-redis}
export SESSION_STORE=redis CLUSTER_LEASE_TTL=$LEASE
now_ms() { date +%s%3N; }
metric() { # API port, metric name (with its labels)
    curl -s -m 2 -H "Authorization: Bearer $API_KEY" "http://127.0.0.1:$1/metrics" |
        awk -v m="$2" '$1 == m { print $2 }'
}
cpu_ms() { # pid: user + system CPU so far, ms
    awk -v hz="$(getconf CLK_TCK)" '{ print int(($14 + $15) * 1000 / hz) }' "/proc/$1/stat" 2>/dev/null || echo 0
}
claims() { # API port, outcome (0 when the build does not count it)
    local v
    v=$(metric "$1" "antenna_cluster_client_claims_total{outcome=\"$2\"}")
    echo "${v:-0}"
}
ulimit -n 65536 2>/dev/null || true

one_run() { # build directory, run number
    local bin=$1 run=$2 BENCH=$1/antenna-bench
    "$ROOT/tools/cluster.sh" down >/dev/null 2>&1
    rm -rf "$CLUSTER_DIR"
    ANTENNA_BIN=$bin/antenna "$ROOT/tools/cluster.sh" up 3 >/dev/null ||
        { echo "cluster.sh up failed" >&2; exit 1; }
    # shellcheck disable=SC1091
    . "$CLUSTER_DIR/cluster.env"
    set -- $NODE_PORTS; P0=$1 P1=$2 P2=$3
    set -- $API_PORTS; A0=$1 A1=$2
    set -- $NODE_PIDS; PID0=$1 PID1=$2 PID2=$3
    local EPID
    EPID=$(cat "$CLUSTER_DIR/etcd.pid")
    "$BENCH" sub -p "$P2" -c "$SESSIONS" -C 0 -q 1 --client-prefix fo_ -t 'fo/%i' \
        -d 1 --drain 0 --quiet >/dev/null 2>&1 || { echo "making the sessions failed" >&2; exit 1; }
    stored=$(redis-cli -u "$REDIS_URL" ZLEXCOUNT antenna:node2:index '[s/' '(s0')
    local resume=("$BENCH" sub -p "$P0,$P1" -c "$SESSIONS" -C 0 -q 1 --client-prefix fo_
        -t 'fo/%i' -d 0 --drain 0 --reconnect --setup-timeout 120
        --ready-file "$CLUSTER_DIR/resumed")
    # shellcheck disable=SC2206
    resume+=($CLIENT_OPTS)
    rm -f "$CLUSTER_DIR/resumed"
    t_kill=$(now_ms)
    kill -9 "$PID2"
    local bpid=
    if [ "$AT" = kill ]; then
        "${resume[@]}" >/dev/null 2>"$CLUSTER_DIR/resume.err" &
        bpid=$!
    fi
    # node2 out, seen by node0
    until grep -q "node node2 left" "$CLUSTER_DIR/node0/antenna.log"; do
        sleep 0.02
        [ $(($(now_ms) - t_kill)) -lt 120000 ] || { echo "node2 not out within 120 s" >&2; exit 1; }
    done
    t_out=$(now_ms)
    until [ "$(metric "$A0" antenna_cluster_adoptions_total)$(metric "$A1" antenna_cluster_adoptions_total)" != "00" ]; do
        sleep 0.02
        [ $(($(now_ms) - t_kill)) -lt 120000 ] || { echo "no adoption within 120 s" >&2; exit 1; }
    done
    t_adopted=$(now_ms)
    line=$(grep -h "adopted the sessions of node node2" "$CLUSTER_DIR"/node[01]/antenna.log | tail -1)
    local c0 c1 ce
    c0=$(cpu_ms "$PID0") c1=$(cpu_ms "$PID1") ce=$(cpu_ms "$EPID")
    if [ "$TO" = adopter ]; then
        local ap=$P0
        [ "$(metric "$A1" antenna_cluster_adoptions_total)" = 0 ] || ap=$P1
        resume[3]=$ap
    fi
    if [ "$AT" = adopted ]; then
        "${resume[@]}" >/dev/null 2>"$CLUSTER_DIR/resume.err" &
        bpid=$!
    fi
    until [ -e "$CLUSTER_DIR/resumed" ]; do
        sleep 0.02
        kill -0 "$bpid" 2>/dev/null || break
    done
    t_resumed=$(now_ms)
    c0=$(($(cpu_ms "$PID0") - c0)) c1=$(($(cpu_ms "$PID1") - c1)) ce=$(($(cpu_ms "$EPID") - ce))
    wait "$bpid"
    local ready failed waits asked
    ready=$(awk '{ print $2 }' "$CLUSTER_DIR/resumed" 2>/dev/null)
    failed=$(sed -n 's/.*ready, \([0-9]*\) failed attempts.*/\1/p' "$CLUSTER_DIR/resume.err" | tail -1)
    waits=$(($(claims "$A0" adoption_pending) + $(claims "$A1" adoption_pending)))
    asked=$(($(claims "$A0" asked_owner) + $(claims "$A1" asked_owner)))
    local here take
    here=$(($(claims "$A0" adopted_here) + $(claims "$A1" adopted_here)))
    take=$(($(claims "$A0" adopted_take) + $(claims "$A1" adopted_take)))
    echo "run $run ($(basename "$bin")): $stored sessions stored on node2; lease $LEASE:" \
        "kill -> out $((t_out - t_kill)) ms, out -> adopted $((t_adopted - t_out)) ms" \
        "(polled), adopted -> ${ready:-0}/$SESSIONS resumed $((t_resumed - t_adopted)) ms;" \
        "kill -> resumed $((t_resumed - t_kill)) ms; clients started at $AT," \
        "${failed:-?} failed attempts, $waits refused for the adoption, $asked take-overs asked" \
        "($take without a claim first), $here resumed on the adopter without a claim"
    echo "  ${line#*info  }"
    echo "  CPU from the adoption to all resumed: etcd $ce ms, node0 $c0 ms, node1 $c1 ms"
    "$ROOT/tools/cluster.sh" down >/dev/null 2>&1
}

for run in $(seq 1 "$RUNS"); do
    for bin in "${BINS[@]}"; do
        one_run "$bin" "$run"
    done
done
