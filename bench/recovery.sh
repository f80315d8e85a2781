#!/usr/bin/env bash
# bench/recovery.sh -- how long the broker takes to start on a big store, and
# how much memory the recovered state takes.
#
# For each scenario a fresh store is written by `antenna store generate`
# (retained messages with 64-byte payloads on site/NNN/dev/NNNN/temp;
# sessions gen-NNNNNNN with 2 subscriptions and 3 queued QoS 1 messages
# each), then the real broker is started on it with persistence enabled and
# a probe measures, from the exec:
#   ready_ms   until the first CONNECT gets a CONNACK (the listeners are bound
#              before the sessions load, so an accepted TCP connection alone
#              proves nothing; the probe retries every 5 ms)
#   hwm_kb     VmHWM of the broker (/proc/PID/status), peak RSS during start
#   rss_kb     VmRSS 1 s after the first CONNACK
# plus the broker's own log lines ("retained messages loaded in N ms",
# "sessions with N messages restored").  The full scenario runs RUNS times
# (default 3) and the median is reported; the page cache is warm (the store
# was just written), which is the restart case, not the cold boot.
#
# SETTLE=1 (default) compacts the generated store before the broker starts,
# so its records sit in table files as in a store a broker has used for a
# while; SETTLE=0 leaves them in the write-ahead log, so the broker's open
# first replays ~70 MB of log into memtables and flushes them (the case of a
# restart right after a burst of writes).
#
#   bench/recovery.sh                      1,000,000 retained + 100,000 sessions
#   RETAINED=100000 SESSIONS=10000 RUNS=1 bench/recovery.sh    (quick)
#
# Output: one line per run, then a summary with the per-message and
# per-session memory (RSS difference to the empty store divided by the count).
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ANTENNA=${ANTENNA:-$ROOT/build/antenna}
PY=${PY:-/usr/bin/python3}
RETAINED=${RETAINED:-1000000}
SESSIONS=${SESSIONS:-100000}
SUBS=${SUBS:-2}
QUEUED=${QUEUED:-3}
PAYLOAD=${PAYLOAD:-64}
RUNS=${RUNS:-3}
WORKERS=${WORKERS:-2}
SETTLE=${SETTLE:-1}
WORK=$(mktemp -d /tmp/antenna-recovery.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

[ -x "$ANTENNA" ] || { echo "no broker binary at $ANTENNA (build first)" >&2; exit 1; }

# probe.py BROKER CONFIG LOG: starts the broker, measures, stops it (SIGTERM,
# which saves the sessions back, bounded at 120 s), prints one key=value line.
cat >"$WORK/probe.py" <<'EOF'
import os, re, socket, struct, subprocess, sys, time

antenna, config, log = sys.argv[1:4]

def status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0

def connect_once(port):
    cid = b"recovery-probe"
    var = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = struct.pack(">H", len(cid)) + cid
    body = var + payload
    pkt = bytes([0x10, len(body)]) + body
    s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    try:
        s.settimeout(120)  # accepted: the CONNACK comes once recovery is done
        s.sendall(pkt)
        ack = s.recv(4)
        return len(ack) == 4 and ack[0] == 0x20 and ack[3] == 0
    finally:
        s.close()

port = int(re.search(r"port: (\d+)", open(config).read()).group(1))
t0 = time.monotonic()
with open(log, "wb") as out:
    p = subprocess.Popen([antenna, "--config", config], stdout=out, stderr=out)
ready = None
deadline = t0 + 300
while time.monotonic() < deadline and p.poll() is None:
    try:
        if connect_once(port):
            ready = time.monotonic()
            break
    except OSError:
        time.sleep(0.005)
if ready is None:
    p.kill(); p.wait()
    print("error=no CONNACK within 300 s (exit %s)" % p.poll())
    sys.exit(1)
hwm_start = status(p.pid, "VmHWM")
time.sleep(1.0)
rss = status(p.pid, "VmRSS")
hwm = status(p.pid, "VmHWM")
p.terminate()
try:
    p.wait(120)
except subprocess.TimeoutExpired:
    p.kill(); p.wait()
text = open(log, errors="replace").read()
m = re.search(r"(\d+) retained messages loaded in (\d+) ms", text)
s = re.search(r"(\d+) sessions with (\d+) messages restored", text)
print("ready_ms=%d hwm_kb=%d rss_kb=%d retained=%s retained_load_ms=%s sessions=%s messages=%s exit=%s"
      % ((ready - t0) * 1000, max(hwm, hwm_start), rss, m.group(1) if m else "?",
         m.group(2) if m else "?", s.group(1) if s else "?", s.group(2) if s else "?",
         p.returncode))
EOF

free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        ss -ltnH "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
    done
    return 1
}

# run NAME RETAINED SESSIONS: prints the probe's line prefixed with NAME
run() {
    local name=$1 nret=$2 nsess=$3 dir="$WORK/store-$1" port
    rm -rf "$dir"
    "$ANTENNA" store generate "$dir" --retained "$nret" --sessions "$nsess" --subs "$SUBS" \
        --queued "$QUEUED" --payload "$PAYLOAD" >"$WORK/gen.out" || { cat "$WORK/gen.out"; return 1; }
    if [ "$SETTLE" = 1 ]; then
        "$ANTENNA" store compact "$dir" >>"$WORK/gen.out" || { cat "$WORK/gen.out"; return 1; }
    fi
    port=$(free_port) || return 1
    cat >"$WORK/$name.yaml" <<EOF2
workers: $WORKERS
log:
  level: info
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: $port
persistence:
  enabled: true
  dir: $dir
  sync: none
EOF2
    local line mb
    mb=$(du -sm "$dir" | cut -f1)
    line=$("$PY" "$WORK/probe.py" "$ANTENNA" "$WORK/$name.yaml" "$WORK/$name.log") || { echo "$name: $line"; return 1; }
    echo "$name store_mb=$mb $line"
}

field() { grep -o " $1=[0-9]*" | cut -d= -f2; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

echo "# antenna $("$ANTENNA" --version) $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cpus; retained=$RETAINED sessions=$SESSIONS subs=$SUBS queued=$QUEUED payload=$PAYLOAD settle=$SETTLE"
empty=$(run empty 0 0) || exit 1
echo "$empty"
ret=$(run retained "$RETAINED" 0) || exit 1
echo "$ret"
sess=$(run sessions 0 "$SESSIONS") || exit 1
echo "$sess"
: >"$WORK/full.lines"
for i in $(seq 1 "$RUNS"); do
    line=$(run "full$i" "$RETAINED" "$SESSIONS") || exit 1
    echo "$line" | tee -a "$WORK/full.lines"
done

e_rss=$(echo "$empty" | field rss_kb)
r_rss=$(echo "$ret" | field rss_kb)
s_rss=$(echo "$sess" | field rss_kb)
ready=$(field ready_ms <"$WORK/full.lines" | median)
hwm=$(field hwm_kb <"$WORK/full.lines" | median)
rss=$(field rss_kb <"$WORK/full.lines" | median)
echo "summary: full store (median of $RUNS): ready ${ready} ms, peak RSS ${hwm} kB, RSS after start ${rss} kB; empty store RSS ${e_rss} kB"
if [ "$RETAINED" -gt 0 ]; then
    echo "summary: retained: $(( (r_rss - e_rss) * 1024 / RETAINED )) bytes of RSS per retained message (${PAYLOAD}-byte payload, $(echo "$ret" | field ready_ms) ms to ready)"
fi
if [ "$SESSIONS" -gt 0 ]; then
    echo "summary: sessions: $(( (s_rss - e_rss) * 1024 / SESSIONS )) bytes of RSS per session ($SUBS subscriptions, $QUEUED queued messages; $(echo "$sess" | field ready_ms) ms to ready)"
fi
