"""A listener that cannot be opened stops the broker at start with a clear
message (exit 1), rather than running without it."""

import socket
import subprocess

import pytest

from conftest import require_antenna_bin

pytestmark = pytest.mark.antenna_only  # antenna's start-up


def run(tmp_path, yaml_text):
    cfg = tmp_path / "antenna.yaml"
    cfg.write_text(yaml_text)
    return subprocess.run([require_antenna_bin(), "--config", str(cfg)], capture_output=True,
                          timeout=20)


def test_port_in_use_is_an_error_at_start(tmp_path):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        r = run(tmp_path, "listeners:\n  - name: taken\n    address: 127.0.0.1\n"
                          "    port: %d\n" % port)
    finally:
        holder.close()
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "listener taken: cannot listen on 127.0.0.1 port %d" % port in err
    assert "Address already in use" in err


def test_address_not_on_this_machine_is_an_error_at_start(tmp_path):
    # a valid IPv4 literal that no local interface has (TEST-NET-1)
    r = run(tmp_path, "listeners:\n  - name: far\n    address: 192.0.2.1\n    port: 0\n")
    assert r.returncode == 1
    assert "listener far: cannot listen on 192.0.2.1" in r.stderr.decode()


def test_bad_address_is_a_config_error(tmp_path):
    r = run(tmp_path, "listeners:\n  - name: bad\n    address: 300.1.2.3\n    port: 1883\n")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert "antenna.yaml:3: listeners[0].address" in err
