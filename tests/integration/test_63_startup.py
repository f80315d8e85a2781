"""Start-up as an operator meets it: fatal errors on stderr even when the
log goes to a file, and the management API's port on the command line
(issue 14).  antenna is started directly, not through the fixture."""

import errno
import socket
import subprocess
import urllib.request

import pytest

import mqttraw
from conftest import free_port, port_accepts, read_text, sanitizer_report, wait_for
from test_01_cli_config import Running

pytestmark = pytest.mark.antenna_only


def start_fails(args, tmp_path, timeout=20):
    """Run antenna, which must exit 1 by itself; return (stderr, log file text)."""
    p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       cwd=str(tmp_path))
    err = p.stderr.decode(errors="replace")
    rep = sanitizer_report(err)
    assert rep is None, "sanitizer report:\n" + rep
    assert p.returncode == 1, (p.returncode, err)
    log = tmp_path / "antenna.log"
    return err, read_text(log) if log.exists() else ""


def held_listener(port=0):
    """A socket of ours listening on 127.0.0.1:port (0: any free port)."""
    s = socket.socket()
    s.bind(("127.0.0.1", port))
    s.listen(1)
    return s


def write_config(tmp_path, body):
    path = tmp_path / "antenna.yaml"
    path.write_text("log:\n  file: %s\n  level: info\npersistence:\n  dir: %s\n%s"
                    % (tmp_path / "antenna.log", tmp_path / "store", body))
    return path


def test_taken_port_with_log_file_reaches_stderr(antenna_bin, tmp_path):
    with held_listener() as taken:
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path, "api:\n  enabled: false\nlisteners:\n"
                           "  - name: mqtt\n    address: 127.0.0.1\n    port: %d\n" % port)
        err, log = start_fails([antenna_bin, "-c", str(cfg)], tmp_path)
    # the cause itself, not only "see the log", and the same in the log file
    assert str(port) in err and "in use" in err.lower(), err
    assert str(port) in log and "in use" in log.lower(), log


def test_bad_acl_file_with_log_file_reaches_stderr(antenna_bin, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("user alice\ntopic sideways a/b\n")
    cfg = write_config(tmp_path, "api:\n  enabled: false\nlisteners:\n"
                       "  - name: mqtt\n    address: 127.0.0.1\n    port: %d\n"
                       "auth:\n  acl_file: %s\n" % (free_port(), acl))
    err, log = start_fails([antenna_bin, "-c", str(cfg)], tmp_path)
    assert "%s:2" % acl in err, err      # the file and the line
    assert "%s:2" % acl in log, log


def test_default_api_port_taken_is_a_warning(antenna_bin, tmp_path):
    """Without a configuration file the API wants 127.0.0.1:18083 (EMQX's
    dashboard port); taken (by us here, or by anything else), the broker
    warns and serves MQTT without the API."""
    ours = None
    try:
        ours = held_listener(18083)
    except OSError as e:
        if e.errno != errno.EADDRINUSE:
            raise
    try:
        port = free_port()
        with Running([antenna_bin, "-p", str(port)], tmp_path) as a:
            a.wait_stderr(r"api: 127\.0\.0\.1:18083 is taken")
            wait_for(lambda: port_accepts("127.0.0.1", port), 10, what="MQTT port open")
            with mqttraw.RawClient("127.0.0.1", port) as c:
                assert c.connect("api-taken").rc == 0
            assert "api: listening" not in a.stderr()
            assert a.stop() == 0
    finally:
        if ours:
            ours.close()


def test_api_port_option_opens_the_api_there(antenna_bin, tmp_path):
    port, api = free_port(), free_port()
    with Running([antenna_bin, "-p", str(port), "--api-port", str(api)], tmp_path) as a:
        a.wait_stderr(r"api: listening on 127\.0\.0\.1:%d\b" % api)
        with urllib.request.urlopen("http://127.0.0.1:%d/health/live" % api, timeout=5) as r:
            assert r.status == 200
        assert a.stop() == 0


def test_api_port_option_taken_is_fatal(antenna_bin, tmp_path):
    with held_listener() as taken:
        api = taken.getsockname()[1]
        err, _ = start_fails([antenna_bin, "-p", str(free_port()), "--api-port", str(api)],
                             tmp_path)
    assert "api: cannot listen on 127.0.0.1:%d" % api in err, err


def test_no_api_option(antenna_bin, tmp_path):
    port = free_port()
    with Running([antenna_bin, "-p", str(port), "--no-api"], tmp_path) as a:
        a.wait_stderr(r"%u workers running|workers running")
        with mqttraw.RawClient("127.0.0.1", port) as c:
            assert c.connect("no-api").rc == 0
        assert "api:" not in a.stderr(), a.stderr()
        assert a.stop() == 0


def test_bad_api_port_option_exits_1(antenna_bin, tmp_path):
    err, _ = start_fails([antenna_bin, "--api-port", "99999"], tmp_path)
    assert "bad API port" in err, err


# ------------------------------------------------------------ antenna check

def check(antenna_bin, cfg):
    p = subprocess.run([antenna_bin, "check", "-c", str(cfg)], stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)
    err = p.stderr.decode(errors="replace")
    rep = sanitizer_report(err)
    assert rep is None, "sanitizer report:\n" + rep
    return p.returncode, p.stdout.decode(errors="replace"), err


def test_check_reports_every_problem_at_once(antenna_bin, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("allow pub a/#\nsideways sub b\n")
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    cfg = tmp_path / "antenna.yaml"
    cfg.write_text(
        "listeners:\n"
        "  - name: tls1\n    address: 127.0.0.1\n    port: 8883\n    transport: tls\n"
        "    cert_file: %s\n    key_file: %s\n"
        "  - name: tls2\n    address: 127.0.0.1\n    port: 8884\n    transport: tls\n"
        "    cert_file: %s\n    key_file: %s\n"
        "auth:\n  acl_file: %s\n  password_file: %s\n"
        "persistence:\n  dir: %s\n"
        % (tmp_path / "missing.crt", tmp_path / "missing.key", garbage, garbage, acl,
           tmp_path / "no-passwd", tmp_path / "store"))
    rc, out, err = check(antenna_bin, cfg)
    assert rc == 1, (out, err)
    # each problem named, in words an operator can act on
    assert "cert_file %s: cannot read it: No such file" % (tmp_path / "missing.crt") in err, err
    assert "cert_file %s: no start line" % garbage in err, err
    assert "error:0" not in err, err      # no packed OpenSSL codes
    assert "%s:2" % acl in err, err
    assert "no-passwd" in err, err
    assert "4 problems" in err, err
    assert not (tmp_path / "store").exists()   # a check creates nothing


def test_check_passes_a_good_configuration(antenna_bin, tmp_path):
    acl = tmp_path / "acl"
    acl.write_text("allow pub a/#\nallow sub b/+\n")
    cfg = tmp_path / "antenna.yaml"
    # a module's section (heartbeat) is a known key for check as for the broker
    cfg.write_text("listeners:\n  - name: mqtt\n    address: 127.0.0.1\n    port: 1883\n"
                   "auth:\n  acl_file: %s\npersistence:\n  dir: %s\nlog:\n  file: %s\n"
                   "heartbeat:\n  interval: 5\n  topic: hb\n"
                   % (acl, tmp_path / "store", tmp_path / "antenna.log"))
    rc, out, err = check(antenna_bin, cfg)
    assert rc == 0, (out, err)
    assert "ok (" in out and "auth.acl_file" in out, out


def test_check_stops_at_a_syntax_error_with_file_line_key(antenna_bin, tmp_path):
    cfg = tmp_path / "antenna.yaml"
    cfg.write_text("workers: 2\nmqtt:\n  max_infligth: 5\n")
    rc, out, err = check(antenna_bin, cfg)
    assert rc == 1
    assert "%s:3: " % cfg in err and "max_infligth" in err, err


def test_check_usage(antenna_bin):
    p = subprocess.run([antenna_bin, "check"], capture_output=True, timeout=10)
    assert p.returncode == 2 and b"Usage: antenna check" in p.stderr
