"""Tickers (24 h, book ticker, spot last price): the latest stream payload of
one symbol, encoded once per message in the REST bytes."""

from __future__ import annotations

from collections.abc import Callable

from bnproxy.binance.marketdata import TICKER_24HR, TICKER_STREAM_KIND
from bnproxy.chain.compose import Answer
from bnproxy.chain.messages import ProxyRequest
from bnproxy.middleware.streams.responders import Tools, stream_answer
from bnproxy.middleware.streams.responders.exchangeinfo import ExchangeInfoResponder
from bnproxy.middleware.streams.tickers import StreamValue, book_ticker, last_price, ticker_24hr

Key = tuple[str, str]  # (market, stream)


class TickersResponder:
    def __init__(self, tools: Tools, info: ExchangeInfoResponder) -> None:
        self.tools = tools
        self.info = info
        self.values: dict[Key, StreamValue] = {}

    def handle(self, request: ProxyRequest, p: dict[str, str], family: str,
               next: Callable) -> Answer:
        market = request.market
        symbol = p.get("symbol")
        allowed = {"symbol", "type"} if family == TICKER_24HR else {"symbol"}
        if not symbol or set(p) - allowed or p.get("type", "FULL") != "FULL":
            return next(request)
        kind = TICKER_STREAM_KIND[family]
        stream = f"{symbol.lower()}@{kind}"
        key = (market, stream)
        value = self.values.get(key)
        if value is None:
            listed = self.info.listed(market, symbol)
            if listed is False:
                return next(request)  # Binance answers an unknown symbol; no subscription
            value = self.values[key] = StreamValue()
            if listed is None:  # subscribe once the market's symbols are known
                self.info.when_known(market).addCallback(self._decide, key, symbol, kind,
                                                         request.client)
            else:
                self._decide(None, key, symbol, kind, request.client)
            return next(request)
        self.tools.subscriptions.touch(market, stream)
        s = self.tools.settings
        if value.body is not None and self.tools.subscriptions.fresh(
                market, stream, s.stale_ticker if kind == "ticker" else s.stale_depth,
                s.quiet_limit(stream)):
            return stream_answer(value.body)
        return next(request)

    def _decide(self, _: object, key: Key, symbol: str, kind: str, client: str) -> None:
        """Subscribe if the market lists the symbol, else forget the value."""
        value = self.values.get(key)
        if value is None:
            return
        market, stream = key
        encode = {"ticker": lambda d: ticker_24hr(market, d),
                  "bookTicker": lambda d: book_ticker(market, d),
                  "aggTrade": last_price}[kind]
        now_ms = self.tools.now_ms

        def on_message(d):
            if d.get("s") == symbol:
                value.set(d, encode(d), now_ms())
        if self.info.listed(market, symbol) is not True or not self.tools.subscriptions.open(
                market, stream, on_message, client):
            del self.values[key]

    def release(self, market: str, stream: str) -> None:
        self.values.pop((market, stream), None)
