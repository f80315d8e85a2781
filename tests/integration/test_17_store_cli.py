"""`antenna store inspect|export|import|compact|expire|generate` on stores
written by the real broker: a backup taken from a stopped broker's store and
restored into a fresh directory brings back the sessions (with their queued
messages) and the retained messages when a broker starts on it; bad input is
refused with its line number and leaves the target untouched; a store held
by a running broker is refused by name."""

import base64
import json
import os
import subprocess
import time

import pytest

from conftest import sanitizer_report, wait_for
from helpers import Paho, receive_publishes

pytestmark = pytest.mark.antenna_only  # antenna's store and its tool


def store(antenna_bin, *args, input=None):
    """Runs `antenna store ARGS`; returns the CompletedProcess (text).  The
    tool's own output must hold no sanitizer report (ASan builds)."""
    r = subprocess.run([antenna_bin, "store", *map(str, args)], capture_output=True,
                       text=True, timeout=60, input=input)
    assert sanitizer_report(r.stderr) is None, r.stderr
    return r


def inspect_json(antenna_bin, path, *extra):
    r = store(antenna_bin, "inspect", path, "--json", *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def retained_count(b, flt, quiet=1.0, limit=20.0):
    """Subscribes to flt and counts the retained messages that arrive."""
    c = b.raw_connected("counter-%d" % time.monotonic_ns())
    assert c.subscribe(1, [(flt, 1)]).codes == [1]
    got = {}
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            p = c.recv_publish(quiet)
        except Exception:
            break
        assert p.retain
        got[p.topic] = p.payload
        if p.qos:
            c.ack(p)
    c.close()
    return got


def populate(b):
    """Two persistent sessions, one with 4 QoS 1 messages queued while it is
    offline and one message in flight; 5 retained messages."""
    with Paho(b, "dev-a", clean_session=False) as a:
        assert a.subscribe("cmd/a/#", 1) == [1]
        assert a.subscribe("alerts/+", 1) == [1]
    with Paho(b, "dev-b", clean_session=False) as d:
        assert d.subscribe("cmd/b/#", 0) == [0]
    # dev-c leaves one QoS 1 message unacknowledged (inflight)
    c = b.raw_connected("dev-c", clean=False)
    assert c.subscribe(1, [("cmd/c/#", 1)]).codes == [1]
    with Paho(b, "pub") as p:
        p.publish("cmd/c/x", b"unacked", qos=1)
        first = c.recv_publish(3)
        assert first.payload == b"unacked"
        c.close()
        time.sleep(0.2)
        for i in range(4):
            p.publish("cmd/a/x", b"queued %d" % i, qos=1)
        for i in range(5):
            p.publish("state/%d" % i, b"retained %d" % i, qos=1, retain=True)


def test_inspect_export_import_and_resume(broker, tmp_path, antenna_bin):
    src = str(tmp_path / "src")
    b = broker(persistence={"enabled": True, "dir": src})
    populate(b)
    b.stop()  # saves the sessions

    # inspect, text
    r = store(antenna_bin, "inspect", src)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    a_line = [l for l in lines if l.startswith('session "dev-a"')]
    assert len(a_line) == 1 and "queued 4, inflight 0" in a_line[0], r.stdout
    c_line = [l for l in lines if l.startswith('session "dev-c"')]
    assert len(c_line) == 1 and "inflight 1" in c_line[0], r.stdout
    assert '  sub "alerts/+" qos 1 rh 0' in lines
    assert sum(1 for l in lines if l.startswith('retained "state/')) == 5
    assert "  sessions 3, subscriptions 4, queued messages 4, inflight 1, qos2 ids 0, orphaned 0" in lines
    assert "  retained 5 (payload 50 bytes)" in lines

    # inspect, JSON, and the filters
    doc = inspect_json(antenna_bin, src)
    assert doc["summary"]["sessions"] == 3 and doc["summary"]["retained"] == 5
    sess = {s["client_id"]: s for s in doc["sessions"]}
    assert sorted(sess) == ["dev-a", "dev-b", "dev-c"]
    assert (sess["dev-a"]["queued"], sess["dev-a"]["inflight"]) == (4, 0)
    assert sorted(x["filter"] for x in sess["dev-a"]["subscriptions"]) == ["alerts/+", "cmd/a/#"]
    assert sess["dev-b"]["subscriptions"][0]["qos"] == 0
    assert sorted(x["topic"] for x in doc["retained"]) == ["state/%d" % i for i in range(5)]
    assert all(x["payload_bytes"] == 10 for x in doc["retained"])
    only = inspect_json(antenna_bin, src, "--sessions", "--prefix", "dev-a")
    assert [s["client_id"] for s in only["sessions"]] == ["dev-a"] and "retained" not in only
    only = inspect_json(antenna_bin, src, "--retained", "--prefix", "state/3")
    assert [x["topic"] for x in only["retained"]] == ["state/3"] and "sessions" not in only

    # export: header, one line per record, the end record
    backup = tmp_path / "backup.jsonl"
    r = store(antenna_bin, "export", src, backup)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in backup.read_text().splitlines()]
    assert rows[0]["antenna_store_export"] == 1 and rows[0]["store_format"] == 1
    assert rows[-1] == {"type": "end", "records": len(rows) - 2}
    kinds = [x["type"] for x in rows[1:-1]]
    assert kinds.count("session") == 3 and kinds.count("retained") == 5
    assert kinds.count("message") == 5  # 4 queued + 1 inflight
    payloads = sorted(base64.b64decode(x["payload"]) for x in rows if x.get("type") == "message")
    assert payloads == [b"queued %d" % i for i in range(4)] + [b"unacked"]

    # import into a fresh directory: the same records
    dst = str(tmp_path / "dst")
    r = store(antenna_bin, "import", dst, backup)
    assert r.returncode == 0, r.stderr
    assert "imported 13 records" in r.stderr
    again = inspect_json(antenna_bin, dst)
    assert again["sessions"] == doc["sessions"] and again["retained"] == doc["retained"]
    # a second import into the now non-empty store is refused...
    r = store(antenna_bin, "import", dst, backup)
    assert r.returncode == 1 and "already holds records" in r.stderr
    # ...unless --force, which replaces the store's records with the file's
    r = store(antenna_bin, "import", dst, backup, "--force")
    assert r.returncode == 0, r.stderr
    assert inspect_json(antenna_bin, dst)["summary"]["sessions"] == 3

    # a broker on the restored store: sessions resume, queued messages and
    # retained messages are there
    b2 = broker(persistence={"enabled": True, "dir": dst})
    # sessions load after the listeners open: the port accepts before the line
    wait_for(lambda: "3 sessions with 5 messages restored" in b2.log_text(), 10,
             what="the sessions restored")
    a = Paho(b2, "dev-a", clean_session=False).connect()
    try:
        assert a.connack[0] == 1  # session present
        got = a.get_n(4, timeout=5)
        assert [m.payload for m in got] == [b"queued %d" % i for i in range(4)]
        assert all(m.topic == "cmd/a/x" for m in got)
    finally:
        a.close()
    c = b2.raw()
    ack = c.connect("dev-c", clean=False)
    assert (ack.rc, ack.session_present) == (0, 1)
    p = c.recv_publish(3)
    assert (p.payload, p.dup) == (b"unacked", 1)
    c.ack(p)
    c.close()
    assert retained_count(b2, "state/#") == {"state/%d" % i: b"retained %d" % i for i in range(5)}


def corrupt_line(path, lineno, fn):
    lines = path.read_text().splitlines()
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


def test_import_refuses_bad_lines_and_writes_nothing(tmp_path, antenna_bin):
    src = tmp_path / "src"
    assert store(antenna_bin, "generate", src, "--retained", 20, "--sessions", 3,
                 "--queued", 2).returncode == 0
    good = tmp_path / "good.jsonl"
    assert store(antenna_bin, "export", src, good).returncode == 0
    nlines = len(good.read_text().splitlines())
    assert nlines == 1 + 20 + 3 + 6 + 1

    cases = [
        (1, lambda l: l.replace('"antenna_store_export":1', '"antenna_store_export":9'),
         "export format version 9"),
        (1, lambda l: l.replace('"store_format":1', '"store_format":2'), "store format version 2"),
        (3, lambda l: l[:-5], "not JSON"),
        (4, lambda l: l.replace('"qos":1', '"qos":3'), "field 'qos' out of range"),
        (5, lambda l: l.replace('"payload":"', '"payload":"!'), "not valid base64"),
        (6, lambda l: l.replace('"type":"message"', '"type":"mystery"'), "unknown record type"),
        (8, lambda l: l.replace('"flags":0', '"flags":0,"extra":1'), "unexpected or missing fields"),
        (nlines, lambda l: l.replace('"records":29', '"records":30'), "30 records announced, 29 read"),
    ]
    for lineno, fn, why in cases:
        bad = tmp_path / "bad.jsonl"
        bad.write_text(good.read_text())
        corrupt_line(bad, lineno, fn)
        fresh = tmp_path / "fresh"
        r = store(antenna_bin, "import", fresh, bad)
        assert r.returncode == 1, (lineno, why, r.stderr)
        assert ("line %d: " % lineno) in r.stderr and why in r.stderr, r.stderr
        assert "nothing imported" in r.stderr
        assert not fresh.exists()  # not even created
    # a truncated file (no end record)
    trunc = tmp_path / "trunc.jsonl"
    trunc.write_text("\n".join(good.read_text().splitlines()[:10]) + "\n")
    r = store(antenna_bin, "import", tmp_path / "fresh", trunc)
    assert r.returncode == 1 and "no end record" in r.stderr
    # with --force into an existing store: a bad line still changes nothing
    other = tmp_path / "other"
    assert store(antenna_bin, "generate", other, "--retained", 7, "--sessions", 1).returncode == 0
    before = inspect_json(antenna_bin, other)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text())
    corrupt_line(bad, 12, lambda l: l.replace('"type":', '"tipe":'))
    r = store(antenna_bin, "import", other, bad, "--force")
    assert r.returncode == 1 and "line 12: " in r.stderr, r.stderr
    after = inspect_json(antenna_bin, other)
    assert after["sessions"] == before["sessions"] and after["retained"] == before["retained"]
    assert after["summary"]["retained"] == 7
    # the intact file imports, and a round trip gives the same file
    r = store(antenna_bin, "import", tmp_path / "fresh", good)
    assert r.returncode == 0, r.stderr
    out = store(antenna_bin, "export", tmp_path / "fresh", "-")
    assert out.returncode == 0
    assert out.stdout.splitlines()[1:] == good.read_text().splitlines()[1:]


def test_store_held_by_broker_is_refused(broker, tmp_path, antenna_bin):
    path = str(tmp_path / "held")
    b = broker(persistence={"enabled": True, "dir": path})
    for args in (["inspect", path], ["export", path, tmp_path / "x.jsonl"],
                 ["compact", path], ["expire", path], ["generate", path, "--retained", 1]):
        r = store(antenna_bin, *args)
        assert r.returncode == 1, (args, r.stdout, r.stderr)
        assert path in r.stderr and "LOCK held" in r.stderr, r.stderr
        assert "is a broker running" in r.stderr
    assert not (tmp_path / "x.jsonl").exists()
    b.assert_serving()
    b.stop()
    assert store(antenna_bin, "inspect", path).returncode == 0


def test_generate_then_broker_serves_it(broker, tmp_path, antenna_bin):
    path = tmp_path / "gen"
    r = store(antenna_bin, "generate", path, "--retained", 300, "--sessions", 20, "--subs", 2,
              "--queued", 2, "--payload", 16)
    assert r.returncode == 0, r.stderr
    assert "300 retained (payload 16 B), 20 sessions" in r.stdout
    summary = inspect_json(antenna_bin, path)["summary"]
    assert (summary["retained"], summary["sessions"], summary["queued"]) == (300, 20, 40)
    b = broker(persistence={"enabled": True, "dir": str(path)})
    assert "300 retained messages loaded" in b.log_text()
    wait_for(lambda: "20 sessions with 40 messages restored" in b.log_text(), 10,
             what="the sessions restored")
    got = retained_count(b, "site/+/dev/#")
    assert len(got) == 300
    assert "site/000/dev/0299/temp" in got and len(got["site/000/dev/0299/temp"]) == 16
    # a generated session resumes with its queued messages and subscriptions
    c = b.raw()
    ack = c.connect("gen-0000003", clean=False)
    assert (ack.rc, ack.session_present) == (0, 1)
    pubs = receive_publishes(c, 2, timeout=5, quiet=0.3)
    assert [(p.topic, p.qos) for p in pubs] == [("cmd/gen-0000003/q", 1)] * 2
    with b.raw() as p:
        assert p.connect("gen-pub").rc == 0
        p.publish("cmd/gen-0000003/live", b"hello", qos=0)
        assert c.recv_publish(3).payload == b"hello"
    c.close()


def test_expire_and_compact(tmp_path, antenna_bin):
    """Records crafted through import: expired ones go with `store expire`."""
    path = tmp_path / "exp"
    now = int(time.time())
    b64 = lambda s: base64.b64encode(s).decode()
    rows = [{"antenna_store_export": 1, "store_format": 1, "created": now, "source": "test"}]
    for name, expiry in (("old", now - 10), ("new", now + 3600), ("forever", 0)):
        rows.append({"type": "retained", "topic": b64(b"t/" + name.encode()), "qos": 0,
                     "flags": 0, "expiry": expiry, "props": "", "payload": b64(b"x")})
    for name, deadline in (("gone", now - 5), ("kept", now + 3600)):
        rows.append({"type": "session", "client_id": b64(name.encode()), "flags": 0,
                     "expiry_interval": 60, "expiry_deadline": deadline, "next_pid": 1,
                     "subs": [{"filter": b64(b"a/#"), "options": 1, "sub_id": 0}]})
        rows.append({"type": "message", "client_id": b64(name.encode()), "seq": 1, "state": 0,
                     "qos": 1, "retain": False, "dup": False, "pid": 0, "expiry": 0,
                     "topic": b64(b"a/b"), "props": "", "payload": b64(b"m")})
        rows.append({"type": "incoming", "client_id": b64(name.encode()), "pid": 7})
    rows.append({"type": "end", "records": len(rows) - 1})
    f = tmp_path / "crafted.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = store(antenna_bin, "import", path, f)
    assert r.returncode == 0, r.stderr
    doc = inspect_json(antenna_bin, path)
    assert doc["summary"]["retained"] == 3 and doc["summary"]["sessions"] == 2
    kept = [s for s in doc["sessions"] if s["client_id"] == "kept"][0]
    assert kept["qos2_ids"] == [7] and kept["queued"] == 1
    r = store(antenna_bin, "expire", path)
    assert r.returncode == 0, r.stderr
    assert "1 retained, 1 sessions, 0 queued messages" in r.stdout, r.stdout
    doc = inspect_json(antenna_bin, path)
    assert sorted(x["topic"] for x in doc["retained"]) == ["t/forever", "t/new"]
    assert [s["client_id"] for s in doc["sessions"]] == ["kept"]
    assert doc["summary"]["orphaned"] == 0  # the expired session's queue went with it
    r = store(antenna_bin, "compact", path)
    assert r.returncode == 0 and "compacted" in r.stdout, r.stderr
    assert inspect_json(antenna_bin, path)["summary"]["retained"] == 2


def test_usage_and_missing_store(tmp_path, antenna_bin):
    assert store(antenna_bin).returncode == 2
    assert store(antenna_bin, "frobnicate", tmp_path).returncode == 2
    assert store(antenna_bin, "inspect").returncode == 2
    assert store(antenna_bin, "inspect", tmp_path, "--bogus").returncode == 2
    assert store(antenna_bin, "export", tmp_path).returncode == 2
    assert store(antenna_bin, "generate", tmp_path / "g", "--retained", "-5").returncode == 2
    r = store(antenna_bin, "--help")
    assert r.returncode == 0 and "inspect DIR" in r.stdout
    missing = tmp_path / "missing"
    for action in ("inspect", "compact", "expire"):
        r = store(antenna_bin, action, missing)
        assert r.returncode == 1 and str(missing) in r.stderr and "no such directory" in r.stderr
    r = store(antenna_bin, "export", missing, tmp_path / "x.jsonl")
    assert r.returncode == 1
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = store(antenna_bin, "inspect", empty)
    assert r.returncode == 1 and "not a store" in r.stderr
    assert os.listdir(empty) == []
    r = store(antenna_bin, "import", tmp_path / "i", tmp_path / "nofile.jsonl")
    assert r.returncode == 1 and "nofile.jsonl" in r.stderr
    # `antenna --help` lists the command
    r = subprocess.run([antenna_bin, "--help"], capture_output=True, text=True, timeout=10)
    assert "store" in r.stdout
