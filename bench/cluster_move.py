#!/usr/bin/python3
"""The CONNECT time of a session moving between two live nodes
(docs/benchmarks.md, "Cluster: a session moving between live nodes";
src/cluster/cl_move.c).

Each run, for every binary given (--bin, default build/antenna; in turn,
so that a busy host weighs on each alike): etcd on loopback, two nodes
(2 workers, the default RocksDB store), one persistent subscriber (MQTT
3.1.1, clean session 0, one QoS 1 subscription) that moves --moves times
between the two nodes: it closes its connection and CONNECTs to the other
node, timed from the CONNECT sent to its CONNACK (session present 1).
With --rate, a publisher on the first node publishes QoS 1 to its topic
meanwhile.  Prints each run's median and p90 CONNECT ms and the two
nodes' CPU ms per move, then the medians over the runs.

    bench/cluster_move.py --runs 3 --moves 200
    bench/cluster_move.py --runs 3 --bin /tmp/base/build/antenna --bin build/antenna
"""

import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import threading
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

import conftest  # noqa: E402
from cluster_util import Cluster, wait_members  # noqa: E402
from mqttraw import CONNACK, PUBLISH, RawClient, Timeout, puback  # noqa: E402
from mqttraw import connect as mqtt_connect  # noqa: E402
from mqttraw import publish  # noqa: E402


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect(port, cid):
    """CONNECT until a CONNACK 0 (a claim that cannot be decided yet: 0x88
    / rc 3); the client, the ms of the successful try, the tries."""
    for tries in range(1, 100):
        c = RawClient("127.0.0.1", port, timeout=10)
        t0 = time.monotonic()
        c.send(mqtt_connect(cid, clean=False, keepalive=30))
        ack = c.recv(10)
        ms = (time.monotonic() - t0) * 1000
        if ack.type == CONNACK and ack.rc == 0:
            assert ack.session_present == 1 or tries == 1, ack
            return c, ms, tries
        c.close()
        time.sleep(0.05)
    raise SystemExit("no CONNACK 0")


def drain(c, secs):
    end = time.monotonic() + secs
    n = 0
    while time.monotonic() < end:
        try:
            p = c.recv(0.01)
        except Timeout:
            continue
        if p.type == PUBLISH:
            c.try_send(puback(p.pid))
            n += 1
    return n


def run(args, d):
    cl = Cluster(d)
    try:
        cl.start_etcd()
        nodes = cl.start_nodes(2, lease_ttl="10s", workers=2)
        wait_members(nodes, 2, timeout=30)
        cid = "mover"
        c, _, _ = connect(nodes[0].port, cid)
        assert c.subscribe(1, [("mv/t", 1)], timeout=10).codes == [1]
        stop = threading.Event()

        def pub():
            p = RawClient("127.0.0.1", nodes[0].port, timeout=10)
            p.send(mqtt_connect("mv-pub", clean=True, keepalive=30))
            p.recv(10)
            i = 0
            while not stop.is_set():
                i += 1
                p.try_send(publish("mv/t", b"%d" % i, qos=1, pid=i % 65535 + 1))
                try:
                    while True:
                        p.recv(0)
                except Timeout:
                    pass
                time.sleep(1.0 / args.rate)
            p.close()
        t = None
        if args.rate:
            t = threading.Thread(target=pub, daemon=True)
            t.start()
        drain(c, 0.5)
        pids = [n.proc.pid for n in nodes]
        before = sum(cpu_s(p) for p in pids)
        ms, retries, got = [], 0, 0
        for i in range(args.moves):
            c.close()
            c, t_ms, tries = connect(nodes[(i + 1) % 2].port, cid)
            ms.append(t_ms)
            retries += tries - 1
            got += drain(c, args.dwell)
        cpu = sum(cpu_s(p) for p in pids) - before
        stop.set()
        if t:
            t.join(5)
        c.close()
        ms.sort()
        return (statistics.median(ms), ms[int(len(ms) * 0.9)], cpu * 1000 / args.moves,
                retries, got)
    finally:
        cl.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--moves", type=int, default=200)
    ap.add_argument("--dwell", type=float, default=0.02, help="seconds on a node between moves")
    ap.add_argument("--rate", type=int, default=0, help="QoS 1 publishes a second on node 0")
    ap.add_argument("--bin", action="append", help="antenna binaries (default build/antenna)")
    args = ap.parse_args()
    bins = args.bin or [str(REPO / "build" / "antenna")]
    res = {}
    for r in range(args.runs):
        for b in bins:
            conftest.ANTENNA_BIN = os.path.abspath(b)
            with tempfile.TemporaryDirectory(prefix="move-") as d:
                p50, p90, cpu, retries, got = run(args, pathlib.Path(d))
            res.setdefault(b, []).append((p50, p90, cpu))
            print("run %d  %-40s CONNECT p50 %.1f ms  p90 %.1f ms  nodes' CPU %.2f ms a move"
                  "  (retries %d, delivered %d)" % (r + 1, b, p50, p90, cpu, retries, got),
                  flush=True)
    print("\nmedians (%d runs, %d moves each, dwell %.3f s, %d publishes/s):"
          % (args.runs, args.moves, args.dwell, args.rate))
    for b, v in res.items():
        print("  %-40s CONNECT p50 %.1f ms  p90 %.1f ms  CPU %.2f ms a move"
              % (b, statistics.median(x[0] for x in v), statistics.median(x[1] for x in v),
                 statistics.median(x[2] for x in v)))


if __name__ == "__main__":
    main()
