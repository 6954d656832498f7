"""/ready and /health while the shared state is degraded: still serving."""

import json

from twisted.web.test.requesthelper import DummyRequest

from bnproxy.server.admin import ReadyResource


def render(resource):
    request = DummyRequest([b""])
    body = resource.render_GET(request)
    return request.responseCode or 200, json.loads(body)


def test_degraded_is_ready_with_the_reason():
    code, doc = render(ReadyResource(lambda: [], lambda: ["shared state degraded (x)"]))
    assert code == 200
    assert doc == {"status": "degraded", "problems": ["shared state degraded (x)"]}


def test_not_ready_wins_over_degraded():
    code, doc = render(ReadyResource(lambda: ["draining"], lambda: ["shared state degraded"]))
    assert code == 503 and doc["status"] == "not ready"


def test_ready():
    assert render(ReadyResource(lambda: []))[1] == {"status": "ready"}
