"""The cluster module's frame (src/cluster/cluster.c, docs/cluster.md) and
the module seams it uses: its configuration section (errors name
file:line:key), the member table seen through a module's API route
(GET /api/v1/nodes), a module's metrics families and its say in
/health/ready.  Static members only: etcd and the node links are tested in
their own files."""

import json
import subprocess
import time

import pytest

from conftest import IS_MOSQUITTO, require_antenna_bin
from test_50_api import Client, make_key
from test_61_modules import SectionBroker

pytestmark = pytest.mark.skipif(IS_MOSQUITTO, reason="antenna_only")


@pytest.fixture
def sec_broker(tmp_path):
    """start(sections): a broker with those sections and the API (a key)."""
    started = []
    keys = tmp_path / "api.keys"
    key = make_key(keys)

    def start(sections):
        b = SectionBroker(tmp_path, len(started), sections, {"api": {"keys_file": str(keys)}})
        started.append(b)
        b.start()
        return Client(b, key)

    yield start
    for b in started:
        b.stop()


def call(c, method, path):
    st, _, raw = c.call(method, path)
    return st, raw


def check(tmp_path, text):
    """antenna check on a file with `text`: (rc, output)."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    p = subprocess.run([require_antenna_bin(), "check", "-c", str(path)], capture_output=True,
                       text=True, timeout=30)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.parametrize("section,key,words", [
    ("cluster:\n  node: \"a b\"\n", "cluster.node", "letters, digits"),
    ("cluster:\n  node: a\n  listen: nowhere\n", "cluster.listen", "host:port"),
    ("cluster:\n  node: a\n  static_members: [b-no-address]\n", "cluster.static_members",
     "name@host:port"),
    ("cluster:\n  static_members: [b@127.0.0.1:7000]\n", "cluster.node", "no name"),
    ("cluster:\n  node: a\n  lease_ttl: 1s\n", "cluster.lease_ttl", ""),
    ("cluster:\n  node: a\n  secret: x\n  secret_file: /nonexistent\n", "cluster.secret_file",
     "not both"),
    ("cluster:\n  node: a\n  nodes: 3\n", "cluster.nodes", "node"),
])
def test_bad_cluster_section_names_file_line_key(tmp_path, section, key, words):
    rc, out = check(tmp_path, section)
    assert rc != 0, out
    assert "c.yaml:" in out and key in out, out
    assert words in out, out


def test_secret_file_is_read(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    rc, out = check(tmp_path, "cluster:\n  node: a\n  secret_file: %s\n" % secret)
    assert rc == 0, out
    secret.write_text("")
    rc, out = check(tmp_path, "cluster:\n  node: a\n  secret_file: %s\n" % secret)
    assert rc != 0 and "empty" in out, out


def test_static_members_in_the_api_metrics_and_ready(sec_broker):
    b = sec_broker("cluster:\n  node: a\n  etcd: \"\"\n"
                   "  static_members: [b@127.0.0.1:7001, c@127.0.0.1:7002, a@127.0.0.1:7000]\n")
    # the members reach the table through the link thread: poll
    deadline = time.monotonic() + 10
    while True:
        st, raw = call(b, "GET", "/api/v1/nodes")
        assert st == 200, raw
        nodes = json.loads(raw)
        if nodes["members"] == 3 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert nodes["clustered"] is True and nodes["node"] == "a", nodes
    assert nodes["members"] == 3, nodes  # a itself, b and c; its own static entry is ignored
    by_name = {n["node"]: n for n in nodes["nodes"]}
    assert set(by_name) == {"a", "b", "c"}, nodes
    assert by_name["a"]["self"] is True
    assert by_name["b"]["member"] is True and by_name["b"]["link"] == "127.0.0.1:7001"
    st, raw = call(b, "GET", "/metrics")
    text = raw.decode()
    assert "antenna_cluster_members 3\n" in text, text[-2000:]
    assert "antenna_cluster_lease_ok 1\n" in text
    st, raw = call(b, "GET", "/health/ready")
    assert st == 200, raw
    # a module's route refuses a method it does not take, as the API's own do
    st, raw = call(b, "POST", "/api/v1/nodes")
    assert st == 405, raw
    assert json.loads(raw)["code"] == "method_not_allowed"


def test_no_cluster_is_a_broker_on_its_own(sec_broker):
    b = sec_broker("")
    st, raw = call(b, "GET", "/api/v1/nodes")
    assert st == 200, raw
    assert json.loads(raw) == {"clustered": False, "nodes": []}
    st, raw = call(b, "GET", "/metrics")
    assert "antenna_cluster_members" not in raw.decode()
