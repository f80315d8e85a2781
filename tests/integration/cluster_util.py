"""Helpers for cluster tests (docs/cluster.md): etcd on free ports in the
test's directory, antenna nodes with a `cluster:` section, and polling of
GET /api/v1/nodes with deadlines.

    def test_x(cluster):
        cluster.start_etcd()
        a, b = cluster.start_nodes(2)                   # node0, node1
        cluster.wait_members([a, b], 2)
        c = cluster.start_node("c", extra="other:\\n  key: 1\\n", lease_ttl="2s",
                               cluster_keys={"advertise": "127.0.0.1:7000"})

Every etcd and node the fixture started is stopped at the end of the test,
also when it fails (nodes: SIGTERM, then SIGKILL; sanitizer reports in
their output fail the test)."""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

import pytest

from conftest import Broker, free_port, port_accepts, require_antenna_bin, sanitizer_report, \
    wait_for
from test_50_api import Client, make_key

ETCD_BIN = shutil.which("etcd")
needs_etcd = pytest.mark.skipif(ETCD_BIN is None, reason="etcd not installed (etcd-server)")


def etcd_has_flag(flag):
    try:
        out = subprocess.run([ETCD_BIN, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return flag in out.stdout + out.stderr


class Etcd:
    """One etcd member on loopback: start(), stop() (SIGTERM), kill(); the
    same data directory across restarts."""

    def __init__(self, dirpath):
        self.dir = dirpath
        self.data = dirpath / "etcd-data"
        self.client_port = free_port()
        self.peer_port = free_port()
        while self.peer_port == self.client_port:
            self.peer_port = free_port()
        self.url = "http://127.0.0.1:%d" % self.client_port
        self.log_path = dirpath / "etcd.log"
        self.proc = None

    def command(self):
        peer = "http://127.0.0.1:%d" % self.peer_port
        cmd = [ETCD_BIN, "--name", "e0", "--data-dir", str(self.data),
               "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
               "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
               "--initial-cluster", "e0=" + peer, "--log-level", "warn"]
        if etcd_has_flag("--unsafe-no-fsync"):
            cmd.append("--unsafe-no-fsync")
        return cmd

    def start(self, timeout=20):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=log, cwd=str(self.dir))
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.proc.poll() is not None:
                raise AssertionError("etcd exited with %s:\n%s" % (self.proc.returncode,
                                                                   self.log_text()[-3000:]))
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError("etcd not healthy within %ds:\n%s"
                                     % (timeout, self.log_text()[-3000:]))
            time.sleep(0.1)
        return self

    def healthy(self):
        if not port_accepts("127.0.0.1", self.client_port):
            return False
        try:
            import urllib.request
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=10):
        if not self.running():
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self):
        if self.running():
            self.proc.kill()
            self.proc.wait(10)

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def call(self, path, body):
        """A POST to etcd's JSON gateway; the answer as JSON."""
        import urllib.request
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())


class Node(Broker):
    """An antenna node: the conftest broker (listeners on free ports, the
    API on an ephemeral port with a key) with a `cluster:` section and any
    extra top-level sections."""

    def __init__(self, tmp_path, index, name, cluster_section, extra, overrides):
        super().__init__(tmp_path, index, overrides)
        self.name = name
        self.sections = cluster_section + extra

    def write_config(self):
        path = super().write_config()
        with open(path, "a") as f:
            f.write(self.sections)
        return path

    def spawn(self):
        """Start the process without waiting for it (a start expected to
        fail)."""
        self.write_config()
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=err,
                                         stderr=err, cwd=str(self.dir))
        return self


class Cluster:
    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.etcd = None
        self.nodes = []
        self.keys = tmp_path / "api.keys"
        self.key = None
        self.secret = "s-%d-%d" % (os.getpid(), time.monotonic_ns())

    def start_etcd(self):
        if ETCD_BIN is None:
            pytest.skip("etcd not installed (etcd-server)")
        self.etcd = Etcd(self.dir).start()
        return self.etcd

    def cluster_section(self, name, lease_ttl, cluster_keys):
        keys = {"node": name, "name": "t", "etcd": self.etcd.url if self.etcd else "",
                "lease_ttl": lease_ttl, "listen": "127.0.0.1:0", "secret": self.secret}
        keys.update(cluster_keys or {})
        lines = ["cluster:"]
        for k, v in keys.items():
            if isinstance(v, list):
                lines.append("  %s: [%s]" % (k, ", ".join(json.dumps(x) for x in v)))
            elif isinstance(v, str) and v and not v.isdigit() and ":" not in v.replace(":/", ""):
                lines.append("  %s: %s" % (k, v))  # a plain scalar: 2s, 500ms
            else:
                lines.append("  %s: %s" % (k, json.dumps(v)))
        return "\n".join(lines) + "\n"

    def make_node(self, name, extra="", lease_ttl="2s", cluster_keys=None, **overrides):
        if self.key is None:
            self.key = make_key(self.keys)
        api = dict({"keys_file": str(self.keys)}, **overrides.pop("api", {}))
        n = Node(self.dir, len(self.nodes), name, self.cluster_section(name, lease_ttl,
                                                                        cluster_keys),
                 extra, dict(overrides, api=api))
        self.nodes.append(n)
        n.client = Client(n, self.key)
        return n

    def start_node(self, name, **kw):
        return self.make_node(name, **kw).start()

    def start_nodes(self, n, prefix="node", **kw):
        return [self.start_node("%s%d" % (prefix, i), **kw) for i in range(n)]

    def stop(self):
        """Stop every node still running (SIGTERM; each must exit 0, else
        SIGKILL and an error), then etcd; the errors found, sanitizer
        reports included."""
        errors = []
        for n in self.nodes:
            if n.proc is None:
                continue
            try:
                if n.running() and not n.stopped:
                    n.proc.send_signal(signal.SIGTERM)
                    try:
                        rc = n.proc.wait(15)
                        if rc != 0:
                            errors.append("node %s exited with %s after SIGTERM:\n%s"
                                          % (n.name, rc, n.log_text()[-3000:]))
                    except subprocess.TimeoutExpired:
                        errors.append("node %s did not stop within 15s" % n.name)
            finally:
                if n.running():
                    n.proc.kill()
                    n.proc.wait(5)
            n.stopped = True
            rep = sanitizer_report(n.log_text())
            if rep:
                errors.append("sanitizer report in node %s:\n%s" % (n.name, rep))
        if self.etcd is not None:
            self.etcd.stop()
            self.etcd.kill()
        return errors


@pytest.fixture
def cluster(tmp_path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        errors = c.stop()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


# ---- polling the nodes ----

def nodes_json(node):
    st, _, raw = node.client.call("GET", "/api/v1/nodes")
    assert st == 200, (st, raw)
    return json.loads(raw)


def members_of(node):
    """The names of the members node sees (itself included)."""
    return sorted(n["node"] for n in nodes_json(node)["nodes"] if n["member"])


def wait_nodes(node, cond, timeout=10.0, what="a condition on /api/v1/nodes"):
    """Poll GET /api/v1/nodes of node until cond(json) holds; the json."""
    last = {}

    def check():
        last["v"] = nodes_json(node)
        return cond(last["v"])
    try:
        wait_for(check, timeout, interval=0.05, what=what)
    except AssertionError as e:
        raise AssertionError("%s on %s; last: %r" % (e, node.name, last.get("v")))
    return last["v"]


def wait_members(nodes, names_or_count, timeout=30.0):
    """Wait until each node sees exactly these members (a list of names or a
    count).  30 s: on a loaded machine a node's lease grant, registration and
    the others' watch took more than 10 s (a clean-clone run beside another
    under ASan)."""
    for n in nodes:
        try:
            if isinstance(names_or_count, int):
                wait_nodes(n, lambda j: j["members"] == names_or_count, timeout,
                           "%d members" % names_or_count)
            else:
                want = sorted(names_or_count)
                wait_nodes(n, lambda j: sorted(x["node"] for x in j["nodes"] if x["member"])
                           == want and j["members"] == len(want), timeout,
                           "members %r" % want)
        except AssertionError as e:
            raise AssertionError("%s\n%s" % (e, membership_logs(nodes))) from None


def membership_logs(nodes, keep=20):
    """The last lines of each node's log about leases and members (what a
    failed wait_members needs to be understood)."""
    out = []
    for n in nodes:
        try:
            lines = pathlib.Path(n.log_path).read_text(errors="replace").splitlines()
        except (OSError, AttributeError):
            continue
        hits = [ln for ln in lines if re.search(r"lease|member|etcd|registered|link", ln)]
        out.append("--- %s (%d lines, the last %d about membership):\n%s"
                   % (n.name, len(lines), min(keep, len(hits)), "\n".join(hits[-keep:])))
    return "\n".join(out)


def metrics(node):
    st, _, raw = node.client.call("GET", "/metrics")
    assert st == 200, st
    return raw.decode()


def metric(node, name):
    for line in metrics(node).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def ready_status(node):
    st, _, _ = node.client.call("GET", "/health/ready", auth=False)
    return st


def wait_ready(node, want=200, timeout=10.0):
    wait_for(lambda: ready_status(node) == want, timeout, what="/health/ready %d on %s"
             % (want, node.name))
