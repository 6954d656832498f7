"""``exchangeInfo``: answers held while bots ask for them, refreshed in the
background only while a bot asked within the last refresh interval; and the
symbols each market lists, which decide what the other responders may
subscribe to.

The symbol lists are kept in ``symbols_file`` (when set) each time one is
learned, and a kept list no older than ``symbols_max_age`` is used at the
next start instead of fetching exchangeInfo again (weight 20 on spot): a
running proxy uses a list as old as that anyway, since it refreshes it only
while bots ask exchangeInfo. A symbol listed since is forwarded (Binance
answers) until the list is learned again; one delisted since gets no stream
data, so its book never syncs and its requests go on after their wait."""

from __future__ import annotations

from collections.abc import Callable

import attrs
import orjson
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from bnproxy.binance.limits import USAGE_HEADER_PREFIXES
from bnproxy.binance.marketdata import EXCHANGE_INFO, rest_path
from bnproxy.chain.compose import Answer, then
from bnproxy.chain.messages import ProxyRequest, ProxyResponse, shareable
from bnproxy.middleware.streams.responders import Tools
from bnproxy.statefile import read_bounded, write_atomically

InfoKey = tuple[str, str, bytes]  # (market, path, query)
Held = tuple[ProxyResponse, float, float]  # (answer, last ask, when Binance gave it)
_OWN = (b"x-cache", b"age")  # set when served: what the cache said then is not true now
_PERSONAL = (b"set-cookie",)
_log = Logger(namespace="bnproxy.streams")
MAX_CONFIRMED = 4096  # symbols confirmed by answers per market, before its list is known
MAX_SYMBOLS_FILE = 16 * 1024 * 1024  # bytes of a kept symbols file read at start


def _held(response: ProxyResponse) -> ProxyResponse:
    return attrs.evolve(response, weight=0, headers=tuple(
        (k, v) for k, v in response.headers
        if not k.startswith(USAGE_HEADER_PREFIXES) and k not in _OWN and k not in _PERSONAL))


def _served(response: ProxyResponse, age: int) -> ProxyResponse:
    """The held answer as a cache hit: ``X-Cache: HIT`` and its ``Age``."""
    return attrs.evolve(response, source="cache", detail="held", headers=(
        *response.headers, (b"age", b"%d" % age), (b"x-cache", b"HIT")))


def _age(response: ProxyResponse) -> int:
    """The age the answer already had (a cache hit's ``Age``), else 0."""
    value = response.header(b"age")
    return int(value) if value is not None and value.isdigit() and len(value) < 10 else 0


class ExchangeInfoResponder:
    def __init__(self, tools: Tools) -> None:
        self.tools = tools
        self.held: dict[InfoKey, Held] = {}
        self.symbols: dict[str, frozenset[str]] = {}  # market -> listed symbols
        self._learned_at: dict[str, float] = {}  # market -> when Binance listed them
        # before a market's list is known: symbols a 200 answer showed listed
        self._confirmed: dict[str, set[str]] = {}
        # the last answer served per key: (held answer, age, served answer)
        self._served: dict[InfoKey, tuple[ProxyResponse, int, ProxyResponse]] = {}
        self._waiting: dict[str, list[Deferred]] = {}
        self._file = tools.settings.symbols_file
        self.restored: list[str] = []  # markets whose symbols came from the kept file
        if self._file is not None:
            self._restore(self._file)

    # -- answering ------------------------------------------------------------------
    def hit(self, request: ProxyRequest) -> ProxyResponse | None:
        """The held answer, its last ask noted; None, having done nothing,
        when none is held (``handle`` answers through it)."""
        key = (request.market, request.path, request.query)
        held = self.held.get(key)
        if held is None:
            return None
        now = self.tools.clock.seconds()
        response, _, fetched = self.held[key] = (held[0], now, held[2])
        age = int(now - fetched) if now > fetched else 0
        last = self._served.get(key)
        if last is not None and last[0] is response and last[1] == age:
            return last[2]  # the same answer as the last ask's (immutable)
        served = _served(response, age)
        self._served[key] = (response, age, served)
        return served

    def handle(self, request: ProxyRequest, params: dict[str, str], next: Callable) -> Answer:
        answer = self.hit(request)
        if answer is not None:
            return answer
        key = (request.market, request.path, request.query)

        def keep(response: ProxyResponse) -> ProxyResponse:
            if shareable(response):  # kept for every bot: nothing personal or private
                now = self.tools.clock.seconds()
                self.held[key] = (_held(response), now, now - _age(response))
                if not params:
                    self._learn(request.market, response.body)
            return response
        return then(next(request), keep)

    def refresh(self) -> None:
        """Refresh what bots asked for within the last interval; drop the rest
        (the next ask goes upstream and is held again)."""
        now = self.tools.clock.seconds()
        for key, (_, last_ask, _) in list(self.held.items()):
            if now - last_ask > self.tools.settings.info_refresh:
                del self.held[key]
                self._served.pop(key, None)
                continue
            market, path, query = key
            d = self.tools.refetch.fetch(("info", key), market, path, query, "refresh")
            if d is not None:
                d.addCallback(self._refreshed, key)

    def _refreshed(self, response: ProxyResponse | None, key: InfoKey) -> None:
        if response is None or not shareable(response) or key not in self.held:
            return
        now = self.tools.clock.seconds()
        self.held[key] = (_held(response), self.held[key][1], now - _age(response))
        if not key[2]:
            self._learn(key[0], response.body)

    # -- listed symbols -------------------------------------------------------------
    def listed(self, market: str, symbol: str) -> bool | None:
        """Whether ``market``'s exchangeInfo lists ``symbol`` (None: not known
        yet; True also when a bot's answer for it showed it, see ``confirm``)."""
        symbols = self.symbols.get(market)
        if symbols is None:
            return True if symbol in self._confirmed.get(market, ()) else None
        return symbol in symbols

    def confirm(self, market: str, symbol: str) -> None:
        """Binance answered 200 to a request for ``symbol``'s market data (a
        bot's klines): it lists the symbol, whether or not the market's list
        is known yet (no exchangeInfo needed for it)."""
        if market not in self.symbols:
            confirmed = self._confirmed.setdefault(market, set())
            if len(confirmed) < MAX_CONFIRMED:
                confirmed.add(symbol)

    def when_known(self, market: str) -> Deferred:
        """Fires (with None) once ``market``'s symbols are known, or once
        fetching them failed; starts that fetch if none is under way."""
        if market in self.symbols:
            return succeed(None)
        d: Deferred = Deferred()
        self._waiting.setdefault(market, []).append(d)
        job = ("symbols", market)
        if not self.tools.refetch.busy(job):
            path = rest_path(market, EXCHANGE_INFO) or ""
            # Once per market (until it succeeds): no credit, only the share.
            fetch = self.tools.refetch.fetch(job, market, path, b"", "refresh", credited=False)
            if fetch is None:
                self._wake(market)
            else:
                fetch.addCallback(self._fetched, market, path)
        return d

    def _fetched(self, response: ProxyResponse | None, market: str, path: str) -> None:
        if response is not None and response.status == 200:
            self._learn(market, response.body)
        if response is not None and shareable(response):
            # Held, but refreshed only once a bot asks for it.
            now = self.tools.clock.seconds()
            self.held.setdefault((market, path, b""), (_held(response), float("-inf"),
                                                       now - _age(response)))
        self._wake(market)

    def _learn(self, market: str, body: bytes) -> None:
        try:
            info = orjson.loads(body)
            symbols = frozenset(s["symbol"] for s in info["symbols"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return
        self.symbols[market] = symbols
        self._confirmed.pop(market, None)
        self._learned_at[market] = self.tools.clock.seconds()
        if self._file is not None:
            self._save(self._file)
        self._wake(market)

    # -- kept across restarts -------------------------------------------------------
    def _restore(self, path: str) -> None:
        """Each market's kept list, if no older than ``symbols_max_age``."""
        try:
            raw = read_bounded(path, MAX_SYMBOLS_FILE)
            if raw is None:
                return
            kept = orjson.loads(raw)
        except (OSError, ValueError) as e:  # orjson's JSONDecodeError is a ValueError
            _log.warn("symbol lists in {path} not used: {e}", path=path, e=e)
            return
        now = self.tools.clock.seconds()
        markets = kept.get("markets") if isinstance(kept, dict) else None
        for market, entry in (markets.items() if isinstance(markets, dict) else ()):
            try:
                learned, symbols = float(entry["learned"]), entry["symbols"]
            except (KeyError, TypeError, ValueError):
                continue
            if (market in self.tools.markets and isinstance(symbols, list)
                    and 0 <= now - learned <= self.tools.settings.symbols_max_age):
                self.symbols[market] = frozenset(str(s) for s in symbols)
                self._learned_at[market] = learned
                self.restored.append(market)

    def _save(self, path: str) -> None:
        """Every market's list with when Binance gave it (written whole, then
        renamed: a crash leaves the old file or the new one)."""
        body = orjson.dumps({"markets": {
            m: {"learned": self._learned_at[m], "symbols": sorted(self.symbols[m])}
            for m in self.symbols}})
        try:
            write_atomically(path, body)
        except OSError as e:
            _log.warn("symbol lists not kept in {path}: {e}", path=path, e=e)

    def _wake(self, market: str) -> None:
        for d in self._waiting.pop(market, []):
            d.callback(None)
