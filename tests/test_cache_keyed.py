"""Keyed public requests (issue 18 item 1): a public request whose only
private marker is an API key Binance already accepted is answered like an
anonymous one; any other key goes to Binance, whose answer reaches the bot
unchanged; the key is kept nowhere but as a salted hash in memory."""

import json

import pytest
from helpers import API_KEY, Harness, RecordingUpstream, chain, sign

from bnproxy.binance.privacy import AcceptedKeys

BAD_KEY = b"a-key-binance-refuses"
DEPTH = "/api/v3/depth?symbol=BTCUSDT&limit=5"


def keyed(key: bytes = API_KEY) -> dict:
    return {b"X-MBX-APIKEY": key}


def upstream_refusing(bad: bytes = BAD_KEY) -> RecordingUpstream:
    """Answers every request, except one carrying ``bad``: 401 -2015."""
    def respond(request, seen):
        request.setHeader(b"content-type", b"application/json")
        if seen.header(b"x-mbx-apikey") == bad:
            request.setResponseCode(401)
            return b'{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}'
        return json.dumps({"n": len(upstream.seen)}).encode()
    upstream = RecordingUpstream(respond)
    return upstream


def cache_of(h: Harness):
    return h.service.middlewares[0]


def test_an_accepted_key_on_a_public_endpoint_is_served_from_the_cache():
    h = Harness(upstream_refusing(), middleware=chain("cache"))
    first = h.request("GET", DEPTH, headers=keyed())
    assert first.status == 200 and first.header(b"x-cache") == b"BYPASS"  # not yet accepted
    assert h.upstream.seen[0].header(b"x-mbx-apikey") == API_KEY
    second = h.request("GET", DEPTH, headers=keyed())
    assert second.header(b"x-cache") == b"MISS"
    assert h.upstream.seen[1].header(b"x-mbx-apikey") is None  # asked as an anonymous bot
    third = h.request("GET", DEPTH, headers=keyed())
    anonymous = h.request("GET", DEPTH)
    assert third.header(b"x-cache") == anonymous.header(b"x-cache") == b"HIT"
    assert third.body == anonymous.body == second.body
    assert third.header(b"x-bnproxy-source") == b"cache"
    assert len(h.upstream.seen) == 2


def test_a_key_accepted_on_a_signed_request_makes_its_public_requests_public():
    h = Harness(upstream_refusing(), middleware=chain("cache"))
    h.request("GET", DEPTH)  # an anonymous bot filled the entry
    query = sign(b"timestamp=1700000000000")
    assert h.request("GET", "/api/v3/account?" + query.decode(), headers=keyed()).status == 200
    assert h.request("GET", DEPTH, headers=keyed()).header(b"x-cache") == b"HIT"


def test_a_refused_key_always_reaches_binance_and_its_answer_the_bot():
    h = Harness(upstream_refusing(), middleware=chain("cache"))
    h.request("GET", DEPTH, headers=keyed())
    h.request("GET", DEPTH, headers=keyed())  # API_KEY accepted, the entry stored
    for _ in range(3):
        answer = h.request("GET", DEPTH, headers=keyed(BAD_KEY))
        assert answer.status == 401 and answer.json()["code"] == -2015
        assert answer.header(b"x-cache") == b"BYPASS"
    assert [s.header(b"x-mbx-apikey") for s in h.upstream.seen[2:]] == [BAD_KEY] * 3


@pytest.mark.parametrize("target,headers", [
    (DEPTH + "&timestamp=1", keyed()),  # a private parameter beside the key
    ("/" + sign(DEPTH[1:].encode()).decode(), keyed()),
    (DEPTH, {**keyed(), b"Authorization": b"Bearer x"}),
    ("/api/v3/account", keyed()),  # not a public endpoint
])
def test_an_accepted_key_makes_nothing_else_public(target, headers):
    h = Harness(upstream_refusing(), middleware=chain("cache"))
    h.request("GET", DEPTH, headers=keyed())  # accepted
    h.request("GET", DEPTH)
    for _ in range(2):
        assert h.request("GET", target, headers=headers).header(b"x-cache") == b"BYPASS"
    assert len(h.upstream.seen) == 4


def test_the_key_is_in_no_cache_key_and_the_memory_holds_no_key():
    h = Harness(upstream_refusing(), middleware=chain("cache"))
    for _ in range(3):
        h.request("GET", DEPTH, headers=keyed())
    cache = cache_of(h)
    assert API_KEY not in repr(list(cache._store)).encode()
    assert API_KEY not in repr(list(cache._keys)).encode()
    assert API_KEY not in repr(vars(cache.accepted_keys)).encode()
    assert API_KEY.decode() not in json.dumps(cache.snapshot())


def test_the_accepted_key_memory_is_bounded_and_forgets_the_oldest():
    keys = AcceptedKeys(limit=3)
    for n in range(5):
        keys.observe(b"key-%d" % n, 200, "upstream")
    assert len(keys) == 3
    assert not keys.accepted(b"key-0") and not keys.accepted(b"key-1")
    assert keys.accepted(b"key-4")
    keys.observe(b"key-9", 401, "upstream")
    keys.observe(b"key-8", 200, "cache")  # only Binance's answer accepts a key
    assert not keys.accepted(b"key-9") and not keys.accepted(b"key-8")


def test_two_processes_hash_the_same_key_differently():
    a, b = AcceptedKeys(), AcceptedKeys()
    assert a._digest(API_KEY) != b._digest(API_KEY)  # salted: nothing to match across
