"""``streams``: klines, order books and tickers answered from websocket state,
byte for byte what the REST endpoint would answer, and ``exchangeInfo`` held
and refreshed in the background while bots use it.

The middleware itself only dispatches by endpoint to one responder per
family (``responders/``); the proxy's own REST requests go through one
``Refetcher``; subscriptions live in ``Subscriptions`` over one
``StreamManager`` per market.

Anything the state does not cover exactly (a range not held, a book without
enough exact levels, a silent stream, an unusual parameter) goes on down the
chain: never held waiting for a socket, never answered with invented data.
Only symbols the market's exchangeInfo lists are subscribed; unused
subscriptions end after their idle time.

The service's readiness pings are liveness traffic the fleet already
provides: a market whose last upstream exchange succeeded and that had an
upstream answer or a stream message within ``QUIET`` seconds is not pinged
(the ping is answered here); a quiet one at most once per ``QUIET``. A failed
ping is confirmed once, ``CONFIRM_AFTER`` seconds later, before it stands; a
failed bot request is confirmed by a ping as soon (at most one a market per
``PROBE_EVERY``), so one failure does not leave a market unreachable until
the next probe.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

from twisted.application.service import MultiService
from twisted.internet import task
from twisted.internet.defer import Deferred
from zope.interface import implementer

from bnproxy.binance.marketdata import (
    BOOK_TICKER,
    DEPTH,
    EXCHANGE_INFO,
    KLINES,
    PRICE,
    TICKER_24HR,
    default_format,
    kline_cadence,
    rest_path,
)
from bnproxy.binance.markets import PING_PATHS
from bnproxy.binance.privacy import API_KEY_HEADER, AcceptedKeys, is_private
from bnproxy.binance.streams import parse_stream_path, user_data_path
from bnproxy.chain.compose import Answer, as_deferred, then
from bnproxy.chain.context import MiddlewareContext
from bnproxy.chain.interfaces import (
    IDashboardSection,
    IFastPathSafe,
    IHealthReporter,
    IMetricsSource,
    IMiddleware,
    IProblemReporter,
    IReadinessCheck,
    IStreamHub,
    IUserDataUpstream,
    IWeightGovernor,
)
from bnproxy.chain.messages import INTERNAL, JSON, ProxyRequest, ProxyResponse
from bnproxy.middleware.streams.egress import ban_reader, move_banned
from bnproxy.middleware.streams.hub import Hub
from bnproxy.middleware.streams.klines import KlineSeries
from bnproxy.middleware.streams.manager import StreamManager
from bnproxy.middleware.streams.orderbook import OrderBook
from bnproxy.middleware.streams.pace import ConnectPace, stream_endpoint
from bnproxy.middleware.streams.refetch import PURPOSES, Refetcher
from bnproxy.middleware.streams.responders import Tools
from bnproxy.middleware.streams.responders.depth import DepthResponder
from bnproxy.middleware.streams.responders.exchangeinfo import ExchangeInfoResponder
from bnproxy.middleware.streams.responders.klines import KlinesResponder
from bnproxy.middleware.streams.responders.tickers import TickersResponder
from bnproxy.middleware.streams.settings import OPTIONS, Settings, read_settings
from bnproxy.middleware.streams.subscriptions import Subscriptions
from bnproxy.middleware.streams.tickers import StreamValue

# The families each market's streams can answer exactly.
SERVED = {"spot": (KLINES, DEPTH, TICKER_24HR, BOOK_TICKER, PRICE, EXCHANGE_INFO),
          "usdm": (KLINES, DEPTH, TICKER_24HR, BOOK_TICKER, EXCHANGE_INFO),
          "coinm": (KLINES, DEPTH, EXCHANGE_INFO)}
SWEEP_EVERY = 10.0
READINESS_PING = b"ready"  # the INTERNAL marker of the service's readiness probes
# The answer that admits a bot's websocket upgrade on a stream path (the
# gateway, server/websocket.py, takes the connection over).
UPGRADE = ProxyResponse(101, (), b"", "stream", "websocket")
QUIET = 60.0  # seconds without upstream answer or stream message before a market is pinged
CONFIRM_AFTER = 1.0  # a failed ping is tried once more this much later
PROBE_EVERY = 15.0  # at most one confirmation of a failed request per market this often
CONFIRM_PING = b"ready-confirm"  # the INTERNAL marker of those confirmations


def is_stream_upgrade(request: ProxyRequest) -> bool:
    """A websocket upgrade to one of Binance's stream paths (public or user-data)."""
    upgrade = request.header(b"upgrade")
    if upgrade is None or upgrade.strip().lower() != b"websocket":
        return False
    path, query = f"/{request.market}{request.path}", request.query.decode("latin-1")
    return parse_stream_path(path, query) is not None or user_data_path(path, query) is not None


@implementer(IMiddleware, IHealthReporter, IMetricsSource, IReadinessCheck, IProblemReporter,
             IDashboardSection, IFastPathSafe, IStreamHub, IUserDataUpstream)
class Streams(MultiService):
    plain_next = True

    def __init__(self, name: str, context, settings: Settings) -> None:
        super().__init__()
        self.name = name
        self.settings = settings
        self._clock = context.reactor
        # the upstream's last success and failure per market (the terminal's record)
        reachability = getattr(context.upstream, "reachability", None)
        self._reachability: dict[str, dict[str, Any]] = (
            {} if reachability is None else reachability)
        self._probed: dict[str, float] = {}  # market -> when a ping last went upstream
        self._confirmed: dict[str, float] = {}  # market -> when a failure was last confirmed
        self._chain = context.chain
        self._endpoints = context.endpoints
        self._confirmer = task.LoopingCall(self._confirm_failures)
        self._confirmer.clock = context.reactor
        self.pings_spared = 0
        keys = getattr(context, "accepted_keys", None)
        self.accepted_keys: AcceptedKeys = AcceptedKeys() if keys is None else keys
        self.managers: dict[str, StreamManager] = {}
        self.refetch = Refetcher(context.reactor, context.chain, context.endpoints,
                                 context.markets, lambda: context.find(IWeightGovernor),
                                 share=settings.own_share)
        self.subscriptions = Subscriptions(context.reactor, self.managers,
                                           settings.new_streams_per_client)
        tools = Tools(context.reactor, context.markets, context.endpoints, self.subscriptions,
                      self.refetch, settings)
        self.exchange_info = ExchangeInfoResponder(tools)
        self.klines = KlinesResponder(tools, self.exchange_info)
        self.depth = DepthResponder(tools, self.exchange_info)
        self.tickers = TickersResponder(tools, self.exchange_info)
        # One pace for every market: Binance counts new connections per IP.
        pace = ConnectPace(context.reactor, getattr(context, "shared_state", None))
        for market in SERVED:
            m = context.markets.get(market)
            if m is None or not m.stream_base:
                continue
            manager = StreamManager(context.reactor, m, legacy_routes=settings.legacy_routes,
                                    rotate_after=settings.rotate_after,
                                    tls_policy=getattr(context, "tls_policy", None),
                                    egresses=tuple(getattr(context, "egresses", ()) or ()),
                                    silent_after=self._silent_after(market))
            manager.on_lost.append(self._lost_callback(market))
            manager.egress_banned = ban_reader(market, lambda: context.find(IWeightGovernor))
            manager.pace = pace
            manager.setServiceParent(self)
            self.managers[market] = manager
            context.streams[market] = manager
        self._routes: dict[tuple[str, str], str] = {
            (market, rest_path(market, family) or ""): family
            for market in self.managers for family in SERVED[market]}
        self._parsed: dict[bytes, dict[str, str] | None] = {}
        # (headers, query) of bot requests found public on a family's path
        # (fast_handle: is_private asked once per distinct head)
        self._public: set[tuple] = set()
        # The bots' websocket gateway (IStreamHub, below)
        self.hub = Hub(context.reactor, self.managers, self.subscriptions,
                       self.exchange_info.listed, self.exchange_info.when_known,
                       self._idle_for)
        self.served = 0
        self._sweeper = task.LoopingCall(self._sweep)
        self._sweeper.clock = context.reactor
        self._refresher = task.LoopingCall(self.exchange_info.refresh)
        self._refresher.clock = context.reactor

    def _silent_after(self, market: str) -> Callable[[str], float | None]:
        """Seconds a stream of ``market`` with a regular cadence (klines, 24 h
        tickers) may go without a message before its connection is replaced;
        None for event-driven ones (depth, book tickers, trades)."""
        s = self.settings

        def limit(name: str) -> float | None:
            kind = name.partition("@")[2]
            if kind.startswith("kline_"):
                return max(s.stale_kline_min,
                           kline_cadence(market, kind[len("kline_"):]) * s.stale_kline_factor)
            return s.stale_ticker if kind == "ticker" else None
        return limit

    def _lost_callback(self, market: str) -> Callable[[set[str]], None]:
        return lambda names: self.depth.lost(market, names)

    # State by family, under the names tests and tools read.
    @property
    def series(self) -> dict[tuple[str, str, str], KlineSeries]:
        return self.klines.series

    @property
    def books(self) -> dict[tuple[str, str], OrderBook]:
        return self.depth.books

    @property
    def values(self) -> dict[tuple[str, str], StreamValue]:
        return self.tickers.values

    def startService(self) -> None:
        super().startService()
        self._sweeper.start(SWEEP_EVERY, now=False)
        self._refresher.start(self.settings.info_refresh, now=False)
        self._confirmer.start(CONFIRM_AFTER, now=False)
        self.klines.restore()  # series a previous process kept

    def stopService(self):
        self.klines.keep()
        self.hub.stop()
        for loop in (self._sweeper, self._refresher, self._confirmer):
            if loop.running:
                loop.stop()
        return super().stopService()

    # -- the middleware -------------------------------------------------------------
    def handle(self, request: ProxyRequest, next: Callable) -> Answer:
        marker = None
        for k, v in request.headers:  # request.header(INTERNAL), inline: every request
            if k == INTERNAL:
                marker = v
                break
        if marker is not None or request.method != "GET":
            if marker == READINESS_PING:  # the proxy's own too: counted as "ping"
                return self._ping(request, next)
            if marker == CONFIRM_PING:
                return as_deferred(next(request)).addCallback(
                    self._ping_answered, request, next, True)
            return next(request)
        family = self._routes.get((request.market, request.path))
        if family is None or request.endpoint is None:
            if request.endpoint is None and is_stream_upgrade(request):
                return UPGRADE  # the websocket gateway takes the connection
            return next(request)
        if not default_format(request.headers):  # µs or SBE: Binance's, not rebuilt here
            return next(request)
        if is_private(request):
            view = self.accepted_keys.public_view(request)
            if view is None:  # private, or a key Binance has not accepted yet
                api_key = request.header(API_KEY_HEADER)
                if api_key is None:
                    return next(request)
                return then(next(request), self._answered_with_key, api_key)
            request = view  # a key Binance accepted, on a public endpoint: public
        p = self._params(request.query)
        if p is None:  # a parameter given twice: ambiguous, Binance decides
            return next(request)
        self.refetch.credit(request.market, request.path, request.query)
        if family == KLINES:
            answer = self.klines.handle(request, p, next)
        elif family == DEPTH:
            answer = self.depth.handle(request, p, next)
        elif family == EXCHANGE_INFO:
            return self.exchange_info.handle(request, p, next)
        else:
            answer = self.tickers.handle(request, p, family, next)
        return then(answer, self._count)

    def fast_handle(self, request: ProxyRequest, next: Callable) -> ProxyResponse | None:
        """``IFastPathSafe``: a stream (or held exchangeInfo) hit as ``handle``
        gives it, through the responders' ``hit``; a path no responder
        serves goes on; anything else (not fresh, not held, a key not yet
        accepted, the proxy's own request) is None: the chain's."""
        if request.method != "GET":
            return None
        family = self._routes.get((request.market, request.path))
        if family is None or request.endpoint is None:
            if request.endpoint is None and request.header(b"upgrade") is not None:
                return None  # perhaps the websocket gateway's
            return next(request)
        public = self._public
        memo = (request.headers, request.query)
        if request.body or memo not in public or not request.endpoint.public:
            if request.header(INTERNAL) is not None or not default_format(request.headers):
                return None
            if is_private(request):
                view = self.accepted_keys.public_view(request)
                if view is None:
                    return None
                request = view
            elif not request.body:  # remembered: only what is public (no secret kept)
                if len(public) >= 4096:
                    public.clear()
                public.add(memo)
        p = self._parsed.get(request.query)  # (_params, inline, for a query seen before)
        if p is None:
            p = self._params(request.query)
        if p is None:
            return None
        if family == KLINES:
            answer = self.klines.hit(request, p)
        elif family == DEPTH:
            answer = self.depth.hit(request, p)
        elif family == EXCHANGE_INFO:
            answer = self.exchange_info.hit(request)
        else:
            answer = self.tickers.hit(request, p, family)
        if answer is None:
            return None
        self.refetch.credit(request.market, request.path, request.query)
        if answer.source == "stream":  # _count
            self.served += 1
        return answer

    def _answered_with_key(self, response: ProxyResponse, api_key: bytes) -> ProxyResponse:
        self.accepted_keys.observe(api_key, response.status, response.source)
        return response

    # -- liveness -------------------------------------------------------------------
    def _ping(self, request: ProxyRequest, next: Callable) -> Answer:
        market = request.market
        now = self._clock.seconds()
        if self._reached(market) and (self.alive(market, now) or
                                      now - self._probed.get(market, float("-inf")) < QUIET):
            self.pings_spared += 1
            return ProxyResponse(200, (JSON,), b"{}", "local", "liveness")
        self._probed[market] = now
        return as_deferred(next(request)).addCallback(self._ping_answered, request, next, False)

    def _reached(self, market: str) -> bool:
        """True if the upstream's last exchange for ``market`` succeeded."""
        state = self._reachability.get(market) or {}
        ok, error = state.get("ok"), state.get("error")
        return ok is not None and (error is None or ok >= error)

    def alive(self, market: str, now: float) -> bool:
        """An upstream answer or a stream message for ``market`` within ``QUIET``."""
        state = self._reachability.get(market) or {}
        if state.get("ok") is not None and now - state["ok"] < QUIET:
            return True
        manager = self.managers.get(market)
        return manager is not None and now - manager.last_message < QUIET

    def _confirm_failures(self) -> None:
        """Ping each market whose last upstream exchange failed, once per
        failure and at most once per ``PROBE_EVERY``."""
        now = self._clock.seconds()
        for market, state in list(self._reachability.items()):
            error, ok = state.get("error"), state.get("ok")
            if error is None or (ok is not None and ok >= error) or market not in PING_PATHS:
                continue
            if now - self._confirmed.get(market, float("-inf")) < PROBE_EVERY:
                continue
            self._confirmed[market] = now
            path = PING_PATHS[market]
            request = ProxyRequest("GET", market, path, b"", ((INTERNAL, CONFIRM_PING),), b"",
                                   "bnproxy", now, self._endpoints.lookup(market, "GET", path))
            as_deferred(self._chain(request)).addErrback(lambda f: None)

    def _ping_answered(self, response: ProxyResponse, request: ProxyRequest, next: Callable,
                       confirming: bool) -> Answer:
        self.refetch.observe(request, response, "ping")
        if confirming or response.source != "local" or response.status not in (502, 504):
            return response
        # Not sent or not answered: one failure is not a verdict; confirm it once.
        d: Deferred = task.deferLater(self._clock, CONFIRM_AFTER, next, request)
        return d.addCallback(self._ping_answered, request, next, True)

    def _count(self, response: ProxyResponse) -> ProxyResponse:
        if response.source == "stream":
            self.served += 1
        return response

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

    # -- housekeeping ---------------------------------------------------------------
    def _idle_for(self, stream: str) -> float:
        kind = stream.partition("@")[2]
        if kind.startswith("kline_"):
            return self.klines.idle_for(kind[len("kline_"):])
        return self.settings.idle_depth

    def _sweep(self) -> None:
        """End subscriptions nobody used lately; resync silent books; move
        connections off banned egress addresses."""
        self.hub.sweep()
        for manager in self.managers.values():
            move_banned(manager)
        for market, stream in self.subscriptions.idle(self._idle_for):
            kind = stream.split("@", 1)[1]
            if kind.startswith("kline_"):
                self.klines.release(market, stream)
            elif kind.startswith("depth"):
                self.depth.release(market, stream)
            else:
                self.tickers.release(market, stream)
        self.depth.check_fresh()

    # -- capabilities ---------------------------------------------------------------
    def stream_markets(self) -> tuple[str, ...]:
        return self.hub.stream_markets()

    def subscribe(self, market: str, stream: str, listener: Callable[[bytes], None],
                  lost: Callable[[], None] | None = None) -> Any:
        return self.hub.subscribe(market, stream, listener, lost)

    def upstream_view(self) -> dict:
        return self.hub.upstream_view(self.stale_streams)

    def after_read(self, callback: Callable[[], None]) -> None:
        self.hub.after_read(callback)

    # -- IUserDataUpstream -------------------------------------------------------------
    def user_stream(self, market: str, target: str) -> tuple[Any, str] | None:
        manager = self.managers.get(market)
        if manager is None or not manager.market.stream_base:
            return None
        url = manager.market.stream_base + target
        return stream_endpoint(manager.reactor, url, manager.next_egress(),
                               manager.tls_policy, manager.pace, user_data=True), url

    def stale_streams(self, market: str) -> set[str]:
        manager = self.managers[market]
        s = self.settings
        stale = set()
        for name in manager.placed:
            kind = name.split("@", 1)[1]
            limit = s.stale_kline_min if kind.startswith("kline_") else (
                s.stale_ticker if kind == "ticker" else s.stale_depth)
            if not manager.fresh(name, limit, s.quiet_limit(name)):
                stale.add(name)
        return stale

    def readiness_problems(self) -> list[str]:
        return [f"stream manager {name} not running"
                for name, manager in self.managers.items() if not manager.running]

    def health_problems(self) -> list[tuple[str, str, str]]:
        """A manager down: not ready; subscribed streams gone silent: degraded
        (their requests go upstream, never served stale)."""
        out = [(f"streams-down:{name}", "not ready", f"stream manager {name} not running")
               for name, manager in self.managers.items() if not manager.running]
        for market in self.managers:
            stale = self.stale_streams(market)
            if stale:
                total = len(self.managers[market].placed)
                out.append((f"streams-stale:{market}", "degraded",
                            f"{len(stale)} of {total} {market} streams stale "
                            f"(e.g. {min(stale)}): answered upstream meanwhile"))
        return out

    def collect_metrics(self) -> Iterator[Any]:
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
        control = CounterMetricFamily(
            "bnproxy_stream_control_messages", "Control messages (SUBSCRIBE, UNSUBSCRIBE) "
            "sent upstream.", labels=["market", "egress"])
        by_egress = GaugeMetricFamily("bnproxy_stream_connections_by_egress",
                                      "Stream connections by egress address.",
                                      labels=["market", "egress"])
        for market, mgr in self.managers.items():
            for egress, n in mgr.control_sent.items():
                control.add_metric([market, egress or "default"], n)
            spread = Counter(c.egress or "default" for c in mgr.connections
                             if c.protocol is not None)
            for egress, n in spread.items():
                by_egress.add_metric([market, egress], n)
        yield control
        yield by_egress
        yield CounterMetricFamily("bnproxy_ws_relayed_frames", "Upstream stream frames "
                                  "relayed to the bots' gateway.", value=self.hub.frames)
        yield CounterMetricFamily("bnproxy_ws_relayed_bytes", "Bytes of upstream stream "
                                  "frames relayed to the bots' gateway.", value=self.hub.bytes)
        yield CounterMetricFamily("bnproxy_stream_answers", "Answers served from streams.",
                                  value=self.served)
        own = CounterMetricFamily(
            "bnproxy_own_weight", "Request weight of the proxy's own REST requests "
            "(snapshots, backfills, refreshes, pings, stale books' fallbacks).",
            labels=["market", "purpose"])
        for market in self.managers:
            for purpose in PURPOSES:
                own.add_metric([market, purpose], self.refetch.total.get((market, purpose), 0))
        yield own

    def dashboard_section(self) -> tuple[str, dict]:
        """The dashboard's streams table: per market connections, open ones,
        subscriptions, stale ones, reconnects, messages a second."""
        markets = {}
        for m, mgr in self.managers.items():
            h = mgr.health(self.stale_streams(m))
            markets[m] = {"connections": h.get("connections", 0), "open": h.get("open", 0),
                          "streams": h.get("streams", 0), "stale": len(h.get("stale", ())),
                          "reconnects": h.get("reconnects", 0),
                          "messages_per_second": h.get("messages_per_second", 0.0)}
        return "streams", {"served": self.served, "markets": markets}

    def health(self) -> dict:
        degraded = [text for _, severity, text in self.health_problems()
                    if severity == "degraded"]
        return {"status": "degraded" if degraded else "ok", "degraded": degraded,
                "served": self.served,
                "markets": {m: mgr.health(self.stale_streams(m))
                            for m, mgr in self.managers.items()},
                "series": len(self.series), "books": len(self.books),
                "exchange_info_held": len(self.exchange_info.held),
                "own_weight": self.refetch.health(),
                "subscriptions_refused": self.subscriptions.refused,
                "gateway": self.hub.health()}


__all__ = ["OPTIONS", "Streams", "build_streams"]


def build_streams(name: str, settings: dict[str, Any], context: MiddlewareContext) -> Streams:
    return Streams(name, context, read_settings(name, settings))
