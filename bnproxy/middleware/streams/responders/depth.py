"""Depth: one ``OrderBook`` per (market, symbol) kept by its diff stream,
built from the smallest snapshot whose weight band holds the asked limit
with headroom, and grown (a larger snapshot) when a bot asks for more."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from bnproxy.binance.marketdata import (
    DEPTH,
    DEPTH_DEFAULT_LIMIT,
    depth_snapshot_limit,
    depth_stream,
    rest_path,
)
from bnproxy.chain.compose import Answer
from bnproxy.chain.messages import ProxyRequest, ProxyResponse
from bnproxy.middleware.streams.orderbook import LIVE, OrderBook
from bnproxy.middleware.streams.responders import Tools, parse_int, stream_answer
from bnproxy.middleware.streams.responders.exchangeinfo import ExchangeInfoResponder

Key = tuple[str, str]  # (market, symbol)


class DepthResponder:
    def __init__(self, tools: Tools, info: ExchangeInfoResponder) -> None:
        self.tools = tools
        self.info = info
        self.books: dict[Key, OrderBook] = {}
        self.asked: dict[Key, int] = {}  # the largest limit bots asked
        self.snapshot_size: dict[Key, int] = {}  # levels of the book's last snapshot

    def handle(self, request: ProxyRequest, p: dict[str, str], next: Callable) -> Answer:
        market = request.market
        symbol = p.get("symbol")
        if not symbol or set(p) - {"symbol", "limit"}:
            return next(request)
        m = self.tools.markets[market]
        limit = parse_int(p.get("limit", str(DEPTH_DEFAULT_LIMIT[market])))
        if limit is None or not (limit in m.depth_limits if m.depth_limits is not None
                                 else 1 <= limit <= m.depth_max):
            return next(request)
        key = (market, symbol)
        book = self.books.get(key)
        if book is None:
            listed = self.info.listed(market, symbol)
            if listed is False:
                return next(request)  # Binance answers an unknown symbol; no subscription
            pair = symbol.split("_")[0] if market == "coinm" else None
            self.books[key] = OrderBook(market, symbol, pair)
            self.asked[key] = limit
            if listed is None:  # subscribe once the market's symbols are known
                self.info.when_known(market).addCallback(self._decide, key, request.client)
            else:
                self._decide(None, key, request.client)
            return next(request)
        self.tools.subscriptions.touch(market, depth_stream(symbol))
        if limit > self.asked.get(key, 0):
            self.asked[key] = limit
        if book.state == LIVE and self.tools.subscriptions.fresh(
                market, depth_stream(symbol), self.tools.settings.stale_depth):
            body = book.response(limit)
            if body is not None:
                return stream_answer(body)
            if self._size(key) > self.snapshot_size.get(key, 0):
                book.mark_stale()  # grow: the next events resync it from a larger snapshot
        return next(request)

    def _size(self, key: Key) -> int:
        market = key[0]
        m = self.tools.markets[market]
        endpoint = self.tools.endpoints.lookup(market, "GET", rest_path(market, DEPTH) or "")
        if endpoint is None:
            return self.tools.settings.snapshot_limit
        return depth_snapshot_limit(endpoint, m.depth_limits,
                                    min(self.tools.settings.snapshot_limit, m.depth_max),
                                    self.asked.get(key, 1), self.tools.settings.depth_headroom)

    def _decide(self, _: object, key: Key, client: str) -> None:
        """Subscribe if the market lists the symbol, else forget the book."""
        book = self.books.get(key)
        if book is None:
            return
        market, symbol = key
        if self.info.listed(market, symbol) is not True or not self.tools.subscriptions.open(
                market, depth_stream(symbol), lambda d: self._on_depth(key, book, d), client):
            del self.books[key]
            self.asked.pop(key, None)

    def _on_depth(self, key: Key, book: OrderBook, data: Any) -> None:
        book.on_event(data, self.tools.now_ms())
        if book.needs_snapshot():
            self._snapshot(key, book)

    def _snapshot(self, key: Key, book: OrderBook) -> None:
        market, symbol = key
        size = self._size(key)
        query = f"symbol={symbol}&limit={size}".encode()
        job = ("depth", *key)
        d = self.tools.refetch.fetch(job, market, rest_path(market, DEPTH) or "", query,
                                     "snapshot")
        if d is None:
            return

        def done(response: ProxyResponse | None) -> None:
            if response is None or response.status != 200:
                return
            try:
                live = book.on_snapshot(orjson.loads(response.body), size, self.tools.now_ms())
            except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
                live = False
            if live:
                self.snapshot_size[key] = size
            else:
                # Older than the buffered stream (Binance's procedure: fetch
                # again) or unusable: the next event retries after the backoff.
                self.tools.refetch.failed(job)
        d.addCallback(done)

    # -- housekeeping ----------------------------------------------------------------
    def lost(self, market: str, names: set[str]) -> None:
        for (m, symbol), book in self.books.items():
            if m == market and depth_stream(symbol) in names:
                book.mark_stale()

    def check_fresh(self) -> None:
        """Resync books whose stream went silent."""
        for (market, symbol), book in self.books.items():
            if book.state == LIVE and not self.tools.subscriptions.fresh(
                    market, depth_stream(symbol), self.tools.settings.stale_depth):
                book.mark_stale()

    def release(self, market: str, stream: str) -> None:
        symbol_l = stream.partition("@")[0]
        for key in [k for k in self.books if k[0] == market and k[1].lower() == symbol_l]:
            del self.books[key]
            self.asked.pop(key, None)
            self.snapshot_size.pop(key, None)
            self.tools.refetch.forget(("depth", *key))
