#!/usr/bin/env bash
# bench/compare.sh -- antenna against Debian's mosquitto, same scenarios, same
# load generator (antenna-bench), alternating brokers, medians of --runs.
#
#   bench/compare.sh [--runs N] [--out DIR] [--brokers LIST] [SCENARIO...]
#
# Scenarios (default: all but flood, in this order):
#   idle      19,000 clients held: broker RSS per connection, CPU while idle
#   connrate  10,000 CONNECTs as fast as accepted, 100 handshakes in progress at
#             a time (within mosquitto's listen backlog): CONNECTs/s, CPU us per CONNECT;
#             then the same over TLS (a second listener, RSA-2048 self-signed cert
#             made with openssl in the work dir, server not verified by the
#             generator): full handshakes, and resumed ones (--tls-resume: one
#             session per generator process, offered on every new connection)
#   qos0      100 -> 100 point to point, 64 B: 10k msg/s, 50k msg/s, flat out
#   fanin     QoS 1, 1,000 publishers -> 1 subscriber on t/#: 20k msg/s, flat out
#   fanin0    (not in the default set) QoS 0, 1,000 publishers -> 1 subscriber
#             on t/#, paced at 200k and 300k msg/s in all (issue 15, item 2)
#   qos0hi    (not in the default set) QoS 0 100 -> 100 point to point paced
#             at 200k, 400k and 800k msg/s
#   fanout    QoS 0, 1 publisher -> 1,000 subscribers: 50 msg/s (50k deliveries/s), flat out
#   qos1      QoS 1, 100 -> 100 point to point, 64 B, flat out with 100 messages
#             in flight per publisher (PUBACK windows only, no end-to-end
#             window): delivered msg/s, latency (does the broker acknowledge
#             faster than it delivers and let queues grow?)
#   qos2      QoS 2, 100 -> 100: 10k msg/s, flat out
#   retained  100,000 retained topics, then one subscriber to '#': time to get them all
#   storm     19,000 devices with --reconnect; kill -9 the broker, restart it:
#             time until all are back, peak broker CPU
#   flood     (not in the default set) QoS 0 100 -> 100 open loop, publishers as fast
#             as TCP takes it: delivered msg/s and broker memory
#   durable   (not in the default set) QoS 1, 10 -> 10 persistent sessions (clean
#             session 0), flat out (100 per publisher in flight), on its own
#             brokers: mosquitto-persist (persistence true: a snapshot every
#             autosave_interval, 1800 s by default, and at exit, so nothing is
#             written while the messages flow), antenna-always, antenna-interval
#             and antenna-none (2 workers, persistence.sync always / interval
#             (1000 ms) / none): delivered msg/s, CPU, latency, and for antenna
#             the store's fsyncs/s and batches per commit (from its exit log);
#             DURABLE_BROKERS=... picks among those and antenna-redis-always /
#             antenna-redis-none (persistence.backend: redis on a redis-server
#             this script starts, appendonly yes, appendfsync always resp.
#             everysec, emptied before each start; the broker's CPU only,
#             Redis' own is reported apart as "redis CPU us/msg");
#             bench/store_redis.sh runs that comparison
#
# CONTEND=1 runs a busy loop (one process spinning on a core) beside every
# measured bench: the broker shares the machine with a CPU-heavy neighbour.
#
# Brokers (--brokers, default all three, run alternately within every run):
#   mosquitto   /usr/sbin/mosquitto (one thread)
#   antenna-w1  build/antenna with workers: 1
#   antenna-w2  build/antenna with workers: 2 (the default on this 2-core machine)
#   flashmq-w1, flashmq-w2   FlashMQ (thread_count 1 / 2) at $FLASHMQ, its
#               release build from its own sources, kept outside this tree
#               (bench/flashmq.sh builds it): 65,535 QoS messages and 64 MiB
#               pending per client, a 64 MiB write buffer, tcp_nodelay,
#               log level error, no persistence (no storage_dir)
#   base-w1, base-w2   the same configuration on $ANTENNA_BASE, another build
#               of antenna (an earlier commit): a before/after comparison in
#               one run, e.g. ANTENNA_BASE=/tmp/old/build/antenna
#               bench/compare.sh --brokers base-w2,antenna-w2 qos0 fanout
#   traced-w1, traced-w2   antenna with tracing on (src/modules/tracing):
#               sample_ratio $TRACE_RATIO (default 0.01), spans exported to a
#               local OTLP sink this script starts (a Python HTTP server
#               that answers 200): the cost of tracing beside antenna-wN
#   cw-w1, cw-w2   antenna with workers_coalesce_us: $COALESCE_US (default
#               100; antenna-wN runs with the default, 0): the wake-up
#               coalescing window's cost and gain beside antenna-wN
#   rules-miss-w1/-w2, rules-hit-w1/-w2   antenna with one rule (src/rules)
#               whose FROM selects no bench topic ("other/+"), or every one
#               ("t/+", WHERE qos = 0 passes; no action): the cost of the rule
#               engine beside antenna-wN
# Every broker is started fresh for every scenario and run, on a free loopback
# port, with the same limits (100 in flight, 100,000 queued per client,
# TCP_NODELAY, connection logging off), and without persistence (mosquitto's
# `persistence false`, antenna's `persistence.enabled: false`) except in the
# durable scenario.
#
# "Flat out" in qos0/fanin/fanout/qos2 means no pacing, with at most N messages
# per publisher sent and not yet received end to end (antenna-bench
# --e2e-window): the broker's delivery rate sets the pace and latency stays
# meaningful.  Broker CPU comes from /proc/PID/stat (utime + stime, all
# threads) over the measured window, RSS from /proc/PID/status (VmRSS); the
# generator samples them itself at the window's edges (--broker-pid).
#
# The generator shares the 2 cores with the broker: messages/s are capped by
# what one generator core can push, CPU per message is the fair comparison.
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/build/antenna-bench}
ANTENNA=${ANTENNA:-$ROOT/build/antenna}
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
FLASHMQ=${FLASHMQ:-}
RUNS=3
OUT=""
BROKERS="mosquitto antenna-w1 antenna-w2"
ALL="idle connrate qos0 qos1 fanin fanout qos2 retained storm"
SCEN=""
WARM=2       # seconds of warm-up per measured run
DUR=8        # measured seconds per run
IFADDRS=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5   # spread source ports

usage() { sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
DURABLE_BROKERS=${DURABLE_BROKERS:-mosquitto-persist antenna-always antenna-interval antenna-none}

while [ $# -gt 0 ]; do
    case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --runs=*) RUNS=${1#*=}; shift ;;
    --out) OUT=$2; shift 2 ;;
    --out=*) OUT=${1#*=}; shift ;;
    --brokers) BROKERS=${2//,/ }; shift 2 ;;
    --brokers=*) BROKERS=${1#*=}; BROKERS=${BROKERS//,/ }; shift ;;
    -h|--help) usage; exit 0 ;;
    idle|connrate|qos0|qos0hi|qos1|fanin|fanin0|fanout|qos2|retained|storm|flood|durable) SCEN="$SCEN $1"; shift ;;
    *) echo "compare.sh: unknown argument '$1' (--help)" >&2; exit 2 ;;
    esac
done
SCEN=${SCEN:-$ALL}
case "$RUNS" in ''|*[!0-9]*|0) echo "compare.sh: --runs must be a positive integer" >&2; exit 2 ;; esac
for b in $BROKERS; do
    case "$b" in
    mosquitto|antenna-w1|antenna-w2|traced-w1|traced-w2|cw-w1|cw-w2) ;;
    rules-miss-w1|rules-miss-w2|rules-hit-w1|rules-hit-w2) ;;
    flashmq-w1|flashmq-w2)
        [ -x "$FLASHMQ" ] || { echo "compare.sh: $b needs FLASHMQ=path/to/flashmq (bench/flashmq.sh builds one)" >&2; exit 2; } ;;
    base-w1|base-w2)
        [ -x "${ANTENNA_BASE:-}" ] || { echo "compare.sh: $b needs ANTENNA_BASE=path/to/another/antenna" >&2; exit 2; } ;;
    *) echo "compare.sh: unknown broker '$b'" >&2; exit 2 ;;
    esac
done
for f in "$BENCH" "$ANTENNA"; do
    [ -x "$f" ] || { echo "compare.sh: $f not found: build first (cmake --build build)" >&2; exit 2; }
done
case " $SCEN " in *" connrate "*)
    command -v openssl > /dev/null || { echo "compare.sh: openssl not found (the TLS connrate variants need it)" >&2; exit 2; } ;;
esac
case " $BROKERS " in *" mosquitto "*)
    [ -x "$MOSQUITTO" ] || { echo "compare.sh: $MOSQUITTO not found (apt-get install mosquitto)" >&2; exit 2; } ;;
esac

WORK=$(mktemp -d /tmp/antenna-compare.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
RES=$OUT/results.tsv
: > "$RES"
LOG=$OUT/compare.log
: > "$LOG"

# ---- process bookkeeping: everything we start is killed on exit ------------
PIDS=()
BPID=""
BPORT=""
BTLSPORT=""   # the broker's TLS listener (connrate only), empty otherwise
BKIND=""
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
    sleep 0.3
    for p in "${PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null
    done
    [ "$OUT" = "$WORK" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "compare.sh: interrupted" >&2; exit 130' INT TERM

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

# A TCP port on 127.0.0.1 that nobody listens on, outside the ephemeral range.
free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        if ! ss -ltnH "sport = :$p" 2>/dev/null | grep -q .; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# Wait (bounded) until something accepts on the port.
wait_port() {
    local port=$1 i
    for i in $(seq 1 100); do
        if ss -ltnH "sport = :$port" 2>/dev/null | grep -q .; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# The TLS variants' certificate: self-signed RSA 2048 for 127.0.0.1, made once.
# Readable by all: mosquitto started as root reads it after dropping to its
# own user, and mktemp -d makes the work dir private.
CERTS=$WORK/certs
make_cert() {
    [ -f "$CERTS/server.crt" ] && return 0
    mkdir -p "$CERTS"
    if ! openssl req -x509 -newkey rsa:2048 -nodes -keyout "$CERTS/server.key" \
            -out "$CERTS/server.crt" -days 30 -subj "/CN=localhost" \
            -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" >> "$LOG" 2>&1; then
        log "openssl could not make the TLS certificate"
        return 1
    fi
    chmod 755 "$WORK" "$CERTS"
    chmod 644 "$CERTS/server.crt" "$CERTS/server.key"
}

# A sink for OTLP/HTTP exports (traced-w*): answers 200 to every POST.
OTLP_PORT=""
start_otlp_sink() {
    [ -z "$OTLP_PORT" ] || return 0
    OTLP_PORT=$(free_port) || return 1
    python3 -c '
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200); self.end_headers()
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
' "$OTLP_PORT" >/dev/null 2>&1 &
    PIDS+=("$!")
}

broker_conf() { # kind port [tlsport] -> config file path
    local kind=$1 port=$2 tport=${3:-} f
    case "$kind" in
    mosquitto|mosquitto-persist)
        f=$WORK/mosquitto-$port.conf
        local persist="persistence false"
        if [ "$kind" = mosquitto-persist ]; then
            mkdir -p "$WORK/mosq-store-$port"
            chmod 777 "$WORK" "$WORK/mosq-store-$port"
            persist="persistence true
persistence_location $WORK/mosq-store-$port/"
        fi
        cat > "$f" <<EOF
listener $port 127.0.0.1
allow_anonymous true
max_inflight_messages 100
max_queued_messages 100000
set_tcp_nodelay true
$persist
log_dest stderr
log_type error
log_type warning
connection_messages false
EOF
        [ -z "$tport" ] || printf 'listener %s 127.0.0.1\ncertfile %s\nkeyfile %s\n' \
            "$tport" "$CERTS/server.crt" "$CERTS/server.key" >> "$f"
        ;;
    flashmq-w*)
        f=$WORK/flashmq-$port.conf
        cat > "$f" <<EOF
thread_count ${kind#flashmq-w}
rlimit_nofile 20000
log_level error
allow_anonymous true
max_qos_msg_pending_per_client 65535
max_qos_bytes_pending_per_client 67108864
client_max_write_buffer_size 67108864
listen {
    protocol mqtt
    inet4_bind_address 127.0.0.1
    port $port
    tcp_nodelay true
}
EOF
        [ -z "$tport" ] || printf 'listen {\n    protocol mqtt\n    inet4_bind_address 127.0.0.1\n    port %s\n    tcp_nodelay true\n    fullchain %s\n    privkey %s\n}\n' \
            "$tport" "$CERTS/server.crt" "$CERTS/server.key" >> "$f"
        ;;
    antenna-w*|base-w*|traced-w*|rules-*-w*|cw-w*)
        f=$WORK/antenna-$port.yaml
        cat > "$f" <<EOF
workers: ${kind#*-w}
log:
  level: warn
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: $port
EOF
        [ -z "$tport" ] || cat >> "$f" <<EOF
  - name: mqtts
    address: 127.0.0.1
    port: $tport
    transport: tls
    cert_file: $CERTS/server.crt
    key_file: $CERTS/server.key
EOF
        # limits as open as mosquitto's: left at 0, max_connections is
        # derived from the open-file limit minus a reserve (18,682 of 20,000)
        cat >> "$f" <<EOF
mqtt:
  max_inflight: 100
  max_queued: 100000
limits:
  max_connections: 19800
  max_queued_bytes: 0
persistence:
  enabled: false
api:
  enabled: false
EOF
        case "$kind" in
        rules-miss-*) cat >> "$f" <<EOF
rules:
  rules:
    - id: miss
      sql: SELECT clientid, topic, payload FROM "other/+" WHERE qos = 0
EOF
            ;;
        rules-hit-*) cat >> "$f" <<EOF
rules:
  rules:
    - id: hit
      sql: SELECT clientid, topic, payload FROM "t/+" WHERE qos = 0
EOF
            ;;
        cw-*) echo "workers_coalesce_us: ${COALESCE_US:-100}" >> "$f" ;;
        traced-*) cat >> "$f" <<EOF
tracing:
  endpoint: http://127.0.0.1:$OTLP_PORT/v1/traces
  sample_ratio: "${TRACE_RATIO:-0.01}"
EOF
            ;;
        esac
        ;;
    antenna-always|antenna-interval|antenna-none|antenna-redis-always|antenna-redis-none)
        f=$WORK/antenna-$port.yaml
        case $kind in # the store: RocksDB in a directory, or the Redis at REDIS_PORT
        antenna-redis-*) store="  backend: redis
  sync: ${kind#antenna-redis-}
  redis:
    url: redis://127.0.0.1:$REDIS_PORT/0" ;;
        *) store="  dir: $WORK/store-$port
  sync: ${kind#antenna-}
  sync_interval_ms: 1000" ;;
        esac
        cat > "$f" <<EOF
workers: 2
log:
  level: info
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: $port
mqtt:
  max_inflight: 100
  max_queued: 100000
persistence:
  enabled: true
$store
api:
  enabled: false
EOF
        ;;
    esac
    echo "$f"
}

# start_broker KIND [PORT]: sets BPID, BPORT, BKIND (and BTLSPORT when
# WANT_TLS is 1: a second, TLS listener).
WANT_TLS=0
start_broker() {
    local kind=$1 port=${2:-} conf tport="" i
    [ -n "$port" ] || port=$(free_port) || { log "no free port"; return 1; }
    BTLSPORT=""
    if [ "$WANT_TLS" = 1 ]; then
        make_cert || return 1
        for i in 1 2 3 4 5; do
            tport=$(free_port) || { log "no free port"; return 1; }
            [ "$tport" != "$port" ] && break
        done
    fi
    case "$kind" in traced-*) start_otlp_sink || { log "no OTLP sink"; return 1; } ;; esac
    case "$kind" in antenna-redis-*) start_redis "${kind#antenna-redis-}" || return 1 ;; esac
    conf=$(broker_conf "$kind" "$port" "$tport")
    : > "$WORK/broker-$kind.log"
    case "$kind" in
    mosquitto*) "$MOSQUITTO" -c "$conf" >> "$WORK/broker-$kind.log" 2>&1 & ;;
    flashmq-*) "$FLASHMQ" --config-file "$conf" >> "$WORK/broker-$kind.log" 2>&1 & ;;
    base-*) "$ANTENNA_BASE" --config "$conf" >> "$WORK/broker-$kind.log" 2>&1 & ;;
    *) "$ANTENNA" --config "$conf" >> "$WORK/broker-$kind.log" 2>&1 & ;;
    esac
    BPID=$!
    PIDS+=("$BPID")
    BPORT=$port
    BKIND=$kind
    echo "$BPID" > "$WORK/broker.pid"
    if ! wait_port "$port"; then
        log "$kind did not start listening on $port (see $WORK/broker-$kind.log)"
        return 1
    fi
    if [ -n "$tport" ] && ! wait_port "$tport"; then
        log "$kind did not start its TLS listener on $tport (see $WORK/broker-$kind.log)"
        return 1
    fi
    BTLSPORT=$tport
}

# The Redis server of the antenna-redis-* brokers, started once (AOF on, in
# the work dir); start_redis always|none sets its appendfsync (always or
# everysec) and empties it, so each run starts from nothing.
REDIS_PORT=""
REDIS_PID=""
start_redis() {
    local fsync=always
    [ "$1" = always ] || fsync=everysec
    if [ -z "$REDIS_PID" ]; then
        command -v redis-server > /dev/null || { log "redis-server not found"; return 1; }
        REDIS_PORT=$(free_port) || { log "no free port"; return 1; }
        mkdir -p "$WORK/redis"
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
            --appendonly yes --logfile "$WORK/redis/redis.log" > /dev/null 2>&1 &
        REDIS_PID=$!
        PIDS+=("$REDIS_PID")
        wait_port "$REDIS_PORT" || { log "redis-server did not start"; return 1; }
    fi
    redis-cli -p "$REDIS_PORT" CONFIG SET appendfsync "$fsync" > /dev/null &&
        redis-cli -p "$REDIS_PORT" FLUSHALL > /dev/null
}

# Redis' CPU time in clock ticks (utime + stime), 0 without it.
redis_ticks() {
    [ -n "$REDIS_PID" ] || { echo 0; return; }
    awk '{ print $14 + $15 }' "/proc/$REDIS_PID/stat" 2>/dev/null || echo 0
}

stop_broker() {
    [ -n "$BPID" ] || return 0
    kill -TERM "$BPID" 2>/dev/null
    local i
    for i in $(seq 1 100); do
        kill -0 "$BPID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$BPID" 2>/dev/null
    wait "$BPID" 2>/dev/null
    BPID=""
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# jget KEY FILE: a number from the one-line JSON antenna-bench prints.
jget() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" "$2" | head -1; }

# rec SCENARIO VARIANT METRIC VALUE
rec() { printf '%s\t%s\t%s\t%s\t%s\n' "$1|$2|$3" "$BKIND" "$RUN" "$4" "$ORDER" >> "$RES"; ORDER=$((ORDER + 1)); }

# bench NAME TIMEOUT ARGS...: runs antenna-bench, JSON to $WORK/NAME.json
# (beside a busy loop when CONTEND=1).
bench() {
    local name=$1 tmo=$2 spin=""
    shift 2
    if [ "${CONTEND:-0}" = 1 ]; then
        sh -c 'while :; do :; done' &
        spin=$!
    fi
    timeout -k 5 "$tmo" "$BENCH" "$@" -p "${BENCH_PORT:-$BPORT}" --json --quiet \
        > "$WORK/$name.json" 2> "$WORK/$name.err"
    local rc=$?
    if [ -n "$spin" ]; then
        kill "$spin" 2>/dev/null
        wait "$spin" 2>/dev/null
    fi
    cp "$WORK/$name.json" "$OUT/$name-$BKIND-$RUN.json" 2>/dev/null
    cp "$WORK/$name.err" "$OUT/$name-$BKIND-$RUN.err" 2>/dev/null
    if [ $rc -ne 0 ] || ! grep -q '^{' "$WORK/$name.json"; then
        log "  $name on $BKIND: antenna-bench exited $rc; last lines:"
        tail -n 5 "$WORK/$name.err" | sed 's/^/      /' | tee -a "$LOG" >&2
    fi
    grep -q '^{' "$WORK/$name.json"
}

# The metrics of a message scenario.
rec_msgs() { # scenario variant jsonfile
    local f=$3
    rec "$1" "$2" "delivered msg/s" "$(jget recv_rate "$f")"
    rec "$1" "$2" "broker CPU us/msg" "$(jget broker_cpu_us_per_msg "$f")"
    rec "$1" "$2" "broker CPU % of a core" "$(jget broker_cpu_pct "$f")"
    rec "$1" "$2" "latency p50 us" "$(jget lat_p50_us "$f")"
    rec "$1" "$2" "latency p99 us" "$(jget lat_p99_us "$f")"
    rec "$1" "$2" "lost" "$(jget lost "$f")"
    rec "$1" "$2" "duplicated" "$(jget dup "$f")"
}

MSG="-w $WARM -d $DUR -s 64"
TMO=$((WARM + DUR + 60))

# ---- scenarios ----------------------------------------------------------------
s_idle() {
    local rss0
    rss0=$(rss_kb "$BPID")
    bench idle 120 conn -c 19000 --ifaddr "$IFADDRS" -w 2 -d 8 --broker-pid "$BPID" || return
    local f=$WORK/idle.json ok end
    ok=$(jget conn_ok "$f")
    end=$(jget broker_rss_end_kb "$f")
    rec idle "19,000 held" "connected" "$ok"
    rec idle "19,000 held" "broker RSS before (KB)" "$rss0"
    rec idle "19,000 held" "broker RSS with clients (KB)" "$end"
    if [ "${ok:-0}" -gt 0 ]; then
        rec idle "19,000 held" "RSS per connection (B)" "$(( (end - rss0) * 1024 / ok ))"
    fi
    rec idle "19,000 held" "idle CPU % of a core" "$(jget broker_cpu_pct "$f")"
    rec idle "19,000 held" "generator processes" "$(jget procs "$f")"
}

s_connrate() {
    local name=connrate load="10,000" port=$BPORT tls=""
    case "$VARIANT" in
    tls) name=connrate-tls; load="10,000 TLS, full handshakes"; tls=--tls ;;
    tls-resume) name=connrate-tlsres; load="10,000 TLS, resumed"; tls=--tls-resume ;;
    esac
    if [ -n "$tls" ]; then
        [ -n "$BTLSPORT" ] || { log "  $name on $BKIND: no TLS listener"; return; }
        port=$BTLSPORT
    fi
    BENCH_PORT=$port bench "$name" 120 conn -c 10000 --conn-pending 100 --ifaddr "$IFADDRS" \
        -d 1 --setup-timeout 100 $tls --broker-pid "$BPID" || return
    local f=$WORK/$name.json
    rec connrate "$load" "CONNECTs/s" "$(jget connect_rate "$f")"
    rec connrate "$load" "broker CPU us/CONNECT" "$(jget broker_cpu_us_per_connect "$f")"
    rec connrate "$load" "connect p99 us" "$(jget conn_p99_us "$f")"
    rec connrate "$load" "failed attempts" "$(jget conn_fail "$f")"
    if [ -n "$tls" ]; then
        local hs res
        hs=$(jget tls_handshakes "$f")
        res=$(jget tls_resumed "$f")
        rec connrate "$load" "TLS handshakes" "$hs"
        rec connrate "$load" "TLS resumed %" \
            "$(awk -v h="${hs:-0}" -v r="${res:-0}" 'BEGIN { printf "%.1f", (h > 0) ? 100 * r / h : 0 }')"
    fi
}

P2P="-c 100 -t t/%i --sub-topic t/%i"

s_qos0() {
    case "$VARIANT" in
    10k) bench qos0-$VARIANT "$TMO" pubsub $P2P $MSG -r 10000 --broker-pid "$BPID" && rec_msgs qos0 "10k msg/s" "$WORK/qos0-$VARIANT.json" ;;
    50k) bench qos0-$VARIANT "$TMO" pubsub $P2P $MSG -r 50000 --broker-pid "$BPID" && rec_msgs qos0 "50k msg/s" "$WORK/qos0-$VARIANT.json" ;;
    flat) bench qos0-$VARIANT "$TMO" pubsub $P2P $MSG --e2e-window 100 --broker-pid "$BPID" && rec_msgs qos0 "flat out (100/pub in flight)" "$WORK/qos0-$VARIANT.json" ;;
    esac
}

FANIN="--pub-count 1000 --sub-count 1 -t t/%i --sub-topic t/# -q 1"
s_fanin() {
    case "$VARIANT" in
    20k) bench fanin-$VARIANT "$TMO" pubsub $FANIN $MSG -r 20000 --broker-pid "$BPID" && rec_msgs fanin "QoS 1, 20k msg/s" "$WORK/fanin-$VARIANT.json" ;;
    flat) bench fanin-$VARIANT "$TMO" pubsub $FANIN $MSG --e2e-window 10 --broker-pid "$BPID" && rec_msgs fanin "QoS 1, flat out (10/pub)" "$WORK/fanin-$VARIANT.json" ;;
    esac
}

FANIN0="--pub-count 1000 --sub-count 1 -t t/%i --sub-topic t/# -q 0"
s_fanin0() {
    bench fanin0-$VARIANT "$TMO" pubsub $FANIN0 $MSG -r "${VARIANT%k}000" --broker-pid "$BPID" &&
        rec_msgs fanin0 "QoS 0, $VARIANT msg/s" "$WORK/fanin0-$VARIANT.json"
}

s_qos0hi() {
    bench qos0hi-$VARIANT "$TMO" pubsub $P2P $MSG -r "${VARIANT%k}000" --broker-pid "$BPID" &&
        rec_msgs qos0hi "QoS 0 p2p, $VARIANT msg/s" "$WORK/qos0hi-$VARIANT.json"
}

FANOUT="--pub-count 1 --sub-count 1000 -t fan --sub-topic fan -q 0"
s_fanout() {
    case "$VARIANT" in
    50) bench fanout-$VARIANT "$TMO" pubsub $FANOUT $MSG -r 50 --broker-pid "$BPID" && rec_msgs fanout "50 msg/s (50k deliveries/s)" "$WORK/fanout-$VARIANT.json" ;;
    flat) bench fanout-$VARIANT "$TMO" pubsub $FANOUT $MSG --e2e-window 10 --broker-pid "$BPID" && rec_msgs fanout "flat out (10 msgs in flight)" "$WORK/fanout-$VARIANT.json" ;;
    esac
}

s_qos1() {
    bench qos1-$VARIANT "$TMO" pubsub $P2P -q 1 $MSG -F 100 --broker-pid "$BPID" &&
        rec_msgs qos1 "flat out (100/pub in flight)" "$WORK/qos1-$VARIANT.json"
}

s_qos2() {
    case "$VARIANT" in
    10k) bench qos2-$VARIANT "$TMO" pubsub $P2P -q 2 $MSG -r 10000 --broker-pid "$BPID" && rec_msgs qos2 "10k msg/s" "$WORK/qos2-$VARIANT.json" ;;
    flat) bench qos2-$VARIANT "$TMO" pubsub $P2P -q 2 $MSG -F 10 --e2e-window 10 --broker-pid "$BPID" && rec_msgs qos2 "flat out (10/pub)" "$WORK/qos2-$VARIANT.json" ;;
    esac
}

s_flood() {
    bench flood "$TMO" pubsub $P2P $MSG --drain 3 --broker-pid "$BPID" || return
    local f=$WORK/flood.json
    rec flood "open loop" "delivered msg/s" "$(jget recv_rate "$f")"
    rec flood "open loop" "broker CPU us/msg" "$(jget broker_cpu_us_per_msg "$f")"
    rec flood "open loop" "broker RSS peak (KB)" "$(jget broker_rss_peak_kb "$f")"
    rec flood "open loop" "undelivered at the end" "$(jget lost "$f")"
}

s_retained() {
    local rss0 rss1
    rss0=$(rss_kb "$BPID")
    bench retained-pub 120 pub -c 100 -t 'r/%i/%n' -L 1000 --retain -q 1 -s 64 -d 60 || return
    rss1=$(rss_kb "$BPID")
    rec retained "100,000 topics" "publish msg/s (QoS 1)" "$(jget sent_rate "$WORK/retained-pub.json")"
    rec retained "100,000 topics" "broker RSS per retained msg (B)" "$(( (rss1 - rss0) * 1024 / 100000 ))"
    bench retained-sub 120 sub -c 1 --sub-topic '#' -q 0 --expect 100000 -d 60 --broker-pid "$BPID" || return
    rec retained "100,000 topics" "received" "$(jget recv "$WORK/retained-sub.json")"
    rec retained "100,000 topics" "time to receive all (ms)" \
        "$(awk -v s="$(jget expect_s "$WORK/retained-sub.json")" 'BEGIN { printf "%.1f", s * 1000 }')"
}

s_storm() {
    local ready=$WORK/storm.ready pidfile=$WORK/broker.pid bp
    rm -f "$ready"
    echo "$BPID" > "$pidfile"
    timeout -k 5 150 "$BENCH" conn -c 19000 --ifaddr "$IFADDRS" -p "$BPORT" --reconnect \
        --until-recovered -d 120 --ready-file "$ready" --broker-pidfile "$pidfile" --json --quiet \
        > "$WORK/storm.json" 2> "$WORK/storm.err" &
    bp=$!
    PIDS+=("$bp")
    local i
    for i in $(seq 1 600); do
        [ -f "$ready" ] && break
        kill -0 "$bp" 2>/dev/null || break
        sleep 0.1
    done
    if [ ! -f "$ready" ]; then
        log "  storm on $BKIND: clients never all connected"
        kill "$bp" 2>/dev/null
        wait "$bp" 2>/dev/null
        return
    fi
    sleep 2
    local old=$BPID port=$BPORT kind=$BKIND
    { kill -KILL "$old"; wait "$old"; } 2>/dev/null
    BPID=""
    start_broker "$kind" "$port" || log "  storm: $kind did not restart on $port"
    echo "$BPID" > "$pidfile"
    wait "$bp"
    cp "$WORK/storm.json" "$OUT/storm-$BKIND-$RUN.json" 2>/dev/null
    cp "$WORK/storm.err" "$OUT/storm-$BKIND-$RUN.err" 2>/dev/null
    local f=$WORK/storm.json
    grep -q '^{' "$f" || { log "  storm on $BKIND: no result"; return; }
    rec storm "19,000 devices" "all back after (s)" "$(jget recovery_s "$f")"
    rec storm "19,000 devices" "reconnect p50 ms" "$(jget recon_p50_ms "$f")"
    rec storm "19,000 devices" "reconnect p99 ms" "$(jget recon_p99_ms "$f")"
    rec storm "19,000 devices" "connected at the end" "$(jget connected_end "$f")"
    rec storm "19,000 devices" "peak broker CPU % (1 s)" "$(jget broker_peak_cpu_pct "$f")"
    rec storm "19,000 devices" "broker CPU s, kill to end" "$(jget broker_cpu_run_s "$f")"
}

DURABLE="-c 10 -t d/%i --sub-topic d/%i -q 1 -C 0 --client-prefix dur_"
s_durable() {
    local r0 r1
    r0=$(redis_ticks)
    bench durable "$TMO" pubsub $DURABLE $MSG --e2e-window 100 --broker-pid "$BPID" || return
    r1=$(redis_ticks)
    local f=$WORK/durable.json v="QoS 1 persistent, flat out (100/pub)"
    rec_msgs durable "$v" "$f"
    case "$BKIND" in antenna-redis-*)
        # Redis' CPU over the whole bench (warm-up included) per message sent
        rec durable "$v" "redis CPU us/msg" "$(awk -v t=$((r1 - r0)) -v hz="$(getconf CLK_TCK)" \
            -v m="$(jget sent "$f")" 'BEGIN { printf "%.2f", m ? t * 1e6 / hz / m : 0 }')" ;;
    esac
    case "$BKIND" in antenna-*)
        stop_broker # the store's totals are logged at exit
        local line syncs commits batches sent
        line=$(grep 'store totals' "$WORK/broker-$BKIND.log" | tail -1)
        syncs=$(sed -n 's/.* \([0-9]*\) syncs.*/\1/p' <<< "$line")
        commits=$(sed -n 's/.* in \([0-9]*\) commits.*/\1/p' <<< "$line")
        batches=$(sed -n 's/.*totals: \([0-9]*\) batches.*/\1/p' <<< "$line")
        sent=$(jget sent "$f")
        rec durable "$v" "fsyncs/s (whole run)" \
            "$(awk -v s="${syncs:-0}" -v t="$((WARM + DUR))" 'BEGIN { printf "%.0f", s / t }')"
        rec durable "$v" "worker batches per commit" \
            "$(awk -v b="${batches:-0}" -v c="${commits:-0}" 'BEGIN { printf "%.1f", c ? b / c : 0 }')"
        rec durable "$v" "messages per commit" \
            "$(awk -v m="${sent:-0}" -v c="${commits:-0}" 'BEGIN { printf "%.0f", c ? m / c : 0 }')"
        ;;
    esac
}

variants() {
    case "$1" in
    qos0) echo "10k 50k flat" ;;
    fanin) echo "20k flat" ;;
    fanin0) echo "200k 300k" ;;
    qos0hi) echo "200k 400k 800k" ;;
    fanout) echo "50 flat" ;;
    qos1) echo "flat" ;;
    qos2) echo "10k flat" ;;
    connrate) echo "- tls tls-resume" ;;
    *) echo "-" ;;
    esac
}

# ---- main loop: for each run, each scenario variant, each broker in turn ----------
ORDER=0
START=$(date +%s)
log "antenna-bench compare: runs=$RUNS scenarios:$SCEN brokers: $BROKERS; output in $OUT"
for RUN in $(seq 1 "$RUNS"); do
    for s in $SCEN; do
        for VARIANT in $(variants "$s"); do
            blist=$BROKERS
            [ "$s" = durable ] && blist=$DURABLE_BROKERS
            for b in $blist; do
                v=${VARIANT#-}
                log "run $RUN/$RUNS: $s${v:+ $v} on $b"
                case "$s-$VARIANT" in connrate-tls*) WANT_TLS=1 ;; *) WANT_TLS=0 ;; esac
                if ! start_broker "$b"; then
                    stop_broker
                    continue
                fi
                "s_$s"
                stop_broker
                # sockets of 19,000 clients take a moment to go away
                case "$s" in idle|storm|connrate) sleep 2 ;; *) sleep 0.5 ;; esac
            done
        done
    done
done
ELAPSED=$(( $(date +%s) - START ))

# ---- the table: medians per metric and broker, ratios to mosquitto ------------------
table() {
    local cols="" b
    for b in $BROKERS $DURABLE_BROKERS; do # the brokers with results
        grep -q "$(printf '\t')$b$(printf '\t')" "$RES" && cols="$cols $b"
    done
    sort -t "$(printf '\t')" -k1,1 -k2,2 -k4,4g "$RES" | awk -F '\t' -v brokers="$cols" '
    function fmt(v) {
        if (v == "" || v == "-") return "-"
        a = v < 0 ? -v : v
        if (v == int(v)) return sprintf("%d", v)
        if (a >= 1000) return sprintf("%.0f", v)
        if (a >= 10) return sprintf("%.1f", v)
        return sprintf("%.2f", v)
    }
    function flush_group() {
        if (gk == "") return
        n = gc
        med[gk SUBSEP gb] = (n % 2) ? gv[(n + 1) / 2] : (gv[n / 2] + gv[n / 2 + 1]) / 2
        nruns[gk SUBSEP gb] = n
    }
    {
        key = $1; b = $2; v = $4; ord = $5
        if (v == "") next
        if (!(key in first) || ord < first[key]) first[key] = ord
        if (key != gk || b != gb) { flush_group(); gk = key; gb = b; gc = 0 }
        gv[++gc] = v
    }
    END {
        flush_group()
        nb = split(brokers, B, " ")
        hdr = "| scenario | load | metric |"
        sep = "|---|---|---|"
        for (i = 1; i <= nb; i++) { hdr = hdr " " B[i] " |"; sep = sep "---:|" }
        mi = 0
        for (i = 1; i <= nb; i++) if (B[i] == "mosquitto") mi = i
        pi = 0  # the durable rows compare with mosquitto-persist
        for (i = 1; i <= nb; i++) if (B[i] == "mosquitto-persist") pi = i
        if (!mi) { mi = pi; pi = 0 }
        if (mi) for (i = 1; i <= nb; i++) if (i != mi && i != pi) { hdr = hdr " " B[i] " / " B[mi] " |"; sep = sep "---:|" }
        print hdr; print sep
        # rows in order of first appearance
        nk = 0
        for (k in first) { nk++; K[nk] = k }
        for (i = 1; i <= nk; i++) for (j = i + 1; j <= nk; j++)
            if (first[K[j]] < first[K[i]]) { t = K[i]; K[i] = K[j]; K[j] = t }
        for (i = 1; i <= nk; i++) {
            split(K[i], p, "|")
            row = "| " p[1] " | " p[2] " | " p[3] " |"
            for (j = 1; j <= nb; j++) {
                c = K[i] SUBSEP B[j]
                row = row " " ((c in med) ? fmt(med[c]) : "-") " |"
            }
            if (mi) for (j = 1; j <= nb; j++) if (j != mi && j != pi) {
                c = K[i] SUBSEP B[j]; m = K[i] SUBSEP B[mi]
                if (!(m in med) && pi) m = K[i] SUBSEP B[pi]
                r = "-"
                if ((c in med) && (m in med) && med[m] != 0) r = sprintf("%.2f", med[c] / med[m])
                row = row " " r " |"
            }
            print row
        }
    }'
}

{
    echo "Medians of $RUNS run(s); $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), kernel $(uname -r); took ${ELAPSED} s."
    echo
    table
} | tee "$OUT/table.md"
log "raw results: $RES; per-run JSON and stderr in $OUT"
