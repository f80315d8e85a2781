#!/usr/bin/env bash
# bench/storm_auth.sh -- reconnect storm with passwords (issue 15, item 4):
# N devices, each with its own user name and random password in a password
# file, connected through antenna-bench conn --reconnect; the broker is
# killed with SIGKILL and restarted on the same port and store; the time
# until every device is back, the CONNECT rate during the storm and the
# broker's CPU are reported per case.
#
#   bench/storm_auth.sh [--count N] [--out DIR] [CASE...]
#
# Cases (default: all three), MODE-ITERATIONS:
#   memory-10000       auth.password_cache: memory (the default), 10,000 PBKDF2 iterations
#   persistent-10000   auth.password_cache: persistent, 10,000 iterations
#   memory-1000        memory, 1,000 iterations (`antenna passwd -i 1000`)
#
# The password files are made once (hashlib's PBKDF2-SHA512, the format
# `antenna passwd` writes, two processes) and kept in
# /tmp/antenna-storm-auth/N-ITERATIONS/ (passwd, passwords: line i + 1 is
# the password of user dev<i>), so a second run does not pay the ~80 CPU-s
# of 19,000 hashes at 10,000 iterations again.  One broker process holds
# about 19,000 connections here (20,000 open files): N defaults to 19,000.
# Brokers: build/antenna, 2 workers, persistence on (sync: always), 2
# verification threads (auth.password_threads, the default).
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/build/antenna-bench}
ANTENNA=${ANTENNA:-$ROOT/build/antenna}
COUNT=19000
OUT=""
CASES=""
IFADDRS=127.0.0.2,127.0.0.3,127.0.0.4,127.0.0.5

while [ $# -gt 0 ]; do
    case "$1" in
    --count) COUNT=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    memory-*|persistent-*) CASES="$CASES $1"; shift ;;
    *) echo "storm_auth.sh: unknown argument '$1' (--help)" >&2; exit 2 ;;
    esac
done
CASES=${CASES:-"memory-10000 persistent-10000 memory-1000"}
for f in "$BENCH" "$ANTENNA"; do
    [ -x "$f" ] || { echo "storm_auth.sh: $f not found: build first" >&2; exit 2; }
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/antenna-storm-auth-run.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
    [ "$OUT" = "$WORK" ] || rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/storm_auth.log" >&2; }
jget() { sed -n "s/.*\"$1\":\([-0-9.e]*\).*/\1/p" "$2" | head -1; }

# users ITERATIONS -> prints the directory holding passwd and passwords
users() {
    local dir=/tmp/antenna-storm-auth/$COUNT-$1
    if [ ! -s "$dir/passwd" ]; then
        mkdir -p "$dir"
        log "making $COUNT password-file lines at $1 iterations (once, kept in $dir)"
        /usr/bin/python3 - "$COUNT" "$1" "$dir" <<'PY' || exit 1
import base64, hashlib, hmac, os, sys
from multiprocessing import Pool
n, it, d = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def line(i):
    pw = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha512", pw.encode(), salt, it, 64)
    stored = hashlib.sha512(hmac.new(salted, b"Client Key", hashlib.sha512).digest()).digest()
    server = hmac.new(salted, b"Server Key", hashlib.sha512).digest()
    b = lambda x: base64.b64encode(x).decode()
    return pw, "dev%d:$scram-sha-512$%d$%s$%s$%s" % (i, it, b(salt), b(stored), b(server))
with Pool(2) as p:
    rows = p.map(line, range(n), chunksize=256)
with open(d + "/passwords.tmp", "w") as f:
    f.writelines(pw + "\n" for pw, _ in rows)
with open(d + "/passwd.tmp", "w") as f:
    f.writelines(l + "\n" for _, l in rows)
os.chmod(d + "/passwd.tmp", 0o600)
os.rename(d + "/passwords.tmp", d + "/passwords")
os.rename(d + "/passwd.tmp", d + "/passwd")
PY
    fi
    echo "$dir"
}

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

BPID=""
start_broker() { # config
    "$ANTENNA" -c "$1" >> "$2" 2>&1 &
    BPID=$!
    PIDS+=("$BPID")
    local i
    for i in $(seq 1 300); do
        grep -q "listening on" "$2" 2>/dev/null && return 0
        kill -0 "$BPID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

printf 'case\tdevices\tall back after (s)\tCONNECTs/s in the storm\tPBKDF2 runs after restart\tbroker CPU s (kill to end)\tconnected at the end\n' > "$OUT/results.tsv"
for c in $CASES; do
    mode=${c%-*} iter=${c#*-}
    udir=$(users "$iter") || { log "cannot make the users"; exit 1; }
    d=$WORK/$c
    mkdir -p "$d"
    port=$(free_port) aport=$(free_port)
    cat > "$d/antenna.yaml" <<YAML
workers: 2
log:
  level: info
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: $port
persistence:
  dir: $d/store
mqtt:
  allow_anonymous: false
limits:
  max_connections: $((COUNT + 800))
api:
  bind: 127.0.0.1
  port: $aport
  open_metrics: true
auth:
  password_file: $udir/passwd
  password_cache: $mode
YAML
    start_broker "$d/antenna.yaml" "$d/broker1.log" || { log "$c: broker did not start"; cat "$d/broker1.log" >&2; exit 1; }
    echo "$BPID" > "$d/broker.pid"
    log "$c: connecting $COUNT devices"
    timeout -k 5 900 "$BENCH" conn -c "$COUNT" --ifaddr "$IFADDRS" -p "$port" --reconnect \
        --user-prefix dev --pass-file "$udir/passwords" --until-recovered -d 600 \
        --setup-timeout 600 --ready-file "$d/ready" --broker-pidfile "$d/broker.pid" \
        --json --quiet > "$d/storm.json" 2> "$d/storm.err" &
    bp=$!
    PIDS+=("$bp")
    for i in $(seq 1 6000); do
        [ -f "$d/ready" ] && break
        kill -0 "$bp" 2>/dev/null || break
        sleep 0.1
    done
    [ -f "$d/ready" ] || { log "$c: devices never all connected"; kill "$bp"; continue; }
    sleep 2 # the persistent entries of the last logins reach the store
    { kill -KILL "$BPID"; wait "$BPID"; } 2>/dev/null
    log "$c: broker killed, restarting on port $port"
    start_broker "$d/antenna.yaml" "$d/broker2.log" || log "$c: broker did not restart"
    echo "$BPID" > "$d/broker.pid"
    wait "$bp"
    f=$d/storm.json
    cp "$f" "$OUT/storm-auth-$c.json"
    grep -q '^{' "$f" || { log "$c: no result"; continue; }
    rec=$(jget recovery_s "$f")
    rate=$(awk -v n="$COUNT" -v s="$rec" 'BEGIN { if (s > 0) printf "%.0f", n / s; else print "-" }')
    # what the restarted broker hashed and what its cache answered
    curl -s "http://127.0.0.1:$aport/metrics" > "$d/metrics.txt"
    pbkdf2=$(sed -n 's/^antenna_auth_password_checks_total{result="pbkdf2"} //p' "$d/metrics.txt")
    cached=$(sed -n 's/^antenna_auth_password_checks_total{result="cache"} //p' "$d/metrics.txt")
    kill -TERM "$BPID" 2>/dev/null
    wait "$BPID" 2>/dev/null
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$COUNT" "$rec" "$rate" \
        "$pbkdf2 (cache: $cached)" \
        "$(jget broker_cpu_run_s "$f")" "$(jget connected_end "$f")" >> "$OUT/results.tsv"
    log "$c: all back after ${rec}s (${rate} CONNECTs/s)"
done
column -t -s $'\t' "$OUT/results.tsv"
echo "results: $OUT/results.tsv"
