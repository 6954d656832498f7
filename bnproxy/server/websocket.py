"""The bots' websocket gateway: Binance's public stream endpoints served by
the proxy on its REST port.

- ``GatewayResource`` takes over a ``twisted.web`` request that asks for a
  websocket upgrade on a stream path (``/ws…``, ``/stream?streams=…`` under
  each market's mount, bare paths being spot), after the chain admitted it
  (the allowlist and the access log see the upgrade as a ``GET``; the
  ``streams`` middleware answers it with 101).
- ``Gateway`` holds the bots and fans each upstream frame out: one ``Tap``
  per (market, stream) subscribed once to the ``IStreamHub``, the frame
  framed once per framing (raw or combined: the websocket frame's bytes,
  ``text_frame``) and queued for each ``Cohort`` that receives it: the bots
  receiving the same streams in the same framing. Once the upstream read
  that brought them is relayed (``IStreamHub.after_read``; at the latest at
  the end of the reactor turn), each cohort's frames are joined once
  and written to each of its bots in one ``write``: a burst of upstream
  frames costs one write per bot, not one per frame and bot; who is
  written first turns with each burst, so no bot always waits for the
  others' writes. Raw frames are
  Binance's payload bytes, combined frames Binance's
  ``{"stream":…,"data":…}`` bytes, untouched. A bot's subscriptions, framing
  and USD-M route are looked at when they change (its cohort is chosen
  again), never per frame.
- ``BotProtocol`` speaks Binance's control protocol (``SUBSCRIBE``,
  ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``, ``SET_PROPERTY``/``GET_PROPERTY``
  ``combined``) with Binance's answers and limits (``bnproxy.binance.streams``):
  message rate (close 1008), streams per connection, invalid names, server
  pings and the pong deadline.
- Each bot has a bounded send buffer: the transport is a push producer's
  consumer; while it is paused, what is written is counted, and a bot whose
  next write would take it past ``max_backlog`` bytes is closed
  (``SLOW_CLIENT``) and counted. Connections are capped per client address and in total.

User-data streams (``/ws/<listenKey>``, USD-M's ``/private/…``) on the
futures markets are relayed one to one (``bnproxy.server.userdata``), never
shared or cached; spot's, retired by Binance, are refused with a clear
answer. The listenKey never reaches a log.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import orjson
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.resource import IResource
from zope.interface import implementer

from bnproxy.binance import streams as bs
from bnproxy.binance.errors import TOO_MANY_REQUESTS, UNKNOWN
from bnproxy.binance.marketdata import usdm_route
from bnproxy.chain.addresses import normalise
from bnproxy.chain.interfaces import (
    IHealthReporter,
    IMetricsSource,
    IStreamGateway,
    IStreamHub,
    IUserDataUpstream,
)
from bnproxy.chain.messages import ProxyRequest, ProxyResponse, local_error
from bnproxy.server.clientaddr import ClientResolver
from bnproxy.server.forwarding import RootResource, split_target, write_response
from bnproxy.server.wsview import bots_rows
from bnproxy.twistedcompat import plain_tcp, send_now

_log = Logger(namespace="bnproxy.server.websocket")

OPEN = WebSocketServerProtocol.STATE_OPEN
UPGRADE_STATUS = 101  # the chain's "admitted" answer to an upgrade request
SLOW_CLIENT = 1008
SLOW_CLIENT_REASON = "bnproxy: client too slow, send buffer full"
GOING_AWAY = 1001
UPSTREAM_LOST = 1001
UPSTREAM_LOST_REASON = "bnproxy: stream interrupted upstream or proxy stopping, reconnect"


def is_upgrade(request: server.Request) -> bool:
    """Whether ``request`` asks for a websocket."""
    value = request.requestHeaders.getRawHeaders(b"upgrade")
    return value is not None and value[0].strip().lower() == b"websocket"


class Limits:
    """Per-bot and gateway-wide bounds: open connections per client address
    (``--max-connections-per-client``, as for HTTP) and in total, and the
    bytes that may wait for one bot."""

    def __init__(self, per_client: int = 256, total: int = 10_000,
                 max_backlog: int = 4 * 1024 * 1024) -> None:
        self.per_client = per_client
        self.total = total
        self.max_backlog = max_backlog


@implementer(IPushProducer)
class _Backpressure:
    """The transport's producer: tells the bot when its socket buffer is full."""

    __slots__ = ("bot",)

    def __init__(self, bot: BotProtocol) -> None:
        self.bot = bot

    def pauseProducing(self) -> None:
        self.bot.paused = True

    def resumeProducing(self) -> None:
        self.bot.paused = False
        self.bot.backlog = 0

    def stopProducing(self) -> None:
        self.bot.paused = True


class BotProtocol(WebSocketServerProtocol):
    """One bot's stream connection (see the module docstring)."""

    gateway: Gateway
    transport: Any
    initial: tuple[str, ...] = ()
    market: str = "spot"
    route: str | None = None
    combined = False
    paused = False
    backlog = 0
    client = ""
    label = ""  # the bot's name, as the access log names its upgrade request
    since = 0.0  # when the upgrade was accepted
    cohort: Cohort | None = None
    direct = False  # a plain TCP transport: written to at once when nothing waits

    def onConnect(self, request: Any) -> None:
        return None

    def onOpen(self) -> None:
        self.streams: dict[str, Tap] = {}
        self.window = -1
        self.in_window = 0
        self.transport.registerProducer(_Backpressure(self), True)
        self.direct = plain_tcp(self.transport)
        self.gateway.opened(self)
        for name in dict.fromkeys(self.initial):  # the URL's names, as given
            self.streams[name] = self.gateway.join(self, name)
        self.gateway.regroup(self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.gateway.closed(self)

    # -- Binance's rules ------------------------------------------------------------
    def _count_message(self) -> bool:
        """Count one incoming message; False (and the connection closed) over
        Binance's rate."""
        second = int(self.gateway.clock.seconds())
        if second != self.window:
            self.window, self.in_window = second, 0
        self.in_window += 1
        if self.in_window > bs.MESSAGE_RATE[self.market]:
            self.gateway.rate_closes += 1
            self.close(bs.CLOSE_POLICY, bs.TOO_MANY_REQUESTS)
            return False
        return True

    def onPing(self, payload: bytes) -> None:
        if self._count_message():
            super().onPing(payload)

    def onPong(self, payload: bytes) -> None:
        self._count_message()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not self._count_message():
            return
        self.gateway.control_messages += 1
        self.sendMessage(orjson.dumps(self.control(payload)))

    def close(self, code: int, reason: str) -> None:
        """A close frame with ``code`` (Binance's 1008 included, which
        autobahn's ``sendClose`` does not allow), then the closing handshake."""
        self.sendCloseFrame(code=code, reasonUtf8=reason.encode(), isReply=False)

    # -- the control protocol -------------------------------------------------------
    def control(self, payload: bytes) -> dict[str, Any]:
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return {"error": {"code": bs.INVALID_JSON[0], "msg": bs.INVALID_JSON[1]}}
        if not isinstance(msg, dict) or "method" not in msg:
            return bs.error(*bs.MISSING_METHOD)
        rid = msg.get("id")
        if not bs.valid_id(rid):
            return bs.error(*bs.BAD_ID)
        method = msg["method"]
        params = msg.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(s, str) for s in params):
                return bs.error(*bs.INVALID_PARAMS, rid)
            if method == "UNSUBSCRIBE":
                self.unsubscribe(params)
                return {"result": None, "id": rid}
            refused = self.subscribe(params)
            return {"result": None, "id": rid} if refused is None else bs.error(*refused, rid)
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(self.streams), "id": rid}
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if not isinstance(params, list) or not params or not isinstance(params[0], str):
                return bs.error(*bs.PROPERTY_NAME, rid)
            if params[0] != bs.COMBINED:
                return bs.error(*bs.UNKNOWN_PROPERTY, rid)
            if method == "GET_PROPERTY":
                return {"result": self.combined, "id": rid}
            if len(params) < 2 or not isinstance(params[1], bool):
                return bs.error(*bs.NOT_BOOLEAN, rid)
            self.combined = params[1]
            self.gateway.regroup(self)
            return {"result": None, "id": rid}
        return bs.error(*bs.unknown_method(method), rid)

    def subscribe(self, names: list[str]) -> tuple[int, str] | None:
        """Subscribe each new name; Binance's error (nothing subscribed) for
        an invalid name or too many streams."""
        if not all(bs.valid_stream(n) for n in names):
            return bs.INVALID_STREAM
        new = [n for n in dict.fromkeys(names) if n not in self.streams]
        if len(self.streams) + len(new) > bs.STREAMS_PER_CONNECTION[self.market]:
            return bs.TOO_MANY_STREAMS
        for name in new:
            self.streams[name] = self.gateway.join(self, name)
        self.gateway.regroup(self)
        return None

    def unsubscribe(self, names: list[str]) -> None:
        for name in names:
            tap = self.streams.pop(name, None)
            if tap is not None:
                tap.leave(self)
        self.gateway.regroup(self)

    def allowed(self, name: str) -> bool:
        """USD-M: a routed connection carries its route's streams; an
        unrouted one only /public's (FACTS.md §6)."""
        if self.market != "usdm":
            return True
        route = usdm_route(name)
        return route == self.route or (self.route is None and route == "public")

    # -- sending ----------------------------------------------------------------------
    def deliver(self, data: bytes, size: int) -> bool:
        """Write ``data`` (whole websocket frames) unless the bot is closing;
        while its socket is full, count it, and close a bot it would take
        past the bound instead. True if written."""
        if self.state != OPEN:
            return False  # closing: no data frame may follow a close frame
        if self.paused:
            if self.backlog + size > self.gateway.limits.max_backlog:
                self.gateway.slow_closes += 1
                _log.info("websocket client {client} too slow: closed", client=self.client)
                # The close frame queues behind what waits; nothing follows it,
                # and autobahn drops the connection if no answer comes in 5 s.
                self.close(SLOW_CLIENT, SLOW_CLIENT_REASON)
                return False
            self.backlog += size
        # What sendPreparedMessage does with no compression (the factory
        # offers none) and nothing queued (the gateway never queues), without
        # its per-call debug line.
        if self.direct:  # nothing waits: sent now, without the round through the poller
            send_now(self.transport, data)
        else:
            self.transport.write(data)
        return True


def text_frame(payload: bytes) -> bytes:
    """The server's websocket frame for ``payload``: final, text, unmasked
    (RFC 6455 §5.2), as autobahn frames it."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + payload
    return b"\x81\x7f" + n.to_bytes(8, "big") + payload


# A stream URL asking for another time unit (spot ``timeUnit=MICROSECOND``):
# the shared upstream streams carry milliseconds, and frames are never
# rewritten, so the bot is told at its handshake rather than sent other
# bytes than it asked for.
TIME_UNIT_REFUSED = ("bnproxy: timeUnit is not served through the proxy (its streams are "
                     "shared, in milliseconds); open this stream at Binance directly")


class Cohort:
    """The bots that receive the same streams (``taps``) in the same framing:
    each frame for them is queued once and written to all of them at the
    flush. A burst's writes are one ``send`` per bot in turn, so the last bot
    written waits for all the others' sends: who goes first turns by one bot
    each flush (``writing_order``), so no bot is always last and the wait is
    shared evenly."""

    __slots__ = ("bots", "combined", "key", "order", "pending", "taps", "turn")

    def __init__(self, key: tuple[bool, frozenset[Tap]]) -> None:
        self.key = key
        self.combined, self.taps = key
        self.bots: dict[BotProtocol, None] = {}  # in joining order
        self.order: tuple[BotProtocol, ...] | None = ()  # ``bots`` as a tuple; None: stale
        self.turn = 0
        self.pending: list[bytes] = []

    def add(self, bot: BotProtocol) -> None:
        self.bots[bot] = None
        self.order = None

    def discard(self, bot: BotProtocol) -> None:
        if self.bots.pop(bot, self) is None:  # it was there
            self.order = None

    def writing_order(self) -> tuple[BotProtocol, ...]:
        """The bots, starting one further on than the previous flush's."""
        order = self.order
        if order is None:
            order = self.order = tuple(self.bots)
        if len(order) < 2:
            return order
        start = self.turn % len(order)
        self.turn = start + 1
        return order[start:] + order[:start] if start else order


class Tap:
    """One (market, stream) for every bot that holds it: subscribed to the
    hub once, each frame framed once per framing and queued for the cohorts
    that receive it."""

    __slots__ = ("bots", "cohorts", "gateway", "handle", "key")

    def __init__(self, gateway: Gateway, market: str, stream: str) -> None:
        self.gateway = gateway
        self.key = (market, stream)
        self.bots: set[BotProtocol] = set()
        self.cohorts: dict[bool, list[Cohort]] = {False: [], True: []}  # by framing
        self.handle = gateway.hub.subscribe(market, stream, self.frame, self.lost)

    def leave(self, bot: BotProtocol) -> None:
        self.bots.discard(bot)
        if not self.bots:
            self.handle.close()
            self.gateway.taps.pop(self.key, None)

    def lost(self) -> None:
        """The upstream connection dropped (frames were missed) or the proxy
        is stopping. Every bot on the stream gets a close frame it reconnects
        from (as a bot straight at Binance would have seen its connection
        drop), never a silent gap or socket."""
        self.gateway.flush()  # what came before the drop goes out first
        for bot in tuple(self.bots):
            if bot.state == bot.STATE_OPEN:
                self.gateway.upstream_closes += 1
                bot.close(UPSTREAM_LOST, UPSTREAM_LOST_REASON)

    def frame(self, payload: bytes) -> None:
        gateway = self.gateway
        combined, raw = self.cohorts[True], self.cohorts[False]
        if combined:
            gateway.queue(combined, text_frame(payload))
        if raw:
            data = bs.raw_data(self.key[1], payload)
            if data is not None:
                gateway.queue(raw, text_frame(data))


@implementer(IMetricsSource, IHealthReporter, IStreamGateway)
class Gateway:
    """The bots' stream connections and their fan-out (module docstring).
    ``name_of``: the bot's name for its upgrade request (``IBotLedger.name_of``;
    None: its address)."""

    def __init__(self, clock, hub: Any, limits: Limits | None = None,
                 name_of: Callable[[ProxyRequest], str] | None = None) -> None:
        self.name_of = name_of
        if not IStreamHub.providedBy(hub):
            raise TypeError("the gateway needs an IStreamHub")
        self.clock = clock
        self.hub = hub
        self.limits = limits or Limits()
        self.markets = tuple(hub.stream_markets())
        hub.after_read(self.flush)
        self.taps: dict[tuple[str, str], Tap] = {}
        self.cohorts: dict[tuple[bool, frozenset[Tap]], Cohort] = {}
        self.dirty: list[Cohort] = []  # cohorts with frames queued
        self._flush_call: Any = None
        self._flushes = 0  # which cohort is written first turns too (``flush``)
        self.bots: set[BotProtocol] = set()
        self.per_client: dict[str, int] = defaultdict(int)
        self.connections_total = 0
        self.frames_out = 0
        self.slow_closes = 0
        self.rate_closes = 0
        self.control_messages = 0
        self.refused = 0
        self.upstream_closes = 0
        self.factories: dict[str, WebSocketServerFactory] = {}
        gateway = self
        for market in self.markets:
            class Protocol(BotProtocol):
                pass
            Protocol.gateway = gateway
            Protocol.market = market
            factory = WebSocketServerFactory(reactor=clock)
            factory.protocol = Protocol
            factory.setProtocolOptions(
                autoPingInterval=bs.PING_INTERVAL[market], autoPingTimeout=bs.PONG_TIMEOUT[market],
                maxFramePayloadSize=65536, maxMessagePayloadSize=65536,
                openHandshakeTimeout=10, closeHandshakeTimeout=5)
            factory._batched_timer = clock_timer(clock)  # pings and deadlines on ``clock``
            self.factories[market] = factory
        self.user_data: Any = None  # user-data streams, one to one (server/userdata.py)
        if IUserDataUpstream.providedBy(hub):
            from bnproxy.server.userdata import UserDataRelay
            self.user_data = UserDataRelay(self, hub)

    # -- admission --------------------------------------------------------------------
    def admits(self, client: str) -> bool:
        return (len(self.bots) < self.limits.total
                and self.per_client[client] < self.limits.per_client)

    def label_of(self, request: ProxyRequest) -> str:
        """The bot's name for the dashboard, as the access log gives it."""
        return str(self.name_of(request)) if self.name_of is not None else request.client

    def build(self, path: bs.StreamPath | bs.UserDataPath, client: str, peer: Any,
              label: str | None = None) -> BotProtocol | None:
        bot: Any
        if isinstance(path, bs.UserDataPath):
            bot = None if self.user_data is None else self.user_data.build(path, peer)
            if bot is None:
                return None
        else:
            factory = self.factories.get(path.market)
            if factory is None:
                return None
            bot = factory.buildProtocol(peer)
            bot.route = path.route
            bot.combined = path.combined
            bot.initial = path.streams
        bot.label = label or client
        bot.since = self.clock.seconds()
        bot.client = client
        self.per_client[client] += 1
        self.bots.add(bot)
        return bot

    def opened(self, bot: BotProtocol) -> None:
        self.connections_total += 1

    def closed(self, bot: BotProtocol) -> None:
        if bot not in self.bots:
            return
        self.bots.discard(bot)
        self.per_client[bot.client] -= 1
        if self.per_client[bot.client] <= 0:
            del self.per_client[bot.client]
        self._ungroup(bot)
        for tap in getattr(bot, "streams", {}).values():
            tap.leave(bot)

    # -- fan-out ----------------------------------------------------------------------
    def join(self, bot: BotProtocol, stream: str) -> Tap:
        key = (bot.market, stream)
        tap = self.taps.get(key)
        if tap is None:
            tap = self.taps[key] = Tap(self, bot.market, stream)
        tap.bots.add(bot)
        return tap

    def regroup(self, bot: BotProtocol) -> None:
        """Put ``bot`` in the cohort of what it receives now: its streams
        (on USD-M those its route carries) in its framing. Frames already
        queued go out first, under the grouping they were queued for."""
        self.flush()
        taps = frozenset(tap for name, tap in bot.streams.items()
                         if bot.market != "usdm" or bot.allowed(name))
        key = (bot.combined, taps)
        if bot.cohort is not None and bot.cohort.key == key:
            return
        self._ungroup(bot)
        cohort = self.cohorts.get(key)
        if cohort is None:
            cohort = self.cohorts[key] = Cohort(key)
            for tap in taps:
                tap.cohorts[bot.combined].append(cohort)
        cohort.add(bot)
        bot.cohort = cohort

    def _ungroup(self, bot: BotProtocol) -> None:
        cohort, bot.cohort = bot.cohort, None
        if cohort is None:
            return
        cohort.discard(bot)
        if not cohort.bots:
            del self.cohorts[cohort.key]
            for tap in cohort.taps:
                tap.cohorts[cohort.combined].remove(cohort)

    def queue(self, cohorts: list[Cohort], frame: bytes) -> None:
        """Queue ``frame`` for each of ``cohorts``; flushed once the
        upstream read that brought it is relayed (or, for a frame from
        elsewhere, once the reactor turn is over)."""
        dirty = self.dirty
        for cohort in cohorts:
            if not cohort.pending:
                dirty.append(cohort)
            cohort.pending.append(frame)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Write each cohort's queued frames, joined once, to its bots: the
        cohorts, and each cohort's bots, starting one further on each time."""
        call, self._flush_call = self._flush_call, None
        if call is not None and call.active():
            call.cancel()
        dirty, self.dirty = self.dirty, []
        if len(dirty) > 1:
            self._flushes = start = (self._flushes + 1) % len(dirty)
            dirty = dirty[start:] + dirty[:start]
        for cohort in dirty:
            frames, cohort.pending = cohort.pending, []
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            size = len(data)
            written = 0
            for bot in cohort.writing_order():  # a snapshot: a bot may close meanwhile
                if bot.deliver(data, size):
                    written += 1
            self.frames_out += written * len(frames)

    def close_all(self, code: int = GOING_AWAY, reason: str = "bnproxy: shutting down") -> None:
        self.flush()
        for bot in list(self.bots):
            bot.close(code, reason)

    # -- reporting --------------------------------------------------------------------
    def health(self) -> dict:
        return {"bots": len(self.bots), "streams": len(self.taps), "cohorts": len(self.cohorts),
                "subscriptions": sum(len(getattr(b, "streams", ())) for b in self.bots),
                "frames": self.frames_out, "slow_closes": self.slow_closes,
                "rate_closes": self.rate_closes, "refused": self.refused,
                **({} if self.user_data is None else {"user_data": self.user_data.health()})}

    def collect_metrics(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        bots = GaugeMetricFamily("bnproxy_ws_bot_connections", "Open bot websocket "
                                 "connections.", labels=["market"])
        subs = GaugeMetricFamily("bnproxy_ws_bot_subscriptions", "Streams bots subscribed "
                                 "(one per bot and stream).", labels=["market"])
        count: dict[str, list[int]] = {m: [0, 0] for m in self.markets}
        for b in self.bots:
            count[b.market][0] += 1
            count[b.market][1] += len(getattr(b, "streams", ()))
        for m, (n, s) in count.items():
            bots.add_metric([m], n)
            subs.add_metric([m], s)
        yield bots
        yield subs
        yield GaugeMetricFamily("bnproxy_ws_streams", "Distinct streams relayed to bots.",
                                value=len(self.taps))
        yield CounterMetricFamily("bnproxy_ws_frames_delivered", "Frames written to bots.",
                                  value=self.frames_out)
        yield CounterMetricFamily("bnproxy_ws_slow_client_closes", "Bots closed for falling "
                                  "behind their send buffer.", value=self.slow_closes)
        yield CounterMetricFamily("bnproxy_ws_rate_closes", "Bots closed for going over "
                                  "Binance's message rate.", value=self.rate_closes)
        yield CounterMetricFamily("bnproxy_ws_bot_control_messages", "Control messages bots "
                                  "sent.", value=self.control_messages)
        yield CounterMetricFamily("bnproxy_ws_refused", "Websocket upgrades refused.",
                                  value=self.refused)
        yield CounterMetricFamily("bnproxy_ws_upstream_lost_closes", "Bots closed because the "
                                  "upstream connection of one of their streams dropped.",
                                  value=self.upstream_closes)
        if self.user_data is not None:
            yield from self.user_data.collect_metrics()

    def gateway_view(self, limit: int = 50, names: int = 8) -> dict:
        """``IStreamGateway.gateway_view``: one pass over the connections,
        then the ``limit`` busiest bots' rows (see ``bots_rows``)."""
        by_bot: dict[str, list[BotProtocol]] = {}
        subscriptions = 0
        for bot in self.bots:
            subscriptions += len(getattr(bot, "streams", ()))
            by_bot.setdefault(bot.label, []).append(bot)
        return {"connections": len(self.bots), "clients": len(by_bot),
                "subscriptions": subscriptions, "streams": len(self.taps),
                "frames": self.frames_out, "control_messages": self.control_messages,
                "slow_closes": self.slow_closes, "rate_closes": self.rate_closes,
                "upstream_closes": self.upstream_closes, "refused": self.refused,
                "bots": bots_rows(by_bot, limit, names)}


@implementer(IResource)
class GatewayResource:
    """Takes over an upgrade request on a stream path (module docstring)."""

    isLeaf = True

    def __init__(self, gateway: Gateway, handler: Callable, clock,
                 resolve_client: ClientResolver | Callable | None = None) -> None:
        self.gateway = gateway
        self._handler = handler
        self._clock = clock
        self._resolve = resolve_client

    def getChildWithDefault(self, name: bytes, request: server.Request) -> IResource:
        return self

    def putChild(self, path: bytes, child: IResource) -> None:
        raise NotImplementedError

    def _refuse(self, request: server.Request, status: int, code: int, msg: str) -> bytes:
        self.gateway.refused += 1
        write_response(request, local_error(status, code, msg, detail="websocket"))
        return server.NOT_DONE_YET  # type: ignore[return-value]

    def render(self, request: server.Request) -> Any:
        raw_path, query = split_target(request.uri)
        try:
            path_s, query_s = raw_path.decode("ascii"), query.decode("ascii")
        except UnicodeDecodeError:
            return self._refuse(request, 400, -1, bs.ILLEGAL_PATH)
        parsed: Any = bs.user_data_path(path_s, query_s) or bs.parse_stream_path(path_s, query_s)
        if parsed is None or parsed.market not in self.gateway.markets:
            return self._refuse(request, 404, -1, bs.ILLEGAL_PATH)
        if isinstance(parsed, bs.UserDataPath):  # relayed one to one (server/userdata.py)
            if parsed.market not in bs.USER_DATA_MARKETS or self.gateway.user_data is None:
                return self._refuse(request, 400, UNKNOWN,
                                    "bnproxy: " + bs.SPOT_USER_DATA_RETIRED)
        # Names in the URL are taken as given (ccxt opens ``/ws/0``, ``/ws/1``…:
        # Binance accepts them and sends nothing for them).
        elif len(parsed.streams) > bs.STREAMS_PER_CONNECTION[parsed.market]:
            return self._refuse(request, 400, -1, bs.ILLEGAL_PATH)
        elif not bs.default_stream_format(query_s):  # frames rebuilt in ms for every bot
            return self._refuse(request, 400, UNKNOWN, TIME_UNIT_REFUSED)
        peer = getattr(request.getClientAddress(), "host", None) or "unix"
        headers = tuple((k.lower(), v) for k, vs in request.requestHeaders.getAllRawHeaders()
                        for v in vs)
        client = self._resolve(peer, headers) if self._resolve is not None else normalise(peer)
        if not self.gateway.admits(client):
            return self._refuse(request, 429, TOO_MANY_REQUESTS, "bnproxy: too many websocket "
                                "connections from your address or in total")
        binance_path = path_s
        first = path_s[1:].partition("/")[0]
        if first in bs.STREAM_MARKETS:
            binance_path = "/" + path_s[1:].partition("/")[2]
        proxy_request = ProxyRequest("GET", parsed.market, binance_path, query, headers, b"",
                                     client, self._clock.seconds(), None)
        label = self.gateway.label_of(proxy_request)
        answer = self._handler(proxy_request)
        if isinstance(answer, ProxyResponse):
            self._answered(answer, request, parsed, client, label)
        else:
            answer.addCallback(self._answered, request, parsed, client, label)
            answer.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    def _failed(self, f: Failure, request: server.Request) -> None:
        _log.failure("websocket upgrade failed", f)
        if request.finished or request.channel is None or request.channel.transport is None:
            return  # the bot is gone: nobody to tell
        write_response(request, local_error(500, UNKNOWN, "bnproxy: internal error"))

    def _answered(self, answer: ProxyResponse, request: server.Request,
                  parsed: bs.StreamPath | bs.UserDataPath, client: str,
                  label: str | None = None) -> None:
        if answer.status != UPGRADE_STATUS:
            self.gateway.refused += 1
            write_response(request, answer)
            return
        channel = request.channel
        if channel is None or channel.transport is None or request.finished:
            return
        if not self.gateway.admits(client):  # filled up while the chain decided
            self._refuse(request, 429, TOO_MANY_REQUESTS, "bnproxy: too many websocket connections")
            return
        bot = self.gateway.build(parsed, client, channel.transport.getPeer(), label)
        if bot is None:
            self._refuse(request, 404, -1, bs.ILLEGAL_PATH)
            return
        take_over(request, bot)


def clock_timer(clock: Any) -> Any:
    """An autobahn factory's timer (pings, pong and handshake deadlines) on
    ``clock``: autobahn's own reads txaio's global loop, not the reactor it
    was given."""
    from txaio._common import _BatchedTimer

    return _BatchedTimer(200.0, 1000, seconds_provider=clock.seconds,
                         delayed_call_creator=clock.callLater)


def take_over(request: server.Request, protocol: Any) -> None:
    """Hand ``request``'s connection to ``protocol`` (autobahn's
    ``WebSocketResource.render``, plus: the hardened channel's timers stopped
    and its per-address connection count released)."""
    channel: Any = request.channel
    channel.setTimeout(None)
    for timer in ("_header_timer", "_body_timer", "_send_timer"):
        cancel = getattr(channel, "_cancel", None)
        if cancel is not None:
            cancel(timer)
    counted = getattr(channel, "_counted_as", None)
    if counted is not None:
        channel.factory.connection_closed(counted)
        channel._counted_as = None
    transport, channel.transport = channel.transport, None
    transport.unregisterProducer()  # the HTTP channel's; the bot registers its own
    if isinstance(transport, ProtocolWrapper):
        transport.wrappedProtocol = protocol
    elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
        transport.protocol.wrappedProtocol = protocol
    else:
        transport.protocol = protocol
    protocol.makeConnection(transport)
    if hasattr(transport, "_networkProducer"):
        transport._networkProducer.resumeProducing()
    elif hasattr(transport, "resumeProducing"):
        transport.resumeProducing()
    data = request.method + b" " + request.uri + b" HTTP/1.1\r\n"
    for name, values in request.requestHeaders.getAllRawHeaders():
        data += name + b": " + b",".join(values) + b"\r\n"
    data += b"\r\n"
    protocol.dataReceived(data)


# First path segments a stream URL can start with.
_STREAM_FIRST = frozenset({b"ws", b"stream", *(m.encode() for m in bs.STREAM_MARKETS)})


class StreamRoot(RootResource):
    """The root resource with the gateway: a websocket upgrade on a stream
    path goes to ``gateway``, everything else as ``RootResource`` sends it."""

    def __init__(self, forward: IResource, gateway: IResource) -> None:
        super().__init__(forward)
        self._gateway = gateway

    def getChildWithDefault(self, path: bytes, request: server.Request) -> IResource:
        child = self.children.get(path)
        if child is not None:
            return child
        if path in _STREAM_FIRST and is_upgrade(request):
            return self._gateway
        request.prepath.pop()  # type: ignore[union-attr]  # lists while traversing
        request.postpath.insert(0, path)  # type: ignore[union-attr]
        return self._forward


def find_hub(middlewares: list[Any]) -> Any:
    """The first middleware providing ``IStreamHub``, or None."""
    return next((m for m in middlewares if IStreamHub.providedBy(m)), None)
