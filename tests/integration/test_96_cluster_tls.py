"""TLS on the cluster's node links (cluster.tls; src/cluster/cl_link.c,
src/net/net_tls.c tls_link_ctx_new; docs/cluster.md "TLS on links"): three
nodes with static members (no etcd) and mutual TLS from a throwaway CA made
with the openssl CLI.  Messages cross at every QoS and retained; a node
whose certificate comes from another CA, and a plain node, never get a link
(refused, logged, counted, and nothing crosses); `antenna check` names a
missing cluster.tls_cert_file; GET /api/v1/nodes shows tls and the cipher.
Every wait polls with a deadline of 30 s (ASan on a busy machine)."""

import queue
import shutil
import subprocess
import time

import pytest

from conftest import IS_MOSQUITTO, free_port, require_antenna_bin, sanitizer_report, stop_all, \
    wait_for
from test_50_api import Client, make_key
from test_51_ctl import ctl
from test_61_modules import SectionBroker
from test_73_cluster_links import client, close, get, publish, subscribe

pytestmark = [pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only"),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI")]

WAIT = 30


def run(*args, cwd):
    subprocess.run(["openssl", *args], cwd=str(cwd), check=True, capture_output=True,
                   timeout=60)


def make_ca(d, ca):
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "2", "-subj", "/CN=" + ca, cwd=d)


def make_cert(d, ca, name, days="2"):
    """name.pem / name.key signed by ca, naming the node (CN and DNS SAN);
    days "-1": expired already."""
    (d / (name + ".ext")).write_text("subjectAltName=DNS:%s\n" % name)
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
        name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name, cwd=d)
    run("x509", "-req", "-in", name + ".csr", "-CA", ca + ".pem", "-CAkey", ca + ".key",
        "-CAcreateserial", "-out", name + ".pem", "-days", days, "-extfile", name + ".ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other")
    for n in ("a", "b", "c"):
        make_cert(d, "ca", n)
    make_cert(d, "other", "x")  # a node certificate from another CA
    make_cert(d, "ca", "y", days="-1")  # the right CA, expired
    return d


class TlsCluster:
    """Nodes a, b, c (TLS) and optionally an intruder, all static members of
    each other.  tls[name]: False for a plain node; ca[name]: its CA."""

    def __init__(self, tmp_path, pki, names, tls=None, ca=None, verify_name=None):
        self.tmp_path = tmp_path
        self.pki = pki
        self.keys = tmp_path / "api.keys"
        self.key = make_key(self.keys)
        self.names = names
        self.tls = tls or {}
        self.ca = ca or {}
        self.verify_name = verify_name
        self.link_ports = {n: free_port() for n in names}
        self.nodes = {}
        self.started = []

    def section(self, name):
        members = ", ".join("%s@127.0.0.1:%d" % (m, self.link_ports[m]) for m in self.names)
        s = ("cluster:\n  node: %s\n  etcd: \"\"\n  listen: 127.0.0.1:%d\n"
             "  secret: s3cret\n  static_members: [%s]\n"
             % (name, self.link_ports[name], members))
        if self.tls.get(name, True):
            p = self.pki
            s += ("  tls: true\n  tls_cert_file: %s\n  tls_key_file: %s\n  tls_ca_file: %s\n"
                  % (p / (name + ".pem"), p / (name + ".key"),
                     p / (self.ca.get(name, "ca") + ".pem")))
            if self.verify_name:
                s += "  tls_verify_name: %s\n" % self.verify_name
        return s

    def start(self):
        for name in self.names:
            b = SectionBroker(self.tmp_path, len(self.started), self.section(name),
                              {"api": {"keys_file": str(self.keys)},
                               "persistence": {"enabled": False}})
            self.started.append(b)
            b.start()
            self.nodes[name] = b
        return self

    def view(self, name):
        return {n["node"]: n for n in Client(self.nodes[name], self.key)
                .get("/api/v1/nodes")["nodes"]}

    def link(self, on, of):
        return self.view(on).get(of, {}).get("link_state", {})

    def wait_links(self, names):
        def up():
            return all(self.link(a, b).get("state") == "up"
                       for a in names for b in names if a != b)
        wait_for(up, WAIT, what="links up between %r" % (names,))

    def wait_routes(self, on, of, timeout=WAIT):
        wait_for(lambda: self.link(on, of).get("routes", 0) > 0, timeout,
                 what="%s knows %s's routes" % (on, of))

    def wait_log(self, name, text):
        b = self.nodes[name]
        wait_for(lambda: text in b.log_text(), WAIT, what="%r in %s's log" % (text, name))


@pytest.fixture
def tls_cluster(tmp_path, pki):
    made = []

    def make(names=("a", "b", "c"), **kw):
        c = TlsCluster(tmp_path, pki, list(names), **kw)
        made.append(c)
        return c.start()
    yield make
    for c in made:
        stop_all(c.started)


def test_forwarding_over_tls_every_qos_and_retained(tls_cluster):
    cl = tls_cluster(verify_name="node")
    cl.wait_links(cl.names)
    for a in cl.names:
        for b in cl.names:
            if a != b:
                ls = cl.link(a, b)
                assert ls["tls"] is True and ls["cipher"].startswith("TLSv1."), (a, b, ls)
    for n in cl.names:
        assert "TLS" in cl.nodes[n].log_text()
    sub = client(cl.nodes["b"], "sub-b")
    subscribe(sub, "t/#", qos=2)
    cl.wait_routes("a", "b")
    pub = client(cl.nodes["a"], "pub-a")
    for q in (0, 1, 2):
        publish(pub, "t/%d" % q, b"over tls %d" % q, qos=q)
        m = get(sub, timeout=WAIT)
        assert (m.topic, m.payload, m.qos) == ("t/%d" % q, b"over tls %d" % q, q)
    # retained: published on a, on every node (a probe subscribing on c gets it)
    publish(pub, "r/1", b"kept", qos=1, retain=True)

    def on_c():
        s = client(cl.nodes["c"], "probe-c")
        try:
            subscribe(s, "r/#", 1)
            m = get(s, 0.5)
            return (m.topic, m.payload, m.retain) == ("r/1", b"kept", 1)
        except queue.Empty:
            return False
        finally:
            close(s)
    wait_for(on_c, WAIT, what="the retained copy on c")
    close(sub, pub)
    # the ctl table shows the TLS column
    rc, out, err = ctl(require_antenna_bin(), "nodes", url=cl.nodes["a"].api_url, key=cl.key)
    assert rc == 0 and "TLSv1." in out, (rc, out, err)


def assert_no_crossing(cl, outsider):
    """A subscriber on the outsider gets nothing published on a (a local
    subscriber on a proves the publishes were handled first)."""
    far = client(cl.nodes[outsider], "far")
    subscribe(far, "x/#", qos=1)
    near = client(cl.nodes["a"], "near")
    subscribe(near, "x/#", qos=1)
    pub = client(cl.nodes["a"], "pub")
    for i in range(3):
        publish(pub, "x/%d" % i, b"secret %d" % i, qos=1)
        assert get(near, timeout=WAIT).payload == b"secret %d" % i
    with pytest.raises(queue.Empty):
        get(far, timeout=1)
    close(far, near, pub)


def wait_refused(cl, on, of):
    wait_for(lambda: cl.link(on, of).get("refused", 0) > 0, WAIT,
             what="%s counts %s's refused links" % (on, of))


def test_node_with_another_ca_cannot_join(tls_cluster):
    cl = tls_cluster(names=("a", "b", "c", "x"), ca={"x": "other"})
    cl.wait_links(["a", "b", "c"])
    for n in ("a", "b", "c"):
        wait_refused(cl, n, "x")  # a, b, c dial x: the handshake fails
        assert cl.link(n, "x").get("state") != "up"
    cl.wait_log("a", "cluster: link to x")
    text = cl.nodes["a"].log_text()
    assert "refused: TLS" in text and "certificate" in text, text[-2000:]
    for n in ("a", "b", "c"):
        assert cl.link("x", n).get("state") != "up"
    assert_no_crossing(cl, "x")
    # still refused after the retries (the existing backoff), still logged once per 5 s at most
    lines = [ln for ln in cl.nodes["a"].log_text().splitlines() if "link to x" in ln]
    assert len(lines) < 20, lines


def test_expired_certificate_is_refused(tls_cluster):
    cl = tls_cluster(names=("a", "b", "y"))
    cl.wait_links(["a", "b"])
    wait_refused(cl, "a", "y")
    cl.wait_log("a", "certificate has expired")
    assert cl.link("a", "y").get("state") != "up"
    assert cl.link("y", "a").get("state") != "up"


def test_plain_node_cannot_talk_to_tls_nodes(tls_cluster):
    # "0p" sorts first: it dials a, b, c in plain TCP; they refuse it by its first byte
    cl = tls_cluster(names=("0p", "a", "b", "c"), tls={"0p": False})
    cl.wait_links(["a", "b", "c"])
    cl.wait_log("a", "does not speak TLS")
    wait_for(lambda: Client(cl.nodes["a"], cl.key).get("/api/v1/nodes")["refused_unnamed"] > 0,
             WAIT, what="a counts refused unnamed links")
    for n in ("a", "b", "c"):
        assert cl.link(n, "0p").get("state") != "up"
        assert cl.link("0p", n).get("state") != "up"
    assert_no_crossing(cl, "0p")


def test_plain_node_dialled_by_tls_nodes_says_so(tls_cluster):
    # "z" sorts last: a and b dial it with TLS; it sees a TLS record instead of HELLO
    cl = tls_cluster(names=("a", "b", "z"), tls={"z": False})
    cl.wait_links(["a", "b"])
    cl.wait_log("z", "the peer speaks TLS")
    wait_refused(cl, "a", "z")


def test_verify_name_mismatch_is_refused(tls_cluster):
    cl = tls_cluster(names=("a", "b"), verify_name="not-a-node")
    wait_refused(cl, "a", "b")
    cl.wait_log("a", "does not name \"not-a-node\"")
    assert cl.link("a", "b").get("state") != "up"


def test_check_reports_missing_cert_file(tmp_path, pki):
    from conftest import ANTENNA_BIN
    require_antenna_bin()
    cfg = tmp_path / "antenna.yaml"
    cfg.write_text("listeners:\n  - port: %d\ncluster:\n  node: a\n  etcd: \"\"\n"
                   "  listen: 127.0.0.1:0\n  tls: true\n  tls_cert_file: %s\n"
                   "  tls_key_file: %s\n  tls_ca_file: %s\n"
                   % (free_port(), tmp_path / "missing.pem", pki / "a.key", pki / "ca.pem"))
    p = subprocess.run([ANTENNA_BIN, "check", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert sanitizer_report(p.stderr) is None, p.stderr
    assert p.returncode != 0
    assert "tls_cert_file" in p.stderr and "missing.pem" in p.stderr, p.stderr
    # and a cluster with tls on but no certificate at all
    cfg.write_text("listeners:\n  - port: %d\ncluster:\n  node: a\n  etcd: \"\"\n"
                   "  listen: 127.0.0.1:0\n  tls: true\n" % free_port())
    p = subprocess.run([ANTENNA_BIN, "check", "-c", str(cfg)], capture_output=True, text=True,
                       timeout=30)
    assert p.returncode != 0 and "tls_cert_file" in p.stderr, p.stderr
