"""Shutdown with state still in flight: delayed wills, persistent sessions
with queued messages, deliveries between workers.  The broker must exit 0
and (under the ASan build) free everything: the fixture fails the test on
any sanitizer report."""

import socket
import time

import pytest

from mqttraw import (SESSION_EXPIRY_INTERVAL, WILL_DELAY_INTERVAL, connect, connect5,
                     publish, subscribe)

pytestmark = pytest.mark.antenna_only  # antenna's clean-exit promise


def test_sigterm_with_delayed_wills_and_queued_sessions(broker):
    b = broker(workers=2)
    # persistent 3.1.1 sessions with queued QoS 1 messages
    for i in range(6):
        s = socket.create_connection((b.host, b.port))
        s.sendall(connect("held-%d" % i, clean=False) + subscribe(1, [("sd/#", 1)]))
        s.recv(64)
        s.close()
    # MQTT 5 clients whose wills wait for a delay, then vanish
    for i in range(6):
        s = socket.create_connection((b.host, b.port))
        s.sendall(connect5("willer-%d" % i, props=[(SESSION_EXPIRY_INTERVAL, 300)],
                           will=("sd/will", b"gone", 1, False, [(WILL_DELAY_INTERVAL, 120)])))
        s.recv(64)
        s.close()  # no DISCONNECT: the wills are now pending in the sessions
    pub = b.raw_connected("sd-pub")
    for i in range(20):
        pub.publish("sd/t", b"m%d" % i, qos=1, pid=i + 1)
    pub.close()
    time.sleep(0.3)
    b.stop()  # asserts exit code 0; the fixture checks the log for sanitizers
    assert b.returncode == 0
