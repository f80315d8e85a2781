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

    packet_class = Packet   # how received packets are decoded (RawClient5: Packet5)

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
        return self.packet_class(first, body)

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

    def go_offline(self, timeout=10):
        """DISCONNECT, then wait for the broker's close: once this returns
        the broker has detached the session (a bare close() leaves a window
        in which the session still looks online)."""
        self.try_send(disconnect())
        try:
            self.wait_closed(timeout)
        finally:
            self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ================================================================ MQTT 5.0
#
# Everything below is MQTT 5.0 only and leaves the 3.1/3.1.1 code above
# untouched.  Properties are lists of (identifier, value) pairs, in wire
# order, so duplicates and order can be expressed (and broken on purpose):
#
#     c = RawClient5(host, port)
#     ack = c.connect("cid", props=[(RECEIVE_MAXIMUM, 2)])
#     ack.props.get(TOPIC_ALIAS_MAXIMUM)        # -> 10
#     c.subscribe(1, [("a/#", sub_opts(1, no_local=True))], props=[(SUBSCRIPTION_ID, 7)])
#     c.publish("a/b", b"x", qos=1, props=[(USER_PROPERTY, ("k", "v"))])
#
# An encoder's `props` may also be bytes: the whole property block (length
# included) sent as given, for malformed-packet tests.

AUTH = 15
TYPE_NAMES_V5 = dict(TYPE_NAMES)
TYPE_NAMES_V5[AUTH] = "AUTH"

# Property identifiers [MQTT5 2.2.2.2]
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_ID = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_ID = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFO = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFO = 0x19
RESPONSE_INFO = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUB_AVAILABLE = 0x28
SUBSCRIPTION_ID_AVAILABLE = 0x29
SHARED_SUB_AVAILABLE = 0x2A

_P_BYTE, _P_U16, _P_U32, _P_VARINT, _P_UTF8, _P_BINARY, _P_PAIR = range(7)
PROPERTY_TYPES = {
    PAYLOAD_FORMAT_INDICATOR: _P_BYTE, MESSAGE_EXPIRY_INTERVAL: _P_U32,
    CONTENT_TYPE: _P_UTF8, RESPONSE_TOPIC: _P_UTF8, CORRELATION_DATA: _P_BINARY,
    SUBSCRIPTION_ID: _P_VARINT, SESSION_EXPIRY_INTERVAL: _P_U32,
    ASSIGNED_CLIENT_ID: _P_UTF8, SERVER_KEEP_ALIVE: _P_U16,
    AUTHENTICATION_METHOD: _P_UTF8, AUTHENTICATION_DATA: _P_BINARY,
    REQUEST_PROBLEM_INFO: _P_BYTE, WILL_DELAY_INTERVAL: _P_U32,
    REQUEST_RESPONSE_INFO: _P_BYTE, RESPONSE_INFO: _P_UTF8,
    SERVER_REFERENCE: _P_UTF8, REASON_STRING: _P_UTF8, RECEIVE_MAXIMUM: _P_U16,
    TOPIC_ALIAS_MAXIMUM: _P_U16, TOPIC_ALIAS: _P_U16, MAXIMUM_QOS: _P_BYTE,
    RETAIN_AVAILABLE: _P_BYTE, USER_PROPERTY: _P_PAIR, MAXIMUM_PACKET_SIZE: _P_U32,
    WILDCARD_SUB_AVAILABLE: _P_BYTE, SUBSCRIPTION_ID_AVAILABLE: _P_BYTE,
    SHARED_SUB_AVAILABLE: _P_BYTE,
}

# Reason codes used by the tests [MQTT5 2.4]
RC_SUCCESS = 0x00
RC_GRANTED_QOS_1 = 0x01
RC_GRANTED_QOS_2 = 0x02
RC_DISCONNECT_WITH_WILL = 0x04
RC_NO_MATCHING_SUBSCRIBERS = 0x10
RC_NO_SUBSCRIPTION_EXISTED = 0x11
RC_UNSPECIFIED = 0x80
RC_MALFORMED = 0x81
RC_PROTOCOL_ERROR = 0x82
RC_IMPLEMENTATION_SPECIFIC = 0x83
RC_UNSUPPORTED_PROTOCOL_VERSION = 0x84
RC_CLIENT_ID_NOT_VALID = 0x85
RC_BAD_USERNAME_OR_PASSWORD = 0x86
RC_NOT_AUTHORIZED = 0x87
RC_SERVER_SHUTTING_DOWN = 0x8B
RC_BAD_AUTHENTICATION_METHOD = 0x8C
RC_KEEP_ALIVE_TIMEOUT = 0x8D
RC_SESSION_TAKEN_OVER = 0x8E
RC_TOPIC_FILTER_INVALID = 0x8F
RC_TOPIC_NAME_INVALID = 0x90
RC_PACKET_ID_NOT_FOUND = 0x92
RC_RECEIVE_MAXIMUM_EXCEEDED = 0x93
RC_TOPIC_ALIAS_INVALID = 0x94
RC_PACKET_TOO_LARGE = 0x95
RC_QUOTA_EXCEEDED = 0x97
RC_PAYLOAD_FORMAT_INVALID = 0x99
RC_RETAIN_NOT_SUPPORTED = 0x9A
RC_QOS_NOT_SUPPORTED = 0x9B
RC_SERVER_MOVED = 0x9D
RC_SHARED_SUBS_NOT_SUPPORTED = 0x9E
RC_SUBSCRIPTION_IDS_NOT_SUPPORTED = 0xA1
RC_WILDCARD_SUBS_NOT_SUPPORTED = 0xA2


def _bin(v):
    if isinstance(v, str):
        v = v.encode("utf-8")
    return struct.pack("!H", len(v)) + v


def encode_property(pid, value):
    """One property: identifier + value encoded for the identifier's type."""
    t = PROPERTY_TYPES.get(pid)
    head = varint(pid)
    if t == _P_BYTE:
        return head + bytes([value])
    if t == _P_U16:
        return head + struct.pack("!H", value)
    if t == _P_U32:
        return head + struct.pack("!I", value)
    if t == _P_VARINT:
        return head + varint(value)
    if t in (_P_UTF8, _P_BINARY):
        return head + _bin(value)
    if t == _P_PAIR:
        k, v = value
        return head + _bin(k) + _bin(v)
    raise ValueError("unknown property identifier 0x%02x (pass raw bytes instead)" % pid)


def props_block(props):
    """Property Length + properties.  props: None, a list of (id, value), or
    bytes (returned unchanged: a complete, possibly broken, block)."""
    if props is None:
        return b"\x00"
    if isinstance(props, (bytes, bytearray)):
        return bytes(props)
    body = b"".join(encode_property(pid, v) for pid, v in props)
    return varint(len(body)) + body


class Props:
    """Decoded properties: .items is the list of (id, value) in wire order."""

    def __init__(self, items=()):
        self.items = list(items)

    def get(self, pid, default=None):
        for k, v in self.items:
            if k == pid:
                return v
        return default

    def all(self, pid):
        return [v for k, v in self.items if k == pid]

    def ids(self):
        return [k for k, _ in self.items]

    def __contains__(self, pid):
        return any(k == pid for k, _ in self.items)

    def __len__(self):
        return len(self.items)

    def __repr__(self):
        return "Props(%r)" % [("0x%02x" % k, v) for k, v in self.items]


def decode_varint(data, off):
    """(value, new offset) of a Variable Byte Integer at data[off:]."""
    mult, n = 1, 0
    for i in range(4):
        if off + i >= len(data):
            raise ValueError("truncated variable byte integer")
        b = data[off + i]
        n += (b & 0x7F) * mult
        mult *= 128
        if not b & 0x80:
            return n, off + i + 1
    raise ValueError("variable byte integer longer than 4 bytes")


def decode_props(data, off):
    """(Props, new offset) of the property block at data[off:].  Strings are
    returned as str (bytes when not valid UTF-8), binary data as bytes, user
    properties as (name, value) tuples."""
    length, off = decode_varint(data, off)
    end = off + length
    if end > len(data):
        raise ValueError("property block runs past the packet")
    items = []

    def rd_bin(o):
        (n,) = struct.unpack("!H", data[o:o + 2])
        if o + 2 + n > end:
            raise ValueError("property value runs past the block")
        return data[o + 2:o + 2 + n], o + 2 + n

    def as_str(b):
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return b

    while off < end:
        pid, off = decode_varint(data, off)
        t = PROPERTY_TYPES.get(pid)
        if t == _P_BYTE:
            v, off = data[off], off + 1
        elif t == _P_U16:
            (v,) = struct.unpack("!H", data[off:off + 2])
            off += 2
        elif t == _P_U32:
            (v,) = struct.unpack("!I", data[off:off + 4])
            off += 4
        elif t == _P_VARINT:
            v, off = decode_varint(data, off)
        elif t == _P_UTF8:
            b, off = rd_bin(off)
            v = as_str(b)
        elif t == _P_BINARY:
            v, off = rd_bin(off)
        elif t == _P_PAIR:
            k, off = rd_bin(off)
            val, off = rd_bin(off)
            v = (as_str(k), as_str(val))
        else:
            raise ValueError("unknown property identifier 0x%02x" % pid)
        items.append((pid, v))
    if off != end:
        raise ValueError("property overruns its block")
    return Props(items), end


def sub_opts(qos=0, no_local=False, retain_as_published=False, retain_handling=0):
    """The Subscription Options byte of a SUBSCRIBE [MQTT5 3.8.3.1]."""
    return (qos & 3) | (0x04 if no_local else 0) | (0x08 if retain_as_published else 0) | \
        ((retain_handling & 3) << 4)


def connect5(client_id="", clean_start=True, keepalive=60, props=None, will=None,
             username=None, password=None, proto_name="MQTT", level=5, flags=None):
    """MQTT 5 CONNECT.  will = (topic, payload, qos, retain[, will_props])."""
    f = 0x02 if clean_start else 0
    payload = mqtt_str(client_id)
    if will is not None:
        wtopic, wpayload, wqos, wretain = will[:4]
        wprops = will[4] if len(will) > 4 else None
        f |= 0x04 | (wqos << 3) | (0x20 if wretain else 0)
        if isinstance(wpayload, str):
            wpayload = wpayload.encode()
        payload += props_block(wprops) + mqtt_str(wtopic) + \
            struct.pack("!H", len(wpayload)) + wpayload
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
    var = mqtt_str(proto_name) + bytes([level, f]) + struct.pack("!H", keepalive) + \
        props_block(props)
    return packet(0x10, var + payload)


def publish5(topic, payload=b"", qos=0, retain=False, dup=False, pid=None, props=None):
    if isinstance(payload, str):
        payload = payload.encode()
    first = 0x30 | (0x08 if dup else 0) | ((qos & 3) << 1) | (0x01 if retain else 0)
    body = mqtt_str(topic)
    if qos > 0:
        if pid is None:
            raise ValueError("QoS > 0 PUBLISH needs a packet id")
        body += struct.pack("!H", pid)
    return packet(first, body + props_block(props) + payload)


def _ack5(first, pid, rc, props):
    body = struct.pack("!H", pid)
    if rc is not None or props is not None:
        body += bytes([rc or 0])
        if props is not None:
            body += props_block(props)
    return packet(first, body)


def puback5(pid, rc=None, props=None):
    return _ack5(0x40, pid, rc, props)


def pubrec5(pid, rc=None, props=None):
    return _ack5(0x50, pid, rc, props)


def pubrel5(pid, rc=None, props=None):
    return _ack5(0x62, pid, rc, props)


def pubcomp5(pid, rc=None, props=None):
    return _ack5(0x70, pid, rc, props)


def subscribe5(pid, filters, props=None, first_byte=0x82):
    """filters: list of (filter, options byte) -- see sub_opts()."""
    body = struct.pack("!H", pid) + props_block(props)
    for f, o in filters:
        body += mqtt_str(f) + bytes([o])
    return packet(first_byte, body)


def unsubscribe5(pid, filters, props=None):
    body = struct.pack("!H", pid) + props_block(props)
    for f in filters:
        body += mqtt_str(f)
    return packet(0xA2, body)


def disconnect5(rc=0, props=None):
    if props is None:
        return packet(0xE0, bytes([rc]) if rc else b"")
    return packet(0xE0, bytes([rc]) + props_block(props))


def auth5(rc=0, props=None):
    return packet(0xF0, bytes([rc]) + props_block(props))


class Packet5:
    """A received MQTT 5 packet.  Always: type, flags, body, props (Props).
    CONNACK: session_present, rc; PUBLISH: topic, payload, qos, dup, retain,
    pid; PUBACK/PUBREC/PUBREL/PUBCOMP: pid, rc; SUBACK/UNSUBACK: pid, codes;
    DISCONNECT/AUTH: rc."""

    def __init__(self, first, body):
        self.first = first
        self.type = first >> 4
        self.flags = first & 0x0F
        self.body = body
        self.pid = None
        self.rc = None
        self.props = Props()
        t = self.type
        if t == CONNACK:
            self.ack_flags = body[0]
            self.session_present = body[0] & 0x01
            self.rc = body[1]
            if len(body) > 2:
                self.props, end = decode_props(body, 2)
                if end != len(body):
                    raise ValueError("CONNACK with trailing bytes")
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
            self.props, off = decode_props(body, off)
            self.payload = body[off:]
        elif t in (PUBACK, PUBREC, PUBREL, PUBCOMP):
            (self.pid,) = struct.unpack("!H", body[:2])
            self.rc = body[2] if len(body) > 2 else 0
            if len(body) > 3:
                self.props, _ = decode_props(body, 3)
        elif t in (SUBACK, UNSUBACK):
            (self.pid,) = struct.unpack("!H", body[:2])
            self.props, off = decode_props(body, 2)
            self.codes = list(body[off:])
        elif t in (DISCONNECT, AUTH):
            self.rc = body[0] if body else 0
            if len(body) > 1:
                self.props, _ = decode_props(body, 1)

    @property
    def name(self):
        return TYPE_NAMES_V5[self.type]

    def __repr__(self):
        extra = ""
        if self.type == PUBLISH:
            extra = " topic=%r payload=%r qos=%d dup=%d retain=%d pid=%r" % (
                self.topic, self.payload[:40], self.qos, self.dup, self.retain, self.pid)
        elif self.type == CONNACK:
            extra = " sp=%d rc=0x%02x" % (self.session_present, self.rc)
        elif self.type in (SUBACK, UNSUBACK):
            extra = " pid=%d codes=%r" % (self.pid, self.codes)
        elif self.pid is not None:
            extra = " pid=%d rc=0x%02x" % (self.pid, self.rc)
        elif self.rc is not None:
            extra = " rc=0x%02x" % self.rc
        if len(self.props):
            extra += " %r" % (self.props,)
        return "<%s flags=0x%x%s>" % (self.name, self.flags, extra)


class RawClient5(RawClient):
    """RawClient speaking MQTT 5: packets are decoded as Packet5, and the
    conveniences take and return properties and reason codes.  The inherited
    3.1.1 encoders still work where the wire format is the same (PINGREQ,
    the 2-byte PUBACK/PUBREC/PUBREL/PUBCOMP meaning reason code 0)."""

    packet_class = Packet5

    def connect(self, client_id="", timeout=DEFAULT_TIMEOUT, **kw):
        """Send an MQTT 5 CONNECT (see connect5) and return the CONNACK."""
        self.send(connect5(client_id, **kw))
        return self.recv_type(CONNACK, timeout)

    def subscribe(self, pid, filters, props=None, timeout=DEFAULT_TIMEOUT):
        """filters: list of (filter, options byte), or one filter string
        (QoS 0, default options).  Returns the SUBACK."""
        if isinstance(filters, str):
            filters = [(filters, 0)]
        self.send(subscribe5(pid, filters, props))
        return self.wait_for(lambda p: p.type == SUBACK and p.pid == pid, timeout, "SUBACK")

    def unsubscribe(self, pid, filters, props=None, timeout=DEFAULT_TIMEOUT):
        self.send(unsubscribe5(pid, filters, props))
        return self.wait_for(lambda p: p.type == UNSUBACK and p.pid == pid, timeout, "UNSUBACK")

    def publish(self, topic, payload=b"", qos=0, retain=False, pid=None, props=None,
                timeout=DEFAULT_TIMEOUT):
        """Publish and complete the QoS flow as the sender.  Returns the
        PUBACK (QoS 1) or the PUBREC (QoS 2; PUBREL/PUBCOMP follow unless its
        reason code is an error), None for QoS 0."""
        if qos and pid is None:
            pid = 1
        self.send(publish5(topic, payload, qos, retain, pid=pid, props=props))
        if qos == 1:
            return self.wait_for(lambda p: p.type == PUBACK and p.pid == pid, timeout,
                                 "PUBACK pid=%d" % pid)
        if qos == 2:
            rec = self.wait_for(lambda p: p.type == PUBREC and p.pid == pid, timeout,
                                "PUBREC pid=%d" % pid)
            if rec.rc < 0x80:
                self.send(pubrel(pid))
                self.wait_for(lambda p: p.type == PUBCOMP and p.pid == pid, timeout,
                              "PUBCOMP pid=%d" % pid)
            return rec
        return None

    def disconnect(self, rc=0, props=None):
        self.try_send(disconnect5(rc, props))
        self.close()

    def expect_disconnect(self, rc, timeout=DEFAULT_TIMEOUT):
        """Wait for the broker to close the connection; assert that the last
        packet before the close was a DISCONNECT with reason code `rc` (an
        int or a tuple of acceptable codes).  Returns that DISCONNECT."""
        got = self.wait_closed(timeout)
        ok = rc if isinstance(rc, tuple) else (rc,)
        assert got and got[-1].type == DISCONNECT, \
            "expected DISCONNECT %r before the close, got %r" % (rc, got)
        assert got[-1].rc in ok, "expected DISCONNECT %r, got %r" % (
            ["0x%02x" % c for c in ok], got[-1])
        return got[-1]


def connect_v5(host, port, client_id="", timeout=DEFAULT_TIMEOUT, **kw):
    """A RawClient5 after a successful MQTT 5 CONNECT (CONNACK reason code
    0 asserted); the CONNACK is kept in .connack."""
    c = RawClient5(host, port, timeout=timeout)
    ack = c.connect(client_id, timeout=timeout, **kw)
    assert ack.rc == 0, ack
    c.connack = ack
    return c


def expect_close5(client, allowed=(RC_MALFORMED, RC_PROTOCOL_ERROR), timeout=DEFAULT_TIMEOUT):
    """Wait until the broker closes `client`.  Before the close it may send
    at most one CONNACK or DISCONNECT, whose reason code must be in
    `allowed`; nothing else.  Returns the packets received."""
    got = client.wait_closed(timeout)
    assert len(got) <= 1, "expected at most one CONNACK/DISCONNECT before the close: %r" % got
    for p in got:
        assert p.type in (CONNACK, DISCONNECT), "unexpected %r before the close" % p
        assert p.rc in allowed, "reason code 0x%02x not in %r: %r" % (
            p.rc, ["0x%02x" % a for a in allowed], p)
    return got


# ------------------------------------------------------------ enhanced auth

class ScramClient:
    """The client side of SCRAM-SHA-512 (RFC 5802 with SHA-512), computed
    with hashlib/hmac: first() is the CONNECT's Authentication Data,
    final(server_first) the next AUTH's, verify(server_final) checks the
    server's signature."""

    def __init__(self, user, password, nonce=None):
        import base64
        import os
        self.user = user
        self.password = password.encode() if isinstance(password, str) else password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.bare = "n=%s,r=%s" % (user.replace("=", "=3D").replace(",", "=2C"), self.nonce)
        self.server_sig = None

    def first(self):
        return ("n,," + self.bare).encode()

    def final(self, server_first, password=None):
        import base64
        import hashlib
        import hmac
        sf = server_first.decode()
        attrs = dict(kv.split("=", 1) for kv in sf.split(","))
        assert attrs["r"].startswith(self.nonce), sf
        salt = base64.b64decode(attrs["s"])
        salted = hashlib.pbkdf2_hmac("sha512", password or self.password, salt,
                                     int(attrs["i"]), 64)
        without_proof = "c=biws,r=%s" % attrs["r"]
        auth_msg = ("%s,%s,%s" % (self.bare, sf, without_proof)).encode()
        client_key = hmac.new(salted, b"Client Key", hashlib.sha512).digest()
        stored = hashlib.sha512(client_key).digest()
        sig = hmac.new(stored, auth_msg, hashlib.sha512).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        server_key = hmac.new(salted, b"Server Key", hashlib.sha512).digest()
        self.server_sig = hmac.new(server_key, auth_msg, hashlib.sha512).digest()
        return ("%s,p=%s" % (without_proof, base64.b64encode(proof).decode())).encode()

    def verify(self, server_final):
        import base64
        return server_final == b"v=" + base64.b64encode(self.server_sig)
