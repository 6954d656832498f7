"""/ready and /health while the shared state is degraded or a ban is in
force: still serving (HTTP 200), the verdict and its reasons in the body."""

import json

from twisted.web.test.requesthelper import DummyRequest

from bnproxy.server.admin import ReadyResource
from bnproxy.verdict import Since


def render(*found):
    request = DummyRequest([b""])
    body = ReadyResource(lambda: Since().verdict(0.0, found)).render_GET(request)
    return request.responseCode or 200, json.loads(body)


def test_degraded_is_ready_with_the_reason():
    code, doc = render(("shared-state", "degraded", "shared state degraded (x)"))
    assert code == 200
    assert doc == {"status": "degraded", "problems": ["shared state degraded (x)"]}


def test_banned_is_ready_with_the_reason():
    code, doc = render(("ban:spot", "banned", "Binance ban in force for spot"),
                       ("shared-state", "degraded", "shared state degraded (x)"))
    assert code == 200
    assert doc["status"] == "banned"
    assert doc["problems"][0] == "Binance ban in force for spot"


def test_not_ready_wins_over_banned_and_degraded():
    code, doc = render(("ban:spot", "banned", "ban"), ("draining", "not ready", "draining"),
                       ("shared-state", "degraded", "shared state degraded"))
    assert code == 503 and doc["status"] == "not ready"
    assert doc["problems"][0] == "draining"


def test_ready():
    assert render()[1] == {"status": "ready"}
