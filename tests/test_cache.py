"""The cache: what it stores, how it keys, coalescing, stale-if-error, memory."""

import gzip
import json

import pytest
from helpers import API_KEY, FakeResponse, Harness, RecordingUpstream, chain, controlled_agent


def counting_upstream():
    state = {"n": 0}

    def respond(request, seen):
        state["n"] += 1
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-mbx-used-weight-1m", str(state["n"]).encode())
        return json.dumps({"n": state["n"], "pad": "x" * 400}).encode()
    return RecordingUpstream(respond)


def cached(**settings):
    return Harness(counting_upstream(), middleware=chain("cache", cache=settings))


def test_a_public_get_is_served_from_the_cache_within_its_ttl():
    h = cached()
    first = h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5")
    assert first.header(b"x-cache") == b"MISS"
    h.clock.advance(0.5)
    second = h.request("GET", "/api/v3/depth?limit=5&symbol=BTCUSDT")  # order is not the key
    assert second.header(b"x-cache") == b"HIT" and second.body == first.body
    assert second.header(b"age") == b"0"
    assert second.header(b"x-mbx-used-weight-1m") is None  # not the filler's weight
    assert second.header(b"x-bnproxy-source") == b"cache"
    assert len(h.upstream.seen) == 1
    h.clock.advance(0.6)  # depth TTL is 1 s
    assert h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5").header(b"x-cache") == b"MISS"
    assert len(h.upstream.seen) == 2


def test_ttls_per_endpoint_are_configurable():
    h = cached(**{"ttl.klines": "10"})
    h.request("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1m")
    h.clock.advance(9)
    assert h.request("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1m").header(
        b"x-cache") == b"HIT"
    h.clock.advance(59)
    h.request("GET", "/api/v3/exchangeInfo")
    h.clock.advance(59)
    assert h.request("GET", "/api/v3/exchangeInfo").header(b"x-cache") == b"HIT"


def test_both_symbols_encodings_share_one_entry():
    h = cached()
    h.request("GET", '/api/v3/ticker/24hr?symbols=["BTCUSDT","ETHUSDT"]')
    again = h.request("GET", "/api/v3/ticker/24hr?symbols=%5B%22BTCUSDT%22,%22ETHUSDT%22%5D")
    assert again.header(b"x-cache") == b"HIT"


@pytest.mark.parametrize("target,headers", [
    ("/api/v3/depth?symbol=BTCUSDT&timestamp=1", {}),
    ("/api/v3/depth?symbol=BTCUSDT&signature=ab", {}),
    ("/api/v3/depth?symbol=BTCUSDT&recvWindow=5000", {}),
    ("/api/v3/depth?symbol=BTCUSDT&listenKey=k", {}),
    ("/api/v3/depth?symbol=BTCUSDT", {b"Authorization": b"Bearer x"}),
    ("/api/v3/depth?symbol=BTCUSDT", {b"Cookie": b"a=b"}),
    ("/api/v3/depth?symbol=BTCUSDT&symbol=ETHUSDT", {}),  # ambiguous
    ("/api/v3/account?symbol=BTCUSDT", {}),  # not a public endpoint
    ("/api/v3/nonexistent?symbol=BTCUSDT", {}),  # unknown: private
])
def test_private_or_ambiguous_requests_bypass(target, headers):
    h = cached()
    h.request("GET", "/api/v3/depth?symbol=BTCUSDT")  # a public copy exists
    for _ in range(2):
        answer = h.request("GET", target, headers=headers)
        assert answer.header(b"x-cache") == b"BYPASS"
    assert len(h.upstream.seen) == 3


def test_private_responses_are_never_stored():
    h = cached()
    h.request("GET", "/api/v3/depth?symbol=BTCUSDT", headers={b"X-MBX-APIKEY": API_KEY})
    assert h.request("GET", "/api/v3/depth?symbol=BTCUSDT").header(b"x-cache") == b"MISS"


@pytest.mark.parametrize("header", [(b"Set-Cookie", b"a=b"), (b"Cache-Control", b"private"),
                                    (b"Cache-Control", b"no-store"), (b"Vary", b"*")])
def test_responses_that_forbid_storage_are_not_stored(header):
    def respond(request, seen):
        request.responseHeaders.addRawHeader(*header)
        return b"{}"
    h = Harness(RecordingUpstream(respond), middleware=chain("cache"))
    h.request("GET", "/api/v3/time2")  # unknown path is bypass; use a public one
    h.request("GET", "/api/v3/ping")
    assert h.request("GET", "/api/v3/ping").header(b"x-cache") == b"MISS"


def test_errors_are_not_stored():
    def respond(request, seen):
        request.setResponseCode(400)
        return b'{"code":-1121,"msg":"Invalid symbol."}'
    h = Harness(RecordingUpstream(respond), middleware=chain("cache"))
    h.request("GET", "/api/v3/depth?symbol=NOPE")
    assert h.request("GET", "/api/v3/depth?symbol=NOPE").status == 400
    assert len(h.upstream.seen) == 2


def test_headers_that_change_the_answer_are_in_the_key():
    h = cached()
    h.request("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1m")
    micro = h.request("GET", "/api/v3/klines?symbol=BTCUSDT&interval=1m",
                      headers={b"X-MBX-TIME-UNIT": b"MICROSECOND"})
    assert micro.header(b"x-cache") == b"MISS"


def test_identical_concurrent_misses_make_one_upstream_request():
    agent = controlled_agent()
    h = Harness(agent=agent, middleware=chain("cache"))
    answers = [h.start("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5") for _ in range(5)]
    h.flush()
    assert len(agent.pending) == 1
    agent.answer_all(lambda m, u: FakeResponse(200, {b"content-type": b"application/json"},
                                               b'{"lastUpdateId":1}'))
    h.flush()
    results = []
    for d in answers:
        d.addCallback(results.append)
    assert [r.body for r in results] == [b'{"lastUpdateId":1}'] * 5
    assert sorted(r.header(b"x-cache") for r in results) == [b"HIT"] * 4 + [b"MISS"]
    stats = h.service.context  # noqa: F841
    cache = h.service.middlewares[0]
    assert cache.snapshot()["coalesced"] == 4


def test_every_waiter_gets_the_error_too():
    agent = controlled_agent()
    h = Harness(agent=agent, middleware=chain("cache"))
    answers = [h.start("GET", "/api/v3/depth?symbol=BTCUSDT") for _ in range(3)]
    h.flush()
    agent.answer_all(lambda m, u: FakeResponse(503, {}, b'{"code":-1008,"msg":"busy"}'))
    h.flush()
    results = []
    for d in answers:
        d.addCallback(results.append)
    assert [r.status for r in results] == [503, 503, 503]


def test_a_waiter_that_disconnects_does_not_stop_the_others():
    agent = controlled_agent()
    h = Harness(agent=agent, middleware=chain("cache"))
    first = h.start("GET", "/api/v3/depth?symbol=BTCUSDT")
    second = h.start("GET", "/api/v3/depth?symbol=BTCUSDT")
    h.flush()
    cache = h.service.middlewares[0]
    from bnproxy.chain.messages import ProxyRequest
    req = ProxyRequest("GET", "spot", "/api/v3/depth", b"symbol=BTCUSDT", (), b"",
                       "127.0.0.1", 0.0, h.service.endpoints.lookup("spot", "GET",
                                                                     "/api/v3/depth"))
    third = cache.handle(req, lambda r: None)
    third.cancel()  # a follower leaves
    third.addErrback(lambda f: None)
    agent.answer_all(lambda m, u: FakeResponse(200, {}, b"{}"))
    h.flush()
    got = []
    first.addCallback(got.append)
    second.addCallback(got.append)
    assert [a.status for a in got] == [200, 200]


def test_stale_if_error_serves_a_bounded_stale_copy():
    outcomes = iter([200, 502, 502])

    def respond(request, seen):
        request.setResponseCode(next(outcomes))
        return b'{"v":1}'
    h = Harness(RecordingUpstream(respond), middleware=chain("cache"))
    h.request("GET", "/api/v3/depth?symbol=BTCUSDT")
    h.clock.advance(5)
    stale = h.request("GET", "/api/v3/depth?symbol=BTCUSDT")
    assert stale.status == 200 and stale.header(b"x-cache") == b"STALE"
    assert stale.header(b"age") == b"5" and stale.body == b'{"v":1}'
    h.clock.advance(30)  # now 35 s old: beyond the 30 s bound
    assert h.request("GET", "/api/v3/depth?symbol=BTCUSDT").status == 502


def test_memory_is_bounded_by_bytes_lru():
    h = cached(max_bytes="3000")
    for sym in ("A", "B", "C", "D", "E", "F"):
        h.request("GET", f"/api/v3/depth?symbol={sym}")
    cache = h.service.middlewares[0]
    snap = cache.snapshot()
    assert snap["bytes"] <= 3000 and snap["entries"] < 6
    assert h.request("GET", "/api/v3/depth?symbol=F").header(b"x-cache") == b"HIT"
    assert h.request("GET", "/api/v3/depth?symbol=A").header(b"x-cache") == b"MISS"


def test_gzip_copy_for_bots_that_accept_it():
    h = cached()
    plain = h.request("GET", "/api/v3/exchangeInfo")
    zipped = h.request("GET", "/api/v3/exchangeInfo", headers={b"Accept-Encoding": b"gzip"})
    assert zipped.header(b"content-encoding") == b"gzip"
    assert gzip.decompress(zipped.body) == plain.body
    assert zipped.length == len(zipped.body)
    refused = h.request("GET", "/api/v3/exchangeInfo", headers={b"Accept-Encoding": b"gzip;q=0"})
    assert refused.header(b"content-encoding") is None


def test_stats_and_clear_are_admin_resources():
    h = cached()
    h.request("GET", "/api/v3/depth?symbol=BTCUSDT")
    h.request("GET", "/api/v3/depth?symbol=BTCUSDT")
    stats = h.request("GET", "/cache/stats").json()
    assert (stats["hits"], stats["misses"], stats["entries"]) == (1, 1, 1)
    assert stats["endpoints"]["/api/v3/depth"]["hit_ratio"] == 0.5
    assert h.request("POST", "/cache/clear").json() == {"cleared": 1}
    denied = Harness(counting_upstream(), middleware=chain("cache"),
                     trusted_proxies=("127.0.0.1/32",))
    assert denied.request("POST", "/cache/clear",
                          headers={b"X-Forwarded-For": b"198.51.100.1"}).status == 403


@pytest.mark.parametrize("first,second", [
    (b"symbol=X%FF", b"symbol=X%FE"),            # not UTF-8: both decode to U+FFFD
    (b"symbol=BTC%zzUSDT", b"symbol=BTC%zzUSDT"),  # an invalid escape
    (b"symbol=BTC%2", b"symbol=BTC%2"),
])
def test_a_query_that_does_not_decode_exactly_bypasses_the_cache(first, second):
    h = cached()
    a = h.request("GET", b"/api/v3/ticker/price?" + first)
    b = h.request("GET", b"/api/v3/ticker/price?" + second)
    assert a.header(b"x-cache") == b.header(b"x-cache") == b"BYPASS"
    assert b.body != a.body  # each went upstream, none was served the other's answer
    assert [s.uri.split(b"?", 1)[1] for s in h.upstream.seen] == [first, second]


def test_valid_percent_encoding_and_utf8_are_still_cached():
    h = cached()
    h.request("GET", "/api/v3/ticker/price?symbol=%E4%B8%ADUSDT")
    again = h.request("GET", "/api/v3/ticker/price?symbol=%E4%B8%ADUSDT")
    assert again.header(b"x-cache") == b"HIT" and len(h.upstream.seen) == 1


# -- found in review ---------------------------------------------------------------------

def test_invented_paths_do_not_grow_the_cache_statistics():
    h = cached()
    for i in range(300):
        h.request("GET", f"/api/v3/nosuch{i}")
    stats = h.request("GET", "/cache/stats").json()
    assert set(stats["endpoints"]) == {"other"}
    assert stats["endpoints"]["other"]["bypassed"] == 300


@pytest.mark.parametrize("value", [b"gzip;q=high", b"gzip;q=0.5;x=1", b"gzip;q="])
def test_a_malformed_accept_encoding_is_answered_plain(value):
    h = cached()
    h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5")
    hit = h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5",
                    headers={b"Accept-Encoding": value})
    assert hit.status == 200 and hit.header(b"x-cache") == b"HIT"
    assert hit.header(b"content-encoding") is None
    json.loads(hit.body)


def test_an_order_is_not_the_caches_business():
    """Issue 22: the cache leaves requests it never handles unmarked (and
    uncounted): a signed POST is not a cache BYPASS."""
    h = cached()
    answer = h.request("POST", "/api/v3/order?symbol=BTCUSDT&timestamp=1&signature=ab")
    assert answer.status == 200 and answer.header(b"x-cache") is None
    stats = h.request("GET", "/cache/stats").json()
    assert stats["bypassed"] == 0 and stats["endpoints"] == {}


# -- issue 21: the bypass without per-request work -----------------------------------------

def test_a_public_endpoint_never_cached_goes_upstream_each_time_marked_and_counted():
    h = Harness(counting_upstream(), middleware=chain("cache"))
    answers = [h.request("GET", "/api/v3/time") for _ in range(3)]
    keyed = h.request("GET", "/api/v3/time", headers={b"X-MBX-APIKEY": API_KEY})
    assert [a.header(b"x-cache") for a in [*answers, keyed]] == [b"BYPASS"] * 4
    assert len({a.body for a in answers}) == 3 and len(h.upstream.seen) == 4
    assert all(a.header(b"x-bnproxy-source") == b"upstream" for a in answers)
    assert h.upstream.seen[3].header(b"x-mbx-apikey") == API_KEY  # sent as it came
    # the key Binance accepted there makes its public requests public (as before)
    h.request("GET", "/api/v3/depth?symbol=BTCUSDT", headers={b"X-MBX-APIKEY": API_KEY})
    assert h.upstream.seen[4].header(b"x-mbx-apikey") is None
    counts = h.request("GET", "/cache/stats").json()["endpoints"]["/api/v3/time"]
    assert counts["bypassed"] == 4 and counts["hit_ratio"] == 0.0


def test_the_bypass_mark_keeps_everything_else_of_the_answer():
    import attrs

    from bnproxy.chain.messages import ProxyResponse
    from bnproxy.middleware.cache.middleware import Cache
    response = ProxyResponse(418, ((b"a", b"1"),), b"{}", "somewhere", "why", 7)
    marked = Cache._mark(response, b"BYPASS")
    assert marked == attrs.evolve(response, headers=((b"a", b"1"), (b"x-cache", b"BYPASS")))
