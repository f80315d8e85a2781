"""IPv6 listeners: a broker listening on ::1 serves MQTT over IPv6."""

import socket

import pytest

pytestmark = pytest.mark.antenna_only


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
def test_connect_over_ipv6_loopback(broker):
    b = broker(listener={"address": "::1"})
    assert b.host == "::1"
    c = b.raw_connected("v6-client")
    assert c.sock.family == socket.AF_INET6
    sub = c.subscribe(1, [("v6/t", 1)])
    assert sub.codes == [1]
    c.publish("v6/t", b"over ipv6", qos=1, pid=2)
    p = c.recv_publish()
    assert p.payload == b"over ipv6"
    c.ack(p)
    b.wait_log(r"client 'v6-client' \(::1:\d+\): connected")
    c.disconnect()
    # nothing listens on 127.0.0.1 for this listener
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", b.port), timeout=1).close()
