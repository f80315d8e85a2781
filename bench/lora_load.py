#!/usr/bin/env python3
"""bench/lora_load.py -- packet forwarders flat out (or paced): PUSH_DATA
datagrams of RXPK rxpk each (a LoRaWAN data uplink, 23 bytes of
PHYPayload, as a real gateway sends them) from GATEWAYS gateways on one UDP
socket each, for SECONDS; the PUSH_ACKs are read and counted.  Prints
datagrams sent, rxpk sent and acks received.

    bench/lora_load.py PORT [SECONDS] [RXPK] [GATEWAYS] [RATE]

RATE: datagrams per second in all (0 = as fast as Python sends)."""

import base64
import json
import select
import socket
import sys
import time


def main():
    port = int(sys.argv[1])
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 10
    nrx = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    ngw = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    rate = float(sys.argv[5]) if len(sys.argv) > 5 else 0
    phy = bytes([0x40, 0xda, 0x1b, 0x01, 0x26, 0x80, 0x01, 0x00, 0x01]) + bytes(range(14))
    rx = {"tmst": 3512348611, "time": "2026-12-06T18:00:00.000000Z", "chan": 2, "rfch": 0,
          "freq": 868.1, "stat": 1, "modu": "LORA", "datr": "SF7BW125", "codr": "4/5",
          "rssi": -35, "lsnr": 5.1, "size": len(phy), "data": base64.b64encode(phy).decode()}
    body = json.dumps({"rxpk": [rx] * nrx}).encode()
    socks, heads = [], []
    for g in range(ngw):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
        heads.append(bytes([2, 0, 0, 0]) + (0xaa555a0000000000 + g).to_bytes(8, "big"))
    sent = acks = 0
    start = time.monotonic()
    end = start + secs
    while True:
        now = time.monotonic()
        if now >= end:
            break
        if rate and sent >= (now - start) * rate:
            time.sleep(0.0005)
        else:
            for i, s in enumerate(socks):
                tok = sent & 0xffff
                h = heads[i]
                try:
                    s.send(h[:1] + tok.to_bytes(2, "big") + h[3:] + body)
                    sent += 1
                except BlockingIOError:
                    pass
        if sent % 64 == 0:
            for s in select.select(socks, [], [], 0)[0]:
                try:
                    while s.recv(16):
                        acks += 1
                except BlockingIOError:
                    pass
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and acks < sent:
        for s in select.select(socks, [], [], 0.1)[0]:
            try:
                while s.recv(16):
                    acks += 1
            except BlockingIOError:
                pass
    print("datagrams %d rxpk %d acks %d in %.1f s (%.0f rxpk/s offered)"
          % (sent, sent * nrx, acks, secs, sent * nrx / secs))


if __name__ == "__main__":
    main()
