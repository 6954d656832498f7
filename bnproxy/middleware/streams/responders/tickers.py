"""Tickers (24 h, book ticker, spot last price): the latest stream payload of
one symbol, encoded once per message in the REST bytes."""

from __future__ import annotations

from collections.abc import Callable

from bnproxy.binance.marketdata import TICKER_24HR, TICKER_STREAM_KIND
from bnproxy.chain.compose import Answer
from bnproxy.chain.messages import ProxyRequest, ProxyResponse
from bnproxy.middleware.streams.responders import Answers, Tools, remember
from bnproxy.middleware.streams.responders.exchangeinfo import ExchangeInfoResponder
from bnproxy.middleware.streams.tickers import StreamValue, book_ticker, last_price, ticker_24hr

Key = tuple[str, str]  # (market, stream)
_ALLOWED = frozenset({"symbol"})
_ALLOWED_24HR = frozenset({"symbol", "type"})


class TickersResponder:
    def __init__(self, tools: Tools, info: ExchangeInfoResponder) -> None:
        self.tools = tools
        self.info = info
        self.values: dict[Key, StreamValue] = {}
        # (market, raw query, family) -> (symbol, kind, stream, freshness bounds)
        # of queries a value may answer
        self._queries: dict[tuple[str, bytes, str],
                            tuple[str, str, str, float, float | None]] = {}
        self._answers = Answers()

    @staticmethod
    def _asked(p: dict[str, str], family: str) -> tuple[str, str, str] | None:
        """(symbol, stream kind, stream) of a request a value may answer, or None."""
        symbol = p.get("symbol")
        allowed = _ALLOWED_24HR if family == TICKER_24HR else _ALLOWED
        if not symbol or set(p) - allowed or p.get("type", "FULL") != "FULL":
            return None
        kind = TICKER_STREAM_KIND[family]
        return symbol, kind, f"{symbol.lower()}@{kind}"

    def hit(self, request: ProxyRequest, p: dict[str, str], family: str
            ) -> ProxyResponse | None:
        """The answer from a fresh stream value, the stream touched; None,
        having done nothing, otherwise (``handle`` answers through it)."""
        market = request.market
        memo = (market, request.query, family)
        asked = self._queries.get(memo)
        if asked is None:  # parsed once per distinct query
            checked = self._asked(p, family)
            if checked is None:
                return None
            s = self.tools.settings
            stream = checked[2]
            asked = remember(self._queries, memo, (
                *checked, s.stale_ticker if checked[1] == "ticker" else s.stale_depth,
                s.quiet_limit(stream)))
        _, kind, stream, max_age, quiet = asked
        key = (market, stream)
        value = self.values.get(key)
        if value is None or value.body is None or \
                not self.tools.subscriptions.fresh(market, stream, max_age, quiet):
            return None
        self.tools.subscriptions.touch(market, stream)
        return self._answers.of(key, value.body)

    def handle(self, request: ProxyRequest, p: dict[str, str], family: str,
               next: Callable) -> Answer:
        answer = self.hit(request, p, family)
        if answer is not None:
            return answer
        market = request.market
        asked = self._asked(p, family)
        if asked is None:
            return next(request)
        symbol, kind, stream = asked
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
        self.tools.subscriptions.touch(market, stream)  # held, not fresh (else ``hit``)
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
