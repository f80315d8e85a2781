# bench/lib_pair.sh -- two cluster nodes, a and b, for the cluster benches
# (sourced by cluster_fwd.sh and cluster_routes_mem.sh; POSIX sh).
#
# The caller sets BIN (the broker), TMP (a scratch directory), WORKERS, and
# optionally TLS=1 (with $TMP/{ca,a,b}.pem and .key made beforehand);
# pair_setup picks six free ports and an API key and sets MQ_A MQ_B API_A
# API_B LINK_A LINK_B KEY; pair_node NAME MQTT API LINK writes NAME's
# config (persistence off, static members, the API on) and starts it,
# appending its pid to PIDS and setting PAIR_PID; CLUSTER_KEYS (optional,
# "key: value" lines) is added to both nodes' cluster section (not in a subshell: PIDS
# must see it); pair_link_of_a prints b's view of a's link as JSON;
# pair_cleanup (the caller's
# EXIT trap) stops them and removes TMP unless KEEP is set.

pair_cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$TMP"
}

pair_setup() {
    PIDS=
    set -- $(python3 -c '
import socket
ss = [socket.socket() for _ in range(6)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))')
    MQ_A=$1 MQ_B=$2 API_A=$3 API_B=$4 LINK_A=$5 LINK_B=$6
    KEY=$("$BIN" apikey create "$TMP/api.keys" bench)
}

pair_node() { # name mqtt_port api_port link_port
    cat >"$TMP/$1.yaml" <<YAML
workers: ${WORKERS:-2}
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
    if [ -n "${CLUSTER_KEYS:-}" ]; then
        printf '%s\n' "$CLUSTER_KEYS" | sed 's/^/  /' >>"$TMP/$1.yaml"
    fi
    if [ "${TLS:-0}" = 1 ]; then
        printf '  tls: true\n  tls_cert_file: %s\n  tls_key_file: %s\n  tls_ca_file: %s\n' \
            "$TMP/$1.pem" "$TMP/$1.key" "$TMP/ca.pem" >>"$TMP/$1.yaml"
    fi
    "$BIN" --config "$TMP/$1.yaml" >"$TMP/$1.out" 2>&1 &
    PAIR_PID=$!
    PIDS="$PIDS $PAIR_PID"
}

# b's view of a's link as JSON (GET /api/v1/nodes), or nothing
pair_link_of_a() {
    curl -s -m 2 -H "Authorization: Bearer $KEY" "http://127.0.0.1:$API_B/api/v1/nodes" 2>/dev/null |
        python3 -c 'import json,sys
j = json.load(sys.stdin)
print(json.dumps([n["link_state"] for n in j["nodes"] if n["node"] == "a"][0]))' 2>/dev/null || true
}
