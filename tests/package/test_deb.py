"""The Debian package (make deb), unpacked into a throwaway root and run the
way systemd runs the unit: Type=notify (NOTIFY_SOCKET), a watchdog
(WATCHDOG_USEC), the state directory (STATE_DIRECTORY).  Run by
`make package-test` (part of `make test`) with ANTENNA_DEB set.  Installing
with dpkg on the test machine itself would create a system user and start
a service there, so the package is unpacked (dpkg-deb -x), its metadata and
maintainer scripts are checked, and its binary is started from the
unpacked tree with the unpacked configuration."""

import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "integration"))
import mqttraw  # noqa: E402
from conftest import free_port, port_accepts, sanitizer_report, wait_for  # noqa: E402

DEB = os.environ.get("ANTENNA_DEB")
pytestmark = pytest.mark.skipif(not DEB, reason="ANTENNA_DEB unset: run by make package-test")


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("root")
    sh("dpkg-deb", "-x", DEB, str(r))
    ctl = tmp_path_factory.mktemp("control")
    sh("dpkg-deb", "-e", DEB, str(ctl))
    return r, ctl


def test_control_and_files(root):
    r, ctl = root
    info = sh("dpkg-deb", "-f", DEB, "Package", "Depends", "Architecture").stdout
    assert "Package: antenna" in info
    for dep in ("libssl3", "librocksdb", "libyaml", "adduser"):
        assert dep in info, info
    assert (ctl / "conffiles").read_text().split() == [
        "/etc/antenna/antenna.yaml", "/etc/logrotate.d/antenna"]
    for f in ("usr/bin/antenna", "etc/antenna/antenna.yaml", "etc/logrotate.d/antenna",
              "lib/systemd/system/antenna.service", "usr/share/man/man8/antenna.8",
              "usr/share/man/man5/antenna.yaml.5", "usr/share/man/man1/antenna-ctl.1",
              "usr/share/doc/antenna/config.example.yaml"):
        assert (r / f).is_file(), f
    assert os.access(r / "usr/bin/antenna", os.X_OK)
    for script in ("postinst", "prerm", "postrm"):
        p = ctl / script
        assert os.access(p, os.X_OK), script
        sh("sh", "-n", str(p))


def test_unit_names_the_installed_paths_and_verifies(root, tmp_path):
    r, _ = root
    unit = (r / "lib/systemd/system/antenna.service").read_text()
    assert "ExecStart=/usr/bin/antenna -c /etc/antenna/antenna.yaml" in unit
    assert "ExecStartPre=/usr/bin/antenna check -c /etc/antenna/antenna.yaml" in unit
    for line in ("Type=notify", "StateDirectory=antenna", "ExecReload=/bin/kill -HUP $MAINPID",
                 "LimitNOFILE=", "WatchdogSec=", "User=antenna"):
        assert line in unit, line
    if shutil.which("systemd-analyze"):
        # verified against this machine's systemd, the binary path pointing
        # into the unpacked tree (verify checks that it is executable)
        copy = tmp_path / "antenna.service"
        copy.write_text(unit.replace("/usr/bin/antenna", str(r / "usr/bin/antenna")))
        p = subprocess.run(["systemd-analyze", "verify", str(copy)],
                           capture_output=True, text=True, timeout=60)
        # only the man: links may be unresolvable without man-db's index
        bad = [l for l in (p.stdout + p.stderr).splitlines()
               if l.strip() and "man " not in l and "Command 'man" not in l]
        assert not bad, "\n".join(bad)


def test_man_pages_render_without_warnings(root):
    r, _ = root
    if not shutil.which("man"):
        pytest.skip("man not installed")
    for page in ("man8/antenna.8", "man5/antenna.yaml.5", "man1/antenna-ctl.1"):
        p = subprocess.run(["man", "--warnings", "-l", str(r / "usr/share/man" / page)],
                           capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8"))
        assert p.returncode == 0 and not p.stderr.strip(), (page, p.stderr)
        assert "antenna" in p.stdout


def test_installed_config_passes_check(root):
    r, _ = root
    p = subprocess.run([str(r / "usr/bin/antenna"), "check", "-c",
                        str(r / "etc/antenna/antenna.yaml")],
                       capture_output=True, text=True, timeout=30, cwd=str(r))
    assert p.returncode == 0, p.stdout + p.stderr


class Notify:
    """The service manager's end of NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.got = []

    def wait(self, state, timeout=15):
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.got:
                if state in msg.split("\n"):
                    self.got.remove(msg)
                    return msg
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s within %ss (got %r)" % (state, timeout, self.got))
            self.sock.settimeout(left)
            try:
                self.got.append(self.sock.recv(4096).decode())
            except socket.timeout:
                pass


def test_runs_as_systemd_would(root, tmp_path):
    r, _ = root
    port, api = free_port(), free_port()
    conf = (r / "etc/antenna/antenna.yaml").read_text()
    conf = re.sub(r"port: 1883\b", "port: %d" % port, conf)
    conf = re.sub(r"port: 18083\b", "port: %d" % api, conf)
    cfg = tmp_path / "antenna.yaml"
    cfg.write_text(conf)
    state = tmp_path / "state"
    state.mkdir()
    notify = Notify(tmp_path / "notify")
    env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="400000",
               STATE_DIRECTORY=str(state))
    env.pop("WATCHDOG_PID", None)
    err = tmp_path / "stderr"
    with open(err, "wb") as f:
        proc = subprocess.Popen([str(r / "usr/bin/antenna"), "-c", str(cfg)], env=env,
                                stdin=subprocess.DEVNULL, stdout=f, stderr=f, cwd=str(tmp_path))
    try:
        notify.wait("READY=1")
        assert port_accepts("127.0.0.1", port)
        with mqttraw.RawClient("127.0.0.1", port) as c:
            assert c.connect("pkg", clean=False).rc == 0
            assert c.subscribe(1, [("pkg/#", 1)]).codes == [1]
        # the store went to the state directory, not ./data
        wait_for(lambda: (state / "data").is_dir(), 10, what="store in STATE_DIRECTORY")
        assert not (tmp_path / "data").exists()
        notify.wait("WATCHDOG=1")          # fed while the workers turn
        proc.send_signal(signal.SIGHUP)
        notify.wait("RELOADING=1")
        notify.wait("READY=1")
        proc.send_signal(signal.SIGTERM)
        notify.wait("STOPPING=1")
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        notify.sock.close()
    text = err.read_text(errors="replace")
    assert sanitizer_report(text) is None, text
    assert "systemd watchdog" in text
