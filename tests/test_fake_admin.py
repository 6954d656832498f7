"""The fake exchange's admin API (``/_fake/…``): JSON bodies or query
strings, and a 400 with a message for what it cannot do (virtual time)."""

import orjson
import pytest
from treq.testing import RequestTraversalAgent
from twisted.internet import task
from twisted.web.client import readBody

from bnproxy.testing import FakeExchange
from bnproxy.upstream.client import BytesProducer


@pytest.fixture
def admin():
    clock = task.Clock()
    x = FakeExchange(clock, seed=7)
    agent = RequestTraversalAgent(x.resource())

    def post(target: str, body: bytes | None = None):
        d = agent.request(b"POST", b"http://fake.test/_fake/" + target.encode(), None,
                          BytesProducer(body) if body is not None else None)
        out = []
        d.addCallback(lambda r: readBody(r).addCallback(lambda b: out.append((r.code, b))))
        agent.flush()
        assert out, target
        code, data = out[0]
        return code, orjson.loads(data)

    return x, post


def test_faults_from_a_query_string_are_typed_like_json(admin):
    x, post = admin
    assert post("faults?latency=1.5&error_status=503&error_rate=0.5&stall_body=true") == (
        200, {"ok": True})
    assert (x.faults.latency, x.faults.error_status, x.faults.error_rate,
            x.faults.stall_body) == (1.5, 503, 0.5, True)
    assert post("faults", b'{"latency": 0, "path_prefix": "/api/v3/depth"}')[0] == 200
    assert (x.faults.latency, x.faults.path_prefix) == (0.0, "/api/v3/depth")


def test_a_ban_from_a_query_string(admin):
    """``POST /_fake/ban?ip=…`` answered 500 (KeyError) before."""
    x, post = admin
    assert post("ban?ip=10.0.0.9&seconds=5&market=spot") == (200, {"ok": True})
    status, payload, _ = x.answer("spot", "GET", "/api/v3/ping", b"", b"", {}, "10.0.0.9")
    assert status == 418 and orjson.loads(payload)["code"] == -1003
    status, _, _ = x.answer("usdm", "GET", "/fapi/v1/ping", b"", b"", {}, "10.0.0.9")
    assert status == 200


@pytest.mark.parametrize("target,body,message", [
    ("ban", None, "ban needs ip"),
    ("ban", b'{"seconds": 3}', "ban needs ip"),
    ("ban?ip=1.2.3.4&seconds=soon", None, "seconds: expected float"),
    ("ban?ip=1.2.3.4&market=futures", None, "unknown market 'futures'"),
    ("faults?latency=slow", None, "latency: expected float"),
    ("faults?error_status=5.5", None, "error_status: expected int"),
    ("faults?colour=red", None, "unknown fault colour"),
    ("faults", b"latency=1", "the body must be a JSON object"),
    ("faults", b"[1]", "the body must be a JSON object"),
    ("ws-drop?market=futures", None, "unknown market 'futures'"),
    ("skew?ms=later", None, "ms: expected int"),
])
def test_what_the_admin_cannot_do_is_a_400_with_a_message(admin, target, body, message):
    x, post = admin
    status, answer = post(target, body)
    assert status == 400 and message in answer["error"], answer
    assert x.faults.latency == 0 and x.faults.error_status == 0  # nothing half-applied


def test_an_unknown_action_is_a_404(admin):
    assert admin[1]("frobnicate") == (404, {"error": "unknown action frobnicate"})
