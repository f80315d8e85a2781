"""Raw WebSocket pieces for the tests that speak it by hand: the upgrade
request (every header can be changed or left out) and a client frame
(masked, as RFC 6455 requires of clients)."""

import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request(path="/mqtt", proto="mqtt", extra="", key=KEY, version="13",
            connection="Upgrade", upgrade="websocket", host="127.0.0.1"):
    lines = ["GET %s HTTP/1.1" % path]
    if host is not None:
        lines.append("Host: %s" % host)
    if upgrade is not None:
        lines.append("Upgrade: %s" % upgrade)
    if connection is not None:
        lines.append("Connection: %s" % connection)
    if key is not None:
        lines.append("Sec-WebSocket-Key: %s" % key)
    if version is not None:
        lines.append("Sec-WebSocket-Version: %s" % version)
    if proto is not None:
        lines.append("Sec-WebSocket-Protocol: %s" % proto)
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode()


def frame(opcode, payload, fin=True, mask=b"\x11\x22\x33\x44"):
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        hdr = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        hdr = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        hdr = struct.pack("!BBQ", first, 0x80 | 127, n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return hdr + mask + masked
