"""The streams middleware's parts on their own, in virtual time: the Binance
facts it reads, the refetcher's backoff and credits, the proxy's readiness
asking it by interface, and readiness pings counted as own weight."""

from __future__ import annotations

import attrs
import orjson
from test_streams_own_weight import ENDPOINTS, MARKETS, ask, depth_event, feed, make
from twisted.internet.defer import succeed
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from bnproxy.binance.marketdata import depth_snapshot_limit, usdm_route
from bnproxy.binance.markets import PRODUCTION
from bnproxy.chain.interfaces import IReadinessCheck
from bnproxy.chain.messages import INTERNAL, JSON, ProxyRequest, ProxyResponse
from bnproxy.config.model import ProxyConfig
from bnproxy.middleware.streams.klines import KlineSeries
from bnproxy.middleware.streams.refetch import Refetcher
from bnproxy.service import ProxyService


def test_snapshot_sizes_follow_the_weight_bands_of_the_endpoint_table():
    spot = ENDPOINTS.lookup("spot", "GET", "/api/v3/depth")
    usdm = ENDPOINTS.lookup("usdm", "GET", "/fapi/v1/depth")
    allowed = PRODUCTION["usdm"].depth_limits
    assert [depth_snapshot_limit(spot, None, 5000, n) for n in (1, 5, 20, 50, 51, 250, 500)] \
        == [100, 100, 100, 100, 500, 500, 1000]
    assert depth_snapshot_limit(spot, None, 1000, 1000) == 1000  # never past the cap
    assert [depth_snapshot_limit(usdm, allowed, 1000, n) for n in (5, 20, 50, 100, 500)] \
        == [50, 50, 100, 500, 1000]
    assert usdm_route("btcusdt@depth@100ms") == "public"
    assert usdm_route("btcusdt@kline_1m") == "market"


def test_a_series_takes_older_candles_only_when_they_join():
    series = KlineSeries("1m", 1000)
    now = 1_767_225_600_000
    rows = [[now - i * 60_000, "1", "1", "1", "1", "1", now - i * 60_000 + 59_999, "1", 1, "1",
             "1", "0"] for i in range(3)][::-1]
    assert series.seed(rows[-1:], now)
    assert series.missing(None, None, 3) == (2, now - 1)
    assert not series.prepend(rows[:1])  # leaves a hole
    assert series.prepend(rows[:2]) and len(series) == 3
    assert series.covers(None, None, 3) == (0, 3)
    assert series.missing(now - 3 * 60_000 - 5, None, 2) is None  # all older: historical


def test_a_failing_job_backs_off_and_its_retries_spend_no_credit():
    clock = MemoryReactorClock()
    calls = []

    def chain(request):
        calls.append(request)
        return succeed(ProxyResponse(503, (JSON,), b"{}", weight=5))
    refetch = Refetcher(clock, chain, ENDPOINTS, MARKETS)
    refetch.credit("spot", "/api/v3/depth", b"symbol=BTCUSDT&limit=5")
    path = "/api/v3/depth"
    assert refetch.fetch("job", "spot", path, b"symbol=BTCUSDT&limit=100", "snapshot")
    for _ in range(40):  # the stream's rate: 10 a second for 4 s
        refetch.fetch("job", "spot", path, b"symbol=BTCUSDT&limit=100", "snapshot")
        clock.advance(0.1)
    assert len(calls) == 3  # at 0, ~1 s, ~3 s (backing off 1 s, 2 s, then 4 s): not 40
    assert refetch.credits["spot"] == 0 and calls[0].header(INTERNAL) == b"streams"
    assert refetch.fetch("other", "spot", path, b"symbol=ETHUSDT&limit=100",
                         "snapshot") is None  # a new job needs a new bot request
    assert refetch.total[("spot", "snapshot")] == 15


def test_the_proxy_asks_its_middlewares_for_readiness_by_interface(tmp_path):
    config = ProxyConfig(listen=(), upstreams={"spot": "http://127.0.0.1:9/spot"},
                         stream_upstreams={"spot": "ws://127.0.0.1:9/spot"},
                         middleware=(("streams", {}),), state_dir=str(tmp_path))
    service = ProxyService(MemoryReactorClock(), config)
    assert "stream manager spot not running" in service.readiness.problems()

    @implementer(IReadinessCheck)
    class Warming:  # a plugin's middleware: found by what it declares, not by names
        name = "warming"

        def readiness_problems(self):
            return ["warming up"]
    service.middlewares.append(Warming())
    assert "warming up" in service.readiness.problems()


def test_readiness_pings_are_counted_as_own_weight():
    clock, upstream, streams = make()
    request = ProxyRequest("GET", "spot", "/api/v3/ping", b"", ((INTERNAL, b"ready"),), b"",
                           "bnproxy", clock.seconds(),
                           ENDPOINTS.lookup("spot", "GET", "/api/v3/ping"))
    streams.handle(request, upstream)
    streams.handle(request, upstream)
    assert streams.refetch.total[("spot", "ping")] == 2
    assert streams.health()["own_weight"]["by_purpose"]["spot"]["ping"] == 2


def test_a_kline_gap_is_repaired_by_one_backfill():
    clock, upstream, streams = make()
    ask(streams, upstream, "spot", "/api/v3/klines", "symbol=ETHUSDT&interval=1m&limit=10")
    series = streams.series[("spot", "ETHUSDT", "1m")]
    last = series.opens[-1]
    t = last + 3 * 60_000  # two candles were missed
    event = {"e": "kline", "E": t, "s": "ETHUSDT",
             "k": {"t": t, "T": t + 59_999, "o": "1", "h": "2", "l": "0.5", "c": "1.5",
                   "v": "10", "q": "15", "n": 3, "V": "5", "Q": "7", "x": False}}
    clock.advance(180)
    for _ in range(5):
        feed(streams, "spot", "ethusdt@kline_1m", event)
    (backfill,) = upstream.own("/klines")
    assert backfill.params["startTime"] == str(last) and backfill.params["endTime"] == str(t - 1)
    assert series.ready and series.opens[-1] == t


def test_depth_answers_from_the_book_are_exact():
    clock, upstream, streams = make()
    ask(streams, upstream, "spot", "/api/v3/depth", "symbol=BTCUSDT&limit=5")
    feed(streams, "spot", "btcusdt@depth@100ms",
         {**depth_event(101, 101), "b": [["1000.0", "3"]]})
    answer = ask(streams, upstream, "spot", "/api/v3/depth", "symbol=BTCUSDT&limit=5")
    body = orjson.loads(answer.body)
    assert answer.source == "stream" and body["lastUpdateId"] == 101
    assert body["bids"][0] == ["1000.0", "3"] and len(body["asks"]) == 5
    assert attrs.asdict(answer)["status"] == 200


def test_the_message_rate_is_read_from_counts_not_kept_per_message():
    from bnproxy.middleware.streams.manager import StreamManager

    clock = MemoryReactorClock()
    manager = StreamManager(clock, PRODUCTION["spot"])
    assert manager.health()["messages_per_second"] == 0.0
    for _second in range(20):
        for _ in range(50):
            manager.dispatch("btcusdt@aggTrade", {}, None)
        clock.advance(1)
        rate = manager.health()["messages_per_second"]
    assert rate == 50.0  # over the last ten seconds or so
    assert len(manager._rate_samples) <= 12  # a sample per health() call, pruned
