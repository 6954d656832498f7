"""The fake Binance exchange: REST and websocket streams on one port.

Use it in-process (``FakeExchange(reactor).listen(...)``, or
``bnproxy.testing.fake.run.start_exchange``), as ``twistd -n
bnproxy-exchange``, or behind ``twistd -n bnproxy --simulated-exchange``. It
takes a reactor (``task.Clock`` works) and is deterministic from its seed.

:class:`FakeExchange` only composes the parts (``state``, ``limits``,
``rest``, ``orders``, ``ws``, ``http``) and is the one object tests steer:
faults, counters, pause/resume, bans, skew.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.web import server
from twisted.web.resource import Resource

from bnproxy.binance.errors import error_body
from bnproxy.binance.markets import PRODUCTION
from bnproxy.testing.fake import formats
from bnproxy.testing.fake.auth import DEFAULT_KEYS
from bnproxy.testing.fake.control import Counters, Faults
from bnproxy.testing.fake.http import AdminResource, root_resource
from bnproxy.testing.fake.instruments import Instrument, default_instruments
from bnproxy.testing.fake.limits import WeightLimiter
from bnproxy.testing.fake.orders import OrderBookKeeper
from bnproxy.testing.fake.rest import ApiError, Call, RestApi
from bnproxy.testing.fake.state import MARKETS, Account, Accounts, Market, SymbolState
from bnproxy.testing.fake.userdata import UserStreams
from bnproxy.testing.fake.weights import ZERO_ON_SUCCESS, charged
from bnproxy.testing.fake.ws import StreamHub

__all__ = ["DEFAULT_WEIGHT_LIMITS", "MARKETS", "Counters", "FakeExchange", "Faults"]

DEFAULT_WEIGHT_LIMITS = {m: PRODUCTION[m].weight_limit or 2400 for m in MARKETS}


class FakeExchange:
    """The fake exchange, composed; see the module docstring."""

    def __init__(self, reactor, seed: int = 1, start_ms: int | None = None,
                 trade_rate: float = 0.5, tick: float = 0.1,
                 weight_limits: dict[str, int] | None = None, ban_scale: float = 1.0,
                 keys: dict[str, str] | None = None, ws_time_scale: float = 1.0,
                 instruments: list[Instrument] | None = None) -> None:
        self.clock = reactor
        self.tick_seconds = tick
        self.keys = dict(keys or DEFAULT_KEYS)
        self.markets = Market(reactor, instruments or default_instruments(), seed, start_ms,
                             trade_rate)
        limits = {**DEFAULT_WEIGHT_LIMITS, **(weight_limits or {})}
        self.limiters = {m: WeightLimiter(limits[m], ban_scale) for m in MARKETS}
        self.faults = Faults()
        self.counters = Counters()
        self.accounts = Accounts()
        self.orders = OrderBookKeeper(self.markets, self.accounts)
        self.rest = RestApi(self.markets, self.accounts, self.orders, self.keys,
                            {m: lim.limit for m, lim in self.limiters.items()})
        self.hubs = {m: StreamHub(m, self.markets, self.counters, reactor, ws_time_scale)
                     for m in MARKETS}
        # futures user-data streams: listenKeys and ORDER_TRADE_UPDATE events
        self.user_streams = UserStreams(self.markets.now, seed)
        self.rest.routes.update(self.user_streams.routes())
        self.orders.on_order.append(self.user_streams.order_event)
        for m in ("usdm", "coinm"):
            self.hubs[m].user_streams = self.user_streams
        self.paused = False
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = reactor
        self.port: Any = None
        self._listen_args: tuple | None = None

    # -- state, as tests read it ------------------------------------------------------
    @property
    def symbols(self) -> dict[str, dict[str, SymbolState]]:
        return self.markets.symbols

    @property
    def stream_symbols(self) -> dict[str, dict[str, SymbolState]]:
        return self.markets.stream_symbols

    @property
    def skew_ms(self) -> int:
        return self.markets.skew_ms

    @skew_ms.setter
    def skew_ms(self, value: int) -> None:
        self.markets.skew_ms = value

    def market_ms(self) -> int:
        return self.markets.now()

    def server_ms(self) -> int:
        """Server time as REST reports it (with any skew fault)."""
        return self.markets.server_ms()

    def account(self, market: str, key: str | None) -> Account:
        return self.accounts.account(market, key)

    def ticker(self, st: SymbolState) -> dict[str, Any]:
        return self.markets.ticker(st)

    def ticker_bytes(self, st: SymbolState, mini: bool = False) -> bytes:
        return formats.ticker_rest(self.markets.ticker(st), st.inst, mini)

    def ticker_ws(self, st: SymbolState, mini: bool = False) -> bytes:
        return formats.ticker_event(self.markets.ticker(st), st.inst, mini)

    # -- running ----------------------------------------------------------------------
    def start(self) -> FakeExchange:
        if not self._loop.running:
            self._loop.start(self.tick_seconds, now=False)
        return self

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def tick(self) -> None:
        if self.paused:
            return
        now = self.markets.tick(self.hubs)
        for hub in self.hubs.values():
            hub.tick(now)

    def pause(self) -> None:
        """Freeze the market and flush every stream, so REST and the streams
        describe the same moment."""
        now = self.markets.now()
        self.markets.forget_tickers()
        for hub in self.hubs.values():
            hub.tick(now, flush=True)
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    # -- REST gateway -------------------------------------------------------------------
    def answer(self, market: str, method: str, path: str, query: bytes, body: bytes,
               headers: dict[bytes, bytes], ip: str) -> tuple[int, bytes, list]:
        """One REST request, limits included. Returns (status, body, headers)."""
        self.counters.requests[(path, method, ip)] += 1
        params: dict[str, str] = {}
        for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            params.setdefault(k, v)
        if body and b"=" in body:
            for k, v in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
                params.setdefault(k, v)
        now = self.server_ms()
        market_now = self.market_ms()
        limiter = self.limiters[market]
        weight = charged(market, method, path, params)  # the fake's own table
        status, info = limiter.check(ip, market_now, weight)
        extra: list[tuple[bytes, bytes]] = []
        if status == 429:
            extra.append((b"retry-after", str(info).encode()))
            result = (429, formats.too_much_weight(limiter.limit, market), extra)
        elif status == 418:
            retry = max(1, -(-(info - market_now) // 1000))
            extra.append((b"retry-after", str(retry).encode()))
            result = (418, formats.way_too_much_weight(info), extra)
        else:
            call = Call(market, method, path, params, query, body,
                        headers.get(b"x-mbx-apikey", b"").decode("latin-1") or None, ip, now)
            try:
                result = self.rest.handle(call)
                if (market, method, path) in ZERO_ON_SUCCESS:
                    limiter.state(ip, market_now).used -= weight
            except ApiError as e:
                result = (e.status, error_body(e.code, e.msg), [])
        used = str(limiter.used(ip, market_now)).encode()
        result[2].append((b"x-mbx-used-weight-1m", used))
        if market == "spot":
            result[2].append((b"x-mbx-used-weight", used))
        self.counters.statuses[result[0]] += 1
        return result

    # -- steering -----------------------------------------------------------------------
    def ban(self, ip: str, seconds: float, market: str | None = None) -> None:
        for m in [market] if market else MARKETS:
            self.limiters[m].ban(ip, self.market_ms(), seconds)

    def reset(self) -> None:
        self.faults.reset()
        self.counters.reset()
        for m in MARKETS:
            self.limiters[m].ips.clear()
            self.hubs[m].silenced.clear()
            self.hubs[m].silence_all = False
        self.skew_ms = 0

    # -- serving ------------------------------------------------------------------------
    def resource(self) -> Resource:
        return root_resource(self.answer, self.faults, self.counters, self.clock,
                             {m: hub.factory for m, hub in self.hubs.items()},
                             AdminResource(self))

    def listen(self, endpoint, tls=None) -> Deferred:
        """Listen on a server endpoint (behind TLS with ``tls``, a
        :class:`bnproxy.testing.fake.tls.TlsFiles`); remembered so
        ``refuse`` can close and reopen it."""
        from bnproxy.testing.fake.tls import wrap

        site: Any = server.Site(self.resource(), reactor=self.clock)
        site.log = lambda request: None
        if tls is not None:
            site = wrap(site, tls)
        self._listen_args = (endpoint, site)

        def listening(port):
            self.port = port
            return port
        return endpoint.listen(site).addCallback(listening)

    def set_refuse(self, refuse: bool) -> Deferred | None:
        self.faults.refuse = refuse
        if refuse and self.port is not None:
            d = self.port.stopListening()
            self.port = None
            return d
        if not refuse and self.port is None and self._listen_args is not None:
            endpoint, site = self._listen_args
            return endpoint.listen(site).addCallback(lambda p: setattr(self, "port", p))
        return None
