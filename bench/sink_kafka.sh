#!/bin/bash
# bench/sink_kafka.sh -- bench kind sink-kafka: messages per second through
# one rule into the Kafka sink (src/sinks/sink_kafka.c), against librdkafka's
# mock cluster (build/kafka_mock: 3 brokers, 12 partitions, in a process of
# its own) with acks=all and the idempotent producer.
#
#   bench/sink_kafka.sh [--runs N] [--messages N] [--pubs N] [--qos 0|1]
#                       [--size BYTES] [--workers N] [--persist]
#
# Each run: a fresh topic in the mock cluster, a fresh broker with one rule
# (SELECT clientid, topic, payload FROM "t/+") feeding one Kafka sink,
# antenna-bench publishing --messages in total from --pubs publishers flat
# out (QoS --qos, --size bytes), and the time from the first publish until
# the mock cluster holds every message (its high watermarks, polled every
# 100 ms).  The sink's buffer is large enough for the whole run with
# overflow: backpressure, so nothing is dropped: the publishers are paused
# when the sink falls behind.  Prints one line per run and the median:
# messages/s into Kafka, the broker's CPU (% of one core), and the messages
# delivered (must equal --messages).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
ANTENNA=$BUILD/antenna
BENCH=$BUILD/antenna-bench
MOCK=$BUILD/kafka_mock
RUNS=3 N=1000000 PUBS=10 QOS=1 SIZE=64 WORKERS=2 PERSIST=false
while [ $# -gt 0 ]; do
    case "$1" in
    --runs) RUNS=$2; shift 2 ;;
    --messages) N=$2; shift 2 ;;
    --pubs) PUBS=$2; shift 2 ;;
    --qos) QOS=$2; shift 2 ;;
    --size) SIZE=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --persist) PERSIST=true; shift ;;
    *) echo "usage: bench/sink_kafka.sh [--runs N] [--messages N] [--pubs N] [--qos 0|1]" \
            "[--size BYTES] [--workers N] [--persist]" >&2; exit 2 ;;
    esac
done
for b in "$ANTENNA" "$BENCH" "$MOCK"; do
    [ -x "$b" ] || { echo "sink_kafka.sh: $b missing (cmake --build build)" >&2; exit 1; }
done
WORK=$(mktemp -d /tmp/antenna-sink-kafka.XXXXXX)
BPID=""
MOCK_PID=""
cleanup() {
    [ -z "$BPID" ] || { kill "$BPID" 2>/dev/null; wait "$BPID" 2>/dev/null; }
    if [ -n "$MOCK_PID" ]; then
        echo quit >&7 2>/dev/null
        wait "$MOCK_PID" 2>/dev/null
    fi
    [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

# kafka_mock's stdin and stdout through FIFOs on fds 7 and 8 (inherited by
# the $(mock ...) subshells, unlike a coproc's)
mkfifo "$WORK/mock.in" "$WORK/mock.out"
"$MOCK" -b 3 < "$WORK/mock.in" > "$WORK/mock.out" 2>"$WORK/mock.log" &
MOCK_PID=$!
exec 7>"$WORK/mock.in" 8<"$WORK/mock.out"
read -r -t 30 word BOOTSTRAP <&8 || { echo "kafka_mock did not start" >&2; exit 1; }
[ "$word" = bootstrap ] || { echo "kafka_mock: $word $BOOTSTRAP" >&2; exit 1; }
mock() { # one command, its answer line on stdout
    echo "$1" >&7
    local line
    while read -r -t 120 line <&8; do
        case "$line" in ok*|error*) echo "$line"; return 0 ;; esac
    done
    return 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
now() { date +%s.%N; }

rates=()
for run in $(seq 1 "$RUNS"); do
    topic=bench$run
    mock "topic $topic 12" >/dev/null || { echo "kafka_mock: no topic" >&2; exit 1; }
    port=$(free_port)
    conf=$WORK/antenna-$run.yaml
    cat > "$conf" <<EOF
workers: $WORKERS
log:
  level: warn
listeners:
  - name: mqtt
    address: 127.0.0.1
    port: $port
mqtt:
  max_inflight: 100
  max_queued: 100000
persistence:
  enabled: $PERSIST
  dir: $WORK/store-$run
  sync: none
api:
  enabled: false
sinks:
  sinks:
    - name: kafka
      type: kafka
      bootstrap_servers: "$BOOTSTRAP"
      topic: $topic
      acks: all
      linger: 5ms
      max_inflight: 100000
      batch:
        max_messages: 256
      buffer:
        max_messages: $((N + 1000))
        max_bytes: 4294967296
        overflow: backpressure
rules:
  rules:
    - id: tokafka
      sql: SELECT clientid, topic, payload FROM "t/+"
      actions:
        - type: sink
          sink: kafka
EOF
    "$ANTENNA" --config "$conf" > "$WORK/broker-$run.log" 2>&1 &
    BPID=$!
    for _ in $(seq 1 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    c0=$(cpu_ticks "$BPID")
    t0=$(now)
    "$BENCH" pub -p "$port" -c "$PUBS" -q "$QOS" -s "$SIZE" -L $((N / PUBS)) -t 't/%i' \
        -d 600 --quiet > "$WORK/bench-$run.log" 2>&1 &
    bench_pid=$!
    got=0 last=-1 still=0
    deadline=$(( $(date +%s) + 600 ))
    while [ "$(date +%s)" -lt "$deadline" ] && [ "$still" -lt 200 ]; do
        got=$(mock "count $topic" | awk '{print $2}')
        [ "${got:-0}" -ge "$N" ] && break
        if [ "$got" = "$last" ]; then still=$((still + 1)); else still=0; fi
        last=$got
        sleep 0.1
    done
    t1=$(now)
    c1=$(cpu_ticks "$BPID")
    kill "$bench_pid" 2>/dev/null
    wait "$bench_pid" 2>/dev/null
    kill "$BPID"
    wait "$BPID"
    BPID=""
    hz=$(getconf CLK_TCK)
    rate=$(awk -v n="$got" -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", n / (b - a) }')
    cpu=$(awk -v c="$((c1 - c0))" -v hz="$hz" -v a="$t0" -v b="$t1" \
        'BEGIN { printf "%.0f", 100 * c / hz / (b - a) }')
    printf 'run %d: %d of %d messages in Kafka, %d msg/s, broker CPU %s%%\n' \
        "$run" "$got" "$N" "$rate" "$cpu"
    rates+=("$rate")
    if [ "$got" -ne "$N" ]; then
        echo "run $run: $got messages in Kafka, expected $N (exactly)" >&2
        tail -5 "$WORK/broker-$run.log" "$WORK/bench-$run.log" >&2
    fi
done
median=$(printf '%s\n' "${rates[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}')
printf 'sink-kafka: median %d msg/s over %d runs (%d messages, %d publishers, QoS %d, %d bytes, %d workers, persistence %s)\n' \
    "$median" "$RUNS" "$N" "$PUBS" "$QOS" "$SIZE" "$WORKERS" "$PERSIST"
