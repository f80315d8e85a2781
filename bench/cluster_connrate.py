#!/usr/bin/python3
"""CONNECTs per second with the cluster's client-id registry against a
standalone broker (docs/benchmarks.md, "Cluster: CONNECTs with the client-id
registry").

Each round runs, for every binary given (--bin, default build/antenna):
a standalone broker, then one node of a 2-node cluster (etcd 3.4 on
loopback with --unsafe-no-fsync, lease_ttl 10 s, persistence off, 2 workers
each), with `antenna-bench conn -c COUNT --conn-pending PENDING -d 1`
against the standalone broker or node 0.  The brokers come from the
integration tests' helpers (tests/integration: conftest.Broker,
cluster_util.Cluster), in a temporary directory.  Prints each run and the
medians.

    bench/cluster_connrate.py --runs 3
    bench/cluster_connrate.py --runs 3 --bin /tmp/base/build/antenna --bin build/antenna
"""

import argparse
import os
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

import conftest  # noqa: E402
from cluster_util import Cluster, wait_members  # noqa: E402

RATE = re.compile(r"connected in [0-9.]+ s \(([0-9]+) connects/s\)")
LAT = re.compile(r"connect\s+p50 ([0-9.]+) ms .* p99 ([0-9.]+) ms")


def bench(args, port):
    out = subprocess.run([args.bench, "conn", "-p", str(port), "-c", str(args.count),
                          "--conn-pending", str(args.pending), "-d", "1"],
                         capture_output=True, text=True, timeout=300).stdout
    m, lat = RATE.search(out), LAT.search(out)
    if m is None:
        raise SystemExit("antenna-bench said:\n" + out)
    return int(m.group(1)), (float(lat.group(1)), float(lat.group(2))) if lat else (0, 0)


def cpu_s(pid):
    """A process's user + system CPU seconds so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def standalone(args, d):
    b = conftest.Broker(d, 0, {"persistence": {"enabled": False}}).start()
    try:
        before = cpu_s(b.proc.pid)
        res = bench(args, b.port)
        if args.metrics:
            print("    CPU s during the run: broker %.2f" % (cpu_s(b.proc.pid) - before))
        return res
    finally:
        b.stop()


def one_of_two(args, d):
    c = Cluster(d)
    try:
        c.start_etcd()
        nodes = c.start_nodes(2, lease_ttl="10s", persistence={"enabled": False})
        wait_members(nodes, 2, timeout=30)
        pids = {"etcd": c.etcd.proc.pid, "node0": nodes[0].proc.pid}
        before = {k: cpu_s(v) for k, v in pids.items()}
        res = bench(args, nodes[0].port)
        if args.metrics:
            print("    CPU s during the run: " + ", ".join(
                "%s %.2f" % (k, cpu_s(v) - before[k]) for k, v in pids.items()))
        if args.metrics:
            st, _, raw = nodes[0].client.call("GET", "/metrics")
            for line in raw.decode().splitlines():
                if line.startswith(("antenna_cluster_etcd", "antenna_cluster_client_claims")):
                    print("    " + line)
        return res
    finally:
        c.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--count", type=int, default=5000)
    ap.add_argument("--pending", type=int, default=200)
    ap.add_argument("--bin", action="append", help="antenna binaries (default build/antenna)")
    ap.add_argument("--metrics", action="store_true", help="print node 0's etcd counters")
    ap.add_argument("--bench", default=str(REPO / "build" / "antenna-bench"))
    args = ap.parse_args()
    bins = args.bin or [str(REPO / "build" / "antenna")]
    results = {}
    for r in range(args.runs):
        for b in bins:
            conftest.ANTENNA_BIN = os.path.abspath(b)
            for kind, fn in (("standalone", standalone), ("one node of two", one_of_two)):
                with tempfile.TemporaryDirectory(prefix="connrate-") as d:
                    rate, (p50, p99) = fn(args, pathlib.Path(d))
                results.setdefault((b, kind), []).append(rate)
                print("run %d  %-40s %-16s %6d CONNECTs/s  p50 %.1f ms  p99 %.1f ms"
                      % (r + 1, b, kind, rate, p50, p99), flush=True)
    print("\nmedians (%d runs, %d connections, --conn-pending %d):"
          % (args.runs, args.count, args.pending))
    for (b, kind), v in results.items():
        print("  %-40s %-16s %6d CONNECTs/s   (%s)"
              % (b, kind, statistics.median(v), " / ".join(str(x) for x in v)))


if __name__ == "__main__":
    main()
