#!/usr/bin/env python3
"""make_corpus.py -- write the seed corpora of fuzz_codec (corpus/codec/),
fuzz_ws (corpus/ws/), fuzz_conf (corpus/conf/) and fuzz_acl (corpus/acl/).

Each seed is what fuzz_codec.c expects: byte 0 = split pattern (0: one byte
at a time, k: chunks of 1..k bytes), byte 1 = maximum packet size index
(7: 1 MiB), then a byte stream of valid MQTT 3.1 / 3.1.1 packets (SEEDS) or
MQTT 5.0 packets (SEEDS_V5, files named v5_*).
A fuzz_ws seed (WS_SEEDS): byte 0 = split pattern, byte 1 = listener options
(bit 0: ws_max_frame 64, bit 1: ws_allowed_origins set), then what a client
sends: the upgrade request, then WebSocket frames.
A fuzz_conf seed is a configuration file as it is (CONF_SEEDS, and
config.example.yaml); a fuzz_acl seed an ACL file as it is (ACL_SEEDS).
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


# ---- MQTT 5.0 ----------------------------------------------------------------

def props(*items):
    """Property block with its Property Length."""
    body = b"".join(items)
    return varint(len(body)) + body


def p_byte(pid, v):
    return bytes([pid, v])


def p_u16(pid, v):
    return bytes([pid]) + struct.pack(">H", v)


def p_u32(pid, v):
    return bytes([pid]) + struct.pack(">I", v)


def p_var(pid, v):
    return bytes([pid]) + varint(v)


def p_str(pid, x):
    return bytes([pid]) + s(x)


def p_user(k, v):
    return bytes([0x26]) + s(k) + s(v)


def connect5(cid, clean=True, keepalive=60, cprops=b"", will=None, user=None, pw=None):
    flags = 0x02 if clean else 0
    payload = s(cid)
    if will:
        topic, msg, qos, retain, wprops = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        payload += props(wprops) + s(topic) + s(msg)
    if user is not None:
        flags |= 0x80
        payload += s(user)
    if pw is not None:
        flags |= 0x40
        payload += s(pw)
    body = s(b"MQTT") + bytes([5, flags]) + struct.pack(">H", keepalive) + props(cprops) + payload
    return pkt(0x10, body)


def publish5(topic, payload, pprops=b"", qos=0, retain=False, dup=False, pid=1):
    hdr = 0x30 | (0x08 if dup else 0) | qos << 1 | (1 if retain else 0)
    body = s(topic) + (struct.pack(">H", pid) if qos else b"") + props(pprops) + payload
    return pkt(hdr, body)


def subscribe5(pid, filters, sprops=b""):
    body = struct.pack(">H", pid) + props(sprops)
    for f, o in filters:
        body += s(f) + bytes([o])
    return pkt(0x82, body)


def unsubscribe5(pid, filters, uprops=b""):
    return pkt(0xA2, struct.pack(">H", pid) + props(uprops) + b"".join(s(f) for f in filters))


def ack5(typ, pid, reason=None, aprops=None):
    body = struct.pack(">H", pid)
    if reason is not None:
        body += bytes([reason])
        if aprops is not None:
            body += props(aprops)
    return pkt(typ << 4 | (2 if typ == 6 else 0), body)


def reason_pkt(typ, reason=None, rprops=None):
    body = b""
    if reason is not None:
        body += bytes([reason])
        if rprops is not None:
            body += props(rprops)
    return pkt(typ << 4, body)


CONNECT5_FULL = connect5(
    "dev-5", clean=False,
    cprops=p_u32(0x11, 3600) + p_u16(0x21, 20) + p_u32(0x27, 65536) + p_u16(0x22, 10)
    + p_byte(0x19, 1) + p_byte(0x17, 0) + p_user("app", "demo") + p_str(0x15, "PLAIN")
    + p_str(0x16, b"\x00u\x00p"),
    will=("status/dev-5", b"offline", 1, True,
          p_u32(0x18, 30) + p_byte(0x01, 1) + p_u32(0x02, 600) + p_str(0x03, "text/plain")
          + p_str(0x08, "status/ack") + p_str(0x09, b"\x01\x02") + p_user("w", "1")),
    user="alice", pw=b"secret")

SEEDS_V5 = {
    "v5_connect_full": (7, CONNECT5_FULL),
    "v5_connect_minimal": (0, connect5("", clean=False)),
    "v5_publish_props": (3, publish5("sensors/t", b"21.5",
                                     p_byte(0x01, 1) + p_u32(0x02, 60) + p_str(0x03, "text/plain")
                                     + p_str(0x08, "reply/t") + p_str(0x09, b"c-1")
                                     + p_user("unit", "C") + p_user("unit", "K"),
                                     qos=1, pid=7)),
    "v5_publish_alias": (5, publish5("long/topic/name", b"a", p_u16(0x23, 1), qos=2, pid=9)
                         + publish5("", b"b", p_u16(0x23, 1))),
    "v5_publish_from_server": (2, publish5("t", b"x", p_var(0x0B, 1) + p_var(0x0B, 300)
                                           + p_var(0x0B, 268435455))),
    "v5_subscribe": (4, subscribe5(10, [("a/b", 0x2D), ("$share/g/jobs/#", 0x01), ("#", 0x12)],
                                   p_var(0x0B, 42) + p_user("k", "v"))),
    "v5_unsubscribe": (1, unsubscribe5(11, ["a/b", "$share/g/jobs/#"], p_user("k", "v"))),
    "v5_acks": (1, ack5(4, 1) + ack5(5, 2, 0x10) + ack5(6, 2, 0x92, b"")
                + ack5(7, 2, 0x00, p_str(0x1F, "done") + p_user("k", "v"))
                + ack5(4, 3, 0x97, p_str(0x1F, "quota"))),
    "v5_disconnect": (0, reason_pkt(14, 0x04, p_u32(0x11, 0) + p_str(0x1F, "bye")
                                    + p_str(0x1C, "other:1883"))
                      + reason_pkt(14) + reason_pkt(14, 0x8E)),
    "v5_auth": (6, reason_pkt(15, 0x18, p_str(0x15, "SCRAM-SHA-1") + p_str(0x16, b"n,,n=u,r=x"))
                + reason_pkt(15, 0x19, p_str(0x15, "SCRAM-SHA-1")) + reason_pkt(15)),
    "v5_server_side": (8, pkt(0x20, b"\x01\x00" + props(p_str(0x12, "auto-1") + p_u16(0x13, 30)
                                                       + p_byte(0x24, 1) + p_byte(0x2A, 0)))
                       + pkt(0x90, b"\x00\x0a" + props(p_str(0x1F, "ok")) + b"\x00\x01\x9e")
                       + pkt(0xB0, b"\x00\x0b" + props(b"") + b"\x00\x11")),
    "v5_session": (9, connect5("s5", cprops=p_u16(0x22, 5))
                   + subscribe5(1, [("t/#", 0x01)], p_var(0x0B, 1))
                   + publish5("t/1", b"one", p_u16(0x23, 3), qos=1, pid=2)
                   + publish5("", b"two", p_u16(0x23, 3), qos=1, pid=3)
                   + ack5(4, 5) + PINGREQ + unsubscribe5(4, ["t/#"])
                   + reason_pkt(14, 0x00, b"")),
}

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


# ---- WebSocket (fuzz_ws) -------------------------------------------------------

OUT_WS = os.path.join(os.path.dirname(OUT), "ws")


def ws_request(path="/mqtt", proto="mqtt", origin=None, extra=()):
    lines = ["GET %s HTTP/1.1" % path, "Host: broker.example:8083", "Upgrade: websocket",
             "Connection: keep-alive, Upgrade", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
             "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: %s" % proto]
    if origin:
        lines.append("Origin: %s" % origin)
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def ws_frame(opcode, payload, fin=True, mask=b"\x37\xfa\x21\x3d"):
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", first, 0x80 | 127, n)
    return hdr + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


SESSION = connect(4, "ws-1") + subscribe(1, [("t/#", 1)]) + publish("t/1", b"x", qos=1, pid=2)

WS_SEEDS = {
    "upgrade_only": (0, 0, ws_request()),
    "connect_one_frame": (5, 0, ws_request() + ws_frame(2, connect(4, "ws-a"))),
    "empty_frames": (1, 0, ws_request() + ws_frame(2, b"") + ws_frame(2, connect(4, "e"))
                     + ws_frame(2, b"") + ws_frame(2, b"", fin=False) + ws_frame(0, PINGREQ)),
    "session_split_frames": (9, 0, ws_request(proto="mqttv3.1, mqtt")
                             + ws_frame(2, SESSION[:7], fin=False)
                             + ws_frame(9, b"ping") + ws_frame(0, SESSION[7:20], fin=False)
                             + ws_frame(0, SESSION[20:]) + ws_frame(10, b"")
                             + ws_frame(8, struct.pack("!H", 1000) + b"bye")),
    "v5_medium_frame": (64, 0, ws_request() + ws_frame(2, CONNECT5_FULL
                                                       + publish5("big", bytes(300), qos=1))),
    "too_big": (3, 1, ws_request() + ws_frame(2, publish("t", bytes(100)))),
    "text_frame": (2, 0, ws_request() + ws_frame(1, b"hello")),
    "origin_allowed": (4, 2, ws_request(origin="https://a.example") + ws_frame(2, PINGREQ)),
    "origin_refused": (4, 2, ws_request(origin="https://b.example") + ws_frame(2, PINGREQ)),
    "bad_key": (0, 0, ws_request().replace(b"Key: dGhl", b"Key: xxx")),
    "wrong_path": (7, 0, ws_request(path="/other?x=1")),
    "extra_headers": (11, 3, ws_request(origin="http://localhost:8080",
                                        extra=("User-Agent: fuzz/1.0", "Pragma: no-cache",
                                               "Sec-WebSocket-Extensions: permessage-deflate"))
                      + ws_frame(2, connect(4, "x"))),
}


# ---- configuration files (fuzz_conf) and ACL files (fuzz_acl) -----------------

OUT_CONF = os.path.join(os.path.dirname(OUT), "conf")
OUT_ACL = os.path.join(os.path.dirname(OUT), "acl")
EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                       "config.example.yaml")

CONF_SEEDS = {
    "empty": "",
    "comment_only": "# nothing set\n",
    "doc_marker": "---\n",
    "two_documents": "workers: 1\n---\nworkers: 2\n",
    # what tests/integration/conftest.py writes for a broker
    "test_broker": "workers: 1\nlog:\n  level: debug\nlisteners:\n  - port: 0\n"
                   "    address: 127.0.0.1\npersistence:\n  enabled: false\n"
                   "api:\n  enabled: false\nauth:\n  ban:\n    loopback: false\n",
    "listeners_all": "listeners:\n"
                     "  - {name: plain, address: 0.0.0.0, port: 1883, proxy_protocol: v2}\n"
                     "  - name: tls\n    address: \"::\"\n    port: 8883\n    transport: tls\n"
                     "    cert_file: /c.pem\n    key_file: /k.pem\n    ca_file: /ca.pem\n"
                     "    require_client_cert: yes\n    cert_username: cn\n"
                     "    tls_min_version: \"1.3\"\n    ciphers: HIGH\n"
                     "  - name: ws\n    port: 8083\n    transport: ws\n    ws_path: /mqtt\n"
                     "    ws_max_frame: 65536\n"
                     "    ws_allowed_origins: [\"https://a.example\", \"http://h:8080\"]\n"
                     "  - name: wss\n    port: 8084\n    transport: wss\n"
                     "    cert_file: c\n    key_file: k\n    handshake_timeout: 5\n",
    "auth_backends": "auth:\n  default: deny\n  password_file: /etc/passwd.m\n"
                     "  acl_file: /etc/acl\n  acl_default: allow\n"
                     "  client_id_binding: username\n"
                     "  jwt:\n    alg: RS256\n    public_key_file: /k.pem\n"
                     "    required_claims: [sub, exp]\n    leeway_s: 30\n"
                     "  ban:\n    max_failures: 3\n    window_s: 10\n"
                     "  http:\n    urls:\n      - http://127.0.0.1:8000/auth\n"
                     "      - http://127.0.0.1:8001/auth\n    format: form\n"
                     "  redis:\n    host: ::1\n    prefix: \"x:\"\n",
    "anchors": "mqtt: &m\n  max_inflight: 7\n  max_queued: 9\nlimits: *m\n",
    "alias_listeners": "listeners:\n  - &l {port: 1}\n  - *l\n  - *l\n",
    "flow_root": "{workers: 3, mqtt: {max_qos: 1, shared_strategy: sticky}, "
                 "log: {format: json, target: syslog}}\n",
    "bad_type": "mqtt:\n  max_inflight: [1, 2]\n",
    "bad_key": "mqtt:\n  max_infligth: 3\n",
    "bad_yaml": "mqtt:\n  - a\n b: [\n",
    "null_values": "mqtt:\nlimits: ~\nlisteners:\n  - port: 1\n    name: null\n",
    "big_numbers": "mqtt:\n  max_packet_size: 18446744073709551616\n",
    "quoted": "log:\n  file: 'a\\tb'\n  level: \"warn\"\n",
    # the sinks module's section (nested mappings, a driver's keys) and a
    # rule's sink action (free-form driver keys)
    "sinks": "sinks:\n  max_record_bytes: 4096\n  sinks:\n    - name: h\n      type: webhook\n"
             "      url: http://127.0.0.1:9/x\n      headers: [\"X-A: b\"]\n      body: '${p}'\n"
             "      buffer: {max_messages: 5, max_bytes: 2048, overflow: backpressure}\n"
             "      batch: {max_messages: 2, linger: 5ms}\n"
             "      retry: {max_attempts: 3, backoff: 10ms, max_backoff: 1s}\n"
             "      dead_letter_topic: dl/h\n"
             "rules:\n  rules:\n    - id: r\n      sql: SELECT payload AS p FROM \"t/#\"\n"
             "      actions:\n        - {type: sink, sink: h, body: x, n: 3, b: true}\n",
}

ACL_SEEDS = {
    # tests/integration/test_41_acl.py
    "test_41": "# every client\nany\nallow all public/#\ndeny pub readonly/#\n"
               "allow sub readonly/#\nallow all users/%u/#\nallow all clients/%c/#\n"
               "deny sub secret/#\nallow sub r/#\n\nuser alice\nallow pub alice-only/#\n"
               "allow sub alerts/+/high\n\nclient gateway-1\nallow pub gw/#\n",
    # tests/integration/test_46_authz_delivery.py
    "test_46": "any\nallow sub $SYS/#\nuser alice\nallow all alice/#\nuser bob\n"
               "allow all bob/#\nuser carol\nallow all feed/#\nuser ops\nallow all #\n",
    "overlap": "allow sub a/b\ndeny sub a/#\nallow read +/+/c\ndeny write #\n"
               "pattern\nreadwrite both x/%u/%c/+\n",
    "dollar": "deny sub $SYS/broker/#\nallow sub $SYS/#\nallow sub +/x\nallow all #\n"
              "user $u\nallow pub $u/%u\n",
    "crlf": "user bob\r\nallow\tpub\tb/+\r\n\r\nclient c1\r\ndeny subscribe c/#\r\n",
    "bad_access": "any\nallow nothing a/b\n",
    "bad_filter": "allow pub a/#/b\n",
    "too_many_words": "allow pub a b c\n",
    "no_newline": "client x\nallow all %c",
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, (split, stream) in list(SEEDS.items()) + list(SEEDS_V5.items()):
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(bytes([split, 7]) + stream)
    os.makedirs(OUT_WS, exist_ok=True)
    for name, (split, opts, stream) in WS_SEEDS.items():
        with open(os.path.join(OUT_WS, name), "wb") as f:
            f.write(bytes([split, opts]) + stream)
    os.makedirs(OUT_CONF, exist_ok=True)
    with open(EXAMPLE, "rb") as src, open(os.path.join(OUT_CONF, "config_example"), "wb") as f:
        f.write(src.read())
    for name, text in CONF_SEEDS.items():
        with open(os.path.join(OUT_CONF, name), "wb") as f:
            f.write(text.encode())
    os.makedirs(OUT_ACL, exist_ok=True)
    for name, text in ACL_SEEDS.items():
        with open(os.path.join(OUT_ACL, name), "wb") as f:
            f.write(text.encode())


if __name__ == "__main__":
    main()
