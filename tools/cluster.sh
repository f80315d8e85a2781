#!/bin/sh
# cluster.sh -- a local antenna cluster on loopback (docs/cluster.md, "Running it").
#
#   tools/cluster.sh up [N]   etcd, N nodes (default 3) and HAProxy in front of them
#   tools/cluster.sh down     stop everything `up` started (from its pid files)
#
# Everything lives in build/cluster/ (CLUSTER_DIR): etcd's data, each node's
# configuration, store, logs and pid file in nodeK/, haproxy.cfg, the API key
# (api.key) and cluster.env, which `up` writes once every node is ready and
# sees N members:
#   ETCD_URL    http://127.0.0.1:port
#   LB_PORT     HAProxy's MQTT port (TCP mode, PROXY protocol v2 to the nodes,
#               health checks GET /health/ready on each node's API)
#   NODE_PORTS  each node's own MQTT port (space-separated, node0 first)
#   API_PORTS   each node's management API port
#   NODE_PIDS   the nodes' process ids
#   API_KEY     a key for the nodes' APIs
# Ports are free ones picked at start.  The binary: ANTENNA_BIN, or
# build/antenna.  CLUSTER_EXTRA_YAML names a file of more top-level sections
# (mqtt:, auth: ...) appended to every node's configuration; CLUSTER_KEYS,
# lines ("  route_bloom_above: 10000") added to every node's cluster:
# section.  CLUSTER_TLS=1:
# TLS on the node links (cluster.tls): a throwaway CA and a certificate per
# node (CN and DNS name nodeK) made with the openssl CLI under tls/, each
# node verifying the others' names (tls_verify_name: node).
# SESSION_STORE=redis: a redis-server of the cluster's own (appendonly yes,
# appendfsync always; its data in redis/, REDIS_URL in cluster.env) holds
# every node's store (persistence.backend: redis, prefix antenna:<node>:),
# so a node started again anywhere with its name finds its sessions
# (docs/persistence.md), and a survivor adopts the sessions of a node that
# dies (docs/cluster.md, "A dead node's sessions").  SESSION_STORE=
# replicated: each node's RocksDB store copied to a replica node over the
# links (persistence.session_store: replicated; docs/cluster.md "Replicated
# sessions"), no Redis.  CLUSTER_LEASE_TTL:
# cluster.lease_ttl (10s).  CLUSTER_WORKERS: each node's workers (2);
# CLUSTER_PERSISTENCE=0: nodes without a store; CLUSTER_LOG_LEVEL (info);
# CLUSTER_ETCD_NICE: etcd's nice value (0)
# (scale runs: bench/cluster_scale.sh).  Each node has two MQTT listeners: `mqtt` (direct, the port
# in NODE_PORTS) and `lb` (PROXY protocol v2, only HAProxy connects there).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${CLUSTER_DIR:-$ROOT/build/cluster}
BIN=${ANTENNA_BIN:-$ROOT/build/antenna}
WAIT_S=${CLUSTER_WAIT_S:-60}

die() {
    echo "cluster.sh: $*" >&2
    exit 1
}

# free_ports N: N distinct free TCP ports on 127.0.0.1
free_ports() {
    python3 -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# alive PIDFILE: the pid in it runs and is one of ours (its command line
# names this directory), so a recycled pid is never signalled
alive() {
    [ -f "$1" ] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$DIR"
}

stop_pidfile() {
    if alive "$1"; then
        pid=$(cat "$1")
        kill -TERM "$pid" 2>/dev/null || true
        i=0
        while [ -d "/proc/$pid" ] && [ $i -lt 100 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        if [ -d "/proc/$pid" ]; then
            echo "cluster.sh: $1: pid $pid did not stop in 10 s: killed" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$1"
}

down() {
    [ -d "$DIR" ] || return 0
    stop_pidfile "$DIR/haproxy.pid"
    for p in "$DIR"/node*/pid; do
        [ -e "$p" ] && stop_pidfile "$p"
    done
    stop_pidfile "$DIR/etcd.pid"
    stop_pidfile "$DIR/redis.pid"
    rm -f "$DIR/cluster.env"
}

# api_get PORT PATH: the body, or nothing
api_get() {
    curl -s -m 2 -H "Authorization: Bearer $KEY" "http://127.0.0.1:$1$2" 2>/dev/null || true
}

members_of() {
    api_get "$1" /api/v1/nodes |
        python3 -c 'import json,sys
try: print(json.load(sys.stdin)["members"])
except Exception: print(0)'
}

up() {
    n=$1
    case $n in '' | *[!0-9]*) die "up N: N is a number" ;; esac
    [ "$n" -ge 1 ] || die "up N: at least 1 node"
    [ -x "$BIN" ] || die "$BIN: no antenna binary (build it, or set ANTENNA_BIN)"
    command -v etcd >/dev/null || die "etcd not found (apt install etcd-server)"
    command -v haproxy >/dev/null || die "haproxy not found (apt install haproxy)"
    down
    rm -rf "$DIR"
    mkdir -p "$DIR"

    # etcd
    set -- $(free_ports 2)
    ETCD_PORT=$1
    PEER_PORT=$2
    ETCD_URL=http://127.0.0.1:$ETCD_PORT
    nofsync=
    etcd --help 2>&1 | grep -q -- --unsafe-no-fsync && nofsync=--unsafe-no-fsync
    # CLUSTER_ETCD_NICE: etcd's nice value (scale runs on one machine give it
    # the CPU first, as its own machines would in production)
    nice -n "${CLUSTER_ETCD_NICE:-0}" etcd --name e0 --data-dir "$DIR/etcd" --log-level warn \
        --listen-client-urls "$ETCD_URL" --advertise-client-urls "$ETCD_URL" \
        --listen-peer-urls "http://127.0.0.1:$PEER_PORT" \
        --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
        --initial-cluster "e0=http://127.0.0.1:$PEER_PORT" $nofsync \
        >"$DIR/etcd.log" 2>&1 &
    echo $! >"$DIR/etcd.pid"
    deadline=$(($(date +%s) + WAIT_S))
    until curl -s -m 1 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'; do
        alive "$DIR/etcd.pid" || die "etcd exited; see $DIR/etcd.log"
        [ "$(date +%s)" -lt "$deadline" ] || die "etcd not healthy in ${WAIT_S}s; see $DIR/etcd.log"
        sleep 0.1
    done

    # SESSION_STORE=redis: one redis-server for every node's store
    REDIS_URL= REPLICATED=
    case ${SESSION_STORE:-local} in
    local | rocksdb) ;;
    replicated) REPLICATED=1 ;;
    redis)
        command -v redis-server >/dev/null || die "SESSION_STORE=redis needs redis-server"
        REDIS_PORT=$(free_ports 1)
        mkdir -p "$DIR/redis"
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DIR/redis" \
            --appendonly yes --appendfsync always --save "" --daemonize no \
            --set-proc-title no \
            >"$DIR/redis.log" 2>&1 &
        echo $! >"$DIR/redis.pid"
        REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
        until [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; do
            alive "$DIR/redis.pid" || die "redis-server exited; see $DIR/redis.log"
            [ "$(date +%s)" -lt "$deadline" ] || die "redis-server not up in ${WAIT_S}s"
            sleep 0.1
        done
        ;;
    *) die "SESSION_STORE: local, redis or replicated" ;;
    esac

    # the shared secret and an API key
    umask 077
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/secret"
    KEY=$("$BIN" apikey create "$DIR/api.keys" ops) || die "antenna apikey create failed"
    echo "$KEY" >"$DIR/api.key"
    umask 022

    # CLUSTER_TLS=1: a CA (EC P-256, valid 30 days) and one certificate per node
    if [ "${CLUSTER_TLS:-0}" = 1 ]; then
        command -v openssl >/dev/null || die "CLUSTER_TLS=1 needs the openssl CLI"
        t=$DIR/tls
        mkdir -p "$t"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$t/ca.key" -out "$t/ca.pem" -days 30 -subj "/CN=antenna local cluster CA" \
            >"$t/openssl.log" 2>&1 || die "openssl: cannot make the CA; see $t/openssl.log"
        k=0
        while [ $k -lt "$n" ]; do
            echo "subjectAltName=DNS:node$k" >"$t/node$k.ext"
            { openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                -keyout "$t/node$k.key" -out "$t/node$k.csr" -subj "/CN=node$k" &&
                openssl x509 -req -in "$t/node$k.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" \
                    -CAcreateserial -out "$t/node$k.pem" -days 30 -extfile "$t/node$k.ext"; } \
                >>"$t/openssl.log" 2>&1 || die "openssl: cannot make node$k's certificate"
            k=$((k + 1))
        done
    fi

    # the nodes
    NODE_PORTS= API_PORTS= LB_TARGETS= NODE_PIDS=
    k=0
    while [ $k -lt "$n" ]; do
        set -- $(free_ports 3)
        d=$DIR/node$k
        mkdir -p "$d"
        cat >"$d/antenna.yaml" <<EOF
# generated by tools/cluster.sh
workers: ${CLUSTER_WORKERS:-2}
log:
  level: ${CLUSTER_LOG_LEVEL:-info}
  file: $d/antenna.log
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: $1
  - name: lb
    address: 127.0.0.1
    port: $2
    proxy_protocol: v2
persistence:
  enabled: $([ "${CLUSTER_PERSISTENCE:-1}" = 0 ] && echo false || echo true)
  dir: $d/data${REPLICATED:+
  session_store: replicated}${REDIS_URL:+
  backend: redis
  redis:
    url: $REDIS_URL}
api:
  bind: 127.0.0.1
  port: $3
  keys_file: $DIR/api.keys
cluster:
  node: node$k
  name: local
  etcd: $ETCD_URL
  lease_ttl: ${CLUSTER_LEASE_TTL:-10s}
  listen: 127.0.0.1:0
  secret_file: $DIR/secret${CLUSTER_KEYS:+
$CLUSTER_KEYS}
EOF
        if [ "${CLUSTER_TLS:-0}" = 1 ]; then
            cat >>"$d/antenna.yaml" <<EOF
  tls: true
  tls_cert_file: $DIR/tls/node$k.pem
  tls_key_file: $DIR/tls/node$k.key
  tls_ca_file: $DIR/tls/ca.pem
  tls_verify_name: node
EOF
        fi
        # CLUSTER_EXTRA_YAML: a file of more top-level sections for every node
        if [ -n "${CLUSTER_EXTRA_YAML:-}" ]; then
            cat "$CLUSTER_EXTRA_YAML" >>"$d/antenna.yaml" || die "cannot read $CLUSTER_EXTRA_YAML"
        fi
        "$BIN" --config "$d/antenna.yaml" >"$d/stderr.log" 2>&1 &
        echo $! >"$d/pid"
        NODE_PORTS="$NODE_PORTS${NODE_PORTS:+ }$1"
        API_PORTS="$API_PORTS${API_PORTS:+ }$3"
        NODE_PIDS="$NODE_PIDS${NODE_PIDS:+ }$(cat "$d/pid")"
        LB_TARGETS="$LB_TARGETS  server node$k 127.0.0.1:$2 send-proxy-v2 check port $3 inter 500 fall 2 rise 1
"
        k=$((k + 1))
    done

    # HAProxy
    LB_PORT=$(free_ports 1)
    cat >"$DIR/haproxy.cfg" <<EOF
# generated by tools/cluster.sh
global
  maxconn 8000
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend mqtt
  bind 127.0.0.1:$LB_PORT
  default_backend nodes
backend nodes
  balance leastconn
  option httpchk GET /health/ready
$LB_TARGETS
EOF
    haproxy -db -f "$DIR/haproxy.cfg" >"$DIR/haproxy.log" 2>&1 </dev/null &
    echo $! >"$DIR/haproxy.pid"

    # ready: every node answers 200 on /health/ready and sees n members
    for p in $API_PORTS; do
        until [ "$(curl -s -o /dev/null -w '%{http_code}' -m 1 "http://127.0.0.1:$p/health/ready" 2>/dev/null)" = 200 ] &&
            [ "$(members_of "$p")" = "$n" ]; do
            [ "$(date +%s)" -lt "$deadline" ] ||
                die "a node (API port $p) not ready with $n members in ${WAIT_S}s; see $DIR/node*/antenna.log"
            sleep 0.1
        done
    done
    until python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$LB_PORT" 2>/dev/null; do
        alive "$DIR/haproxy.pid" || die "haproxy exited; see $DIR/haproxy.log"
        [ "$(date +%s)" -lt "$deadline" ] || die "haproxy not listening in ${WAIT_S}s"
        sleep 0.1
    done

    cat >"$DIR/cluster.env" <<EOF
ETCD_URL="$ETCD_URL"
LB_PORT="$LB_PORT"
NODE_PORTS="$NODE_PORTS"
API_PORTS="$API_PORTS"
NODE_PIDS="$NODE_PIDS"
API_KEY="$KEY"
REDIS_URL="$REDIS_URL"
EOF
    echo "cluster.sh: $n nodes up behind 127.0.0.1:$LB_PORT (etcd $ETCD_URL); $DIR/cluster.env"
}

case ${1:-} in
up) up "${2:-3}" ;;
down) down && echo "cluster.sh: down" ;;
*) die "usage: $0 up [N] | down" ;;
esac
