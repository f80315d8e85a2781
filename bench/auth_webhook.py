#!/usr/bin/python3
"""A minimal auth webhook for measuring the broker's HTTP auth backend
(auth.chain: [http]): HTTP/1.1 keep-alive on asyncio, answers every POST
with 204 (allow) unless the JSON password is "deny" (403), and prints the
requests and TCP connections it saw when stopped (SIGINT/SIGTERM).

    bench/auth_webhook.py PORT
"""

import asyncio
import json
import signal
import sys

stats = {"requests": 0, "connections": 0}


async def serve(reader, writer):
    stats["connections"] += 1
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
            stats["requests"] += 1
            try:
                deny = json.loads(body).get("password") == "deny"
            except ValueError:
                deny = False
            status = b"403 Forbidden" if deny else b"204 No Content"
            writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
            asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print("webhook: %d requests over %d connections" % (stats["requests"],
                                                        stats["connections"]), flush=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
