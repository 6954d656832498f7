"""The weight governor, in virtual time."""

import json

import pytest
from helpers import FakeResponse, Harness, RecordingUpstream, chain, controlled_agent


def upstream(status=200, headers=None, body=b"{}"):
    def respond(request, seen):
        request.setResponseCode(status() if callable(status) else status)
        for k, v in (headers or {}).items():
            request.setHeader(k, v)
        return body
    return RecordingUpstream(respond)


def governed(up=None, start=0.0, **settings):
    settings.setdefault("limit.spot", "100")
    settings.setdefault("margin", "0")
    h = Harness(up or upstream(), middleware=chain("ratelimit", ratelimit=settings))
    h.clock.advance(start)
    return h


def depth(h, limit=100, headers=None):  # weight 5 on spot
    return h.request("GET", f"/api/v3/depth?symbol=BTCUSDT&limit={limit}", headers=headers)


def test_the_budget_is_the_limit_minus_the_margin():
    h = governed(**{"limit.spot": "100", "margin": "0.1"})
    statuses = [depth(h).status for _ in range(19)]
    assert statuses == [200] * 18 + [429]  # 18 × 5 = 90 = 100 − 10 %
    assert len(h.upstream.seen) == 18


def test_local_429_has_retry_after_and_binance_shape_when_the_wait_is_too_long():
    h = governed(start=10.0)  # 50 s to the next window: beyond max_wait
    for _ in range(20):
        depth(h)
    answer = depth(h)
    assert answer.status == 429
    assert answer.header(b"retry-after") == b"50"
    assert answer.json()["code"] == -1003
    assert answer.header(b"x-bnproxy-source") == b"local"


def test_requests_wait_in_order_for_the_next_window():
    h = governed(start=57.0)  # the window ends in 3 s, within max_wait
    for _ in range(20):
        depth(h)
    waiting = [h.start("GET", f"/api/v3/depth?symbol=S{i}&limit=100") for i in range(3)]
    h.flush()
    assert len(h.upstream.seen) == 20
    h.clock.advance(2.9)
    h.flush()
    assert len(h.upstream.seen) == 20
    h.clock.advance(0.2)
    h.flush()
    got = []
    for d in waiting:
        d.addCallback(got.append)
    assert [a.status for a in got] == [200, 200, 200]
    assert [s.uri.split(b"symbol=")[1][:2] for s in h.upstream.seen[20:]] == [b"S0", b"S1", b"S2"]


def test_the_maximum_wait_is_a_deadline():
    h = governed(start=50.0, max_wait="5")  # 10 s to the window: the wait alone is too long
    for _ in range(20):
        depth(h)
    assert depth(h).status == 429
    h2 = governed(start=56.0, max_wait="2")
    for _ in range(20):
        depth(h2)
    d = h2.start("GET", "/api/v3/depth?symbol=X&limit=100")
    h2.flush()
    got = []
    d.addCallback(got.append)
    assert got and got[0].status == 429  # 4 s to wait > 2 s allowed: refused at once


def test_a_bot_that_disconnects_leaves_the_queue():
    h = governed(start=58.0)
    for _ in range(20):
        depth(h)
    rl = h.service.middlewares[0]
    from bnproxy.chain.messages import ProxyRequest
    ep = h.service.endpoints.lookup("spot", "GET", "/api/v3/depth")
    req = ProxyRequest("GET", "spot", "/api/v3/depth", b"symbol=X&limit=100", (), b"",
                       "127.0.0.1", 0.0, ep)
    sent = []
    d = rl.handle(req, lambda r: sent.append(r))
    assert rl.usage()["spot"]["queued"] == 1
    d.cancel()
    d.addErrback(lambda f: None)
    assert rl.usage()["spot"]["queued"] == 0
    h.clock.advance(3)
    assert sent == []


def test_upstream_used_weight_reconciles_the_count():
    h = governed(upstream(headers={b"X-MBX-USED-WEIGHT-1M": b"95"}))
    assert depth(h).status == 200
    rl = h.service.middlewares[0]
    assert rl.usage()["spot"]["used"] == 95  # another bot outside the proxy spent weight too
    assert depth(h).status == 200  # 95 + 5 = 100: still fits
    assert depth(h).status == 429


def test_a_418_starts_a_ban_nothing_is_sent_until_it_ends_then_traffic_resumes():
    statuses = iter([418] + [200] * 10)
    h = governed(upstream(status=lambda: next(statuses),
                          headers={b"Retry-After": b"120"},
                          body=b'{"code":-1003,"msg":"Way too much request weight used; '
                               b'IP banned until 1700000120000."}'))
    assert depth(h).status == 418
    sent = len(h.upstream.seen)
    answers = []
    for _ in range(5):
        h.clock.advance(20)
        answers.append(depth(h))
    assert len(h.upstream.seen) == sent == 1
    assert all(a.status == 418 for a in answers)
    retry = [int(a.header(b"retry-after")) for a in answers]
    assert retry == sorted(retry, reverse=True) and retry[0] <= 100
    h.clock.advance(21)  # 121 s after the ban began
    assert depth(h).status == 200
    assert len(h.upstream.seen) == 2


def test_a_429_without_retry_after_bans_until_the_window_ends():
    statuses = iter([429, 200])
    h = governed(upstream(status=lambda: next(statuses)), start=30.0)
    assert depth(h).status == 429
    # 12.4: to the end of the minute window plus a second (was "30", advance 30)
    assert depth(h).header(b"retry-after") == b"31"
    h.clock.advance(31)
    assert depth(h).status == 200


def test_the_banned_until_time_in_the_body_is_used_without_retry_after():
    h = governed(upstream(status=418, body=b'{"code":-1003,"msg":"Way too much request weight '
                                           b'used; IP banned until 300000."}'), start=100.0)
    depth(h)
    rl = h.service.middlewares[0]
    assert rl.banned_for("spot") == 300.0 - 100.0  # ends at 300.0


def test_bans_survive_a_restart(tmp_path):
    settings = {"limit.spot": "100", "state_file": str(tmp_path / "bans.json")}
    h = Harness(upstream(status=418, headers={b"Retry-After": b"600"}),
                middleware=chain("ratelimit", ratelimit=settings))
    h.clock.advance(1000)
    depth(h)
    saved = json.loads((tmp_path / "bans.json").read_text())["bans"]
    assert [b["until"] for b in saved] == [1600]
    again = Harness(upstream(), middleware=chain("ratelimit", ratelimit=settings))
    again.clock.advance(1100)
    answer = depth(again)
    assert answer.status == 418 and answer.header(b"retry-after") == b"500"
    assert again.upstream.seen == []
    again.clock.advance(500)
    assert depth(again).status == 200


def test_a_ban_answers_the_queue_at_once():
    agent = controlled_agent()
    h = Harness(agent=agent, middleware=chain("ratelimit", ratelimit={"limit.spot": "10",
                                                                      "margin": "0"}))
    h.clock.advance(58)
    first = h.start("GET", "/api/v3/depth?symbol=A&limit=100")  # 5
    second = h.start("GET", "/api/v3/depth?symbol=B&limit=100")  # 10
    queued = h.start("GET", "/api/v3/depth?symbol=C&limit=100")  # waits
    h.flush()
    assert len(agent.pending) == 2
    agent.answer_all(lambda m, u: FakeResponse(418, {b"retry-after": b"120"}, b"{}"))
    h.flush()
    got = []
    queued.addCallback(got.append)
    assert got[0].status == 418 and got[0].header(b"x-bnproxy-source") == b"local"
    del first, second


def test_per_client_accounting_and_order_counts():
    h = governed(upstream(headers={b"X-MBX-ORDER-COUNT-10S": b"3"}),
                 client_header="X-Bnproxy-Client")
    depth(h, headers={b"X-Bnproxy-Client": b"bot-a"})
    depth(h, headers={b"X-Bnproxy-Client": b"bot-a"})
    depth(h, headers={b"X-Bnproxy-Client": b"bot-b"})
    clients = h.service.health.document()["middleware"]["ratelimit"]["clients"]
    assert clients["bot-a"]["weight"] == 10 and clients["bot-a"]["requests"] == 2
    assert clients["bot-b"]["order_counts"] == {"10S": "3"}


def test_an_optional_per_client_share():
    h = governed(client_share="0.3", client_header="X-Bnproxy-Client")
    bot_a = {b"X-Bnproxy-Client": b"a"}
    statuses = [depth(h, headers=bot_a).status for _ in range(8)]
    assert statuses == [200] * 6 + [429] * 2  # 30 of 100
    assert depth(h, headers={b"X-Bnproxy-Client": b"b"}).status == 200
    assert h.service.health.document()["middleware"]["ratelimit"]["clients"]["a"]["rejected"] == 2


@pytest.mark.parametrize("settings,message", [
    ({"margin": "2"}, "margin: must be at most 0.9"),
    ({"limit.spot": "lots"}, "limit.spot: expected a whole number"),
    ({"max_wait": "-1"}, "max_wait: must be at least 0"),
    ({"speed": "1"}, "unknown setting"),
])
def test_bad_settings_are_refused(settings, message):
    from bnproxy.config.reader import ConfigError
    with pytest.raises(ConfigError, match=message):
        Harness(middleware=chain("ratelimit", ratelimit=settings))


def test_one_answer_with_the_used_weight_and_two_order_counts():
    """Issue 21: the answer's headers are read in one pass; each of them still counts."""
    h = governed(upstream(headers={b"X-MBX-ORDER-COUNT-10S": b"3", b"X-MBX-USED-WEIGHT-1M": b"40",
                                   b"X-MBX-ORDER-COUNT-1D": b"17"}),
                 client_header="X-Bnproxy-Client")
    depth(h, headers={b"X-Bnproxy-Client": b"bot-a"})
    ratelimit = h.service.health.document()["middleware"]["ratelimit"]
    assert ratelimit["clients"]["bot-a"]["order_counts"] == {"10S": "3", "1D": "17"}
    assert ratelimit["pools"]["spot"]["used"] == 40
