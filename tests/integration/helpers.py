"""paho-mqtt (1.x API) helpers for the integration tests."""

import queue
import threading
import time

import paho.mqtt.client as mqtt

TIMEOUT = 5.0


class Paho:
    """A paho client running its network loop in a thread, with bounded
    waits: messages land in .messages (a queue of paho MQTTMessage)."""

    def __init__(self, broker, client_id="", clean_session=True,
                 protocol=mqtt.MQTTv311, keepalive=60, will=None, port=None):
        self.client = mqtt.Client(client_id=client_id, clean_session=clean_session,
                                  protocol=protocol)
        self.client.max_inflight_messages_set(20)
        self.client.max_queued_messages_set(0)
        self.messages = queue.Queue()
        self.connected = threading.Event()
        self.connack = None
        self.subacks = {}
        self.suback_evt = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        if will:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain)
        self.host = broker.host
        self.port = port or broker.port
        self.keepalive = keepalive

    def _on_connect(self, client, userdata, flags, rc):
        self.connack = (flags.get("session present", 0), rc)
        self.connected.set()

    def _on_message(self, client, userdata, msg):
        self.messages.put(msg)

    def _on_subscribe(self, client, userdata, mid, granted):
        with self.suback_evt:
            self.subacks[mid] = list(granted)
            self.suback_evt.notify_all()

    def connect(self, timeout=TIMEOUT):
        self.client.connect(self.host, self.port, self.keepalive)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise AssertionError("paho client got no CONNACK within %.1fs" % timeout)
        assert self.connack[1] == 0, "CONNACK rc %r" % (self.connack,)
        return self

    def subscribe(self, topic, qos=0, timeout=TIMEOUT):
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        deadline = time.monotonic() + timeout
        with self.suback_evt:
            while mid not in self.subacks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no SUBACK for %r within %.1fs" % (topic, timeout))
                self.suback_evt.wait(left)
            return self.subacks[mid]

    def publish(self, topic, payload, qos=0, retain=False, wait=True, timeout=TIMEOUT):
        info = self.client.publish(topic, payload, qos, retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, info.rc
        if wait and qos > 0:
            info.wait_for_publish(timeout)
            assert info.is_published(), "publish of %r not acknowledged in %.1fs" % (topic, timeout)
        return info

    def get(self, timeout=TIMEOUT):
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message within %.1fs" % timeout)

    def get_n(self, n, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        out = []
        while len(out) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("got %d of %d messages within %.1fs" % (len(out), n, timeout))
            try:
                out.append(self.messages.get(timeout=left))
            except queue.Empty:
                pass
        return out

    def expect_nothing(self, timeout=0.5):
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError("unexpected message %r %r" % (m.topic, m.payload))

    def close(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------ raw-client helpers

import mqttraw  # noqa: E402


def drain(client, quiet=0.5, limit=10.0):
    """Read packets until none arrives for `quiet` seconds (bounded by
    `limit`); returns them.  Does not acknowledge anything."""
    got = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            got.append(client.recv(min(quiet, max(0.01, deadline - time.monotonic()))))
        except mqttraw.Timeout:
            return got
    return got


def receive_publishes(client, n, timeout=10.0, ack=True, quiet=0.0):
    """Receive `n` PUBLISH packets, acknowledging each (QoS 1: PUBACK; QoS 2:
    PUBREC then PUBCOMP on the PUBREL) when ack is true.  Then, if quiet > 0,
    keep reading for `quiet` seconds and include any further PUBLISH (so the
    caller can assert there were no extra or duplicate ones).  Fails on
    timeout with what arrived so far."""
    pubs = []
    pending_rel = set()
    deadline = time.monotonic() + timeout
    extra_until = None
    while True:
        now = time.monotonic()
        if len(pubs) >= n and not pending_rel:
            if quiet <= 0:
                return pubs
            if extra_until is None:
                extra_until = now + quiet
            if now >= extra_until:
                return pubs
            wait = extra_until - now
        else:
            wait = deadline - now
            if wait <= 0:
                raise AssertionError("received %d of %d PUBLISH within %.1fs (pending PUBREL %r); last: %r"
                                     % (len(pubs), n, timeout, sorted(pending_rel), pubs[-3:]))
        try:
            p = client.recv(wait)
        except mqttraw.Timeout:
            continue
        if p.type == mqttraw.PUBLISH:
            pubs.append(p)
            if ack and p.qos == 1:
                client.send(mqttraw.puback(p.pid))
            elif ack and p.qos == 2:
                client.send(mqttraw.pubrec(p.pid))
                pending_rel.add(p.pid)
        elif p.type == mqttraw.PUBREL:
            assert p.flags == 0x2, p
            client.send(mqttraw.pubcomp(p.pid))
            pending_rel.discard(p.pid)
        else:
            raise AssertionError("unexpected packet while receiving: %r" % p)


class CheckedThread(threading.Thread):
    """A daemon thread running self._run(); what it raised is kept in
    .error for the test to report (a client thread of a load test)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.error = None

    def run(self):
        try:
            self._run()
        except Exception as e:  # reported by the test
            self.error = e


class Background(threading.Thread):
    """Run fn(*args) in a thread; .result() returns its value or re-raises."""

    def __init__(self, fn, *args, **kw):
        super().__init__(daemon=True)
        self.fn, self.args, self.kw = fn, args, kw
        self.value = self.error = None
        self.start()

    def run(self):
        try:
            self.value = self.fn(*self.args, **self.kw)
        except BaseException as e:  # noqa: B902 -- re-raised in result()
            self.error = e

    def result(self, timeout=30.0):
        self.join(timeout)
        if self.is_alive():
            raise AssertionError("background task still running after %.1fs" % timeout)
        if self.error is not None:
            raise self.error
        return self.value


def publish_pipelined(client, topic, payloads, qos, first_pid=1, timeout=15.0, retain=False):
    """Send every PUBLISH at once, then complete the QoS flows.  Returns the
    packet ids of the PUBACKs (QoS 1) or PUBCOMPs (QoS 2) in arrival order."""
    pids = [first_pid + i for i in range(len(payloads))]
    data = b"".join(mqttraw.publish(topic, pl, qos, retain, pid=pid if qos else None)
                    for pl, pid in zip(payloads, pids))
    client.send(data)
    if qos == 0:
        return []
    acks = []
    deadline = time.monotonic() + timeout
    while len(acks) < len(pids):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError("%d of %d acks within %.1fs" % (len(acks), len(pids), timeout))
        try:
            p = client.recv(left)
        except mqttraw.Timeout:
            continue
        if qos == 1 and p.type == mqttraw.PUBACK:
            acks.append(p.pid)
        elif qos == 2 and p.type == mqttraw.PUBREC:
            client.send(mqttraw.pubrel(p.pid))
        elif qos == 2 and p.type == mqttraw.PUBCOMP:
            acks.append(p.pid)
        else:
            raise AssertionError("unexpected packet while publishing: %r" % p)
    return acks
