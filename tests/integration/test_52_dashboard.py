"""The web dashboard: served by the API listener from the files embedded in
the binary (no CDN), and its flow in a real browser: Debian's Chromium,
headless, driven by playwright-core (tests/integration/js/dashboard.js)
logs in with an API key (a wrong one first), sees the client this test
connected with paho, its subscription and a retained message (the
broker's $SYS topics hidden), the live figures (a message rate while the test
publishes), searches by client id prefix, saves a screenshot
(tests/integration/artifacts/dashboard.png), kicks the client and sees it
gone; the test then checks the paho client really was disconnected and that
the API agrees.  A second flow signs in with a user and password (a
mosquitto_passwd file), reloads the page (the session survives in
sessionStorage) and logs out (it does not).

The browser part is skipped, with the reason, without chromium (`apt-get
install chromium`), node, or tests/integration/js/node_modules (`npm ci`,
make js-deps does it).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from helpers import Paho

pytestmark = pytest.mark.antenna_only

HERE = pathlib.Path(__file__).resolve().parent
JS_DIR = HERE / "js"
ARTIFACTS = HERE / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
NODE = shutil.which("node")
PLAYWRIGHT = JS_DIR / "node_modules" / "playwright-core" / "package.json"


def skip_reason():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return "chromium not installed at %s (apt-get install chromium)" % CHROMIUM
    if NODE is None:
        return "node not on PATH"
    if not PLAYWRIGHT.is_file():
        return "playwright-core not installed: `npm ci` in tests/integration/js (make js-deps)"
    return None


def http_get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def new_key(antenna_bin, path):
    p = subprocess.run([antenna_bin, "ctl", "keys", "create", "dash", "--keys-file", str(path)],
                       capture_output=True, timeout=20)
    assert p.returncode == 0, p.stderr
    return p.stdout.decode().strip()


def test_dashboard_files_are_embedded_and_served(broker, antenna_bin, tmp_path):
    new_key(antenna_bin, tmp_path / "keys")
    b = broker(api={"keys_file": str(tmp_path / "keys")})
    # the page and its files need no credentials (the API calls do)
    st, hdr, body = http_get(b.api_url + "/")
    assert st == 200 and hdr["Content-Type"].startswith("text/html"), (st, hdr)
    page = body.decode()
    assert "<title>antenna</title>" in page and 'id="login-form"' in page
    # everything the page loads comes from the broker itself: no CDN
    refs = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert refs and all(r.startswith("/static/") or r.startswith("data:") for r in refs), refs
    for ref, ctype in [("/static/app.js", "text/javascript"), ("/static/chart.js", "text/javascript"),
                       ("/static/style.css", "text/css")]:
        st, hdr, body = http_get(b.api_url + ref)
        assert st == 200 and hdr["Content-Type"].startswith(ctype), (ref, st, hdr)
        # the bytes served are the files of web/, unchanged
        assert body == (HERE.parents[1] / "web" / ref.lstrip("/")).read_bytes(), ref
        assert b"http://" not in body and b"https://" not in body, ref
    assert http_get(b.api_url + "/index.html")[2] == http_get(b.api_url + "/")[2]
    st, hdr, body = http_get(b.api_url + "/static/nope.js")
    assert st == 404 and json.loads(body)["code"] == "not_found"
    # the data behind it is not open
    st, hdr, body = http_get(b.api_url + "/api/v1/clients")
    assert st == 401


@pytest.mark.deadline(120)
def test_dashboard_login_see_search_kick(broker, antenna_bin, tmp_path):
    why = skip_reason()
    if why:
        pytest.skip(why)
    key = new_key(antenna_bin, tmp_path / "keys")
    b = broker(api={"keys_file": str(tmp_path / "keys")})
    tag = str(os.getpid())
    target_id, other_id = "dash-target-" + tag, "zz-other-" + tag

    target = Paho(b, client_id=target_id)
    gone = threading.Event()

    def on_disconnect(client, userdata, rc):
        gone.set()
        client.disconnect()  # no automatic reconnect: the kick must stick

    target.client.on_disconnect = on_disconnect
    target.connect()
    target.subscribe("dash/#", 1)
    other = Paho(b, client_id=other_id).connect()
    other.publish("dash/retained", b"kept", qos=1, retain=True)

    # a steady message rate for the charts while the browser watches
    stop = threading.Event()

    def publish_loop():
        for _ in range(20 * 120):  # bounded: at most 2 minutes at 20/s
            if stop.is_set():
                return
            other.publish("dash/load", b"x", qos=0, wait=False)
            time.sleep(0.05)

    pub = threading.Thread(target=publish_loop, daemon=True)
    pub.start()

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    if shot.exists():
        shot.unlink()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [NODE, str(JS_DIR / "dashboard.js"), "--url", b.api_url + "/", "--key", key,
         "--client", target_id, "--other", other_id, "--topic", "dash/#",
         "--retained", "dash/retained", "--user-data-dir", str(profile),
         "--screenshot", str(shot), "--timeout", "90", "--chromium", CHROMIUM],
        cwd=str(JS_DIR), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    events = []
    try:
        for line in proc.stdout:
            events.append(json.loads(line))
            if events[-1]["event"] in ("kicked", "error"):
                break
        rc = proc.wait(60)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        pub.join(5)
    err = proc.stderr.read().decode(errors="replace")
    names = [e["event"] for e in events]
    assert names == ["login_page", "login_refused", "logged_in", "client_seen", "tables",
                     "figures", "search", "screenshot", "kicked"], (events, err[-3000:])
    assert rc == 0, (events, err[-3000:])
    ev = {e["event"]: e for e in events}
    assert "401" in ev["login_refused"]["message"] or "credentials" in ev["login_refused"]["message"]
    assert set(ev["client_seen"]["rows"]) >= {target_id, other_id}
    assert [target_id, "dash/#"] in ev["tables"]["subscriptions"]
    assert ev["tables"]["retained"] == ["dash/retained"]  # $SYS hidden by default
    assert ev["tables"]["listeners"] == [b.port]
    assert ev["figures"]["ready"] == "yes" and int(ev["figures"]["connections"]) == 2
    assert float(ev["figures"]["rate_in"]) > 0
    assert ev["search"]["rows"] == [target_id]
    assert target_id not in ev["kicked"]["rows"]

    # the paho client really was disconnected, and the API agrees
    assert gone.wait(5), "the kicked client was not disconnected"
    assert other.client.is_connected()
    st, hdr, body = http_get(b.api_url + "/api/v1/clients?connected=true",
                             {"Authorization": "Bearer " + key})
    assert st == 200
    assert [c["client_id"] for c in json.loads(body)["data"]] == [other_id]
    b.wait_log(r"client '%s' .*: disconnected: kicked by the management API" % re.escape(target_id))

    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    print("dashboard screenshot: %s" % shot)
    other.close()
    target.client.loop_stop()


@pytest.mark.deadline(90)
def test_dashboard_user_password_login_reload_logout(broker, tmp_path):
    why = skip_reason()
    if why:
        pytest.skip(why)
    mp = shutil.which("mosquitto_passwd")
    if mp is None:
        pytest.skip("mosquitto_passwd not installed")
    users = tmp_path / "users"
    users.write_text("")
    subprocess.run([mp, "-b", str(users), "ops", "pa:ss word"], check=True, timeout=10)
    # mosquitto_passwd writes 101 iterations: accepted only when asked
    b = broker(api={"users_file": str(users), "min_password_iterations": 101})
    client_id = "dash-basic-%d" % os.getpid()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with Paho(b, client_id=client_id):
        p = subprocess.run(
            [NODE, str(JS_DIR / "dashboard.js"), "--flow", "login", "--url", b.api_url + "/",
             "--user", "ops", "--password", "pa:ss word", "--client", client_id,
             "--user-data-dir", str(profile), "--timeout", "60", "--chromium", CHROMIUM],
            cwd=str(JS_DIR), stdin=subprocess.DEVNULL, capture_output=True, timeout=80)
    events = [json.loads(l) for l in p.stdout.decode().splitlines() if l.strip()]
    err = p.stderr.decode(errors="replace")
    assert [e["event"] for e in events] == ["login_page", "login_refused", "logged_in",
                                            "client_seen", "reloaded", "logged_out"], (events, err[-3000:])
    assert p.returncode == 0, (events, err[-3000:])
