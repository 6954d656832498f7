"""``streams``: klines, order books and tickers answered from websocket state,
byte for byte what the REST endpoint would answer, and ``exchangeInfo`` held
and refreshed in the background while bots use it.

Anything the state does not cover exactly (a range not held, a book without
enough exact levels, a silent stream, an unusual parameter) goes on down the
chain: never held waiting for a socket, never answered with invented data.
The first request for a symbol/interval starts the subscription; unused
subscriptions end (klines after 2 × interval, at most 1 h; others after 2 min).
REST snapshots and backfills go through the whole chain, rate limiter included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import attrs
import orjson
from twisted.application.service import MultiService
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from bnproxy.binance.intervals import interval_seconds
from bnproxy.binance.privacy import is_private
from bnproxy.chain.compose import Answer, then
from bnproxy.chain.interfaces import IHealthReporter, IMetricsSource, IMiddleware, IReadinessCheck
from bnproxy.chain.messages import INTERNAL, JSON, ProxyRequest, ProxyResponse
from bnproxy.config.reader import SettingsReader
from bnproxy.middleware.streams.klines import KlineSeries
from bnproxy.middleware.streams.manager import StreamManager
from bnproxy.middleware.streams.orderbook import LIVE, OrderBook
from bnproxy.middleware.streams.tickers import StreamValue, book_ticker, last_price, ticker_24hr

_log = Logger(namespace="bnproxy.streams")


KLINE_PATHS = {"spot": "/api/v3/klines", "usdm": "/fapi/v1/klines", "coinm": "/dapi/v1/klines"}
DEPTH_PATHS = {"spot": "/api/v3/depth", "usdm": "/fapi/v1/depth", "coinm": "/dapi/v1/depth"}
TICKER_PATHS = {("spot", "/api/v3/ticker/24hr"): "ticker",
                ("usdm", "/fapi/v1/ticker/24hr"): "ticker",
                ("spot", "/api/v3/ticker/bookTicker"): "bookTicker",
                ("usdm", "/fapi/v1/ticker/bookTicker"): "bookTicker",
                ("spot", "/api/v3/ticker/price"): "aggTrade"}
INFO_PATHS = {("spot", "/api/v3/exchangeInfo"), ("usdm", "/fapi/v1/exchangeInfo"),
              ("coinm", "/dapi/v1/exchangeInfo")}


@attrs.define
class Settings:
    snapshot_limit: int = 1000
    stale_kline_factor: float = 3.0
    stale_kline_min: float = 6.0
    stale_depth: float = 3.0
    stale_ticker: float = 5.0
    idle_depth: float = 120.0
    idle_kline_max: float = 3600.0
    info_refresh: float = 60.0
    info_idle: float = 600.0
    legacy_routes: bool = False
    rotate_after: float = 23 * 3600.0


def _int(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) < 19 else None


@implementer(IHealthReporter, IMetricsSource, IMiddleware, IReadinessCheck)
class Streams(MultiService):
    plain_next = True

    def __init__(self, name: str, context, settings: Settings) -> None:
        super().__init__()
        self.name = name
        self._clock = context.reactor
        self._chain = context.chain
        self._markets = context.markets
        self._endpoints = context.endpoints
        self.s = settings
        self.managers: dict[str, StreamManager] = {}
        self._parsed: dict[bytes, dict[str, str] | None] = {}
        for market in ("spot", "usdm", "coinm"):
            m = context.markets.get(market)
            if m is None or not m.stream_base:
                continue
            manager = StreamManager(context.reactor, m, legacy_routes=settings.legacy_routes,
                                    rotate_after=settings.rotate_after)
            manager.on_lost.append(lambda names, market=market: self._lost(market, names))
            manager.setServiceParent(self)
            self.managers[market] = manager
            context.streams[market] = manager
        self.series: dict[tuple[str, str, str], KlineSeries] = {}
        self.books: dict[tuple[str, str], OrderBook] = {}
        self.values: dict[tuple[str, str], StreamValue] = {}
        self.used: dict[tuple[str, str], float] = {}  # (market, stream) -> last request
        self._snapshots: set[tuple[str, str]] = set()
        self._backfills: set[tuple[str, str, str]] = set()
        # After a failed snapshot or backfill, not again before this time (backoff).
        self._not_before: dict[tuple, tuple[float, int]] = {}
        self.info: dict[tuple, tuple[ProxyResponse, float]] = {}  # key -> (answer, last use)
        self.served = 0
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = context.reactor
        self._refresher = task.LoopingCall(self._refresh_info)
        self._refresher.clock = context.reactor

    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._sweeper.start(10.0, now=False)
        self._refresher.start(self.s.info_refresh, now=False)

    def stopService(self) -> None:  # noqa: N802
        for loop in (self._sweeper, self._refresher):
            if loop.running:
                loop.stop()
        return super().stopService()

    def now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    # -- the middleware -------------------------------------------------------------------
    def handle(self, request: ProxyRequest, next: Callable) -> Answer:
        if request.header(INTERNAL) is not None or request.method != "GET":
            return next(request)
        market, path = request.market, request.path
        if market not in self.managers or request.endpoint is None or is_private(request):
            return next(request)
        p = self._params(request.query)
        if p is None:  # a parameter given twice: ambiguous, Binance decides
            return next(request)
        if path == KLINE_PATHS.get(market):
            return self._klines(request, p, next)
        if path == DEPTH_PATHS.get(market):
            return self._depth(request, p, next)
        kind = TICKER_PATHS.get((market, path))
        if kind is not None:
            return self._ticker(request, p, kind, next)
        if (market, path) in INFO_PATHS:
            return self._info(request, next)
        return next(request)

    def _params(self, query: bytes) -> dict[str, str] | None:
        """The query's parameters (None if one repeats), parsed once per
        distinct public query: bots repeat theirs."""
        p = self._parsed.get(query, False)
        if p is False:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            p = dict(pairs)
            if len(p) != len(pairs):
                p = None
            if len(self._parsed) >= 16384:
                self._parsed.clear()
            self._parsed[query] = p
        return p  # type: ignore[return-value]

    def _answer(self, body: bytes) -> ProxyResponse:
        self.served += 1
        return ProxyResponse(200, (JSON,), body, "stream", "stream")

    # -- klines -------------------------------------------------------------------------------
    def _klines(self, request: ProxyRequest, p: dict[str, str], next: Callable) -> Answer:
        market = request.market
        symbol, interval = p.get("symbol"), p.get("interval")
        m = self._markets[market]
        if (not symbol or interval not in m.kline_intervals
                or set(p) - {"symbol", "interval", "limit", "startTime", "endTime", "timeZone"}
                or p.get("timeZone", "0") not in ("0", "+00:00", "00:00")):
            return next(request)
        limit = _int(p.get("limit", "500"))
        start = _int(p["startTime"]) if "startTime" in p else None
        end = _int(p["endTime"]) if "endTime" in p else None
        if (limit is None or not 1 <= limit <= m.kline_max
                or ("startTime" in p and (start is None or start > 10 ** 14))
                or ("endTime" in p and (end is None or end > 10 ** 14))
                or (start is not None and end is not None and start > end)):
            return next(request)
        key = (market, symbol, interval)
        stream = f"{symbol.lower()}@kline_{interval}"
        self.used[(market, stream)] = self._clock.seconds()
        series = self.series.get(key)
        manager = self.managers[market]
        cadence = 0.25 if market != "spot" else (1.0 if interval == "1s" else 2.0)
        if series is not None and manager.fresh(
                stream, max(self.s.stale_kline_min, cadence * self.s.stale_kline_factor)):
            span = series.covers(start, end, limit)
            if span is not None:
                return self._answer(series.response(span))
        if series is None:
            series = self.series[key] = KlineSeries(interval, m.kline_max)
            manager.ensure(stream, lambda d, s=series, k=key: self._on_kline(k, s, d))

        def seed(response: ProxyResponse) -> ProxyResponse:
            if response.status == 200 and not series.ready:
                try:
                    series.seed(orjson.loads(response.body), self.now_ms())
                except (orjson.JSONDecodeError, IndexError, KeyError, TypeError):
                    pass
            if not series.ready and series.backfill_from is None:
                # A historical page, or one that straddled a candle boundary:
                # seed from a page of our own rather than wait for another bot.
                self._seed(key, series)
            return response

        return then(next(request), seed)

    def _seed(self, key: tuple[str, str, str], series: KlineSeries) -> None:
        if key in self._backfills or not self._may_try(key):
            return
        market, symbol, interval = key
        self._backfills.add(key)
        query = (f"symbol={symbol}&interval={interval}"
                 f"&limit={self._markets[market].kline_max}").encode()

        def done(response: ProxyResponse) -> None:
            self._backfills.discard(key)
            ok = False
            if response.status == 200:
                try:
                    ok = series.ready or series.seed(orjson.loads(response.body),
                                                     self.now_ms())
                except (orjson.JSONDecodeError, IndexError, KeyError, TypeError):
                    ok = False
            if ok:
                self._not_before.pop(key, None)
            else:
                self._failed_try(key)

        def failed(f) -> None:
            self._backfills.discard(key)
            self._failed_try(key)

        self._internal(market, KLINE_PATHS[market], query).addCallbacks(done, failed)

    def _on_kline(self, key: tuple[str, str, str], series: KlineSeries, data: Any) -> None:
        series.apply(data["k"], data.get("E", 0))
        span = series.backfill_range()
        if span is not None and key not in self._backfills and self._may_try(key):
            self._backfill(key, series, *span)

    def _backfill(self, key, series: KlineSeries, start: int, end: int) -> None:
        market, symbol, interval = key
        self._backfills.add(key)
        limit = self._markets[market].kline_max
        query = f"symbol={symbol}&interval={interval}&startTime={start}&endTime={end}" \
                f"&limit={limit}".encode()

        def done(response: ProxyResponse) -> None:
            self._backfills.discard(key)
            if response.status == 200 and series.repair(orjson.loads(response.body)):
                self._not_before.pop(key, None)
            else:
                self._failed_try(key)
                _log.warn("kline backfill for {key} failed: {status}", key=key,
                          status=response.status)

        def failed(f) -> None:
            self._backfills.discard(key)
            self._failed_try(key)

        self._internal(market, KLINE_PATHS[market], query).addCallbacks(done, failed)

    # -- order books ----------------------------------------------------------------------------
    def _depth(self, request: ProxyRequest, p: dict[str, str], next: Callable) -> Answer:
        market = request.market
        symbol = p.get("symbol")
        if not symbol or set(p) - {"symbol", "limit"}:
            return next(request)
        m = self._markets[market]
        limit = _int(p.get("limit", "100" if m.depth_limits is None else "500"))
        if limit is None or not (limit in m.depth_limits if m.depth_limits is not None
                                 else 1 <= limit <= m.depth_max):
            return next(request)
        key = (market, symbol)
        stream = f"{symbol.lower()}@depth@100ms"
        self.used[(market, stream)] = self._clock.seconds()
        book = self.books.get(key)
        manager = self.managers[market]
        if book is None:
            pair = symbol.split("_")[0] if market == "coinm" else None
            book = self.books[key] = OrderBook(market, symbol, pair)
            manager.ensure(stream, lambda d, b=book, k=key: self._on_depth(k, b, d))
        elif book.state == LIVE and manager.fresh(stream, self.s.stale_depth):
            body = book.response(limit)
            if body is not None:
                return self._answer(body)
        return next(request)

    def _on_depth(self, key: tuple[str, str], book: OrderBook, data: Any) -> None:
        book.on_event(data, self.now_ms())
        if book.needs_snapshot() and key not in self._snapshots and self._may_try(key):
            self._snapshot(key, book)

    def _snapshot(self, key: tuple[str, str], book: OrderBook, attempt: int = 1) -> None:
        market, symbol = key
        self._snapshots.add(key)
        allowed = self._markets[market].depth_limits
        limit = self.s.snapshot_limit
        if allowed is not None:  # futures take only their listed limits
            limit = max((x for x in allowed if x <= limit), default=min(allowed))
        query = f"symbol={symbol}&limit={limit}".encode()

        def done(response: ProxyResponse) -> None:
            self._snapshots.discard(key)
            ok = False
            if response.status == 200:
                ok = book.on_snapshot(orjson.loads(response.body), limit, self.now_ms())
            if ok:
                self._not_before.pop(key, None)
            elif response.status == 200 and attempt < 5 and book.needs_snapshot():
                # Older than the buffered stream: Binance's procedure says fetch again.
                self._snapshots.add(key)
                self._clock.callLater(0.5 * attempt, self._retry_snapshot, key, book, attempt + 1)
            else:
                self._failed_try(key)

        def failed(f) -> None:
            self._snapshots.discard(key)
            self._failed_try(key)

        self._internal(market, DEPTH_PATHS[market], query).addCallbacks(done, failed)

    def _may_try(self, key: tuple) -> bool:
        entry = self._not_before.get(key)
        return entry is None or self._clock.seconds() >= entry[0]

    def _failed_try(self, key: tuple) -> None:
        """Back off exponentially (1 s doubling to 60 s): a failing snapshot or
        backfill must not be retried at the stream's message rate."""
        fails = self._not_before.get(key, (0.0, 0))[1] + 1
        self._not_before[key] = (self._clock.seconds() + min(60.0, 2.0 ** (fails - 1)), fails)

    def _retry_snapshot(self, key, book, attempt) -> None:
        self._snapshots.discard(key)
        if book.needs_snapshot():
            self._snapshot(key, book, attempt)

    # -- tickers --------------------------------------------------------------------------------
    def _ticker(self, request: ProxyRequest, p: dict[str, str], kind: str,
                next: Callable) -> Answer:
        market = request.market
        symbol = p.get("symbol")
        allowed = {"symbol", "type"} if kind == "ticker" else {"symbol"}
        if not symbol or set(p) - allowed or p.get("type", "FULL") != "FULL":
            return next(request)
        stream = f"{symbol.lower()}@{kind}"
        key = (market, stream)
        self.used[key] = self._clock.seconds()
        value = self.values.get(key)
        manager = self.managers[market]
        if value is None:
            value = self.values[key] = StreamValue()
            encode = {"ticker": lambda d: ticker_24hr(market, d),
                      "bookTicker": lambda d: book_ticker(market, d),
                      "aggTrade": last_price}[kind]

            def on_message(d, value=value, encode=encode, symbol=symbol):
                if d.get("s") == symbol:
                    value.set(d, encode(d), self.now_ms())
            manager.ensure(stream, on_message)
        elif value.body is not None and manager.fresh(
                stream, self.s.stale_ticker if kind == "ticker" else self.s.stale_depth):
            return self._answer(value.body)
        return next(request)

    # -- exchangeInfo ---------------------------------------------------------------------------
    def _info(self, request: ProxyRequest, next: Callable) -> Answer:
        key = (request.market, request.path, request.query)
        held = self.info.get(key)
        now = self._clock.seconds()
        if held is not None:
            self.info[key] = (held[0], now)
            return attrs.evolve(held[0], source="cache", detail="held")

        def keep(response: ProxyResponse) -> ProxyResponse:
            if response.status == 200:
                self.info[key] = (attrs.evolve(response, headers=tuple(
                    (k, v) for k, v in response.headers
                    if not k.startswith(b"x-mbx-used-weight")), weight=0), now)
            return response
        return then(next(request), keep)

    def _refresh_info(self) -> None:
        now = self._clock.seconds()
        for key, (_, last_use) in list(self.info.items()):
            if now - last_use > self.s.info_idle:
                del self.info[key]  # nobody asked for a while: stop refreshing it
                continue
            market, path, query = key

            def refreshed(response, key=key):
                if response.status == 200 and key in self.info:
                    self.info[key] = (attrs.evolve(response, weight=0), self.info[key][1])
            self._internal(market, path, query).addCallback(refreshed).addErrback(
                lambda f: None)

    # -- housekeeping ---------------------------------------------------------------------------
    def _internal(self, market: str, path: str, query: bytes) -> Deferred:
        """A REST call of our own, through the whole chain (cache, rate limiter)."""
        endpoint = self._endpoints.lookup(market, "GET", path)
        request = ProxyRequest("GET", market, path, query, ((INTERNAL, b"streams"),), b"",
                               "bnproxy", self._clock.seconds(), endpoint)
        return self._chain(request)

    def _lost(self, market: str, names: set[str]) -> None:
        for (m, symbol), book in self.books.items():
            if m == market and f"{symbol.lower()}@depth@100ms" in names:
                book.mark_stale()

    def _sweep(self) -> None:
        """End subscriptions nobody used lately; resync silent books."""
        now = self._clock.seconds()
        for (market, stream), last in list(self.used.items()):
            kind = stream.split("@", 1)[1]
            if kind.startswith("kline_"):
                idle = min(2 * interval_seconds(kind[6:]), self.s.idle_kline_max)
            else:
                idle = self.s.idle_depth
            if now - last > idle:
                del self.used[(market, stream)]
                self.managers[market].release(stream)
                self._forget(market, stream)
        for (market, symbol), book in self.books.items():
            stream = f"{symbol.lower()}@depth@100ms"
            if book.state == LIVE and not self.managers[market].fresh(stream, self.s.stale_depth):
                book.mark_stale()

    def _forget(self, market: str, stream: str) -> None:
        symbol_l, _, kind = stream.partition("@")
        if kind.startswith("kline_"):
            for key in [k for k in self.series if k[0] == market and k[1].lower() == symbol_l
                        and k[2] == kind[6:]]:
                del self.series[key]
        elif kind.startswith("depth"):
            for key in [k for k in self.books if k[0] == market and k[1].lower() == symbol_l]:
                del self.books[key]
        else:
            self.values.pop((market, stream), None)

    def stale_streams(self, market: str) -> set[str]:
        manager = self.managers[market]
        stale = set()
        for name in manager.placed:
            kind = name.split("@", 1)[1]
            limit = self.s.stale_kline_min if kind.startswith("kline_") else (
                self.s.stale_ticker if kind == "ticker" else self.s.stale_depth)
            if not manager.fresh(name, limit):
                stale.add(name)
        return stale

    def collect_metrics(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        active = GaugeMetricFamily("bnproxy_streams_active", "Subscribed streams.",
                                   labels=["market"])
        stale = GaugeMetricFamily("bnproxy_streams_stale", "Subscribed streams gone silent.",
                                  labels=["market"])
        conns = GaugeMetricFamily("bnproxy_stream_connections", "Open stream connections.",
                                  labels=["market"])
        reconnects = CounterMetricFamily("bnproxy_stream_reconnects", "Stream reconnects.",
                                         labels=["market"])
        messages = CounterMetricFamily("bnproxy_stream_messages", "Stream messages received.",
                                       labels=["market"])
        for market, mgr in self.managers.items():
            active.add_metric([market], len(mgr.placed))
            stale.add_metric([market], len(self.stale_streams(market)))
            conns.add_metric([market], sum(c.protocol is not None for c in mgr.connections))
            reconnects.add_metric([market], mgr.reconnects)
            messages.add_metric([market], mgr.messages)
        yield from (active, stale, conns, reconnects, messages)
        yield CounterMetricFamily("bnproxy_stream_answers", "Answers served from streams.",
                                  value=self.served)

    def readiness_problems(self) -> list[str]:
        return [f"stream manager {name} not running"
                for name, manager in self.managers.items() if not manager.running]

    def health(self) -> dict:
        return {"served": self.served,
                "markets": {m: mgr.health(self.stale_streams(m))
                            for m, mgr in self.managers.items()},
                "series": len(self.series), "books": len(self.books),
                "exchange_info_held": len(self.info)}


def build_streams(name: str, settings, context) -> Streams:
    reader = SettingsReader(f"middleware.{name}", settings)
    s = Settings(
        snapshot_limit=reader.int("snapshot_limit", 1000, minimum=5, maximum=5000),
        stale_depth=reader.float("stale_depth", 3.0, minimum=0.1),
        stale_ticker=reader.float("stale_ticker", 5.0, minimum=0.1),
        stale_kline_min=reader.float("stale_kline", 6.0, minimum=0.1),
        idle_depth=reader.float("idle", 120.0, minimum=1),
        info_refresh=reader.float("exchange_info_refresh", 60.0, minimum=1),
        legacy_routes=reader.bool("legacy_routes", False),
        rotate_after=reader.float("rotate_after", 23 * 3600.0, minimum=60))
    reader.done()
    return Streams(name, context, s)
