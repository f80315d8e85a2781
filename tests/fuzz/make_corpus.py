#!/usr/bin/env python3
"""make_corpus.py -- write the seed corpus of fuzz_codec into corpus/codec/.

Each seed is what fuzz_codec.c expects: byte 0 = split pattern (0: one byte
at a time, k: chunks of 1..k bytes), byte 1 = maximum packet size index
(7: 1 MiB), then a client's byte stream of valid MQTT 3.1 / 3.1.1 packets.
Run once from anywhere; the output is committed, this script is only kept to
regenerate it:  python3 tests/fuzz/make_corpus.py
"""
import os
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "codec")


def varint(n):
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            b |= 0x80
        out.append(b)
        if not n:
            return bytes(out)


def s(x):
    if isinstance(x, str):
        x = x.encode()
    return struct.pack(">H", len(x)) + x


def pkt(hdr, body):
    return bytes([hdr]) + varint(len(body)) + body


def connect(proto, cid, clean=True, keepalive=60, will=None, user=None, pw=None):
    name, level = (b"MQIsdp", 3) if proto == 3 else (b"MQTT", 4)
    flags = 0x02 if clean else 0
    payload = s(cid)
    if will:
        topic, msg, qos, retain = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        payload += s(topic) + s(msg)
    if user is not None:
        flags |= 0x80
        payload += s(user)
    if pw is not None:
        flags |= 0x40
        payload += s(pw)
    body = s(name) + bytes([level, flags]) + struct.pack(">H", keepalive) + payload
    return pkt(0x10, body)


def publish(topic, payload, qos=0, retain=False, dup=False, pid=1):
    hdr = 0x30 | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    body = s(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    return pkt(hdr, body)


def subscribe(pid, filters):
    body = struct.pack(">H", pid)
    for f, q in filters:
        body += s(f) + bytes([q])
    return pkt(0x82, body)


def unsubscribe(pid, filters):
    return pkt(0xA2, struct.pack(">H", pid) + b"".join(s(f) for f in filters))


def ack(typ, pid):
    return pkt(typ << 4 | (2 if typ == 6 else 0), struct.pack(">H", pid))


PINGREQ = pkt(0xC0, b"")
DISCONNECT = pkt(0xE0, b"")

SEEDS = {
    "connect_v311_full": (7, connect(4, "client-1", will=("status/client-1", b"offline", 1, True), user="alice", pw=b"secret")),
    "connect_v31_full": (0, connect(3, "old-client", clean=False, will=("lwt", b"gone", 2, False), user="bob", pw=b"pw")),
    "connect_v311_minimal": (255, connect(4, "")),
    "connect_v31_long_client_id": (8, connect(3, "a-client-id-of-thirty-bytes-xy")),
    "publish_qos0": (3, publish("a/b/c", b"hello")),
    "publish_qos1": (0, publish("sensors/temp", b"21.5", qos=1, pid=7)),
    "publish_qos2_retain_dup": (5, publish("x", b"\x00\x01\x02", qos=2, retain=True, dup=True, pid=65535)),
    "publish_300_bytes": (64, publish("big/\u00e9t\u00e9", bytes(range(256)) + bytes(44), qos=1, pid=3)),
    "subscribe_multi": (2, subscribe(10, [("a/b", 0), ("sport/+/player1/#", 1), ("#", 2)])),
    "unsubscribe_multi": (4, unsubscribe(11, ["a/b", "sport/+/player1/#"])),
    "acks": (1, ack(4, 1) + ack(5, 2) + ack(6, 2) + ack(7, 2)),
    "pingreq": (0, PINGREQ),
    "disconnect": (0, DISCONNECT),
    "session_v311": (9, connect(4, "sess", user="u", pw=b"p") + subscribe(1, [("t/#", 1)])
                     + publish("t/1", b"one", qos=1, pid=2) + ack(4, 5) + PINGREQ
                     + unsubscribe(3, ["t/#"]) + DISCONNECT),
    "session_v31": (0, connect(3, "v31", keepalive=10) + publish("q2", b"x", qos=2, pid=9)
                    + ack(6, 9) + PINGREQ + DISCONNECT),
    "server_side": (6, pkt(0x20, b"\x00\x00") + pkt(0x90, b"\x00\x01\x00\x01\x80")
                    + ack(11, 4) + pkt(0xD0, b"")),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (split, stream) in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(bytes([split, 7]) + stream)


if __name__ == "__main__":
    main()
