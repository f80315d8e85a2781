"""A CONNECT held while an asynchronous check answers (proto_hold: the
webhook auth backend here; a cluster node's connect gate while it claims
the client id, the same hold) leaves the connection's watcher in the event
loop until the socket wakes it (session 36: two epoll_ctl(2) fewer a held
CONNECT).  What that must keep:

- bytes the client sends while held (SUBSCRIBE and PUBLISH pipelined after
  its CONNECT, in the same write or later while the answer is still out)
  are read once the answer came, in order, none lost;
- a client that sends nothing more gets its CONNACK and works as before;
- a client that closes while held costs nothing afterwards: the broker goes
  on and the next client connects and works.

The webhook (http.server in a thread on 127.0.0.1) answers allow after
HOLD_S seconds, so each CONNECT is held that long."""

import http.server
import json
import threading
import time

import pytest

import mqttraw
from mqttraw import CONNACK, PUBLISH, SUBACK, RawClient

pytestmark = pytest.mark.antenna_only

HOLD_S = 0.4


class SlowAllow:
    """An auth webhook that answers {"result": "allow"} after HOLD_S."""

    def __init__(self):
        self.lock = threading.Lock()
        self.asked = 0
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with hook.lock:
                    hook.asked += 1
                time.sleep(HOLD_S)
                data = json.dumps({"result": "allow"}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/mqtt/auth" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def held_broker(broker):
    hook = SlowAllow()
    b = broker(auth={"chain": ["http"], "default": "deny", "acl_default": "allow",
                     "http": {"url": hook.url}})
    yield b, hook
    hook.close()


def test_pipelined_after_a_held_connect(held_broker):
    b, hook = held_broker
    c = RawClient(b.host, b.port)
    try:
        t0 = time.monotonic()
        c.send(mqttraw.connect("pipe-1", username="u", password="p")
               + mqttraw.subscribe(1, [("hold/t", 0)])
               + mqttraw.publish("hold/t", b"one"))
        ack = c.recv_type(CONNACK, timeout=10)
        assert ack.body == b"\x00\x00"
        assert time.monotonic() - t0 >= HOLD_S * 0.9, "the CONNECT was not held"
        assert c.recv_type(SUBACK, timeout=5).body == b"\x00\x01\x00"
        p = c.recv_type(PUBLISH, timeout=5)
        assert p.body.endswith(b"one")
    finally:
        c.close()


def test_bytes_sent_while_held(held_broker):
    """The CONNECT alone, then (still held) the SUBSCRIBE and a PUBLISH."""
    b, hook = held_broker
    c = RawClient(b.host, b.port)
    try:
        c.send(mqttraw.connect("pipe-2", username="u", password="p"))
        deadline = time.monotonic() + 5
        while hook.asked < 1:  # the broker asked: the CONNECT is held now
            assert time.monotonic() < deadline, "the webhook was not asked"
            time.sleep(0.01)
        c.send(mqttraw.subscribe(7, [("hold/u", 0)]))
        c.send(mqttraw.publish("hold/u", b"two"))
        assert c.recv_type(CONNACK, timeout=10).body == b"\x00\x00"
        assert c.recv_type(SUBACK, timeout=5).body == b"\x00\x07\x00"
        assert c.recv_type(PUBLISH, timeout=5).body.endswith(b"two")
    finally:
        c.close()


def test_quiet_client_and_a_close_while_held(held_broker):
    b, hook = held_broker
    # gone while held: its answer finds no connection
    gone = RawClient(b.host, b.port)
    gone.send(mqttraw.connect("gone-1", username="u", password="p"))
    deadline = time.monotonic() + 5
    while hook.asked < 1:
        assert time.monotonic() < deadline, "the webhook was not asked"
        time.sleep(0.01)
    gone.close()
    # a client that waits for its CONNACK, as clients do
    c = RawClient(b.host, b.port)
    try:
        c.send(mqttraw.connect("quiet-1", username="u", password="p"))
        assert c.recv_type(CONNACK, timeout=10).body == b"\x00\x00"
        c.send(mqttraw.subscribe(2, [("hold/v", 1)]))
        assert c.recv_type(SUBACK, timeout=5).body == b"\x00\x02\x01"
        c.send(mqttraw.publish("hold/v", b"three"))
        assert c.recv_type(PUBLISH, timeout=5).body.endswith(b"three")
        assert c.is_open()
        b.assert_serving()
    finally:
        c.close()
