#!/usr/bin/python3
"""bench/etcd_claims.py -- what the client-id registry's claims cost etcd,
alone: etcd's CPU per claim and its keep-alive answers, by batch size, by
batches in flight and by key (issue 20, docs/benchmarks.md "Connect storm at
53 nodes").

Starts its own etcd (as tools/cluster.sh does: one member, --unsafe-no-fsync,
loopback, free ports, CLAIMS_ETCD_NICE for its nice value), grants a lease,
and for each combination of --batch, --inflight and --prefix sends --claims
claims the way src/cluster/cl_etcd.c batches them: one txn per batch,
compare create_revision = 0 for every key, success: a put of each key under
the lease (the node's name as value), no failure branch; INFLIGHT
connections each send batch after batch until the claims are made.  Each
key is new (a run's keys carry the run's number).  Meanwhile a keep-alive
of the lease goes every 0.5 s on a connection of its own, as a node's does
(POST /v3/lease/keepalive); one that fails is tried again 500 ms later, and
with --hold the senders send nothing from a failed keep-alive until one is
answered (as every node's cl_etcd_hold, all at once: a storm fails them all).

Reported per combination: claims/s, etcd's CPU per claim (utime + stime of
the etcd process over the run), the batches' round trip (p50, max) and the
keep-alives' (max, how many failed: an HTTP status other than 200, no TTL
in the answer, or no answer in 5 s; and the longest time without a
successful one: a lease of that TTL or less would have been lost).

  bench/etcd_claims.py --claims 20000 --batch 1,35,120 --inflight 4
  bench/etcd_claims.py --claims 60000 --batch 35 --inflight 4,212 --keepalive-ms 500
  bench/etcd_claims.py --claims 20000 --batch 35 --prefix /antenna/antenna/clients/,/a/antenna/c/
"""
import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def b64(s):
    return base64.b64encode(s.encode()).decode()


def etcd_cpu(pid):
    with open("/proc/%d/stat" % pid) as f:
        f = f.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def post(conn, path, body):
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


def batch_body(keys, value, lease):
    cmp = ",".join('{"key":"%s","target":"CREATE","result":"EQUAL","create_revision":"0"}'
                   % b64(k) for k in keys)
    ops = ",".join('{"request_put":{"key":"%s","value":"%s","lease":"%d"}}'
                   % (b64(k), b64(value), lease) for k in keys)
    return '{"compare":[%s],"success":[%s]}' % (cmp, ops)


def run(port, pid, lease, claims, batch, inflight, prefix, run_no, ka_ms, hold):
    keys = ["%sr%d_n%d_s%d" % (prefix, run_no, i % 53, i) for i in range(claims)]
    chunks = [keys[i:i + batch] for i in range(0, len(keys), batch)]
    lock = threading.Lock()
    rtts, errors = [], []
    nxt = [0]
    ka_ok = threading.Event()  # --hold: cleared while the keep-alive fails
    ka_ok.set()

    def sender():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            if hold:
                ka_ok.wait(2.0)  # as a node holds its batches (at most 2 s a failure)
            with lock:
                if nxt[0] >= len(chunks):
                    break
                ch = chunks[nxt[0]]
                nxt[0] += 1
            body = batch_body(ch, "node12", lease)
            t = time.monotonic()
            try:
                st, raw = post(c, "/v3/kv/txn", body)
                ok = st == 200 and json.loads(raw).get("succeeded") is True
            except Exception as e:  # noqa: BLE001 -- counted, reported
                ok, st = False, repr(e)
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            with lock:
                rtts.append(time.monotonic() - t)
                if not ok:
                    errors.append(st)
        c.close()

    ka = {"max": 0.0, "failed": 0, "sent": 0, "gap": 0.0}
    stop = threading.Event()

    def keepalive():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        last_ok = time.monotonic()
        delay = ka_ms
        while not stop.wait(delay / 1000):
            t = time.monotonic()
            try:
                st, raw = post(c, "/v3/lease/keepalive", '{"ID":"%d"}' % lease)
                ok = st == 200 and int(json.loads(raw).get("result", {}).get("TTL", 0)) > 0
            except Exception:  # noqa: BLE001 -- counted
                ok = False
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            now = time.monotonic()
            ka["sent"] += 1
            ka["max"] = max(ka["max"], now - t)
            ka["failed"] += not ok
            if ok:
                ka["gap"] = max(ka["gap"], now - last_ok)
                last_ok = now
                ka_ok.set()
            elif hold:
                ka_ok.clear()
            delay = ka_ms if ok else min(ka_ms, 500)  # a node retries after 500 ms
        ka["gap"] = max(ka["gap"], time.monotonic() - last_ok)
        c.close()

    kt = threading.Thread(target=keepalive)
    kt.start()
    cpu0, t0 = etcd_cpu(pid), time.monotonic()
    ts = [threading.Thread(target=sender) for _ in range(inflight)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    t1, cpu1 = time.monotonic(), etcd_cpu(pid)
    stop.set()
    kt.join()
    rtts.sort()
    return {
        "batch": batch, "inflight": inflight, "prefix": prefix, "claims": claims,
        "claims_s": claims / (t1 - t0), "etcd_us": (cpu1 - cpu0) * 1e6 / claims,
        "rtt_p50_ms": statistics.median(rtts) * 1e3, "rtt_max_ms": rtts[-1] * 1e3,
        "ka_max_ms": ka["max"] * 1e3, "ka_failed": ka["failed"], "ka_sent": ka["sent"],
        "ka_gap_s": ka["gap"], "hold": hold,
        "errors": len(errors), "first_error": errors[0] if errors else None,
        "body_bytes": len(batch_body(keys[:batch], "node12", lease)) / batch,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--claims", type=int, default=20000)
    ap.add_argument("--batch", default="35")
    ap.add_argument("--inflight", default="4")
    ap.add_argument("--prefix", default="/antenna/antenna/clients/")
    ap.add_argument("--runs", type=int, default=1, help="each combination this often, in turn")
    ap.add_argument("--keepalive-ms", type=int, default=500)
    ap.add_argument("--hold", action="store_true",
                    help="the senders pause while the keep-alive fails (cl_etcd_hold)")
    a = ap.parse_args()
    if shutil.which("etcd") is None:
        sys.exit("etcd_claims.py: etcd not found (apt install etcd-server)")
    d = tempfile.mkdtemp(prefix="antenna-etcdclaims.")
    port, peer = free_port(), free_port()
    url = "http://127.0.0.1:%d" % port
    log = open(os.path.join(d, "etcd.log"), "w")
    nice = os.environ.get("CLAIMS_ETCD_NICE", "0")
    p = subprocess.Popen(
        ["nice", "-n", nice, "etcd", "--name", "e0", "--data-dir", os.path.join(d, "etcd"),
         "--log-level", "warn", "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", "http://127.0.0.1:%d" % peer,
         "--initial-advertise-peer-urls", "http://127.0.0.1:%d" % peer,
         "--initial-cluster", "e0=http://127.0.0.1:%d" % peer, "--unsafe-no-fsync"],
        stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                c.request("GET", "/health")
                if b'"true"' in c.getresponse().read():
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or p.poll() is not None:
                sys.exit("etcd_claims.py: etcd did not start; see %s/etcd.log" % d)
            time.sleep(0.1)
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        st, raw = post(c, "/v3/lease/grant", '{"TTL":"30"}')
        lease = int(json.loads(raw)["ID"])
        print("| batch | in flight | held | key prefix | claims/s | etcd CPU / claim | request B / claim "
              "| batch RTT p50 / max | keep-alive max | keep-alives failed | longest without one "
              "| errors |")
        print("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        run_no = 0
        combos = [(int(b), int(i), pf) for b in a.batch.split(",") for i in a.inflight.split(",")
                  for pf in a.prefix.split(",")]
        for _ in range(a.runs):
            for b, i, pf in combos:
                run_no += 1
                r = run(port, p.pid, lease, a.claims, b, i, pf, run_no, a.keepalive_ms, a.hold)
                print("| %d | %d | %s | `%s` | %.0f | %.1f us | %.0f | %.0f / %.0f ms | %.0f ms "
                      "| %d of %d | %.1f s | %d%s |"
                      % (r["batch"], r["inflight"], "yes" if r["hold"] else "no", r["prefix"],
                         r["claims_s"], r["etcd_us"], r["body_bytes"], r["rtt_p50_ms"],
                         r["rtt_max_ms"], r["ka_max_ms"], r["ka_failed"], r["ka_sent"],
                         r["ka_gap_s"], r["errors"],
                         " (%s)" % r["first_error"] if r["errors"] else ""), flush=True)
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
