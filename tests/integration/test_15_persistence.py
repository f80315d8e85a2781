"""Persistence (RocksDB under persistence.dir): retained messages survive a
restart; a second broker cannot open a store that is in use."""

import subprocess
import time

import pytest

from conftest import wait_for
from mqttraw import MESSAGE_EXPIRY_INTERVAL, connect_v5, publish5

pytestmark = pytest.mark.antenna_only  # antenna's store


def retained_on(b, flt, quiet=1.0):
    c = b.raw_connected("reader-%d" % time.monotonic_ns())
    assert c.subscribe(1, [(flt, 1)]).codes == [1]
    got = {}
    while True:
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


def test_retained_messages_survive_restart(broker, tmp_path):
    store = str(tmp_path / "store")
    b = broker(persistence={"enabled": True, "dir": store, "sync": "always"})
    pub = b.raw_connected("keeper")
    for i in range(50):
        pub.publish("keep/%d" % i, b"value %d" % i, qos=1, retain=True, pid=i + 1)
    pub.publish("keep/7", b"replaced", qos=1, retain=True, pid=100)
    pub.publish("keep/8", b"", qos=1, retain=True, pid=101)  # cleared
    pub.close()
    b.stop()
    b.start()
    got = retained_on(b, "keep/#")
    assert len(got) == 49
    assert got["keep/0"] == b"value 0"
    assert got["keep/7"] == b"replaced"
    assert "keep/8" not in got
    assert "retained messages loaded" in b.log_text()


def test_expired_retained_message_not_restored(broker, tmp_path):
    store = str(tmp_path / "store")
    b = broker(persistence={"enabled": True, "dir": store})
    c = connect_v5(b.host, b.port, "expiring")
    c.send(publish5("exp/short", b"soon gone", qos=0, retain=True,
                    props=[(MESSAGE_EXPIRY_INTERVAL, 1)]))
    c.send(publish5("exp/long", b"stays", qos=0, retain=True,
                    props=[(MESSAGE_EXPIRY_INTERVAL, 3600)]))
    time.sleep(0.3)
    c.close()
    b.stop()
    time.sleep(1.5)
    b.start()
    got = retained_on(b, "exp/#")
    assert got == {"exp/long": b"stays"}


def test_expired_retained_messages_leave_memory_and_store(broker, tmp_path):
    store = str(tmp_path / "store")
    b = broker(persistence={"enabled": True, "dir": store})
    c = connect_v5(b.host, b.port, "sweeper")
    for i in range(3):
        c.send(publish5("sweep/%d" % i, b"short", qos=0, retain=True,
                        props=[(MESSAGE_EXPIRY_INTERVAL, 1)]))
    c.send(publish5("sweep/long", b"stays", qos=0, retain=True,
                    props=[(MESSAGE_EXPIRY_INTERVAL, 3600)]))
    time.sleep(0.3)
    assert len(retained_on(b, "sweep/#", quiet=0.5)) == 4
    # the sweep (every 5 s) removes them while the broker runs
    b.wait_log(r"3 expired retained messages removed", timeout=12)
    c.close()
    b.stop()
    b.start()
    # nothing expired was left in the store to skip at start-up
    b.wait_log(r"1 retained messages loaded in \d+ ms \(0 expired")
    assert retained_on(b, "sweep/#", quiet=0.5) == {"sweep/long": b"stays"}


def test_store_in_use_refuses_second_broker(broker, tmp_path):
    store = str(tmp_path / "store")
    b = broker(persistence={"enabled": True, "dir": store})
    cfg = b.config_path.read_text().replace(str(b.port), str(b.port + 1) if b.port < 65000 else "0")
    other = tmp_path / "other.yaml"
    other.write_text(cfg)
    r = subprocess.run([b.command()[0], "--config", str(other)], capture_output=True,
                       timeout=20)
    assert r.returncode == 1
    assert store in r.stderr.decode()
    b.assert_serving()


def test_sessions_survive_graceful_restart(broker, tmp_path):
    from mqttraw import puback
    store = str(tmp_path / "store")
    b = broker(workers=2, persistence={"enabled": True, "dir": store})
    # a persistent session that leaves one QoS 1 message unacknowledged
    s = b.raw_connected("durable", clean=False)
    assert s.subscribe(1, [("dur/#", 1), ("other/+", 0)]).codes == [1, 0]
    pub = b.raw_connected("dur-pub")
    pub.publish("dur/a", b"first", qos=1, pid=1)
    first = s.recv_publish(3)
    assert first.payload == b"first"
    s.close()  # no PUBACK: stays in flight
    time.sleep(0.2)
    for i in range(5):  # queued while offline
        pub.publish("dur/b", b"queued %d" % i, qos=1, pid=10 + i)
    pub.close()
    time.sleep(0.2)
    b.stop()
    assert "sessions of worker" in b.log_text()
    b.start()
    # sessions load after the listeners open: the port accepts before the line
    wait_for(lambda: "sessions with 6 messages restored" in b.log_text(), 10,
             what="the sessions restored")
    s = b.raw()
    ack = s.connect("durable", clean=False)
    assert (ack.rc, ack.session_present) == (0, 1)
    again = s.recv_publish(3)  # the unacknowledged one first, with DUP
    assert (again.payload, again.dup, again.pid) == (b"first", 1, first.pid)
    s.send(puback(again.pid))
    got = []
    for _ in range(5):
        m = s.recv_publish(3)
        s.send(puback(m.pid))
        got.append(m.payload)
    assert got == [b"queued %d" % i for i in range(5)]
    # the subscriptions came back too
    p2 = b.raw_connected("dur-pub2")
    p2.publish("other/x", b"live", qos=0)
    assert s.recv_publish(3).payload == b"live"
    s.close()
    p2.close()


def test_clean_sessions_are_not_restored(broker, tmp_path):
    store = str(tmp_path / "store")
    b = broker(persistence={"enabled": True, "dir": store})
    s = b.raw_connected("ephemeral", clean=True)
    assert s.subscribe(1, [("eph/#", 1)]).codes == [1]
    b.stop()
    b.start()
    s = b.raw()
    ack = s.connect("ephemeral", clean=False)
    assert ack.session_present == 0
    s.close()
