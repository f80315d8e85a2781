"""Clients for the kill -9 durability tests (test_18_durability.py,
test_19_durability_strict.py): numbered publishers that record what the
broker acknowledged, and persistent subscribers that record what arrived.

Every payload is b"<publisher name>:<seq>", optionally followed by b"|" and
padding (pad=n bytes: bigger store writes), so a subscriber's record (of the
part before the b"|") can be checked against every publisher's acknowledged
sequence numbers.

    Subscriber(b, cid, "dur/#", 1)                   # paho, clean session 0
    Subscriber(b, cid, "dur/#", 1, protocol=mqtt.MQTTv5)  # session expiry 1 h
    Publisher(b, name, qos)                          # paho, 50 in flight
    RawPublisher(b, name)                            # pipelined QoS 1, 3.1.1 or 5
    p.start(); ...; acked = p.stop()                 # set of acknowledged seqs
"""

import socket
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import mqttraw

SESSION_EXPIRY = 3600


def payload(name, seq):
    return b"%s:%d" % (name.encode(), seq)


def padded(name, seq, pad):
    p = payload(name, seq)
    return p + b"|" + b"x" * pad if pad else p


def paho_client(cid, protocol, clean):
    if protocol == mqtt.MQTTv5:
        return mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5)
    return mqtt.Client(client_id=cid, clean_session=clean, protocol=protocol)


def paho_connect(c, b, protocol, clean):
    """Connect c; an MQTT 5 session that is not clean lasts SESSION_EXPIRY."""
    if protocol != mqtt.MQTTv5:
        c.connect(b.host, b.port, 30)
        return
    props = Properties(PacketTypes.CONNECT)
    if not clean:
        props.SessionExpiryInterval = SESSION_EXPIRY
    c.connect(b.host, b.port, 30, clean_start=clean, properties=props)


class Subscriber:
    """A persistent session (paho, reconnecting by itself every second)
    counting each payload it receives.  topic None: the session exists
    already (resumed, nothing subscribed)."""

    def __init__(self, b, cid, topic, qos, protocol=mqtt.MQTTv311, reconnect_delay=1):
        self.got = {}
        self.lock = threading.Lock()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.c = paho_client(cid, protocol, clean=False)
        self.c.reconnect_delay_set(reconnect_delay, reconnect_delay)
        self.c.on_connect = lambda *a: self.connected.set()
        self.c.on_message = self._on_message
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        paho_connect(self.c, b, protocol, clean=False)
        self.c.loop_start()
        assert self.connected.wait(5), cid + ": no CONNACK"
        if topic is not None:
            self.c.subscribe(topic, qos)
            assert self.subscribed.wait(5), cid + ": no SUBACK"

    def _on_message(self, client, userdata, msg):
        key = msg.payload.partition(b"|")[0]
        with self.lock:
            self.got[key] = self.got.get(key, 0) + 1

    def snapshot(self):
        with self.lock:
            return dict(self.got)

    def has_all(self, want):
        with self.lock:
            return all(k in self.got for k in want)

    def missing(self, want):
        with self.lock:
            return sorted(k for k in want if k not in self.got)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


class Publisher(threading.Thread):
    """Publishes "<name>:<seq>" as fast as `window` outstanding messages
    allow and records the sequence numbers the broker acknowledged."""

    def __init__(self, b, name, qos, limit=20000, protocol=mqtt.MQTTv311, window=50,
                 duration=30, pad=0):
        super().__init__(daemon=True)
        self.name, self.qos, self.limit, self.pad = name, qos, limit, pad
        self.window, self.duration = window, duration
        self.acked = set()
        self.pending = {}
        self.early = set()
        self.sent = 0
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.c = paho_client(name, protocol, clean=True)
        self.c.max_inflight_messages_set(window)
        # stop() after a kill waits for paho's reconnect pause: keep it short
        self.c.reconnect_delay_set(0.1, 0.1)
        self.c.on_publish = self._on_publish
        paho_connect(self.c, b, protocol, clean=True)
        self.c.loop_start()

    def _on_publish(self, client, userdata, mid):
        # runs in paho's thread, which may hold paho's own locks: never wait
        # for ours while holding theirs in the other order (see run)
        with self.lock:
            seq = self.pending.pop(mid, None)
            if seq is None:
                self.early.add(mid)  # acknowledged before run() recorded it
            else:
                self.acked.add(seq)

    def run(self):
        seq = 0
        deadline = time.monotonic() + self.duration
        while not self.halt.is_set() and seq < self.limit and time.monotonic() < deadline:
            with self.lock:
                busy = len(self.pending) >= self.window
            if busy:
                time.sleep(0.001)
                continue
            info = self.c.publish("dur/%s" % self.name, padded(self.name, seq, self.pad),
                                  self.qos)
            with self.lock:
                if info.mid in self.early:
                    self.early.discard(info.mid)
                    self.acked.add(seq)
                else:
                    self.pending[info.mid] = seq
            seq += 1
        self.sent = seq

    def stop(self):
        self.halt.set()
        self.join(10)
        self.c.loop_stop()  # no reconnect: what is acknowledged is final
        with self.lock:
            return set(self.acked)


class RawPublisher:
    """QoS 1 PUBLISH packets pipelined on one raw connection (a writer and a
    reader thread), `window` unacknowledged at most: many acknowledgements
    per broker loop turn, the traffic that makes an early release visible.
    A PUBACK's packet id names the sequence number it acknowledges (the
    window is far below 65,535: ids are not reused while outstanding)."""

    def __init__(self, b, name, protocol=mqtt.MQTTv311, window=200, duration=30, pad=0):
        self.name, self.window, self.duration, self.pad = name, window, duration, pad
        self.v5 = protocol == mqtt.MQTTv5
        self.cl = (mqttraw.RawClient5 if self.v5 else mqttraw.RawClient)(b.host, b.port)
        ack = self.cl.connect(name)
        assert ack.rc == 0, ack
        self.acked = set()
        self.outstanding = {}  # pid -> seq
        self.sent = 0
        self.cond = threading.Condition()
        self.halt = threading.Event()
        self.writer = threading.Thread(target=self._write, daemon=True)
        self.reader = threading.Thread(target=self._read, daemon=True)

    def start(self):
        self.reader.start()
        self.writer.start()

    def is_alive(self):
        return self.writer.is_alive()

    def _encode(self, seq, pid):
        topic = "dur/%s" % self.name
        data = padded(self.name, seq, self.pad)
        if self.v5:
            return mqttraw.publish5(topic, data, 1, pid=pid)
        return mqttraw.publish(topic, data, 1, pid=pid)

    def _write(self):
        seq = 0
        deadline = time.monotonic() + self.duration
        while not self.halt.is_set() and time.monotonic() < deadline:
            with self.cond:
                while len(self.outstanding) >= self.window and not self.halt.is_set():
                    self.cond.wait(0.05)
                room = self.window - len(self.outstanding)
                out = []
                for _ in range(min(room, 50)):
                    pid = seq % 65535 + 1
                    self.outstanding[pid] = seq
                    out.append(self._encode(seq, pid))
                    seq += 1
            if out and not self.cl.try_send(b"".join(out)):
                break
            self.sent = seq

    def _read(self):
        while True:
            try:
                p = self.cl.recv(timeout=1.0)
            except mqttraw.Timeout:
                if self.halt.is_set():
                    return
                continue
            except (mqttraw.Closed, OSError, ValueError):
                return
            if p.type != mqttraw.PUBACK:
                continue
            if self.v5 and getattr(p, "rc", 0) >= 0x80:
                continue  # refused: not acknowledged
            with self.cond:
                seq = self.outstanding.pop(p.pid, None)
                if seq is not None:
                    self.acked.add(seq)
                self.cond.notify()

    def stop(self):
        """After the broker is gone: every PUBACK it sent has been read."""
        self.halt.set()
        self.writer.join(10)
        self.reader.join(10)
        try:
            self.cl.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.cl.close()
        with self.cond:
            return set(self.acked)
