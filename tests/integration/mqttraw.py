"""mqttraw -- hand-built MQTT 3.1/3.1.1 packets over plain sockets.

A deliberately small, independent encoder/decoder for black-box tests: it
does not share any code with the broker under test.  Encoders return bytes
(so tests can corrupt them); RawClient sends bytes and reads whole packets
with a bounded timeout.

    c = RawClient(host, port)
    ack = c.connect("cid")             # -> Packet(type=CONNACK, rc=0, ...)
    c.send(subscribe(1, [("a/#", 1)]))
    p = c.recv(timeout=2)              # -> Packet(type=SUBACK, pid=1, codes=[1])
"""

import select
import socket
import struct
import time

CONNECT = 1
CONNACK = 2
PUBLISH = 3
PUBACK = 4
PUBREC = 5
PUBREL = 6
PUBCOMP = 7
SUBSCRIBE = 8
SUBACK = 9
UNSUBSCRIBE = 10
UNSUBACK = 11
PINGREQ = 12
PINGRESP = 13
DISCONNECT = 14

TYPE_NAMES = {
    0: "RESERVED0", 1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK",
    5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK",
    10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
    14: "DISCONNECT", 15: "RESERVED15",
}

DEFAULT_TIMEOUT = 3.0


class Closed(Exception):
    """The peer closed the connection (EOF or reset)."""


class Timeout(Exception):
    """No complete packet arrived within the timeout."""


# ---------------------------------------------------------------- encoding

def varint(n):
    """Remaining-length encoding (1..4 bytes)."""
    if n < 0 or n > 268435455:
        raise ValueError("remaining length out of range: %d" % n)
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def mqtt_str(s):
    """Length-prefixed string; bytes are sent as-is (for invalid UTF-8 tests)."""
    if isinstance(s, str):
        s = s.encode("utf-8")
    return struct.pack("!H", len(s)) + s


def packet(first_byte, body=b""):
    """A packet with the given first byte (type << 4 | flags) and body."""
    return bytes([first_byte]) + varint(len(body)) + body


def connect(client_id="", clean=True, keepalive=60, will=None,
            username=None, password=None, proto_name="MQTT", level=4,
            flags=None):
    """CONNECT.  will = (topic, payload, qos, retain).  flags overrides the
    computed connect-flags byte (to set the reserved bit, for example).
    MQTT 3.1: proto_name="MQIsdp", level=3."""
    f = 0
    payload = mqtt_str(client_id)
    if clean:
        f |= 0x02
    if will is not None:
        wtopic, wpayload, wqos, wretain = will
        f |= 0x04 | (wqos << 3) | (0x20 if wretain else 0)
        if isinstance(wpayload, str):
            wpayload = wpayload.encode()
        payload += mqtt_str(wtopic) + struct.pack("!H", len(wpayload)) + wpayload
    if username is not None:
        f |= 0x80
        payload += mqtt_str(username)
    if password is not None:
        f |= 0x40
        if isinstance(password, str):
            password = password.encode()
        payload += struct.pack("!H", len(password)) + password
    if flags is not None:
        f = flags
    var = mqtt_str(proto_name) + bytes([level, f]) + struct.pack("!H", keepalive)
    return packet(0x10, var + payload)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, pid=None):
    if isinstance(payload, str):
        payload = payload.encode()
    first = 0x30 | (0x08 if dup else 0) | ((qos & 3) << 1) | (0x01 if retain else 0)
    body = mqtt_str(topic)
    if qos > 0:
        if pid is None:
            raise ValueError("QoS > 0 PUBLISH needs a packet id")
        body += struct.pack("!H", pid)
    return packet(first, body + payload)


def puback(pid):
    return packet(0x40, struct.pack("!H", pid))


def pubrec(pid):
    return packet(0x50, struct.pack("!H", pid))


def pubrel(pid):
    return packet(0x62, struct.pack("!H", pid))


def pubcomp(pid):
    return packet(0x70, struct.pack("!H", pid))


def subscribe(pid, filters, first_byte=0x82):
    """filters: list of (filter, qos)."""
    body = struct.pack("!H", pid)
    for f, q in filters:
        body += mqtt_str(f) + bytes([q])
    return packet(first_byte, body)


def unsubscribe(pid, filters, first_byte=0xA2):
    body = struct.pack("!H", pid)
    for f in filters:
        body += mqtt_str(f)
    return packet(first_byte, body)


def pingreq():
    return b"\xc0\x00"


def disconnect():
    return b"\xe0\x00"


# ---------------------------------------------------------------- decoding

class Packet:
    """A received packet.  Always: type, flags, body.  Depending on type:
    CONNACK: session_present, rc; PUBLISH: topic, payload, qos, dup, retain,
    pid (None for QoS 0); PUBACK/PUBREC/PUBREL/PUBCOMP/UNSUBACK: pid;
    SUBACK: pid, codes."""

    def __init__(self, first, body):
        self.first = first
        self.type = first >> 4
        self.flags = first & 0x0F
        self.body = body
        self.pid = None
        t = self.type
        if t == CONNACK:
            if len(body) != 2:
                raise ValueError("CONNACK with %d-byte body" % len(body))
            self.session_present = body[0] & 0x01
            self.ack_flags = body[0]
            self.rc = body[1]
        elif t == PUBLISH:
            self.dup = (first >> 3) & 1
            self.qos = (first >> 1) & 3
            self.retain = first & 1
            (tlen,) = struct.unpack("!H", body[:2])
            self.topic_bytes = body[2:2 + tlen]
            self.topic = self.topic_bytes.decode("utf-8", "replace")
            off = 2 + tlen
            if self.qos > 0:
                (self.pid,) = struct.unpack("!H", body[off:off + 2])
                off += 2
            self.payload = body[off:]
        elif t in (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK):
            if len(body) != 2:
                raise ValueError("%s with %d-byte body" % (TYPE_NAMES[t], len(body)))
            (self.pid,) = struct.unpack("!H", body)
        elif t == SUBACK:
            (self.pid,) = struct.unpack("!H", body[:2])
            self.codes = list(body[2:])

    @property
    def name(self):
        return TYPE_NAMES[self.type]

    def __repr__(self):
        extra = ""
        if self.type == PUBLISH:
            extra = " topic=%r payload=%r qos=%d dup=%d retain=%d pid=%r" % (
                self.topic, self.payload[:40], self.qos, self.dup, self.retain, self.pid)
        elif self.type == CONNACK:
            extra = " sp=%d rc=%d" % (self.session_present, self.rc)
        elif self.type == SUBACK:
            extra = " pid=%d codes=%r" % (self.pid, self.codes)
        elif self.pid is not None:
            extra = " pid=%d" % self.pid
        return "<%s flags=0x%x%s>" % (self.name, self.flags, extra)


class RawClient:
    """One TCP connection speaking hand-built MQTT."""

    def __init__(self, host, port, timeout=DEFAULT_TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.closed = False
        self.backlog = []   # packets read ahead (see ack()), returned first

    # -- io
    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """send() that reports a broken connection instead of raising."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Timeout()
        r, _, _ = select.select([self.sock], [], [], remaining)
        if not r:
            raise Timeout()
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            self.closed = True
            raise Closed()
        if not data:
            self.closed = True
            raise Closed()
        self.buf += data

    def _try_parse(self):
        """A Packet from self.buf, or None when more bytes are needed."""
        if len(self.buf) < 2:
            return None
        mult, n, i = 1, 0, 1
        while True:
            if i >= len(self.buf):
                return None
            b = self.buf[i]
            n += (b & 0x7F) * mult
            mult *= 128
            i += 1
            if not b & 0x80:
                break
            if i > 4:
                raise ValueError("broker sent a bad remaining length")
        if len(self.buf) < i + n:
            return None
        first = self.buf[0]
        body = bytes(self.buf[i:i + n])
        del self.buf[:i + n]
        return Packet(first, body)

    def recv(self, timeout=DEFAULT_TIMEOUT):
        """The next packet.  Raises Timeout or Closed."""
        if self.backlog:
            return self.backlog.pop(0)
        deadline = time.monotonic() + timeout
        while True:
            p = self._try_parse()
            if p is not None:
                return p
            self._fill(deadline)

    def recv_type(self, ptype, timeout=DEFAULT_TIMEOUT):
        p = self.recv(timeout)
        assert p.type == ptype, "expected %s, got %r" % (TYPE_NAMES[ptype], p)
        return p

    def recv_publish(self, timeout=DEFAULT_TIMEOUT):
        return self.recv_type(PUBLISH, timeout)

    def expect_nothing(self, timeout=0.5):
        """Assert that no packet arrives (and the connection stays open)."""
        try:
            p = self.recv(timeout)
        except Timeout:
            return
        raise AssertionError("expected no packet, got %r" % (p,))

    def wait_closed(self, timeout=DEFAULT_TIMEOUT):
        """Wait for the broker to close the connection.  Returns the list of
        packets received before the close; raises AssertionError if the
        connection is still open after `timeout` seconds."""
        got = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                got.append(self.recv(max(0.0, deadline - time.monotonic())))
            except Closed:
                return got
            except Timeout:
                raise AssertionError(
                    "connection still open after %.1fs (received %r)" % (timeout, got))

    def is_open(self, timeout=1.0):
        """Ping the broker: True when PINGRESP arrives in time.  Packets that
        arrive before it are kept in the backlog for recv()."""
        if not self.try_send(pingreq()):
            return False
        deadline = time.monotonic() + timeout
        while True:
            try:
                p = self._recv_wire(max(0.0, deadline - time.monotonic()))
            except (Closed, Timeout):
                return False
            if p.type == PINGRESP:
                return True
            self.backlog.append(p)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # -- conveniences
    def connect(self, client_id="", timeout=DEFAULT_TIMEOUT, **kw):
        """Send CONNECT and return the CONNACK packet."""
        self.send(connect(client_id, **kw))
        return self.recv_type(CONNACK, timeout)

    def subscribe(self, pid, filters, timeout=DEFAULT_TIMEOUT):
        """filters: list of (filter, qos) or a single filter string (QoS 0).
        Returns the SUBACK."""
        if isinstance(filters, str):
            filters = [(filters, 0)]
        self.send(subscribe(pid, filters))
        return self.wait_for(lambda p: p.type == SUBACK, timeout, "SUBACK")

    def publish(self, topic, payload=b"", qos=0, retain=False, pid=None,
                timeout=DEFAULT_TIMEOUT):
        """Publish and complete the QoS flow as the sender."""
        if qos and pid is None:
            pid = 1
        self.send(publish(topic, payload, qos, retain, pid=pid))
        if qos == 1:
            self.wait_for(lambda p: p.type == PUBACK and p.pid == pid, timeout,
                          "PUBACK pid=%d" % pid)
        elif qos == 2:
            self.wait_for(lambda p: p.type == PUBREC and p.pid == pid, timeout,
                          "PUBREC pid=%d" % pid)
            self.send(pubrel(pid))
            self.wait_for(lambda p: p.type == PUBCOMP and p.pid == pid, timeout,
                          "PUBCOMP pid=%d" % pid)

    def ack(self, p):
        """Acknowledge a received PUBLISH as a receiver (full QoS 2 flow)."""
        if p.qos == 1:
            self.send(puback(p.pid))
        elif p.qos == 2:
            self.send(pubrec(p.pid))
            self.send(pubcomp(self.wait_pubrel(p.pid).pid))

    def wait_pubrel(self, pid, timeout=DEFAULT_TIMEOUT):
        """Read until the PUBREL for `pid`; other packets go to the backlog."""
        p = self.wait_for(lambda p: p.type == PUBREL and p.pid == pid, timeout,
                          "PUBREL pid=%d" % pid)
        assert p.flags == 0x2, "PUBREL flags must be 0x2: %r" % p
        return p

    def wait_for(self, pred, timeout=DEFAULT_TIMEOUT, what="packet"):
        """Read until a packet satisfies pred (backlog first); the packets
        skipped on the way stay in the backlog, in order, for recv()."""
        for i, p in enumerate(self.backlog):
            if pred(p):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            try:
                p = self._recv_wire(max(0.0, deadline - time.monotonic()))
            except Timeout:
                raise AssertionError("no %s within %.1fs (other packets: %r)"
                                     % (what, timeout, self.backlog))
            if pred(p):
                return p
            self.backlog.append(p)

    def _recv_wire(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            p = self._try_parse()
            if p is not None:
                return p
            self._fill(deadline)

    def disconnect(self):
        self.try_send(disconnect())
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
