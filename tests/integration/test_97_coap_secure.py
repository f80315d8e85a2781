"""The CoAP gateway's certificates and its TCP listeners (issue 19): DTLS
with a client certificate (its CN is the user, as a DTLS-PSK identity is),
CoAP over TCP and over TLS (RFC 8323, coap+tcp:// and coaps+tcp://), a
certificate from another CA refused at the handshake, and the section's
file keys checked at start-up.  Driven with libcoap's own client
(coap-client-openssl); certificates made here with the openssl CLI."""

import re
import shutil
import subprocess
import time

import pytest

from test_90_coap import cbroker, client_output, metric, subscriber, wait_metric  # noqa: F401 (fixture)

pytestmark = [
    pytest.mark.antenna_only,
    pytest.mark.skipif(shutil.which("coap-client-openssl") is None,
                       reason="coap-client-openssl (libcoap3-bin) is not installed"),
]

CLIENT = "coap-client-openssl"


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, capture_output=True, timeout=60)


class Pki:
    """A CA, the gateway's certificate, a device's (CN dev1) and a device's
    from another, unknown CA (also CN dev1)."""

    def __init__(self, d):
        self.d = d
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        openssl("req", "-x509", *ec, "-keyout", d / "ca.key", "-out", d / "ca.crt",
                "-subj", "/CN=antenna test CA", "-days", "2")
        for name, cn in (("srv", "localhost"), ("dev1", "dev1"), ("dev2", "dev2")):
            openssl("req", *ec, "-keyout", d / (name + ".key"), "-out", d / (name + ".csr"),
                    "-subj", "/CN=" + cn)
            openssl("x509", "-req", "-in", d / (name + ".csr"), "-CA", d / "ca.crt",
                    "-CAkey", d / "ca.key", "-CAcreateserial", "-out", d / (name + ".crt"),
                    "-days", "2")
        openssl("req", "-x509", *ec, "-keyout", d / "evil.key", "-out", d / "evil.crt",
                "-subj", "/CN=dev1", "-days", "2")

    def section(self, ca=True, extra=""):
        s = ("  cert_file: %s\n  key_file: %s\n  dtls_port: 0\n  tcp: true\n"
             "  tcp_port: 0\n  tls_port: 0\n" % (self.d / "srv.crt", self.d / "srv.key"))
        if ca:
            s += "  ca_file: %s\n" % (self.d / "ca.crt")
        return s + extra


def port_of(b, kind, deadline=30.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        m = re.search(r"coap: listening on %s [0-9.]+:(\d+)" % kind, b.log_path.read_text())
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    raise AssertionError("the coap gateway did not log its %s port" % kind)


def request(url, payload, cert=None, key=None, ca=None, wait=20):
    args = [CLIENT, "-m", "put", "-B", str(wait), "-e", payload]
    if cert:
        args += ["-c", str(cert), "-j", str(key)]
    if ca:
        args += ["-C", str(ca)]
    args.append(url)
    r = subprocess.run(args, capture_output=True, timeout=60)
    return r.returncode, client_output(r)


def test_client_certificate_is_the_user(cbroker, tmp_path):
    pki = Pki(tmp_path)
    b = cbroker(pki.section())
    dtls, tls = port_of(b, "dtls"), port_of(b, "tls")
    c, got = subscriber(b, "devices/#")
    d = tmp_path
    try:
        # DTLS: the certificate's CN (dev1) is the user and the client id;
        # the ACL lets dev1 publish under devices/dev1/ only
        rc, out = request("coaps://127.0.0.1:%d/ps/devices/dev1/t" % dtls, "over-dtls",
                          d / "dev1.crt", d / "dev1.key", d / "ca.crt")
        assert rc == 0 and "4." not in out, out
        assert got.get(timeout=30)[:2] == ("devices/dev1/t", b"over-dtls")
        rc, out = request("coaps://127.0.0.1:%d/ps/devices/dev2/t" % dtls, "not-mine",
                          d / "dev1.crt", d / "dev1.key", d / "ca.crt")
        assert "4.03" in out, out
        # TLS over TCP: the same identity
        rc, out = request("coaps+tcp://127.0.0.1:%d/ps/devices/dev1/t" % tls, "over-tls",
                          d / "dev1.crt", d / "dev1.key", d / "ca.crt")
        assert rc == 0 and "4." not in out, out
        assert got.get(timeout=30)[:2] == ("devices/dev1/t", b"over-tls")
        failed = metric(b, "antenna_coap_handshakes_failed_total")
        # a certificate of another CA: the handshake fails and is counted
        rc, out = request("coaps://127.0.0.1:%d/ps/devices/dev1/t" % dtls, "evil",
                          d / "evil.crt", d / "evil.key", d / "ca.crt", wait=5)
        assert "2.04" not in out, out
        wait_metric(b, "antenna_coap_handshakes_failed_total", failed + 1, at_least=True)
        # none: nothing published (coap-client now and then gives up after
        # the TCP connect, before any handshake, so the count may not move)
        rc, out = request("coaps+tcp://127.0.0.1:%d/ps/devices/dev1/t" % tls, "no-cert",
                          ca=d / "ca.crt", wait=5)
        assert "2.04" not in out, out
        assert metric(b, "antenna_coap_published_total") == 2
        assert got.empty()
    finally:
        c.loop_stop()
        c.disconnect()


def test_coap_over_tcp_authenticates_by_query(cbroker, tmp_path):
    pki = Pki(tmp_path)
    # no ca_file: TLS without client certificates, the query authenticates
    b = cbroker(pki.section(ca=False))
    tcp, tls = port_of(b, "tcp"), port_of(b, "tls")
    c, got = subscriber(b, "devices/#")
    try:
        rc, out = request("coap+tcp://127.0.0.1:%d/ps/devices/dev1/p?c=dev1&token=tok1" % tcp,
                          "over-tcp")
        assert rc == 0 and "4." not in out, out
        assert got.get(timeout=30)[:2] == ("devices/dev1/p", b"over-tcp")
        rc, out = request("coap+tcp://127.0.0.1:%d/ps/devices/dev1/p?c=dev1&token=bad" % tcp, "x")
        assert "4.01" in out, out
        rc, out = request("coaps+tcp://127.0.0.1:%d/ps/devices/dev2/p?c=dev2&token=tok2" % tls,
                          "over-tls", ca=tmp_path / "ca.crt")
        assert rc == 0 and "4." not in out, out
        assert got.get(timeout=30)[:2] == ("devices/dev2/p", b"over-tls")
        # a certificate without a CA to check it against names nobody: the query does
        rc, out = request("coaps+tcp://127.0.0.1:%d/ps/devices/dev1/p" % tls, "anon",
                          tmp_path / "dev1.crt", tmp_path / "dev1.key", tmp_path / "ca.crt")
        assert "4.01" in out, out
        assert got.empty()
    finally:
        c.loop_stop()
        c.disconnect()


@pytest.mark.parametrize("bad, key, why", [
    ("cert_file: /nonexistent/c.pem\n  key_file: /nonexistent/k.pem", "coap.cert_file",
     "cannot read it"),
    ("key_file: {d}/srv.key", "coap.cert_file", "cert_file is needed"),
    ("cert_file: {d}/srv.crt", "coap.key_file", "key_file is needed"),
    ("cert_file: {d}/srv.crt\n  key_file: {d}/dev1.key", "coap.key_file", "mismatch"),
    ("cert_file: {d}/srv.crt\n  key_file: {d}/srv.key\n  ca_file: {d}/srv.csr", "coap.ca_file",
     ""),
    ("cert_username: none", "coap.cert_username", "cn or san"),
])
def test_bad_certificate_config_refused(tmp_path, bad, key, why):
    from conftest import require_antenna_bin
    Pki(tmp_path)
    cfg = tmp_path / "a.yaml"
    cfg.write_text("persistence:\n  enabled: false\ncoap:\n  enabled: true\n  %s\n"
                   % bad.format(d=tmp_path))
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(cfg)], capture_output=True,
                       text=True, timeout=20)
    out = p.stderr + p.stdout
    assert p.returncode != 0, out
    assert "a.yaml:" in out and key in out and why in out, out
    assert "error:0" not in out, out          # no packed OpenSSL codes
