"""Klines: one ``KlineSeries`` per (market, symbol, interval) kept by its
stream; seeded from the first bot answer that can seed it (else one page of
the proxy's own), repaired by a backfill after a gap, and grown by exactly
the missing older range when a bot asks for more candles than it holds.

Bots that ask for a series while its seed is in flight (the first bot's
answer, or the proxy's own page) wait for it and are answered from the
series it seeded (or go on, if it cannot answer them), by ``WAIT_DEADLINE``
at the latest: several bots starting at once cost one request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from bnproxy.binance.intervals import INTERVAL_MS, interval_seconds
from bnproxy.binance.marketdata import (
    KLINE_DEFAULT_LIMIT,
    KLINE_PARAMS,
    KLINES,
    UTC_TIME_ZONES,
    kline_cadence,
    kline_stream,
    rest_path,
)
from bnproxy.chain.compose import Answer, then
from bnproxy.chain.messages import ProxyRequest, ProxyResponse
from bnproxy.middleware.streams import klines_kept
from bnproxy.middleware.streams.klines import KlineSeries
from bnproxy.middleware.streams.responders import (
    Answers,
    Tools,
    parse_int,
    remember,
    stream_answer,
)
from bnproxy.middleware.streams.responders.exchangeinfo import ExchangeInfoResponder
from bnproxy.middleware.streams.responders.waiting import Waiting, answered, go_on

_log = Logger(namespace="bnproxy.streams")

Key = tuple[str, str, str]  # (market, symbol, interval)
Asked = tuple[int | None, int | None, int]  # startTime, endTime, limit
_BAD_PAGE = (orjson.JSONDecodeError, IndexError, KeyError, TypeError)


class KlinesResponder:
    def __init__(self, tools: Tools, info: ExchangeInfoResponder) -> None:
        self.tools = tools
        self.info = info
        self.series: dict[Key, KlineSeries] = {}
        self._answer_due: set[Key] = set()  # new series whose bot answer has not come yet
        self.waiting = Waiting(tools.clock)  # bot requests waiting for a seed
        # (market, raw query) -> (series key, asked, stream, freshness bound) of
        # queries a series may answer
        self._queries: dict[tuple[str, bytes], tuple[Key, Asked, str, float]] = {}
        self._answers = Answers()
        self._restored: set[Key] = set()  # kept across a restart, not repaired since

    def _asked(self, market: str, p: dict[str, str]) -> tuple[Key, Asked] | None:
        """(series key, (startTime, endTime, limit)) of a request a series
        may answer, or None."""
        symbol, interval = p.get("symbol"), p.get("interval")
        m = self.tools.markets[market]
        if (not symbol or interval not in m.kline_intervals or set(p) - KLINE_PARAMS
                or p.get("timeZone", "0") not in UTC_TIME_ZONES):
            return None
        limit = parse_int(p.get("limit", str(KLINE_DEFAULT_LIMIT)))
        start = parse_int(p["startTime"]) if "startTime" in p else None
        end = parse_int(p["endTime"]) if "endTime" in p else None
        if (limit is None or not 1 <= limit <= m.kline_max
                or ("startTime" in p and (start is None or start > 10 ** 14))
                or ("endTime" in p and (end is None or end > 10 ** 14))
                or (start is not None and end is not None and start > end)):
            return None
        return (market, symbol, interval), (start, end, limit)

    def hit(self, request: ProxyRequest, p: dict[str, str]) -> ProxyResponse | None:
        """The answer from a fresh series that holds the asked rows exactly,
        the stream touched; None, having done nothing, otherwise (``handle``
        answers through it)."""
        memo = (request.market, request.query)
        asked = self._queries.get(memo)
        if asked is None:  # parsed once per distinct query
            checked = self._asked(request.market, p)
            if checked is None:
                return None
            key = checked[0]
            asked = remember(self._queries, memo, (*checked, kline_stream(key[1], key[2]),
                                                   self._max_age(key)))
        key, (start, end, limit), stream, max_age = asked
        series = self.series.get(key)
        if series is None or not self.tools.subscriptions.fresh(key[0], stream, max_age):
            return None  # (``_fresh``, its bound computed once per query)
        span = series.covers(start, end, limit)
        if span is None:
            return None
        self.tools.subscriptions.touch(key[0], stream)
        return self._answers.of((key, span), series.response(span))

    def handle(self, request: ProxyRequest, p: dict[str, str], next: Callable) -> Answer:
        answer = self.hit(request, p)
        if answer is not None:
            return answer
        market = request.market
        asked = self._asked(market, p)
        if asked is None:
            return next(request)
        key, (start, end, limit) = asked
        _, symbol, interval = key
        series = self.series.get(key)
        if series is None:
            listed = self.info.listed(market, symbol)
            if listed is False:
                return next(request)  # Binance answers an unknown symbol; no subscription
            series = self.series[key] = KlineSeries(interval, self.tools.markets[market].kline_max)
            self._answer_due.add(key)
            if listed is None:  # Binance's answer to this request says whether it lists it
                return then(next(request), self._first_answer, key, series, request.client)
            if not self._subscribe(key, request.client):
                del self.series[key]
                self._answer_due.discard(key)
                return next(request)
            return then(next(request), self._seed_from, key, series)
        stream = kline_stream(symbol, interval)
        self.tools.subscriptions.touch(market, stream)
        if self._fresh(key):  # without the rows exactly (else ``hit`` answered)
            page = series.missing(start, end, limit)
            if page is not None:
                return self._grow(request, key, series, page, (start, end, limit), next)
        if not series.ready and (key in self._answer_due
                                 or self.tools.refetch.busy(self._job(key))):
            return self.waiting.wait(key, (start, end, limit), request, next)
        return then(next(request), self._seed_from, key, series)

    # -- bot requests waiting for a seed ----------------------------------------------------
    def _seeded(self, key: Key, series: KlineSeries) -> int:
        """A seed attempt ended: answer the waiting requests the series
        covers now; the others go on. Returns how many were answered."""
        waiters = self.waiting.pop(key)
        count = 0
        for waiter in waiters:
            span = series.covers(*waiter[0]) if (
                series.ready and self.series.get(key) is series) else None
            if span is None:
                go_on(waiter)
            else:
                answered(waiter, stream_answer(series.response(span)))
                count += 1
        return count

    def _fresh(self, key: Key) -> bool:
        return self.tools.subscriptions.fresh(key[0], kline_stream(key[1], key[2]),
                                              self._max_age(key))

    def _max_age(self, key: Key) -> float:
        s = self.tools.settings
        return max(s.stale_kline_min, kline_cadence(key[0], key[2]) * s.stale_kline_factor)

    def _subscribe(self, key: Key, client: str) -> bool:
        market, symbol, interval = key
        series = self.series[key]
        return self.tools.subscriptions.open(market, kline_stream(symbol, interval),
                                             lambda d: self._on_kline(key, series, d), client)

    def _decide(self, _: object, key: Key, client: str) -> None:
        """The symbols were not known when the series was made: subscribe if
        the market lists the symbol, else forget the series."""
        series = self.series.get(key)
        if series is None:
            return
        if self.info.listed(key[0], key[1]) is not True or not self._subscribe(key, client):
            del self.series[key]
        elif not series.ready and key not in self._answer_due:
            self._seed(key, series)  # the bot's answer came first and could not seed it

    def _first_answer(self, response: ProxyResponse, key: Key, series: KlineSeries,
                      client: str) -> ProxyResponse:
        """The first answer for a series of a symbol not known to be listed:
        a 200 shows Binance lists it (subscribe now, no exchangeInfo);
        anything else leaves it to the market's symbol list."""
        market, symbol, _ = key
        if response.status == 200:
            self.info.confirm(market, symbol)
        if self.info.listed(market, symbol) is None:
            self.info.when_known(market).addCallback(self._decide, key, client)
        else:
            self._decide(None, key, client)
        return self._seed_from(response, key, series)

    def _seed_from(self, response: ProxyResponse, key: Key, series: KlineSeries) -> ProxyResponse:
        self._answer_due.discard(key)
        if response.status == 200 and not series.ready:
            try:
                series.seed(orjson.loads(response.body), self.tools.now_ms())
            except _BAD_PAGE:
                pass
        if (not series.ready and series.backfill_from is None
                and self.info.listed(key[0], key[1]) is True):
            # A historical page, or one that straddled a candle boundary: seed
            # from a page of our own rather than wait for another bot.
            self._seed(key, series)
        if not self.tools.refetch.busy(self._job(key)):
            self._seeded(key, series)
        return response

    def _job(self, key: Key) -> tuple:
        return ("klines", *key)

    def _seed(self, key: Key, series: KlineSeries) -> None:
        """A seed page of the newest candles, fetched by the proxy itself."""
        self._page(key, series, "", lambda rows: series.ready or series.seed(
            rows, self.tools.now_ms()))

    def _on_kline(self, key: Key, series: KlineSeries, data: Any) -> None:
        series.apply(data["k"], data.get("E", 0))
        span = series.backfill_range()
        if span is not None:
            self._backfill(key, series, *span)
        elif self._restored:
            self._restored.discard(key)  # a kept series the stream continued: no repair owed

    def _backfill(self, key: Key, series: KlineSeries, start: int, end: int) -> None:
        """Exactly the candles missed (after a reconnect or a restart), to
        repair the series: ``limit`` is their count (on the futures markets a
        smaller limit weighs less), else the largest page."""
        size = INTERVAL_MS.get(key[2])
        limit = self.tools.markets[key[0]].kline_max
        if size:
            limit = min(limit, max(1, (end - start) // size + 1))
        # The first repair of a series kept across a restart is a bounded
        # one-off (one per kept series and start): no bot credit, only share.
        self._page(key, series, f"&startTime={start}&endTime={end}", series.repair, limit,
                   credited=key not in self._restored)

    def _page(self, key: Key, series: KlineSeries, span: str,
              take: Callable[[Any], bool], limit: int | None = None,
              credited: bool = True) -> None:
        """Fetch a page of ``key``'s klines (``span``: the extra query; ``limit``,
        else the largest) and hand its rows to ``take``; a page it cannot
        take (or none) counts as a failed job, which the refetcher backs off."""
        market, symbol, interval = key
        query = (f"symbol={symbol}&interval={interval}{span}"
                 f"&limit={limit or self.tools.markets[market].kline_max}").encode()
        d = self.tools.refetch.fetch(self._job(key), market, rest_path(market, KLINES) or "",
                                     query, "backfill", credited=credited)
        if d is None:
            return

        def done(response: ProxyResponse | None) -> None:
            ok = False
            if response is not None and response.status == 200:
                try:
                    ok = take(orjson.loads(response.body))
                except _BAD_PAGE:
                    ok = False
            elif series.ready and span == "":
                ok = True  # a seed no longer needed
            if ok:
                self._restored.discard(key)
            else:
                self.tools.refetch.failed(self._job(key))
            if self._seeded(key, series):  # a seed or a repair bots waited on
                self.tools.refetch.answered_bots(self._job(key))
        d.addCallback(done)

    def _grow(self, request: ProxyRequest, key: Key, series: KlineSeries,
              page: tuple[int, int], asked: tuple[int | None, int | None, int],
              next: Callable) -> Answer:
        """One request for exactly the missing older candles, then the bot's
        request is answered from the series (or passed on if that failed)."""
        market, symbol, interval = key
        rows, end = page
        job = ("grow", *key)
        d: Deferred | None = self.tools.refetch.join(job)
        if d is None:
            query = f"symbol={symbol}&interval={interval}&endTime={end}&limit={rows}".encode()
            d = self.tools.refetch.fetch(job, market, rest_path(market, KLINES) or "", query,
                                         "backfill")
            if d is None:
                return next(request)

            def merge(response: ProxyResponse | None) -> ProxyResponse | None:
                if response is not None and response.status == 200:
                    try:
                        series.prepend(orjson.loads(response.body))
                    except _BAD_PAGE:
                        pass
                return response
            d.addCallback(merge)

        def serve(_: object) -> Answer:
            if self.series.get(key) is series and self._fresh(key):
                span = series.covers(*asked)
                if span is not None:
                    self.tools.refetch.answered_bots(job)  # the bot's request, grown
                    return stream_answer(series.response(span))
            return next(request)
        return d.addCallback(serve)

    # -- kept across restarts ----------------------------------------------------------
    def restore(self) -> int:
        """Take up the series a previous process kept (``klines_file``) and
        subscribe their streams; returns how many."""
        path = self.tools.settings.klines_file
        if path is None:
            return 0
        kept = klines_kept.load(path, self.tools.markets, self.tools.now_ms(),
                                self.tools.settings.klines_max_age)
        count = 0
        for key, rows in kept.items():
            if key in self.series or key[0] not in self.tools.subscriptions.managers:
                continue
            series = self.series[key] = KlineSeries(key[2], self.tools.markets[key[0]].kline_max)
            series.restore(rows)
            # Binance answered for it within ``klines_max_age``: listed, as a
            # kept symbol list of that age would say (no exchangeInfo for it)
            self.info.confirm(key[0], key[1])
            if self._subscribe(key, "bnproxy"):
                self._restored.add(key)
                count += 1
            else:
                del self.series[key]
        if count:
            _log.info("took up {count} kline series kept in {path}", count=count, path=path)
        return count

    def keep(self) -> None:
        """Write every series' closed candles to ``klines_file``, the most
        recently used first (the file is bounded)."""
        path = self.tools.settings.klines_file
        if path is None:
            return
        used = self.tools.subscriptions.last_used

        def last_used(key: Key) -> float:
            return used.get((key[0], kline_stream(key[1], key[2])), 0.0)
        keys = sorted(self.series, key=last_used, reverse=True)
        klines_kept.save(path, klines_kept.encode(
            ((k, self.series[k].closed_rows()) for k in keys), self.tools.markets,
            self.tools.now_ms()))

    # -- housekeeping ----------------------------------------------------------------
    def idle_for(self, interval: str) -> float:
        s = self.tools.settings
        return min(max(2 * interval_seconds(interval), s.idle_kline), s.idle_kline_max)

    def release(self, market: str, stream: str) -> None:
        symbol_l, _, kind = stream.partition("@")
        for key in [k for k in self.series if k[0] == market and k[1].lower() == symbol_l
                    and k[2] == kind[len("kline_"):]]:
            del self.series[key]
            self._restored.discard(key)
            self.tools.refetch.forget(self._job(key))
            for waiter in self.waiting.pop(key):
                go_on(waiter)
