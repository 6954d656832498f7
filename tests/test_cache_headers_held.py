"""Answers kept in memory say so truthfully (issue 17 item 7): exchangeInfo
held by the streams middleware is ``X-Cache: HIT`` with its ``Age``, never the
``MISS`` of the request that fetched it; coalesced answers too."""

import pytest
from helpers import Harness, RecordingUpstream, chain
from twisted.internet.defer import Deferred

from bnproxy.chain.messages import JSON, ProxyRequest, ProxyResponse

INFO = "/api/v3/exchangeInfo"



def test_held_exchange_info_is_a_hit_with_its_age(rig):
    first = rig.ask(INFO)
    assert first.header(b"x-cache") == b"MISS" and first.source == "upstream"
    rig.sleep(1)
    second = rig.ask(INFO)
    assert second.source == "cache"
    assert second.header(b"x-cache") == b"HIT" and second.header(b"age") == b"1"
    assert [k for k, _ in second.headers].count(b"x-cache") == 1
    rig.sleep(100)  # past the cache's TTL: the streams middleware still holds it
    third = rig.ask(INFO)
    assert third.header(b"x-cache") == b"HIT" and third.header(b"age") == b"101"
    assert third.body == first.body


def test_held_exchange_info_is_young_again_after_its_refresh(rig):
    rig.ask(INFO)
    for _ in range(7):
        rig.sleep(50)
        rig.ask(INFO)  # a bot keeps asking: it is refreshed every 300 s
    age = int(rig.ask(INFO).header(b"age"))
    assert age < 100


def test_coalesced_answers_are_hits_of_age_zero():
    h = Harness(RecordingUpstream(), middleware=chain("cache"))
    cache = h.service.middlewares[0]
    endpoints = h.service.endpoints
    request = ProxyRequest("GET", "spot", "/api/v3/depth", b"symbol=BTCUSDT", (), b"",
                           "127.0.0.1", 0.0, endpoints.lookup("spot", "GET", "/api/v3/depth"))
    upstream = Deferred()
    first = cache.handle(request, lambda r: upstream)
    second = cache.handle(request, lambda r: pytest.fail("not coalesced"))
    upstream.callback(ProxyResponse(200, (JSON,), b"{}"))
    answers = [first.result, second.result]
    assert answers[0].header(b"x-cache") == b"MISS" and answers[0].header(b"age") is None
    assert answers[1].header(b"x-cache") == b"HIT" and answers[1].header(b"age") == b"0"
    assert answers[1].detail == "coalesced"


@pytest.mark.parametrize("header", [(b"set-cookie", b"session=bot-a"),
                                    (b"cache-control", b"private"),
                                    (b"cache-control", b"no-store")])
def test_an_exchange_info_meant_for_one_bot_is_not_held_for_the_others(tmp_path, header):
    def respond(request, seen):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(*header)
        return b'{"timezone":"UTC","symbols":[]}'

    upstream = RecordingUpstream(respond)
    h = Harness(upstream, middleware=chain("streams"), state_dir=tmp_path)
    h.request("GET", INFO)
    second = h.request("GET", INFO)
    assert second.header(b"x-bnproxy-source") == b"upstream"  # asked again, not held
    assert [h.path_of(s) for s in upstream.seen].count(INFO) == 2
