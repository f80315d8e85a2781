"""The monitoring kit in the tree (issue 14): Prometheus alert rules and a
Grafana dashboard.  promtool accepts the rules, and every metric the rules
and the dashboard use is in a running broker's /metrics (with the format
checked by test_53's parser), so neither can silently refer to a name that
was renamed.  Also the process_* and build families."""

import json
import os
import re
import shutil
import socket
import subprocess

import pytest
import yaml

from conftest import REPO, wait_for
from test_53_metrics import fetch, make_key, parse

pytestmark = pytest.mark.antenna_only

KIT = REPO / "packaging" / "monitoring"
RULES = KIT / "antenna-alerts.yml"
DASHBOARD = KIT / "antenna-grafana.json"
METRIC = re.compile(r"\b((?:antenna|process)_[a-z0-9_]+)\b")


def exprs():
    out = []
    for g in yaml.safe_load(RULES.read_text())["groups"]:
        out += [r["expr"] for r in g["rules"]]
    dash = json.loads(DASHBOARD.read_text())
    for p in dash["panels"]:
        out += [t["expr"] for t in p["targets"]]
    out += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return out


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian prometheus)")
    p = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "SUCCESS" in p.stdout


def test_every_metric_used_exists(broker, tmp_path):
    key = make_key(tmp_path / "api.keys")
    b = broker(api={"keys_file": str(tmp_path / "api.keys")})
    st, _, text = fetch(b.api_url + "/metrics", key)
    assert st == 200
    fams = parse(text)
    names = set(fams)
    for f, d in fams.items():
        if d["type"] == "histogram":
            names |= {f + "_bucket", f + "_sum", f + "_count"}
    used = {m for e in exprs() for m in METRIC.findall(e)}
    assert len(used) >= 15, used
    missing = sorted(used - names)
    assert not missing, "used by the rules or the dashboard, absent from /metrics: %s" % missing


def test_process_and_build_families(broker, tmp_path):
    key = make_key(tmp_path / "api.keys")
    b = broker(api={"keys_file": str(tmp_path / "api.keys")})
    fams = parse(fetch(b.api_url + "/metrics", key)[2])

    def value(name):
        (s,) = fams[name]["samples"]
        return float(s[2])

    pid = b.proc.pid
    nfds = len(os.listdir("/proc/%d/fd" % pid))
    # the broker's own count, taken a moment apart: within a few descriptors
    assert abs(value("process_open_fds") - nfds) <= 8, (value("process_open_fds"), nfds)
    assert value("process_max_fds") >= nfds
    assert value("process_resident_memory_bytes") > 1 << 20
    assert value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes")
    assert value("process_cpu_seconds_total") >= 0
    assert value("process_start_time_seconds") == value("antenna_start_time_seconds") > 1.6e9
    (s,) = fams["antenna_build_info"]["samples"]
    assert 'version="' in s[1] and float(s[2]) == 1
    assert fams["antenna_connections_active"]["type"] == "gauge"
    assert "antenna_connections" not in fams     # renamed: clashed with _total
    results = {s[1] for s in fams["antenna_auth_attempts_total"]["samples"]}
    assert results == {'result="success"', 'result="failure"', 'result="banned"'}, results


def test_listener_accepted_and_handshake_failures(broker, tmp_path):
    """antenna_listener_accepted_total and antenna_handshake_failures_total
    per listener: a client that speaks plain text to a TLS listener is
    accepted and fails its handshake."""
    crt, key = tmp_path / "s.crt", tmp_path / "s.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(crt), "-subj", "/CN=localhost", "-days", "1"],
                   check=True, capture_output=True, timeout=60)
    keys = tmp_path / "api.keys"
    k = make_key(keys)
    b = broker(listener={"transport": "tls", "cert_file": str(crt), "key_file": str(key)},
               api={"keys_file": str(keys)})

    def counts():
        fams = parse(fetch(b.api_url + "/metrics", k)[2])
        get = lambda fam: {s[1]: float(s[2]) for s in fams[fam]["samples"]}
        lab = 'listener="mqtt",transport="tls"'
        return get("antenna_listener_accepted_total")[lab], \
            get("antenna_handshake_failures_total")[lab]

    acc0, fail0 = counts()     # the fixture's own start-up probes may count already
    with socket.create_connection((b.host, b.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")     # not a TLS ClientHello
        s.settimeout(5)
        try:
            while s.recv(1024):
                pass
        except OSError:
            pass
    wait_for(lambda: counts()[1] >= fail0 + 1, 10, what="a handshake failure counted")
    acc1, _ = counts()
    assert acc1 >= acc0 + 1
