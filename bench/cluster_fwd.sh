#!/bin/sh
# bench/cluster_fwd.sh -- forwarding between two cluster nodes (docs/benchmarks.md
# "Cluster: forwarding between two nodes"): nodes a and b (2 workers each,
# persistence off, static members, one link), antenna-bench publishing on a
# and subscribing on b, 64 B payloads, 4 publishers on bench/%i and 4
# subscribers (one per topic).  TLS=1: the link runs over TLS (cluster.tls,
# a throwaway CA and two node certificates made with the openssl CLI).
#
#   bench/cluster_fwd.sh [BUILD_DIR] [QOS] [RATE] [DURATION]
#   e.g. TLS=1 bench/cluster_fwd.sh build 0 300000 6
#        bench/cluster_fwd.sh build 1 0 6          (QoS 1 flat out)
#
# RATE: aggregate messages/s (0 = flat out, 100 in flight per publisher for
# QoS 1/2).  Prints the publisher's and the subscriber's summaries (sent,
# received, lost, latency, a's CPU per message from --broker-pid) and the
# link's state from b's GET /api/v1/nodes (tls, cipher).  KEEP=1 keeps the
# temporary directory (configs, logs).
set -eu
BUILD=${1:-build}
QOS=${2:-0}
RATE=${3:-300000}
DUR=${4:-6}
BIN=$(cd "$BUILD" && pwd)/antenna
BENCH=$(cd "$BUILD" && pwd)/antenna-bench
TMP=$(mktemp -d)
WORKERS=2
. "$(dirname "$0")/lib_pair.sh"
trap pair_cleanup EXIT INT TERM
pair_setup
if [ "${TLS:-0}" = 1 ]; then
    (
        cd "$TMP"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key \
            -out ca.pem -days 2 -subj /CN=bench-ca
        for n in a b; do
            openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $n.key \
                -out $n.csr -subj /CN=$n
            openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $n.pem -days 2
        done
    ) >"$TMP/openssl.log" 2>&1
fi
pair_node a "$MQ_A" "$API_A" "$LINK_A"
PID_A=$PAIR_PID
pair_node b "$MQ_B" "$API_B" "$LINK_B"
link_up() {
    pair_link_of_a | python3 -c 'import json,sys
ls = json.load(sys.stdin)
print("up" if ls["state"] == "up" else "", "tls=%s %s" % (ls.get("tls"), ls.get("cipher", "")))' 2>/dev/null || true
}
i=0
until link_up | grep -q '^up'; do
    i=$((i + 1))
    [ $i -lt 300 ] || { echo "cluster_fwd.sh: the link did not come up in 30 s; see $TMP (KEEP=1)" >&2; exit 1; }
    sleep 0.1
done
echo "link: $(link_up)"
"$BENCH" sub -p "$MQ_B" -c 4 --sub-topic 'bench/%i' -q "$QOS" -d $((DUR + 5)) --quiet \
    --ready-file "$TMP/sub.ready" >"$TMP/sub.txt" 2>&1 &
SUB=$!
i=0
until [ -e "$TMP/sub.ready" ]; do
    i=$((i + 1))
    [ $i -lt 300 ] || { echo "cluster_fwd.sh: subscribers not ready" >&2; exit 1; }
    sleep 0.1
done
sleep 1 # the routes reach a (announced asynchronously; a bench, not a test)
"$BENCH" pub -p "$MQ_A" -c 4 -t 'bench/%i' -q "$QOS" -s 64 -r "$RATE" -d "$DUR" --quiet \
    --broker-pid "$PID_A" 2>&1 | sed 's/^/pub: /'
wait $SUB || true
sed 's/^/sub: /' "$TMP/sub.txt"
