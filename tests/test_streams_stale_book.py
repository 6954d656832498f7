"""While a book's stream is stale its REST fallback stays inside the proxy's
own-weight share (issue 18 item 5), in virtual time: the bots asking for a
stale book share one upstream request per book, at the largest limit that
costs what they asked, answered each with Binance's bytes for its own
limit; the share refusing, they are forwarded as before; once the stream
delivers again the book is served from it and the fallback stops."""

import json

import pytest

BASE = {"spot": "/api/v3", "usdm": "/fapi/v1", "coinm": "/dapi/v1"}



def depth_requests(rig, market):
    return rig.exchange.counters.rest_total(f"{BASE[market]}/depth")


def targets(market, limits=(5, 20, 100), symbol="ETHUSDT"):
    return [f"{BASE[market]}/depth?symbol={symbol}&limit={n}" for n in limits]


def stale_book(rig, market, symbol="ETHUSDT"):
    """A book live once, its stream then silent past the quiet bound (30 s),
    the market frozen so that REST answers the same moment throughout."""
    rig.ask(f"{BASE[market]}/exchangeInfo")
    rig.ask(targets(market, (5,), symbol)[0])
    rig.until(lambda: rig.streams.books[(market, symbol)].state == "live", 30)
    rig.exchange.hubs[market].silence_all = True
    rig.exchange.pause()
    rig.sleep(35)
    assert rig.streams.stale_streams(market) == {f"{symbol.lower()}@depth@100ms"}
    rig.exchange.counters.reset()


def own_fallback(rig, market):
    own = rig.streams.health()["own_weight"]
    return (own["by_purpose"].get(market, {}).get("fallback", 0),
            own["answering_bots"].get(market, {}).get("fallback", 0))


@pytest.mark.parametrize("market,symbol,weight", [
    ("spot", "ETHUSDT", 5), ("usdm", "ETHUSDT", 5), ("coinm", "BTCUSD_PERP", 5)])
def test_bots_asking_a_stale_book_for_5_20_100_share_one_upstream_request(rig, market, symbol,
                                                                          weight):
    stale_book(rig, market, symbol)
    wanted = targets(market, symbol=symbol) * 4  # 12 bots, three limits
    answers = rig.ask_together(wanted, True)
    assert depth_requests(rig, market) == 1
    assert {(a.status, a.source, a.detail) for a in answers} == {(200, "stream", "fallback")}
    for answer, target in zip(answers, wanted):  # Binance's bytes for each limit
        assert answer.body == rig.rest(market, target)
    assert own_fallback(rig, market) == (weight, weight)  # own weight, answering the bots


def test_a_stale_usdm_book_asked_for_small_limits_costs_what_they_cost(rig):
    stale_book(rig, "usdm")
    answers = rig.ask_together(targets("usdm", (5, 10, 20, 50)), True)
    assert depth_requests(rig, "usdm") == 1
    assert own_fallback(rig, "usdm") == (2, 2)  # limit=50: weight 2, as limit=5
    assert [len(json.loads(a.body)["bids"]) for a in answers] == [5, 10, 20, 50]
    assert answers[0].body == rig.rest("usdm", targets("usdm", (5,))[0])


def test_the_fallback_answer_is_reused_within_the_depth_ttl_then_asked_again(rig):
    stale_book(rig, "spot")
    rig.ask_together(targets("spot"), True)
    rig.sleep(0.5)
    answers = rig.ask_together(targets("spot"), True)
    assert depth_requests(rig, "spot") == 1  # the held answer, half a second old
    assert {a.detail for a in answers} == {"fallback"}
    rig.sleep(0.6)
    rig.ask_together(targets("spot"), True)
    assert depth_requests(rig, "spot") == 2  # a TTL later: one more, for every limit


def test_bots_asking_every_second_for_a_minute_cost_one_request_a_second(rig):
    stale_book(rig, "spot")
    for _ in range(60):
        rig.ask_together(targets("spot") * 7, True)  # 21 bots
        rig.sleep(1)
    assert depth_requests(rig, "spot") == 60  # forwarded, each limit apart: 180
    assert own_fallback(rig, "spot") == (300, 300)


def test_past_the_own_weight_share_the_bots_are_forwarded_as_before(rig):
    stale_book(rig, "spot")
    rig.streams.refetch.share = 0.0  # the own-weight cap refuses every own request
    answers = rig.ask_together(targets("spot") * 2, True)
    assert {a.status for a in answers} == {200}
    assert {a.source for a in answers} <= {"upstream", "cache"}  # forwarded, as before
    assert depth_requests(rig, "spot") == 3  # each limit forwarded (the cache coalesces)
    assert rig.streams.refetch.refused["share"] >= 1
    assert own_fallback(rig, "spot") == (0, 0)
    for answer, target in zip(answers, targets("spot") * 2):
        assert answer.body == rig.rest("spot", target)


def test_a_failing_fallback_lets_the_bot_go_on_with_binances_answer(rig):
    # (one bot: a second one going on would open a connection, and the
    # LoopbackReactor's connectTCP pumps every connection at once, feeding
    # the reused one's parser while it is still inside its previous answer's
    # callback; real sockets never answer within a write)
    stale_book(rig, "spot")
    faults = rig.exchange.faults
    faults.error_status, faults.error_rate, faults.path_prefix = 503, 1.0, "/api/v3/depth"
    answers = rig.ask_together(targets("spot", (20,)), True)
    assert [(a.status, a.source) for a in answers] == [(503, "upstream")]  # Binance's own
    assert depth_requests(rig, "spot") == 2  # the fallback, then the bot's own request
    faults.error_rate = 0.0


def test_a_book_whose_stream_recovers_stops_using_the_fallback(rig):
    stale_book(rig, "spot")
    assert {a.detail for a in rig.ask_together(targets("spot"), True)} == {"fallback"}
    rig.exchange.resume()
    rig.exchange.hubs["spot"].silence_all = False
    rig.until(lambda: rig.streams.books[("spot", "ETHUSDT")].state == "live"
              and not rig.streams.stale_streams("spot"), 60)
    rig.sleep(1)
    fallbacks = own_fallback(rig, "spot")
    rig.exchange.counters.reset()
    answers = rig.ask_together(targets("spot"), True)
    assert {(a.source, a.detail) for a in answers} == {("stream", "stream")}
    assert depth_requests(rig, "spot") == 0
    assert own_fallback(rig, "spot") == fallbacks


def test_fallbacks_leave_half_the_own_share_to_the_snapshots_that_resync_books():
    from twisted.internet.defer import succeed
    from twisted.internet.task import Clock

    from bnproxy.binance.endpoints import load_endpoints
    from bnproxy.binance.markets import PRODUCTION
    from bnproxy.chain.messages import JSON, ProxyResponse
    from bnproxy.middleware.streams.refetch import Refetcher
    from bnproxy.middleware.streams.responders.depth import FALLBACK, FALLBACK_SHARE

    clock = Clock()
    clock.advance(1_767_225_600)  # a minute's start

    def upstream(request):
        return succeed(ProxyResponse(200, (JSON,), b"{}", "upstream", "200",
                                     weight=request.weight))
    refetch = Refetcher(clock, upstream, load_endpoints(), PRODUCTION, share=0.25)
    path, query = "/api/v3/depth", b"symbol=ETHUSDT&limit=100"  # weight 5
    sent = 0
    while refetch.fetch((FALLBACK, "spot", "ETHUSDT"), "spot", path, query, FALLBACK,
                        credited=False, of_share=FALLBACK_SHARE) is not None:
        sent += 1
    assert sent * 5 == 6000 * 0.25 * FALLBACK_SHARE  # half of 25 % of spot's 6,000
    refetch.credit("spot", path, b"symbol=BTCUSDT&limit=5")  # a bot asked a book
    assert refetch.fetch(("depth", "spot", "BTCUSDT"), "spot", path, query,
                         "snapshot") is not None  # the other half: a resync still goes
