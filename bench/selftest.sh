#!/usr/bin/env bash
# bench/selftest.sh -- checks antenna-bench itself: pubsub at QoS 0, 1 and 2,
# small counts, paced and flat out, in one and in two worker processes,
# against Debian's mosquitto and against antenna; every run must report
# 0 lost, 0 duplicated, 0 reordered and 0 errors.  Exit status 0 = all passed.
#
#   bench/selftest.sh            (about 30 s)
set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-$ROOT/build/antenna-bench}
ANTENNA=${ANTENNA:-$ROOT/build/antenna}
MOSQUITTO=${MOSQUITTO:-/usr/sbin/mosquitto}
WORK=$(mktemp -d /tmp/antenna-selftest.XXXXXX)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done; rm -rf "$WORK"' EXIT

free_port() {
    local p
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        ss -ltnH "sport = :$p" 2>/dev/null | grep -q . || { echo "$p"; return 0; }
    done
    return 1
}
wait_port() {
    for _ in $(seq 1 100); do
        ss -ltnH "sport = :$1" 2>/dev/null | grep -q . && return 0
        sleep 0.05
    done
    return 1
}

MPORT=$(free_port)
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 100\nmax_queued_messages 100000\nlog_type error\n' \
    "$MPORT" > "$WORK/m.conf"
"$MOSQUITTO" -c "$WORK/m.conf" > "$WORK/m.log" 2>&1 &
PIDS+=($!)
disown $!
APORT=$(free_port)
printf 'log:\n  level: warn\nlisteners:\n  - name: mqtt\n    address: 127.0.0.1\n    port: %s\nmqtt:\n  max_queued: 100000\n' \
    "$APORT" > "$WORK/a.yaml"
"$ANTENNA" --config "$WORK/a.yaml" > "$WORK/a.log" 2>&1 &
PIDS+=($!)
disown $!
wait_port "$MPORT" && wait_port "$APORT" || { echo "selftest: brokers did not start" >&2; exit 2; }

jget() { sed -n "s/.*\"$1\":\([^,}]*\).*/\1/p" <<< "$2" | head -1; }

fail=0
for broker in mosquitto:$MPORT antenna:$APORT; do
    name=${broker%:*}
    port=${broker#*:}
    for qos in 0 1 2; do
        for args in "-c 10 -r 2000" "-c 10 --e2e-window 20" "-c 20 -r 2000 --procs 2" \
                    "--pub-count 20 --sub-count 1 --sub-topic bench/# -r 2000"; do
            out=$(timeout 60 "$BENCH" pubsub -p "$port" -q "$qos" -s 32 -d 1 $args --json --quiet 2>/dev/null)
            lost=$(jget lost "$out")
            dup=$(jget dup "$out")
            reo=$(jget reordered "$out")
            err=$(jget errors "$out")
            recv=$(jget recv "$out")
            if [ "$lost" = "0" ] && [ "$dup" = "0" ] && [ "$reo" = "0" ] && [ "$err" = "0" ] &&
               [ "${recv:-0}" -gt 0 ]; then
                verdict=ok
            else
                verdict=FAIL
                fail=1
            fi
            printf '%-4s %-9s QoS %s %-52s received %8s lost %s dup %s reordered %s errors %s\n' \
                "$verdict" "$name" "$qos" "$args" "${recv:-?}" "${lost:-?}" "${dup:-?}" "${reo:-?}" "${err:-?}"
        done
    done
done
exit $fail
