#!/bin/sh
# paho-interop.sh -- the Eclipse Paho MQTT interoperability suite (its
# client_test.py for MQTT 3.1.1 and client_test5.py for MQTT 5) against a
# 3-node antenna cluster behind HAProxy (tools/cluster.sh), or against one
# broker already running (--port N).
#
#   tools/paho-interop.sh SUITE_DIR              # cluster up 3, both suites, down
#   tools/paho-interop.sh SUITE_DIR --port 1883  # a broker already running
#
# SUITE_DIR is a checkout of https://github.com/eclipse/paho.mqtt.testing
# (its interoperability/ directory is used); the suite is not part of this
# tree.  The nodes get what the suite's optional tests expect of a broker:
# a subscription to test/nosubscribe refused (an ACL), and a Server Keep
# Alive of 60 s for a client asking for more (mqtt.max_keepalive).  Each
# suite's unittest summary is printed; the exit status is 0 when both
# passed.  Logs: build/interop/.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SUITE=${1:?usage: tools/paho-interop.sh SUITE_DIR [--port N]}
SUITE=$(cd "$SUITE" && pwd)/interoperability
[ -f "$SUITE/client_test5.py" ] || {
    echo "paho-interop.sh: no $SUITE/client_test5.py" >&2
    exit 2
}
OUT=$ROOT/build/interop
mkdir -p "$OUT"

PORT=
if [ "${2:-}" = "--port" ]; then
    PORT=${3:?--port needs a number}
fi

# The suites parse their own options and then hand sys.argv to unittest,
# which refuses them: this runner gives unittest the script's name (and the
# test names in TESTS) only.
cat >"$OUT/run.py" <<'PY'
import os, runpy, sys, unittest
sys.path.insert(0, os.getcwd())
script = sys.argv[1]
sys.argv = [script] + sys.argv[2:]
names = os.environ.get("TESTS", "").split()
real_main = unittest.main
unittest.main = lambda *a, **k: real_main(argv=[script] + names, exit=True, **k)
runpy.run_path(script, run_name="__main__")
PY

if [ -z "$PORT" ]; then
    cat >"$OUT/acl" <<'ACL'
any
deny sub test/nosubscribe
allow all #
ACL
    cat >"$OUT/extra.yaml" <<YAML
mqtt:
  max_keepalive: 60
  keepalive_over_max: cap
auth:
  acl_file: $OUT/acl
YAML
    CLUSTER_DIR=$OUT/cluster
    export CLUSTER_DIR
    trap '"$ROOT/tools/cluster.sh" down >/dev/null 2>&1 || true' EXIT
    CLUSTER_EXTRA_YAML=$OUT/extra.yaml "$ROOT/tools/cluster.sh" up 3
    . "$CLUSTER_DIR/cluster.env"
    PORT=$LB_PORT
fi

rc=0
cd "$SUITE"
for t in client_test.py client_test5.py; do
    log=$OUT/${t%.py}.log
    if timeout 900 python3 "$OUT/run.py" "$t" --hostname=127.0.0.1 -p "$PORT" >"$log" 2>&1; then
        r=passed
    else
        r=FAILED
        rc=1
    fi
    echo "$t: $r: $(grep -E '^Ran ' "$log" | tail -1), $(grep -E '^(OK|FAILED)' "$log" | tail -1)"
    grep -E '^(FAIL|ERROR):' "$log" || true
done
exit $rc
