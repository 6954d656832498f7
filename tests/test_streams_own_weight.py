"""The streams middleware keeps its own REST weight in proportion to what bots
ask (issue 12 items 6, 8, 9), in virtual time: a ``MemoryReactorClock``, a
scripted upstream behind ``context.chain`` and stream messages handed to the
stream managers directly (no socket)."""

from __future__ import annotations

from urllib.parse import parse_qsl

import attrs
import orjson
import pytest
from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock
from zope.interface import implementer

from bnproxy.binance.endpoints import load_endpoints
from bnproxy.binance.markets import PRODUCTION
from bnproxy.chain.context import MiddlewareContext
from bnproxy.chain.interfaces import (
    IHealthReporter,
    IMetricsSource,
    IMiddleware,
    IReadinessCheck,
    IWeightGovernor,
)
from bnproxy.chain.messages import INTERNAL, JSON, ProxyRequest, ProxyResponse
from bnproxy.chain.options import read_options
from bnproxy.middleware.streams.dispatcher import Streams, build_streams
from bnproxy.middleware.streams.settings import OPTIONS

ENDPOINTS = load_endpoints()
LISTED = ["BTCUSDT", "ETHUSDT"] + [f"C{i}USDT" for i in range(300)]
MARKETS = {m: attrs.evolve(PRODUCTION[m], stream_base=f"wss://{m}.example.test")
           for m in ("spot", "usdm")}
T0 = 1_767_225_600.0  # a minute boundary


class Upstream:
    """Answers like Binance for the few market-data paths, and records what
    the proxy sent (its own requests carry INTERNAL)."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.sent: list[ProxyRequest] = []
        self.hold = False
        self.update_id = 100  # lastUpdateId of depth snapshots
        self.book_levels: int | None = None  # a thin book: fewer levels a side than asked
        self.held: list[tuple[Deferred, ProxyResponse]] = []

    def own(self, path_part: str = "") -> list[ProxyRequest]:
        return [r for r in self.sent if r.header(INTERNAL) is not None and path_part in r.path]

    def __call__(self, request: ProxyRequest):
        self.sent.append(request)
        p = dict(parse_qsl(request.query.decode()))
        weight = request.endpoint.weight(p) if request.endpoint else 1
        now_ms = int(self.clock.seconds() * 1000)
        if request.path.endswith("/exchangeInfo"):
            body = orjson.dumps({"symbols": [{"symbol": s} for s in LISTED]})
        elif p.get("symbol") not in LISTED:
            return succeed(ProxyResponse(400, (JSON,), b'{"code":-1121,"msg":"Invalid symbol."}',
                                         weight=weight))
        elif request.path.endswith("/klines"):
            body = orjson.dumps(klines(now_ms, p))
        elif request.path.endswith("/depth"):
            n = int(p.get("limit", 100))
            if self.book_levels is not None:
                n = min(n, self.book_levels)
            body = orjson.dumps({"lastUpdateId": self.update_id,
                                 "bids": [[f"{1000 - i}.0", "1"] for i in range(n)],
                                 "asks": [[f"{1001 + i}.0", "1"] for i in range(n)]})
        else:
            body = b"{}"
        response = ProxyResponse(200, (JSON,), body, weight=weight)
        if self.hold:
            d: Deferred = Deferred()
            self.held.append((d, response))
            return d
        return succeed(response)

    def release(self) -> None:
        held, self.held = self.held, []
        for d, response in held:
            d.callback(response)


def klines(now_ms: int, p: dict) -> list[list]:
    step = 60_000
    last = now_ms // step * step
    if "endTime" in p:
        last = min(last, int(p["endTime"]) // step * step)
    limit = int(p.get("limit", 500))
    opens = [last - i * step for i in range(limit)][::-1]
    if "startTime" in p:
        opens = [t for t in opens if t >= int(p["startTime"])]
    return [[t, "1", "2", "0.5", "1.5", "10", t + step - 1, "15", 3, "5", "7", "0"]
            for t in opens]


@implementer(IWeightGovernor)
class Governor:
    def __init__(self, budget: int) -> None:
        self.budget = budget

    def pool_of(self, request):
        return request.market

    def reserve(self, pool, weight, egress=None):
        return True

    def usage(self):
        return {"spot": {"used": 0, "budget": self.budget, "limit": 6000, "banned_for": 0.0,
                         "egress": "-"}}

    def banned_for(self, pool, egress=None):
        return 0.0

    def set_client_share(self, client, share):
        pass


def make(settings=None, governor=None, info_known=True):
    clock = MemoryReactorClock()
    clock.advance(T0)
    upstream = Upstream(clock)
    built = {}
    context = MiddlewareContext(reactor=clock, upstream=upstream, chain=upstream,
                                endpoints=ENDPOINTS, markets=MARKETS,
                                add_admin=lambda *a: None, state_dir=".", built=built)
    if governor is not None:
        built["ratelimit"] = governor
    streams = build_streams("streams", read_options("middleware.streams", OPTIONS,
                                                    settings or {}), context)
    built["streams"] = streams
    if info_known:
        for market in MARKETS:
            ask(streams, upstream, market, "/api/v3/exchangeInfo" if market == "spot"
                else "/fapi/v1/exchangeInfo", "")
    return clock, upstream, streams


def ask(streams: Streams, upstream: Upstream, market: str, path: str, query: str,
        client: str = "10.0.0.1"):
    request = ProxyRequest("GET", market, path, query.encode(), (), b"", client,
                           streams._clock.seconds(), ENDPOINTS.lookup(market, "GET", path))
    result = streams.handle(request, upstream)
    if isinstance(result, Deferred):
        out = []
        result.addCallback(out.append)
        return out[0] if out else result
    return result


def kline_event(symbol: str, now_ms: int, closed=False) -> dict:
    t = now_ms // 60_000 * 60_000
    return {"e": "kline", "E": now_ms, "s": symbol,
            "k": {"t": t, "T": t + 59_999, "o": "1", "h": "2", "l": "0.5", "c": "1.5",
                  "v": "10", "q": "15", "n": 3, "V": "5", "Q": "7", "x": closed}}


def depth_event(U: int, u: int) -> dict:
    return {"e": "depthUpdate", "E": 0, "U": U, "u": u, "b": [], "a": []}


def feed(streams: Streams, market: str, stream: str, data: dict) -> None:
    streams.managers[market].dispatch(stream, data, None)


# -- 12.6: only listed symbols, capped share, credits, per-client cap ------------------


def test_unknown_symbols_are_forwarded_and_never_subscribed():
    clock, upstream, streams = make()
    for i in range(200):
        answer = ask(streams, upstream, "spot", "/api/v3/klines",
                     f"symbol=BOGUS{i}USDT&interval=1m&limit=5")
        assert answer.status == 400  # Binance's answer, forwarded
    ask(streams, upstream, "spot", "/api/v3/depth", "symbol=NOPE&limit=5")
    assert streams.managers["spot"].placed == {}
    assert upstream.own("/klines") == [] and upstream.own("/depth") == []
    ask(streams, upstream, "spot", "/api/v3/klines", "symbol=BTCUSDT&interval=1m&limit=5")
    assert list(streams.managers["spot"].placed) == ["btcusdt@kline_1m"]


def test_symbols_learnt_after_the_request_decide_the_subscription():
    clock, upstream, streams = make(info_known=False)
    upstream.hold = True
    ask(streams, upstream, "spot", "/api/v3/depth", "symbol=BTCUSDT&limit=5")
    ask(streams, upstream, "spot", "/api/v3/depth", "symbol=BOGUSUSDT&limit=5")
    assert streams.managers["spot"].placed == {}  # not before the symbols are known
    upstream.release()
    assert list(streams.managers["spot"].placed) == ["btcusdt@depth@100ms"]
    assert len(upstream.own("/exchangeInfo")) == 1


def test_a_series_made_before_the_symbols_are_known_seeds_from_the_bot_answer():
    clock, upstream, streams = make(info_known=False)
    upstream.hold = True
    ask(streams, upstream, "spot", "/api/v3/klines", "symbol=BTCUSDT&interval=1m&limit=50")
    upstream.release()  # the symbol list first, then the bot's answer
    series = streams.series[("spot", "BTCUSDT", "1m")]
    assert series.ready and len(series) == 50
    assert upstream.own("/klines") == []  # no seed page of its own
    assert list(streams.managers["spot"].placed) == ["btcusdt@kline_1m"]


def test_own_weight_stays_under_its_share_of_the_pool_budget():
    clock, upstream, streams = make({"own_share": "0.25"}, governor=Governor(400))
    for symbol in LISTED[:60]:  # 60 books, each wanting a 100-level snapshot (weight 5)
        ask(streams, upstream, "spot", "/api/v3/depth", f"symbol={symbol}&limit=5")
        feed(streams, "spot", f"{symbol.lower()}@depth@100ms", depth_event(101, 101))
    spent = sum(r.endpoint.weight(r.params) for r in upstream.own("/depth"))
    assert spent <= 100 and len(upstream.own("/depth")) == 20  # 25 % of 400
    assert streams.health()["own_weight"]["pools"]["spot"]["cap_per_minute"] == 100
    clock.advance(60)  # the next minute: the rest may go
    for symbol in LISTED[:60]:
        feed(streams, "spot", f"{symbol.lower()}@depth@100ms", depth_event(102, 102))
    assert len(upstream.own("/depth")) == 40


def test_own_requests_never_outnumber_the_bot_requests_that_caused_them():
    clock, upstream, streams = make()
    ask(streams, upstream, "spot", "/api/v3/depth", "symbol=BTCUSDT&limit=5")
    feed(streams, "spot", "btcusdt@depth@100ms", depth_event(101, 101))
    assert streams.books[("spot", "BTCUSDT")].state == "live"
    for gap in range(10):  # the stream skips updates again and again; no bot asks
        clock.advance(2)
        upstream.update_id = 204 + gap * 10  # a snapshot that joins the stream
        feed(streams, "spot", "btcusdt@depth@100ms", depth_event(205 + gap * 10, 205 + gap * 10))
        feed(streams, "spot", "btcusdt@depth@100ms", depth_event(201 + gap * 10, 206 + gap * 10))
    # Two distinct bot requests so far (exchangeInfo, depth): two own requests, not 11.
    assert len(upstream.own("/depth")) == 2
    clock.advance(60)
    ask(streams, upstream, "spot", "/api/v3/depth", "symbol=BTCUSDT&limit=5")  # a bot asks
    upstream.update_id = 300
    feed(streams, "spot", "btcusdt@depth@100ms", depth_event(301, 301))
    assert len(upstream.own("/depth")) == 3
    assert streams.books[("spot", "BTCUSDT")].state == "live"


def test_new_subscriptions_per_client_per_minute_are_capped():
    clock, upstream, streams = make({"new_streams_per_client": "50"})
    for symbol in LISTED[:80]:
        ask(streams, upstream, "spot", "/api/v3/ticker/24hr", f"symbol={symbol}", client="a")
    assert len(streams.managers["spot"].placed) == 50
    ask(streams, upstream, "spot", "/api/v3/ticker/24hr", "symbol=C200USDT", client="b")
    assert len(streams.managers["spot"].placed) == 51  # another client is not held back
    clock.advance(60)
    for symbol in LISTED[:80]:
        ask(streams, upstream, "spot", "/api/v3/ticker/24hr", f"symbol={symbol}", client="a")
    assert len(streams.managers["spot"].placed) == 81


# -- 12.8: snapshots sized to what bots ask, kept books, growing series, info refresh ------


@pytest.mark.parametrize("market,path,asked,snapshot", [
    ("spot", "/api/v3/depth", 5, 100), ("spot", "/api/v3/depth", 20, 100),
    ("usdm", "/fapi/v1/depth", 5, 50), ("usdm", "/fapi/v1/depth", 20, 50),
    ("spot", "/api/v3/depth", 100, 500), ("usdm", "/fapi/v1/depth", 500, 1000)])
def test_a_book_is_built_from_the_smallest_snapshot_that_covers_the_asked_limit(
        market, path, asked, snapshot):
    clock, upstream, streams = make()
    ask(streams, upstream, market, path, f"symbol=BTCUSDT&limit={asked}")
    event = depth_event(101, 101)
    if market != "spot":
        event = {**event, "U": 95, "u": 101, "pu": 94}
    feed(streams, market, "btcusdt@depth@100ms", event)
    (own,) = upstream.own("/depth")
    assert own.params["limit"] == str(snapshot)
    expected_weight = {("spot", 100): 5, ("usdm", 50): 2}.get((market, snapshot))
    if expected_weight is not None:
        assert own.endpoint.weight(own.params) == expected_weight


def test_a_book_grows_when_a_larger_limit_is_asked():
    clock, upstream, streams = make()
    ask(streams, upstream, "spot", "/api/v3/depth", "symbol=BTCUSDT&limit=5")
    feed(streams, "spot", "btcusdt@depth@100ms", depth_event(101, 101))
    assert ask(streams, upstream, "spot", "/api/v3/depth",
               "symbol=BTCUSDT&limit=20").source == "stream"
    upstream.update_id = 101
    grown = ask(streams, upstream, "spot", "/api/v3/depth", "symbol=BTCUSDT&limit=500")
    assert (grown.source, grown.detail) == ("stream", "snapshot")  # it waited for it
    assert [r.params["limit"] for r in upstream.own("/depth")] == ["100", "1000"]
    assert not [r for r in upstream.sent if r.header(INTERNAL) is None and "/depth" in r.path]
    feed(streams, "spot", "btcusdt@depth@100ms", depth_event(102, 102))
    clock.advance(1)
    feed(streams, "spot", "btcusdt@depth@100ms", depth_event(103, 103))  # keeps it fresh
    assert ask(streams, upstream, "spot", "/api/v3/depth",
               "symbol=BTCUSDT&limit=500").source == "stream"


def test_own_requests_that_answered_waiting_bots_are_counted_apart():
    """An answer that comes at once (before the responder's callback is
    attached) is claimed late; a resync no bot waits for stays the proxy's own."""
    clock, upstream, streams = make()
    first = ask(streams, upstream, "spot", "/api/v3/depth", "symbol=BTCUSDT&limit=5")
    assert isinstance(first, Deferred) and not first.called  # waiting for the snapshot
    feed(streams, "spot", "btcusdt@depth@100ms", depth_event(101, 101))
    assert first.called
    own = streams.health()["own_weight"]
    assert own["by_purpose"]["spot"]["snapshot"] == 5
    assert own["answering_bots"]["spot"]["snapshot"] == 5
    feed(streams, "spot", "btcusdt@depth@100ms", depth_event(200, 200))  # a gap: resync
    upstream.update_id = 199
    feed(streams, "spot", "btcusdt@depth@100ms", depth_event(201, 201))
    own = streams.health()["own_weight"]
    assert own["by_purpose"]["spot"]["snapshot"] == 10
    assert own["answering_bots"]["spot"]["snapshot"] == 5
    assert own["requests_answering_bots"] == 1


def test_a_thin_book_is_not_taken_again_for_a_limit_it_cannot_hold():
    """A side with fewer levels than asked is wholly known: a new snapshot
    would not answer either, so the request goes on, no snapshot."""
    clock, upstream, streams = make()
    upstream.book_levels = 3
    first = ask(streams, upstream, "spot", "/api/v3/depth", "symbol=BTCUSDT&limit=5")
    feed(streams, "spot", "btcusdt@depth@100ms", depth_event(101, 101))
    assert first.called  # the snapshot could not answer limit=5: it went on
    assert ask(streams, upstream, "spot", "/api/v3/depth",
               "symbol=BTCUSDT&limit=3").source == "stream"
    for _ in range(3):
        assert ask(streams, upstream, "spot", "/api/v3/depth",
                   "symbol=BTCUSDT&limit=5").source == "upstream"
    assert len(upstream.own("/depth")) == 1


def test_books_outlive_the_gap_between_two_trades_on_a_pair():
    clock, upstream, streams = make()
    ask(streams, upstream, "spot", "/api/v3/depth", "symbol=BTCUSDT&limit=5")
    feed(streams, "spot", "btcusdt@depth@100ms", depth_event(101, 101))
    for _ in range(60):  # a trade closes; 10 minutes later another opens
        clock.advance(10)
        feed(streams, "spot", "btcusdt@depth@100ms", depth_event(102 + _, 102 + _))
        streams._sweep()
    assert ("spot", "BTCUSDT") in streams.books
    assert ask(streams, upstream, "spot", "/api/v3/depth",
               "symbol=BTCUSDT&limit=5").source == "stream"
    assert len(upstream.own("/depth")) == 1  # not rebuilt
    for _ in range(95):  # 15 min 50 s without a bot asking: released
        clock.advance(10)
        streams._sweep()
    assert ("spot", "BTCUSDT") not in streams.books
    assert streams.managers["spot"].placed == {}


def test_a_short_series_grows_by_exactly_the_missing_older_range():
    clock, upstream, streams = make()
    ask(streams, upstream, "spot", "/api/v3/klines", "symbol=BTCUSDT&interval=1m&limit=1")
    series = streams.series[("spot", "BTCUSDT", "1m")]
    assert series.ready and len(series) == 1
    first = series.opens[0]
    feed(streams, "spot", "btcusdt@kline_1m", kline_event("BTCUSDT", int(T0 * 1000) + 500))
    answer = ask(streams, upstream, "spot", "/api/v3/klines",
                 "symbol=BTCUSDT&interval=1m&limit=100")
    (grow,) = upstream.own("/klines")
    assert grow.params == {"symbol": "BTCUSDT", "interval": "1m", "endTime": str(first - 1),
                           "limit": "99"}
    assert answer.source == "stream" and len(orjson.loads(answer.body)) == 100
    direct = klines(int(clock.seconds() * 1000), {"limit": "100"})
    assert [row[0] for row in orjson.loads(answer.body)] == [row[0] for row in direct]
    again = ask(streams, upstream, "spot", "/api/v3/klines",
                "symbol=BTCUSDT&interval=1m&limit=50")
    assert again.source == "stream" and len(upstream.own("/klines")) == 1


def test_kline_series_outlive_a_quiet_pair():
    clock, upstream, streams = make()
    ask(streams, upstream, "spot", "/api/v3/klines", "symbol=BTCUSDT&interval=1m&limit=100")
    for _ in range(60):  # 10 minutes without a request for it
        clock.advance(10)
        streams._sweep()
    assert ("spot", "BTCUSDT", "1m") in streams.series
    for _ in range(40):
        clock.advance(10)
        streams._sweep()
    assert ("spot", "BTCUSDT", "1m") not in streams.series


def test_exchange_info_is_refreshed_only_while_bots_ask_for_it():
    clock, upstream, streams = make({"exchange_info_refresh": "300"}, info_known=False)
    info = "/api/v3/exchangeInfo"
    assert ask(streams, upstream, "spot", info, "").source == "upstream"
    assert ask(streams, upstream, "spot", info, "").source == "cache"
    clock.advance(300)
    streams.exchange_info.refresh()  # asked within the interval: refreshed once
    assert len(upstream.own("/exchangeInfo")) == 1
    for _ in range(5):  # nobody asks for 25 minutes
        clock.advance(300)
        streams.exchange_info.refresh()
    assert len(upstream.own("/exchangeInfo")) == 1
    assert ask(streams, upstream, "spot", info, "").source == "upstream"  # fresh again


# -- 12.9: the proxy's own weight is visible ----------------------------------------------


def test_own_weight_is_a_metric_and_a_health_figure_per_pool():
    clock, upstream, streams = make()
    ask(streams, upstream, "spot", "/api/v3/depth", "symbol=BTCUSDT&limit=5")
    feed(streams, "spot", "btcusdt@depth@100ms", depth_event(101, 101))
    families = {f.name: f for f in streams.collect_metrics()}
    own = {(s.labels["market"], s.labels["purpose"]): s.value
           for s in families["bnproxy_own_weight"].samples if s.name.endswith("_total")}
    assert own[("spot", "snapshot")] == 5
    assert set(p for _, p in own) == {"snapshot", "backfill", "refresh", "ping", "fallback"}
    health = streams.health()["own_weight"]
    assert health["pools"]["spot"]["this_minute"] == 5
    assert health["pools"]["spot"]["cap_per_minute"] == 1500  # 25 % of spot's 6,000
    assert health["by_purpose"]["spot"]["snapshot"] == 5


def test_capabilities_are_declared_and_readiness_names_stopped_managers():
    clock, upstream, streams = make()
    for iface in (IMiddleware, IHealthReporter, IMetricsSource, IReadinessCheck):
        assert iface.providedBy(streams)
    assert streams.readiness_problems() == ["stream manager spot not running",
                                            "stream manager usdm not running"]
