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
PIDS=
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
set -- $(python3 -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
MQ_A=$1 MQ_B=$2 API_A=$3 API_B=$4 LINK_A=$5 LINK_B=$6
KEY=$("$BIN" apikey create "$TMP/api.keys" bench)
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
node() { # name mqtt_port api_port link_port
    cat >"$TMP/$1.yaml" <<YAML
workers: 2
log:
  level: info
  file: $TMP/$1.log
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: $2
persistence:
  enabled: false
api:
  bind: 127.0.0.1
  port: $3
  keys_file: $TMP/api.keys
cluster:
  node: $1
  etcd: ""
  listen: 127.0.0.1:$4
  secret: s
  static_members: [a@127.0.0.1:$LINK_A, b@127.0.0.1:$LINK_B]
YAML
    if [ "${TLS:-0}" = 1 ]; then
        printf '  tls: true\n  tls_cert_file: %s\n  tls_key_file: %s\n  tls_ca_file: %s\n' \
            "$TMP/$1.pem" "$TMP/$1.key" "$TMP/ca.pem" >>"$TMP/$1.yaml"
    fi
    "$BIN" --config "$TMP/$1.yaml" >"$TMP/$1.out" 2>&1 &
    PIDS="$PIDS $!"
    echo $!
}
PID_A=$(node a "$MQ_A" "$API_A" "$LINK_A")
node b "$MQ_B" "$API_B" "$LINK_B" >/dev/null
link_up() {
    curl -s -m 2 -H "Authorization: Bearer $KEY" "http://127.0.0.1:$API_B/api/v1/nodes" 2>/dev/null |
        python3 -c 'import json,sys
j = json.load(sys.stdin)
ls = [n["link_state"] for n in j["nodes"] if n["node"] == "a"][0]
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
