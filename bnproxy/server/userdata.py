"""User-data streams relayed one to one: a bot's ``/ws/<listenKey>`` (futures)
or USD-M ``/private/ws?listenKey=…`` connection gets its own upstream
connection to the same path, never shared with another bot, never cached,
never fed to the stream hub.

- The bot's opening handshake waits for the upstream one (``onConnect``
  returns a Deferred), within ``CONNECT_DEADLINE`` seconds (the per-egress
  new-connection pace, TCP, TLS and the upstream handshake together). An
  upstream that refuses the handshake with an HTTP status refuses the bot's
  with the same status; an upstream that cannot be reached or does not
  answer in time: the bot's handshake succeeds and a close frame follows at
  once (``UNREACHABLE``/``TIMED_OUT``), never a silent socket.
- Frames go both ways as they came (text or binary, the payload's bytes
  untouched). The upstream's close frame (code and reason bytes) is sent to
  the bot, the bot's to upstream; a connection that drops without one
  closes the other side (``UPSTREAM_LOST`` towards the bot).
- Bounded buffers: each side's transport is a push producer's consumer;
  what is written while it is paused is counted and past the gateway's
  ``max_backlog`` both sides are closed (``SLOW_CLIENT`` to the bot, as the
  gateway's slow-client rule). The bot's incoming messages are held to
  Binance's per-connection rate (close 1008, as Binance would), so a bot
  cannot get the egress address disconnected through the proxy.
- The listenKey is never logged: nothing here logs a path, and the access
  log shows the upgrade with key-like segments and ``listenKey`` values
  redacted (``bnproxy.binance.privacy``).
"""

from __future__ import annotations

from typing import Any

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
)
from autobahn.websocket.types import ConnectionDeny
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from bnproxy.binance import streams as bs
from bnproxy.chain.interfaces import PaceFullError
from bnproxy.server.websocket import (
    OPEN,
    SLOW_CLIENT,
    SLOW_CLIENT_REASON,
    UPSTREAM_LOST,
    BotProtocol,
    _Backpressure,
    clock_timer,
)

_log = Logger(namespace="bnproxy.server.userdata")

CONNECT_DEADLINE = 10.0  # seconds: pace + TCP + TLS + upstream handshake
UNREACHABLE = 1011
UNREACHABLE_REASON = "bnproxy: upstream user-data stream unreachable, reconnect"
TIMED_OUT = 1013
TIMED_OUT_REASON = "bnproxy: upstream user-data stream did not answer in time, reconnect"
LOST_REASON = "bnproxy: upstream user-data stream lost, reconnect"
TOO_FAST_REASON = "bnproxy: messages sent faster than the upstream takes them"
_NO_CLOSE = (None, 1005, 1006, 1015)  # codes a close frame may not carry


class UserBot(BotProtocol):
    """The bot's side of one relayed user-data connection."""

    relay: UserDataRelay
    target = ""
    upstream: UpstreamSide | None = None
    failed: tuple[int, str] | None = None  # the close frame that follows the handshake
    _ready: Deferred | None = None
    _connecting: Deferred | None = None
    _deadline: Any = None

    def onConnect(self, request: Any) -> Any:  # a Deferred: the upstream's handshake first
        opened = self.relay.open(self.market, self.target)
        if opened is None:  # the market has no stream upstream configured
            raise ConnectionDeny(404, "bnproxy: no user-data stream upstream for this market")
        endpoint, url = opened
        ready = self._ready = Deferred()  # may fire before this returns (a quick failure)
        self._deadline = self.gateway.clock.callLater(self.relay.deadline, self._timed_out)
        factory = WebSocketClientFactory(url, reactor=self.gateway.clock)
        factory.protocol = UpstreamSide
        factory.bot = self  # type: ignore[attr-defined]  # read by UpstreamSide
        factory.setProtocolOptions(
            openHandshakeTimeout=self.relay.deadline, closeHandshakeTimeout=5,
            autoPingInterval=0, maxFramePayloadSize=1024 * 1024,
            maxMessagePayloadSize=1024 * 1024)
        factory._batched_timer = clock_timer(self.gateway.clock)
        self._connecting = endpoint.connect(factory)
        self._connecting.addErrback(self._unreachable)
        return ready

    def _settle(self, failed: tuple[int, str] | None = None,
                denied: ConnectionDeny | None = None, counted: bool = True) -> None:
        """The upstream handshake's outcome, once: the bot's handshake goes on."""
        ready, self._ready = self._ready, None
        if ready is None:
            return
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        if failed is not None:
            self.relay.failures += 1
        self.failed = failed
        if denied is not None:
            self.relay.failures += counted
            ready.errback(denied)
        else:
            ready.callback(None)

    def _unreachable(self, f: Any) -> None:
        if f.check(PaceFullError) and self._ready is not None:
            # no slot this minute for one more user-data connection from this
            # address: refused now, never queued past the deadline
            self.relay.paced += 1
            wait = max(1, int(f.value.args[0] + 0.999)) if f.value.args else 60
            self._settle(denied=ConnectionDeny(
                429, f"bnproxy: too many new user-data stream connections this minute; "
                     f"retry in {wait} s"), counted=False)
            return
        if self._ready is not None:  # the error's type only: no path, no listenKey
            _log.info("upstream user-data stream unreachable ({error})",
                      error=getattr(f.type, "__name__", "error"))
        self._settle((UNREACHABLE, UNREACHABLE_REASON))

    def _timed_out(self) -> None:
        self._deadline = None
        self._settle((TIMED_OUT, TIMED_OUT_REASON))
        if self._connecting is not None and not self._connecting.called:
            self._connecting.cancel()  # still waiting for the pace or TCP
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.bot = None
            upstream.dropConnection(abort=True)

    def upstream_opened(self, upstream: UpstreamSide) -> None:
        if self._ready is None:  # too late: the bot was answered
            upstream.bot = None
            upstream.dropConnection(abort=True)
            return
        self.upstream = upstream
        self._settle()

    def upstream_refused(self, status: int, reason: str) -> None:
        self._settle(denied=ConnectionDeny(status, reason))

    # -- the open connection ----------------------------------------------------------
    def onOpen(self) -> None:
        self.streams = {}
        self.window = -1
        self.in_window = 0
        self.transport.registerProducer(_Backpressure(self), True)
        self.gateway.opened(self)
        if self.failed is not None:
            self.close(*self.failed)
            return
        self.relay.open_count[self.market] += 1
        self.counted = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not self._count_message():
            self._close_upstream(1000, b"")
            return
        upstream = self.upstream
        if upstream is not None and upstream.state == OPEN:
            self.relay.frames_up += 1
            upstream.forward(payload, isBinary)

    def forward(self, payload: bytes, isBinary: bool) -> None:
        """An upstream frame, to the bot (bounded: the slow-client rule)."""
        if self.paused:
            self.backlog += len(payload)
            if self.backlog > self.gateway.limits.max_backlog:
                self.gateway.slow_closes += 1
                _log.info("websocket client {client} too slow: closed", client=self.client)
                self.paused = False
                self.close(SLOW_CLIENT, SLOW_CLIENT_REASON)
                self._close_upstream(1000, b"")
                return
        if self.state == OPEN:
            self.relay.frames_down += 1
            self.sendMessage(payload, isBinary)

    def onCloseFrame(self, code: Any, reasonRaw: Any) -> Any:
        self._close_upstream(code, reasonRaw)  # the bot's close, passed on as sent
        return super().onCloseFrame(code, reasonRaw)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if getattr(self, "counted", False):
            self.counted = False
            self.relay.open_count[self.market] -= 1
        if self._connecting is not None and not self._connecting.called:
            self._connecting.cancel()
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._ready = None
        self._close_upstream(1001 if code in _NO_CLOSE else code, b"")
        self.gateway.closed(self)

    def _close_upstream(self, code: Any, reason: Any) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is None:
            return
        upstream.bot = None
        if upstream.state == OPEN:
            upstream.sendCloseFrame(code=code, reasonUtf8=reason or None, isReply=False)
        else:
            upstream.dropConnection(abort=True)

    def upstream_closed(self, code: Any, reason: Any) -> None:
        """Upstream sent a close frame: the same to the bot."""
        self.upstream = None
        if self.state == OPEN:
            self.sendCloseFrame(code=code, reasonUtf8=reason or None, isReply=False)

    def sending_too_fast(self) -> None:
        """The bot's own frames backed up past the bound towards upstream:
        its fault, not the upstream's (counted with the message-rate closes)."""
        self.upstream = None
        if self.state == OPEN:
            self.gateway.rate_closes += 1
            self.close(bs.CLOSE_POLICY, TOO_FAST_REASON)

    def upstream_lost(self) -> None:
        """Upstream dropped without a close frame."""
        self.upstream = None
        if self._ready is not None:
            self._settle((UNREACHABLE, UNREACHABLE_REASON))
        elif self.state == OPEN:
            self.gateway.upstream_closes += 1
            self.close(UPSTREAM_LOST, LOST_REASON)


class UpstreamSide(WebSocketClientProtocol):
    """The upstream side of one relayed user-data connection."""

    bot: UserBot | None
    paused = False
    backlog = 0

    def connectionMade(self) -> None:
        self.bot = self.factory.bot
        super().connectionMade()

    def onOpen(self) -> None:
        transport: Any = self.transport
        transport.registerProducer(_Backpressure(self), True)  # type: ignore[arg-type]
        if self.bot is None:
            self.dropConnection(abort=True)
        else:
            self.bot.upstream_opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.bot is not None:
            self.bot.forward(payload, isBinary)

    def forward(self, payload: bytes, isBinary: bool) -> None:
        """A bot's frame, upstream (bounded like the bot's side)."""
        if self.paused:
            self.backlog += len(payload)
            if self.backlog > self.factory.bot.gateway.limits.max_backlog:
                bot, self.bot = self.bot, None
                if bot is not None:
                    bot.sending_too_fast()
                self.dropConnection(abort=True)
                return
        self.sendMessage(payload, isBinary)

    def onCloseFrame(self, code: Any, reasonRaw: Any) -> Any:
        bot, self.bot = self.bot, None
        if bot is not None:
            bot.upstream_closed(code, reasonRaw)
        return super().onCloseFrame(code, reasonRaw)

    def failHandshake(self, reason: str, code: int = 400, responseHeaders: Any = None) -> None:
        status = (getattr(self, "http_status_line", "") or "").split(" ", 2)
        bot, self.bot = self.bot, None
        if bot is not None:
            if len(status) >= 2 and status[1].isdigit() and status[1] != "101":
                bot.upstream_refused(int(status[1]), status[2] if len(status) > 2 else "")
            else:
                bot.upstream_lost()
        self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        bot, self.bot = self.bot, None
        if bot is not None:
            bot.upstream_lost()


class UserDataRelay:
    """The gateway's user-data connections (module docstring). ``upstream``
    provides ``IUserDataUpstream``."""

    def __init__(self, gateway: Any, upstream: Any, deadline: float = CONNECT_DEADLINE) -> None:
        self.gateway = gateway
        self.upstream = upstream
        self.deadline = deadline
        self.open_count = {m: 0 for m in bs.USER_DATA_MARKETS}
        self.frames_down = 0  # upstream -> bots
        self.frames_up = 0  # bots -> upstream
        self.failures = 0  # upstream refused, unreachable or late
        self.paced = 0  # refused at once: no slot in this minute's connection pace
        self.factories: dict[str, WebSocketServerFactory] = {}
        relay = self
        for market in bs.USER_DATA_MARKETS:
            if market not in gateway.markets:
                continue

            class Protocol(UserBot):
                pass
            Protocol.gateway = gateway
            Protocol.relay = relay
            Protocol.market = market
            factory = WebSocketServerFactory(reactor=gateway.clock)
            factory.protocol = Protocol
            factory.setProtocolOptions(
                autoPingInterval=bs.PING_INTERVAL[market], autoPingTimeout=bs.PONG_TIMEOUT[market],
                maxFramePayloadSize=65536, maxMessagePayloadSize=65536,
                openHandshakeTimeout=deadline + 5, closeHandshakeTimeout=5)
            factory._batched_timer = clock_timer(gateway.clock)
            self.factories[market] = factory

    def open(self, market: str, target: str) -> tuple[Any, str] | None:
        """(paced endpoint, url) of one new upstream connection; None when
        ``market`` has no stream upstream."""
        return self.upstream.user_stream(market, target)

    def build(self, path: bs.UserDataPath, peer: Any) -> UserBot | None:
        factory = self.factories.get(path.market)
        if factory is None:
            return None
        bot: Any = factory.buildProtocol(peer)
        bot.target = path.target
        return bot

    def health(self) -> dict:
        return {"connections": sum(self.open_count.values()), "frames_down": self.frames_down,
                "frames_up": self.frames_up, "upstream_failures": self.failures,
                "paced": self.paced}

    def collect_metrics(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        conns = GaugeMetricFamily("bnproxy_ws_user_data_connections", "Bot user-data "
                                  "connections relayed one to one upstream.", labels=["market"])
        for market, n in self.open_count.items():
            conns.add_metric([market], n)
        yield conns
        frames = CounterMetricFamily("bnproxy_ws_user_data_frames", "User-data frames "
                                     "relayed, by direction.", labels=["direction"])
        frames.add_metric(["to_bot"], self.frames_down)
        frames.add_metric(["to_upstream"], self.frames_up)
        yield frames
        yield CounterMetricFamily("bnproxy_ws_user_data_upstream_failures", "User-data "
                                  "connections whose upstream refused, was unreachable or "
                                  "did not answer in time.", value=self.failures)
        yield CounterMetricFamily("bnproxy_ws_user_data_paced", "User-data connections "
                                  "refused at once (429): no slot left for them in this "
                                  "minute's upstream connection pace.", value=self.paced)
