"""A real browser over WebSocket: Debian's Chromium, headless, driven by
playwright-core (tests/integration/js/browser.js), opens a page served on
loopback by Python's http.server; the page loads MQTT.js's browser bundle
(node_modules/mqtt/dist/mqtt.min.js), connects to antenna's ws listener,
subscribes, and receives a message paho publishes over TCP.

Skipped, with the reason, without chromium (`apt-get install chromium`),
node, or tests/integration/js/node_modules (`npm ci`, make test does it)."""

import functools
import http.server
import json
import os
import pathlib
import shutil
import subprocess
import threading

import pytest

pytestmark = pytest.mark.antenna_only

JS_DIR = pathlib.Path(__file__).resolve().parent / "js"
CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
NODE = shutil.which("node")
MQTT_BUNDLE = JS_DIR / "node_modules" / "mqtt" / "dist" / "mqtt.min.js"
PLAYWRIGHT = JS_DIR / "node_modules" / "playwright-core" / "package.json"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>antenna browser test</title>
<script src="mqtt.min.js"></script></head>
<body><script>
window.antenna = { subscribed: false, messages: [], error: "" };
try {
  const client = mqtt.connect("ws://127.0.0.1:%(port)d/mqtt",
                              { clientId: "browser-%(tag)s", reconnectPeriod: 0,
                                connectTimeout: 5000, protocolVersion: 4 });
  client.on("connect", () => {
    client.subscribe("browser/t", { qos: 1 }, (err, granted) => {
      if (err) window.antenna.error = "subscribe: " + err.message;
      else window.antenna.subscribed = true;
    });
  });
  client.on("message", (topic, payload) => {
    window.antenna.messages.push({ topic: topic, payload: payload.toString() });
  });
  client.on("error", (e) => { window.antenna.error = "mqtt: " + e.message; });
} catch (e) {
  window.antenna.error = "page: " + e;
}
</script></body></html>
"""


def skip_reason():
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return "chromium not installed at %s (apt-get install chromium)" % CHROMIUM
    if NODE is None:
        return "node not on PATH"
    if not MQTT_BUNDLE.is_file() or not PLAYWRIGHT.is_file():
        return ("MQTT.js or playwright-core not installed: `npm ci` in tests/integration/js "
                "(make test does it)")
    return None


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def web_root(tmp_path):
    """An HTTP server on 127.0.0.1 serving a directory with the MQTT.js
    bundle; yields (directory, port)."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(MQTT_BUNDLE, root / "mqtt.min.js")
    handler = functools.partial(QuietHandler, directory=str(root))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield root, srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.deadline(90)
def test_browser_mqttjs_over_ws(broker, web_root, tmp_path):
    why = skip_reason()
    if why:
        pytest.skip(why)
    paho = pytest.importorskip("paho.mqtt.client")
    b = broker(listener={"transport": "ws"}, extra_listeners=1)
    root, http_port = web_root
    (root / "page.html").write_text(PAGE % {"port": b.ports[0], "tag": os.getpid()})
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [NODE, str(JS_DIR / "browser.js"), "--page",
         "http://127.0.0.1:%d/page.html" % http_port, "--user-data-dir", str(profile),
         "--count", "1", "--timeout", "45", "--chromium", CHROMIUM],
        cwd=str(JS_DIR), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
    events = []
    try:
        for line in proc.stdout:
            ev = json.loads(line)
            events.append(ev)
            if ev["event"] == "subscribed":
                kw = {}
                if hasattr(paho, "CallbackAPIVersion"):
                    kw["callback_api_version"] = paho.CallbackAPIVersion.VERSION1
                c = paho.Client(client_id="paho-to-browser", **kw)
                c.connect("127.0.0.1", b.ports[1], 30)
                c.loop_start()
                c.publish("browser/t", b"hello, browser", qos=1).wait_for_publish(10)
                c.disconnect()
                c.loop_stop()
            if ev["event"] in ("message", "error", "timeout"):
                break
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    err = proc.stderr.read().decode(errors="replace")
    assert {"event": "message", "topic": "browser/t", "payload": "hello, browser"} in events, (
        events, err[-3000:])
    assert rc == 0, (events, err[-3000:])
    b.wait_log(r"client 'browser-\d+' .*: connected \(MQTT 3\.1\.1")
