"""MQTT 5 enhanced authentication (issue 7 part A, issue 4's extension
point): SCRAM-SHA-512 over the password file's SCRAM verifiers (StoredKey
and ServerKey of a PBKDF2-SHA512 salted password, issue 13 item 4),
driven byte by byte with mqttraw (CONNECT -> AUTH 0x18 -> AUTH 0x18 ->
CONNACK, and re-authentication with AUTH 0x19), the client side computed
with hashlib/hmac."""

import pytest

import mqttraw
from authutil import scram_line
from mqttraw import (AUTH, AUTHENTICATION_DATA as DATA, AUTHENTICATION_METHOD as METHOD,
                     CONNACK, auth5, connect5)

pytestmark = pytest.mark.antenna_only

M = "SCRAM-SHA-512"


@pytest.fixture
def scram_broker(broker, tmp_path):
    pw = tmp_path / "passwd"
    pw.write_text(scram_line("alice", "wonderland", iterations=4096) + "\n" +
                  scram_line("b,o=b", "builder") + "\n")
    return broker(auth={"password_file": str(pw)}, mqtt={"allow_anonymous": False})


def start(b, scram, cid="s1"):
    c = mqttraw.RawClient5(b.host, b.port)
    c.send(connect5(cid, props=[(METHOD, M), (DATA, scram.first())]))
    return c


def test_scram_success(scram_broker):
    b = scram_broker
    s = mqttraw.ScramClient("alice", "wonderland")
    c = start(b, s)
    a = c.recv_type(AUTH)
    assert a.rc == 0x18 and a.props.get(METHOD) == M
    server_first = a.props.get(DATA)
    assert b",i=4096" in server_first
    c.send(auth5(0x18, [(METHOD, M), (DATA, s.final(server_first))]))
    ack = c.recv_type(CONNACK)
    assert ack.rc == 0, ack
    assert ack.props.get(METHOD) == M
    assert s.verify(ack.props.get(DATA)), "server signature does not verify"
    b.wait_log(r"client 's1' .*connected .*user 'alice'")
    # the session works
    assert c.subscribe(1, "x/y").codes == [0]
    c.publish("x/y", b"hi", qos=1, pid=2)
    assert c.recv_publish().payload == b"hi"
    # re-authentication (AUTH 0x19) with the same method
    s2 = mqttraw.ScramClient("alice", "wonderland")
    c.send(auth5(0x19, [(METHOD, M), (DATA, s2.first())]))
    a = c.wait_for(lambda p: p.type == AUTH, what="AUTH 0x18")
    assert a.rc == 0x18
    c.send(auth5(0x18, [(METHOD, M), (DATA, s2.final(a.props.get(DATA)))]))
    done = c.wait_for(lambda p: p.type == AUTH, what="AUTH 0x00")
    assert done.rc == 0 and s2.verify(done.props.get(DATA))
    b.wait_log(r"client 's1' .*re-authenticated \(SCRAM-SHA-512, user 'alice'\)")
    c.disconnect()


def test_scram_escaped_user_name(scram_broker):
    s = mqttraw.ScramClient("b,o=b", "builder")
    c = start(scram_broker, s, "s2")
    a = c.recv_type(AUTH)
    c.send(auth5(0x18, [(METHOD, M), (DATA, s.final(a.props.get(DATA)))]))
    ack = c.recv_type(CONNACK)
    assert ack.rc == 0 and s.verify(ack.props.get(DATA))
    c.disconnect()


def test_scram_wrong_password(scram_broker):
    b = scram_broker
    s = mqttraw.ScramClient("alice", "wonderland")
    c = start(b, s, "s3")
    a = c.recv_type(AUTH)
    c.send(auth5(0x18, [(METHOD, M), (DATA, s.final(a.props.get(DATA), b"guess"))]))
    ack = c.recv_type(CONNACK)
    assert ack.rc == 0x86
    c.wait_closed()
    b.wait_log(r"SCRAM-SHA-512 authentication failed: wrong proof")


def test_scram_unknown_user_and_bad_messages(scram_broker):
    b = scram_broker
    # an unknown user gets a server-first like anyone's (issue 13 item 11,
    # see test_45_auth_hardening.py) and fails at the proof
    s = mqttraw.ScramClient("nobody", "x")
    c = start(b, s, "s4")
    a = c.recv_type(AUTH)
    c.send(auth5(0x18, [(METHOD, M), (DATA, s.final(a.props.get(DATA)))]))
    assert c.recv_type(CONNACK).rc == 0x86
    c.close()
    c = mqttraw.RawClient5(b.host, b.port)
    c.send(connect5("s5", props=[(METHOD, M), (DATA, b"p=tls-unique,,n=alice,r=abc")]))
    assert c.recv_type(CONNACK).rc == 0x86
    c.close()
    # a nonce that is not the server's
    s = mqttraw.ScramClient("alice", "wonderland")
    c = start(b, s, "s6")
    a = c.recv_type(AUTH)
    final = s.final(a.props.get(DATA)).replace(b"r=" + s.nonce.encode(), b"r=X" + s.nonce.encode())
    c.send(auth5(0x18, [(METHOD, M), (DATA, final)]))
    assert c.recv_type(CONNACK).rc == 0x86
    c.close()


def test_unsupported_method_and_stray_auth(scram_broker, broker):
    b = scram_broker
    c = mqttraw.RawClient5(b.host, b.port)
    c.send(connect5("u1", props=[(METHOD, "KERBEROS-V5"), (DATA, b"x")]))
    assert c.recv_type(CONNACK).rc == 0x8C
    c.close()
    # AUTH on a connection that did not start with a method: protocol error
    c = mqttraw.connect_v5(b.host, b.port, "u2", username="alice", password="wonderland")
    c.send(auth5(0x19, [(METHOD, M), (DATA, b"n,,n=alice,r=x")]))
    c.expect_disconnect(0x82)
    # AUTH with another method than CONNECT's
    s = mqttraw.ScramClient("alice", "wonderland")
    c = start(b, s, "u3")
    c.recv_type(AUTH)
    c.send(auth5(0x18, [(METHOD, "OTHER"), (DATA, b"x")]))
    got = c.wait_closed()
    assert not any(p.type == CONNACK and p.rc == 0 for p in got)
    # no password file: SCRAM is not offered
    nb = broker(mqtt={"allow_anonymous": False})
    c = mqttraw.RawClient5(nb.host, nb.port)
    c.send(connect5("u4", props=[(METHOD, M), (DATA, b"n,,n=a,r=b")]))
    assert c.recv_type(CONNACK).rc == 0x8C
    c.close()
