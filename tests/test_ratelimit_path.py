"""The rate limiter takes one path per request (issue 22): its weight is
predicted once, the fleet's ledger gets one entry per request whatever the
outcome (sent, waited then sent, refused, banned), and a ban heard while a
request waits answers it. In virtual time, on an in-memory shared state."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import urlsplit

from memory_shared import MemorySharedState
from twisted.internet import task
from twisted.internet.defer import Deferred

from bnproxy.binance.endpoints import Endpoint, load_endpoints
from bnproxy.binance.markets import build_markets
from bnproxy.chain import messages
from bnproxy.chain.messages import ProxyRequest, ProxyResponse
from bnproxy.middleware.ratelimit.middleware import OPTIONS, build_ratelimit

DEPTH = "/api/v3/depth"  # limit=100: weight 5
# The scope of a 418 on spot: its host, as the governor names it.
SPOT_HOST = "host:" + urlsplit(build_markets()["spot"].rest_base or "").netloc


class Counting(MemorySharedState):
    def __init__(self, clock) -> None:
        super().__init__(clock)
        self.added: list[tuple] = []
        self.decided = True

    def add(self, client, weight, requests, rejected):
        self.added.append((client, weight, requests, rejected))
        super().add(client, weight, requests, rejected)


def limiter(tmp_path, clock, shared, **settings):
    options = {o.name: o.default for o in OPTIONS}
    options.update({"limit": {"spot": 20}, "margin": 0.0, **settings})
    context = SimpleNamespace(markets=build_markets(), state_dir=str(tmp_path),
                              reactor=clock, egresses=(), shared_state=shared)
    return build_ratelimit("ratelimit", options, context)


def request(symbol="BTCUSDT") -> ProxyRequest:
    endpoint = load_endpoints().lookup("spot", "GET", DEPTH)
    return ProxyRequest("GET", "spot", DEPTH, f"symbol={symbol}&limit=100".encode(), (),
                        b"", "10.0.0.5", 0.0, endpoint)


def answer(status=200, headers=()) -> ProxyResponse:
    return ProxyResponse(status, tuple(headers), b"{}")


def resolved(result):
    if isinstance(result, Deferred):
        out: list = []
        result.addBoth(out.append)
        return out[0] if out else None
    return result


def test_one_prediction_and_one_ledger_entry_per_request(tmp_path, monkeypatch):
    clock = task.Clock()
    clock.advance(657.0)  # 3 s to the next window: within max_wait
    shared = Counting(clock)
    rl = limiter(tmp_path, clock, shared)
    predicted = []
    monkeypatch.setattr(messages, "_WEIGHTS", {})  # nothing remembered from other tests
    weight = Endpoint.weight
    monkeypatch.setattr(Endpoint, "weight", lambda self, params: (
        predicted.append(1), weight(self, params))[1])
    sent: list = []

    def upstream(req):
        sent.append(req)
        return answer()

    answers = [rl.handle(request(), upstream) for _ in range(6)]  # 4 × 5 fit in 20
    assert [a.status for a in answers[:4]] == [200] * 4
    assert all(isinstance(a, Deferred) and not a.called for a in answers[4:])
    assert len(sent) == 4 and len(shared.added) == 4
    for _ in range(40):  # the next window: the waiting requests go
        clock.advance(0.1)
    assert [resolved(a).status for a in answers[4:]] == [200, 200]
    assert len(sent) == 6
    assert shared.added == [("10.0.0.5", 5, 1, 0)] * 6  # one entry each, none twice
    assert len(predicted) == 1  # six identical requests: predicted once, then remembered


def test_a_refused_and_a_banned_request_are_one_entry_each(tmp_path):
    clock = task.Clock()
    clock.advance(610.0)  # 50 s to the next window: beyond max_wait
    shared = Counting(clock)
    rl = limiter(tmp_path, clock, shared)
    for _ in range(4):
        assert resolved(rl.handle(request(), lambda r: answer())).status == 200
    refused = resolved(rl.handle(request(), lambda r: answer()))
    assert refused.status == 429 and refused.detail == "budget"
    banned = resolved(rl.handle(request(), lambda r: answer(
        418, ((b"retry-after", b"120"),))))
    assert banned.status == 429  # still over the budget: not sent, so not banned by it
    clock.advance(60)
    assert resolved(rl.handle(request(), lambda r: answer(
        418, ((b"retry-after", b"120"),)))).status == 418  # Binance's
    local = resolved(rl.handle(request(), lambda r: answer()))
    assert local.status == 418 and b"was not sent" in local.body
    assert shared.added == [("10.0.0.5", 5, 1, 0)] * 4 + [("10.0.0.5", 0, 1, 1)] * 2 + [
        ("10.0.0.5", 5, 1, 0), ("10.0.0.5", 0, 1, 1)]


def test_a_ban_heard_from_the_fleet_answers_the_waiting_requests(tmp_path):
    clock = task.Clock()
    clock.advance(657.0)  # 3 s to the next window: within max_wait
    shared = Counting(clock)
    rl = limiter(tmp_path, clock, shared)
    for _ in range(4):
        resolved(rl.handle(request(), lambda r: answer()))
    sent: list = []
    waiting = rl.handle(request(), lambda r: sent.append(r) or answer())
    assert isinstance(waiting, Deferred) and not waiting.called
    shared.set_ban("default", SPOT_HOST, clock.seconds() + 120, 418,
                   "strikes=1")  # another instance's 418
    got = resolved(waiting)
    assert got.status == 418 and b"was not sent" in got.body
    clock.advance(5)
    assert sent == []
    assert shared.added[-1] == ("10.0.0.5", 0, 1, 1)
