"""/health and the admin allowlist in front of it."""

from helpers import Harness


def test_health_reports_version_uptime_markets_and_chain():
    h = Harness(middleware=(("stamp", {"value": "v"}),))
    h.clock.advance(12.5)
    answer = h.request("GET", "/health")
    assert answer.status == 200
    doc = answer.json()
    # Nothing has reached the upstream yet (the service is not started, so no
    # probe ran): /health says what /ready says (issue 10: they agree).
    assert doc["status"] == "not ready"
    assert doc["problems"] == ["upstream spot not reached yet"]
    assert h.request("GET", "/ready").json()["problems"] == doc["problems"]
    assert doc["version"]
    assert doc["uptime_seconds"] == 12.5
    assert doc["markets"]["usdm"]["rest"] == "http://usdm.upstream.test"
    assert doc["chain"] == ["stamp"]
    assert h.upstream.seen == []


def test_admin_resources_refuse_other_addresses():
    h = Harness(trusted_proxies=("127.0.0.1/32",))
    denied = h.request("GET", "/health", headers={b"X-Forwarded-For": b"203.0.113.7"})
    assert denied.status == 403
    assert denied.json()["code"] == -1002
    allowed = h.request("GET", "/health", headers={b"X-Forwarded-For": b"::ffff:127.0.0.1"})
    assert allowed.status == 200


def test_health_status_agrees_with_ready_once_the_upstream_answers():
    h = Harness()
    h.service.readiness.probe()  # the ping the started service sends every 15 s
    assert h.request("GET", "/ready").status == 200
    doc = h.request("GET", "/health").json()
    assert (doc["status"], doc["problems"]) == ("ok", [])
