"""The dashboard's Rules card (issue 17: rules "shown on a dashboard page
with their metrics"), in a real browser: Debian's Chromium, headless, driven
by playwright-core (tests/integration/js/dashboard_rules.js, through
dashlib.js like the other dashboard flows).

A rule from the configuration file selects messages that a paho client
publishes; the card shows it with its counters.  From the card: Test with a
broken statement (the error names the column), Test with a sample message
(the rows shown), Create with actions that are not JSON (refused in the
page), Create a rule (the API then has it, and it republishes), Disable it
(the API says so and it stops), Delete it (gone from the API)."""

import json
import subprocess
import time

import pytest

from helpers import Paho
from test_52_dashboard import ARTIFACTS, CHROMIUM, JS_DIR, NODE, skip_reason
from test_76_rules import expect_marker, rbroker, wait_metric  # noqa: F401 (a fixture)

pytestmark = pytest.mark.antenna_only


def collect_until(sub, want, timeout=10.0):
    """Messages (topic, payload) until `want` arrived (a republish is routed
    at the worker's next turn, so it may come after later publishes)."""
    got, deadline = [], time.monotonic() + timeout
    while want not in got:
        assert time.monotonic() < deadline, "no %r; got %r" % (want, got)
        m = sub.get(timeout=max(0.01, deadline - time.monotonic()))
        got.append((m.topic, m.payload))
    return got


@pytest.mark.deadline(150)
def test_rules_card_lists_tests_creates_disables_deletes(rbroker, tmp_path):  # noqa: F811
    why = skip_reason()
    if why:
        pytest.skip(why)
    b = rbroker()
    pub = Paho(b, "dr-pub").connect()
    sub = Paho(b, "dr-sub").connect()
    sub.subscribe("alerts/#", 1)
    sub.subscribe("hot/#", 1)
    for t in (35, 36, 20):
        pub.publish("sensors/d1/data", json.dumps({"temp": t}).encode(), qos=1)
    wait_metric(b, "hot", "matched", 3)

    ARTIFACTS.mkdir(exist_ok=True)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    proc = subprocess.Popen(
        [NODE, str(JS_DIR / "dashboard_rules.js"), "--url", b.api_url + "/", "--key", b.rapi.key,
         "--rule", "hot", "--matched", "3", "--new-id", "from-card",
         "--user-data-dir", str(profile), "--artifacts", str(ARTIFACTS), "--timeout", "120",
         "--chromium", CHROMIUM],
        cwd=str(JS_DIR), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    events, created_ok, disabled_ok = [], False, False
    try:
        for line in proc.stdout:
            events.append(json.loads(line))
            name = events[-1]["event"]
            if name == "created":
                # the card's rule is the API's, and it runs
                r = b.rapi.json("GET", "/api/v1/rules/from-card")
                assert r["enabled"] is True and "sensors/+/data" in r["sql"], r
                pub.publish("sensors/d2/data", b'{"temp": 50}', qos=1)
                collect_until(sub, ("hot/dr-pub", b"50"))
                created_ok = True
            elif name == "disabled":
                assert b.rapi.json("GET", "/api/v1/rules/from-card")["enabled"] is False
                pub.publish("sensors/d3/data", b'{"temp": 51}', qos=1)
                got = collect_until(sub, ("alerts/d3", b'{"t": 51, "c": "dr-pub"}'))
                # a republish of the disabled rule would have been routed in
                # the same turn as the enabled one's: before the marker
                got += expect_marker(sub, pub)
                assert not [t for t, _ in got if t.startswith("hot/")], got
                disabled_ok = True
            elif name in ("deleted", "error"):
                break
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        pub.close()
        sub.close()
    err = proc.stderr.read().decode(errors="replace")
    by = {e["event"]: e for e in events}
    assert rc == 0 and "error" not in by, "browser flow failed: %r\n%s" % (events, err[-3000:])

    row = by["listed"]["row"]
    assert row["state"] == "enabled" and row["matched"] == "3" and row["passed"] == "2", row
    assert row["failed"] == "0" and "republish: 2 ok" in row["actions"], row
    assert "column" in by["test_refused"]["text"], by["test_refused"]
    assert by["tested"]["rows"] == [{"clientid": "s9", "t": 42}], by["tested"]
    assert "Actions is not JSON" in by["create_refused"]["text"], by["create_refused"]
    assert created_ok and disabled_ok, events
    assert by["created"]["row"]["state"] == "enabled"
    st, _, _ = b.rapi.call("GET", "/api/v1/rules/from-card")
    assert st == 404
