"""A connection moves, once, to the worker that owns its session (the home
worker, by client id) right after CONNECT.  Bytes that arrive in the same
read as the CONNECT must travel with it and be handled on the new worker,
in order."""

import socket
import time

import pytest

from mqttraw import CONNACK, SUBACK, connect, publish, subscribe, puback

pytestmark = pytest.mark.antenna_only  # about antenna's worker model


def read_packets(sock, n, timeout=5.0):
    """Read n MQTT packets as (first_byte, body)."""
    sock.settimeout(timeout)
    buf = b""
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        while True:
            if len(buf) >= 2:
                mult, length, i = 1, 0, 1
                while i < len(buf) and i < 5:
                    length += (buf[i] & 0x7F) * mult
                    mult *= 128
                    if not buf[i] & 0x80:
                        break
                    i += 1
                else:
                    break
                if len(buf) >= i + 1 + length:
                    out.append((buf[0], buf[i + 1:i + 1 + length]))
                    buf = buf[i + 1 + length:]
                    continue
            break
        if len(out) >= n:
            break
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return out


@pytest.mark.parametrize("workers", [2, 4])
def test_packets_pipelined_after_connect_survive_the_move(broker, workers):
    b = broker(workers=workers)
    # several client ids so that some land on another worker than the one
    # that accepted them (home = hash(client id) % workers)
    for k in range(12):
        cid = "pipelined-%d" % k
        s = socket.create_connection((b.host, b.port))
        # one write: CONNECT, SUBSCRIBE, then a PUBLISH to the topic just
        # subscribed: all handled after the move, in this order
        s.sendall(connect(cid) + subscribe(1, [("pipe/%d" % k, 1)]) +
                  publish("pipe/%d" % k, b"hello %d" % k, qos=1, pid=7))
        pk = read_packets(s, 4)
        types = [p[0] >> 4 for p in pk]
        assert types[0] == CONNACK and types[1] == SUBACK, types
        # the broker's PUBACK (pid 7) and the delivery to ourselves, any order
        rest = {p[0] >> 4: p for p in pk[2:]}
        assert 4 in rest and 3 in rest, types
        first, body = rest[3]
        tlen = (body[0] << 8) | body[1]
        assert body[2:2 + tlen] == b"pipe/%d" % k
        assert body[2 + tlen + 2:] == b"hello %d" % k
        s.sendall(puback((body[2 + tlen] << 8) | body[3 + tlen]))
        s.close()
    b.assert_serving()
