"""``StreamManager``: one market's pool of websocket connections to Binance's
combined endpoint.

Each connection carries up to the market's streams per connection (1024
spot, 200 futures: ``bnproxy.binance.streams``), kept up by Twisted's
``ClientService`` (reconnects with exponential backoff and jitter), subscribes
with batched ``SUBSCRIBE``/``UNSUBSCRIBE`` paced under the per-connection
message limit, answers server pings (autobahn does), and is rotated before
Binance's 24 h cut (or on ``serverShutdown``): a new connection subscribes the
same streams and the old one closes once the new one is acknowledged, so no
message is missed. A watchdog replaces a connection gone silent: no frame
(message or server ping) for 1.5 server ping intervals, no message at all
for ``NO_MESSAGE`` seconds while it carries streams, a stream with a
regular cadence (``silent_after(name)`` seconds) without a message, or
subscriptions not acknowledged within ``ACK_DEADLINE``; replacements are
paced (``PACE_MIN`` doubling to ``PACE_MAX`` while silence persists).
USD-M streams go to the routed ``/public`` (depth, book ticker) or
``/market`` (everything else) paths unless ``legacy`` is set.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import endpoints, task
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger

from bnproxy.binance.marketdata import (
    CONNECTION_LIFETIME,
    MESSAGES_PER_SECOND,
    SERVER_PING_INTERVAL,
    STREAMS_PER_CONNECTION,
    usdm_route,
)
from bnproxy.binance.markets import Market
from bnproxy.binance.streams import COMBINED_HEAD, COMBINED_MID
from bnproxy.binance.streams import STREAMS_PER_CONNECTION as STREAMS_PER_MARKET

_log = Logger(namespace="bnproxy.streams")

MAX_STREAMS = STREAMS_PER_CONNECTION
BATCH = 200  # streams per SUBSCRIBE message
route_of = usdm_route
WATCH_EVERY = 1.0  # seconds between watchdog rounds
NO_MESSAGE = 60.0  # seconds a connection carrying streams may go without any message
ACK_DEADLINE = 10.0  # seconds an open connection may take to acknowledge its subscriptions
PACE_MIN, PACE_MAX = 2.0, 60.0  # seconds between replacements of silent connections
SHUTDOWN = "!serverShutdown"
_HEAD = len(COMBINED_HEAD)


def relay_only(data: Any) -> None:
    """The handler of a stream held only to be relayed (the bots' gateway):
    its messages are never decoded."""


def split_combined(payload: bytes) -> tuple[str, int] | None:
    """The stream name of a combined-stream message in Binance's layout
    (``{"stream":"<name>","data":<data>}``) and where ``<data>`` starts, read
    without decoding the message; None for anything else."""
    if not payload.startswith(COMBINED_HEAD) or payload[-1:] != b"}":
        return None
    end = payload.find(b'"', _HEAD)
    if end < 0 or payload.find(b"\\", _HEAD, end) >= 0 or \
            not payload.startswith(COMBINED_MID, end):
        return None
    try:
        return payload[_HEAD:end].decode("ascii"), end + len(COMBINED_MID)
    except UnicodeDecodeError:
        return None


class _Protocol(WebSocketClientProtocol):
    connection: Connection

    def dataReceived(self, data: bytes) -> None:
        """Whole, final, unmasked ASCII text frames at the head of ``data``
        (what Binance's stream messages are) are split here and handed on at
        once; anything else (control frames, fragments, a partial frame,
        non-ASCII text), and all that follows it, goes to autobahn's parser
        as before. Autobahn's costs about 11 µs of CPU a message (a Deferred,
        its bookkeeping; this split 0.5), and a burst's first frame waited
        for the whole burst's.
        Then the manager's ``read_done`` (the bots' gateway writes what it
        was given)."""
        try:
            self._received(data)
        finally:
            self.factory.connection.manager.read_done()

    def _received(self, data: bytes) -> None:
        if (self.state == self.STATE_OPEN and not self.data and self.current_frame is None
                and not self.inside_message):
            used = split_text_frames(data, self.maxFramePayloadSize,
                                     self.factory.connection.received)
            if used:
                if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
                    self._cancelAutoPingTimeoutCall()  # what autobahn does on a data frame
                if used == len(data) or self.state != self.STATE_OPEN:
                    if self.state != self.STATE_OPEN and used < len(data):
                        super().dataReceived(data[used:])
                    return
                data = data[used:]
        super().dataReceived(data)

    def onOpen(self) -> None:
        self.factory.connection.opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.connection.received(payload)

    def onPing(self, payload: bytes) -> None:
        self.factory.connection.framed()
        super().onPing(payload)

    def onPong(self, payload: bytes) -> None:  # the answer to our own ping: alive too
        self.factory.connection.framed()
        super().onPong(payload)

    def onClose(self, wasClean: bool, code: int, reason: str) -> None:
        self.factory.connection.closed(self)


def split_text_frames(data: bytes, limit: int, deliver: Callable[[bytes], None]) -> int:
    """Call ``deliver`` with the payload of each whole, final, unmasked
    text frame without extension bits at the head of ``data`` whose payload
    is ASCII and at most ``limit`` bytes (0: no limit); stop at anything
    else. Returns the bytes consumed."""
    i, n = 0, len(data)
    while n - i >= 2 and data[i] == 0x81:
        length = data[i + 1]  # mask bit clear: a server's frame
        at = i + 2
        if length == 126:
            length, at = int.from_bytes(data[at:at + 2], "big"), at + 2
        elif length == 127:
            length, at = int.from_bytes(data[at:at + 8], "big"), at + 8
        elif length > 127:
            break  # masked
        end = at + length
        if end > n or (limit and length > limit):
            break
        payload = data[at:end]
        if not payload.isascii():
            break  # autobahn validates UTF-8
        i = end
        deliver(payload)
    return i


class Connection:
    """One websocket connection and the streams it carries."""

    def __init__(self, manager: StreamManager, route: str | None) -> None:
        self.manager = manager
        self.route = route
        self.streams: set[str] = set()
        self.protocol: _Protocol | None = None
        self.opened_at: float | None = None
        self.last_frame = float("-inf")  # a message or a server ping
        self.last_message = float("-inf")
        self.acked_at: float | None = None
        self.acked = False
        self.retiring = False
        self._outbox: deque[bytes] = deque()
        self._sent: deque[float] = deque()
        self._pump: Any = None
        self._next_id = 1
        self._pending_ids: set[int] = set()
        url = manager.url(route)
        parts = urlsplit(url)
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        reactor = manager.reactor
        host = parts.hostname or ""  # check_base_url made sure there is one
        self.egress = manager.next_egress()  # --egress: connections spread over them
        endpoint: IStreamClientEndpoint = endpoints.HostnameEndpoint(
            reactor, host, port, timeout=10,
            bindAddress=(self.egress, 0) if self.egress else None)
        if secure:  # the same trust as the REST upstream (IPolicyForHTTPS)
            endpoint = endpoints.wrapClientTLS(
                manager.tls_policy.creatorForNetloc(host.encode("idna"), port), endpoint)
        if manager.pace is not None:  # Binance's new connections per IP (pace.py)
            endpoint = manager.pace.endpoint(endpoint, self.egress)
        # The reactor given, so autobahn's own timers run on the injected clock too.
        factory = WebSocketClientFactory(url, reactor=reactor)
        factory.protocol = _Protocol
        factory.connection = self  # type: ignore[attr-defined]  # read by _Protocol
        factory.setProtocolOptions(
            openHandshakeTimeout=10, closeHandshakeTimeout=5,
            autoPingInterval=manager.ping_interval, autoPingTimeout=manager.ping_timeout,
            maxFramePayloadSize=16 * 1024 * 1024, maxMessagePayloadSize=16 * 1024 * 1024)
        rng = random.Random()
        self.service = ClientService(
            endpoint, factory, clock=reactor,
            retryPolicy=backoffPolicy(initialDelay=1.0, maxDelay=60.0, factor=2.0,
                                      jitter=rng.random))

    @property
    def free(self) -> int:
        return self.manager.max_streams - len(self.streams)

    def start(self) -> None:
        self.service.startService()

    def stop(self):
        """Close with a websocket close handshake (bounded), then stop."""
        self.retiring = True
        if self._pump is not None and self._pump.active():
            self._pump.cancel()
        if self.protocol is not None:
            self.protocol.sendClose(1000)
            return task.deferLater(self.manager.reactor, 0.5, self.service.stopService)
        return self.service.stopService()

    # -- protocol events ------------------------------------------------------------
    def opened(self, protocol: _Protocol) -> None:
        self.protocol = protocol
        self.opened_at = self.last_frame = self.manager.reactor.seconds()
        self.acked = not self.streams
        self.acked_at = self.opened_at if self.acked else None
        self._outbox.clear()
        self.manager.connects += 1
        names = sorted(self.streams)
        for i in range(0, len(names), BATCH):
            self._queue("SUBSCRIBE", names[i:i + BATCH])
        if not names:
            self.manager.connection_ready(self)

    def closed(self, protocol: _Protocol) -> None:
        if self.protocol is protocol:
            self.protocol = None
            self.opened_at = None
            self.acked = False
            if not self.retiring:
                self.manager.reconnects += 1
                self.manager.connection_lost(self)

    def framed(self) -> None:
        self.last_frame = self.manager.reactor.seconds()

    def alive(self, now: float, within: float) -> bool:
        """Open, its subscriptions acknowledged, and a frame within ``within`` s."""
        return (self.protocol is not None and self.acked and not self.retiring
                and now - self.last_frame <= within)

    def received(self, payload: bytes) -> None:
        self.last_frame = self.last_message = self.manager.reactor.seconds()
        split = split_combined(payload)
        if split is not None:  # a stream message: routed by its name, decoded if needed
            stream, start = split
            if stream == SHUTDOWN:
                self.manager.rotate(self, "serverShutdown")
                return
            relay = self.manager.relay
            if relay is not None and self.manager.relays_from(stream, self):
                relay(stream, payload)
            self.manager.dispatch_raw(stream, payload, start, self)
            return
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:
            _log.warn("unparseable stream message dropped")
            return
        if isinstance(msg, dict):
            name = msg.get("stream")
            if name is not None:
                if name == SHUTDOWN:
                    self.manager.rotate(self, "serverShutdown")
                    return
                relay = self.manager.relay
                if relay is not None and self.manager.relays_from(name, self):
                    relay(name, payload)
                self.manager.dispatch(name, msg.get("data"), self)
                return
            if msg.get("e") == "serverShutdown":
                self.manager.rotate(self, "serverShutdown")
                return
            if "id" in msg:
                if "error" in msg:
                    _log.warn("stream control error: {error}", error=msg["error"])
                self._pending_ids.discard(msg["id"])
                if not self._pending_ids and not self.acked:
                    self.acked = True
                    self.acked_at = self.last_frame
                    self.manager.connection_ready(self)

    # -- subscriptions ----------------------------------------------------------------
    def subscribe(self, names: list[str]) -> None:
        new = [n for n in names if n not in self.streams]
        self.streams.update(new)
        if new and self.protocol is not None:
            self._queue("SUBSCRIBE", new)

    def unsubscribe(self, names: list[str]) -> None:
        gone = [n for n in names if n in self.streams]
        self.streams.difference_update(gone)
        if gone and self.protocol is not None:
            self._queue("UNSUBSCRIBE", gone)

    def _queue(self, method: str, names: list[str]) -> None:
        # Merge with a queued message of the same method when it has room.
        if self._outbox:
            last = orjson.loads(self._outbox[-1])
            if last["method"] == method and len(last["params"]) + len(names) <= BATCH:
                last["params"].extend(names)
                self._outbox[-1] = orjson.dumps(last)
                self._kick()
                return
        rid = self._next_id
        self._next_id += 1
        self._pending_ids.add(rid)
        self._outbox.append(orjson.dumps({"method": method, "params": names, "id": rid}))
        self._kick()

    def _kick(self) -> None:
        if self._pump is None or not self._pump.active():
            self._pump = self.manager.reactor.callLater(0, self._send)

    def _send(self) -> None:
        """Send queued control messages, at most ``message_rate`` per second."""
        clock = self.manager.reactor
        now = clock.seconds()
        while self._sent and now - self._sent[0] >= 1.0:
            self._sent.popleft()
        while self._outbox and self.protocol is not None:
            if len(self._sent) >= self.manager.message_rate:
                self._pump = clock.callLater(1.0 - (now - self._sent[0]) + 0.01, self._send)
                return
            self.protocol.sendMessage(self._outbox.popleft())
            self._sent.append(now)
            self.manager.control_sent[self.egress or ""] += 1


class StreamManager(Service):
    """The stream connections of one market. ``ensure(name, handler)``
    subscribes on demand; ``release(name)`` unsubscribes; ``fresh(name, s)``
    says whether the stream delivered within ``s`` seconds."""

    def __init__(self, reactor, market: Market, *, legacy_routes: bool = False,
                 message_rate: int | None = None,
                 rotate_after: float = CONNECTION_LIFETIME - 3600,
                 ping_interval: float = 60.0, ping_timeout: float = 30.0,
                 tls_policy=None, egresses: tuple[str, ...] = (),
                 silent_after: Callable[[str], float | None] = lambda name: None) -> None:
        self.reactor = reactor
        # seconds a stream with a regular cadence may go without a message (None: events only)
        self.silent_after = silent_after
        self.egresses = tuple(egresses)  # source addresses (--egress); () : the default
        # wss trust: an IPolicyForHTTPS (bnproxy.upstream.tls.upstream_tls_policy);
        # by default the platform store, SSL_CERT_FILE and SSL_CERT_DIR.
        if tls_policy is None:
            from twisted.web.client import BrowserLikePolicyForHTTPS
            tls_policy = BrowserLikePolicyForHTTPS()
        self.tls_policy = tls_policy
        self.market = market
        self.name = f"streams-{market.name}"
        self.routed = market.name == "usdm" and not legacy_routes
        # Stay under Binance's incoming messages per second (5 spot, 10 futures).
        self.message_rate = message_rate or max(
            1, int(MESSAGES_PER_SECOND.get(market.name, 5) * 0.8))
        self.rotate_after = rotate_after
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.connections: list[Connection] = []
        self.handlers: dict[str, Callable[[Any], None]] = {}
        self.placed: dict[str, Connection] = {}
        self.last_seen: dict[str, float] = {}
        self.on_lost: list[Callable[[set[str]], None]] = []
        # The bots' gateway: each stream frame as received (Binance's bytes),
        # and read_done() once each read from a connection is relayed.
        self.relay: Callable[[str, bytes], None] | None = None
        self.read_done: Callable[[], None] = lambda: None
        self.max_streams = STREAMS_PER_MARKET.get(market.name, MAX_STREAMS)
        self.control_sent: Counter[str] = Counter()  # by egress address ("": default)
        self.pace: Any = None  # new connections' pace per egress (streams/pace.py)
        # Whether an egress address is banned on this market's host now.
        self.egress_banned: Callable[[str], bool] = lambda egress: False
        self.messages = 0
        self.last_message = float("-inf")  # when any stream message last came
        self.connects = 0
        self.reconnects = 0
        self.rotations = 0
        self.replaced = 0  # silent connections replaced
        self._pace = PACE_MIN
        self._not_before = float("-inf")
        self._watchdog = task.LoopingCall(self._check_silence)
        self._watchdog.clock = reactor
        # (time, messages) at recent health() calls: the rate is read from
        # these, nothing is kept per message
        self._rate_samples: deque[tuple[float, int]] = deque(maxlen=64)
        self._watch = task.LoopingCall(self._check_rotation)
        self._watch.clock = reactor

    def next_egress(self) -> str | None:
        """The egress address with the fewest of this market's connections
        (None: the host's default)."""
        if not self.egresses:
            return None
        count = {e: 0 for e in self.egresses}
        for c in self.connections:
            if c.egress in count and not c.retiring:
                count[c.egress] += 1
        usable = [e for e in self.egresses if not self.egress_banned(e)] or self.egresses
        return min(usable, key=lambda e: count[e])

    def relays_from(self, name: str, conn: Connection) -> bool:
        """Whether ``conn``'s frames of ``name`` go to bots: one connection's at
        a time. During a rotation the old one's until the new one's
        ``SUBSCRIBE`` is acknowledged, then the new one's (what the old one
        still delivers then, the new one delivers too: no duplicate)."""
        placed = self.placed.get(name)
        return placed is conn or (placed is not None and not placed.acked and conn.retiring)

    def url(self, route: str | None) -> str:
        base = self.market.stream_base or ""
        return f"{base}/{route}/stream" if route else f"{base}/stream"

    # -- lifecycle ---------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        self._watch.start(30.0, now=False)
        self._watchdog.start(WATCH_EVERY, now=False)
        for c in self.connections:
            c.start()

    def stopService(self):
        from twisted.internet.defer import gatherResults, maybeDeferred
        for loop in (self._watch, self._watchdog):
            if loop.running:
                loop.stop()
        super().stopService()
        return gatherResults([maybeDeferred(c.stop) for c in self.connections])

    # -- subscriptions -------------------------------------------------------------------
    def ensure(self, name: str, handler: Callable[[Any], None]) -> None:
        self.handlers[name] = handler
        if name in self.placed:
            return
        route = route_of(name) if self.routed else None
        conn = next((c for c in self.connections
                     if c.route == route and not c.retiring and c.free > 0), None)
        if conn is None:
            conn = Connection(self, route)
            self.connections.append(conn)
            if self.running:
                conn.start()
        conn.subscribe([name])
        self.placed[name] = conn

    def release(self, name: str) -> None:
        self.handlers.pop(name, None)
        self.last_seen.pop(name, None)
        conn = self.placed.pop(name, None)
        if conn is not None:
            conn.unsubscribe([name])
            if not conn.streams and not conn.retiring:
                conn.stop()
                self.connections.remove(conn)

    def fresh(self, name: str, max_age: float, quiet_age: float | None = None) -> bool:
        """Whether stream ``name`` delivered within ``max_age`` seconds or,
        for a stream that pushes only on a change (``quiet_age`` given),
        within ``quiet_age`` while its connection is alive: subscriptions
        acknowledged and a frame (any stream's message, a server ping, a
        pong) within ``max_age``. A dead connection's streams are stale
        after ``max_age`` as before; a stream Binance dropped from a live
        one, after ``quiet_age``."""
        seen = self.last_seen.get(name)
        if seen is None:
            return False
        now = self.reactor.seconds()
        if now - seen <= max_age:
            return True
        if quiet_age is None or now - seen > quiet_age:
            return False
        conn = self.placed.get(name)
        return conn is not None and conn.alive(now, max_age)

    # -- traffic -------------------------------------------------------------------------
    def dispatch(self, name: str, data: Any, conn: Connection) -> None:
        self.messages += 1
        handler = self.handlers.get(name)
        if handler is None:
            return
        self.last_seen[name] = self.last_message = self.reactor.seconds()
        try:
            handler(data)
        except Exception:
            _log.failure("stream handler for {name} failed", name=name)

    def dispatch_raw(self, name: str, payload: bytes, start: int, conn: Connection) -> None:
        """``dispatch`` of a message whose data starts at ``start`` of
        ``payload`` (up to its closing brace): decoded only for a handler
        that reads it."""
        handler = self.handlers.get(name)
        if handler is relay_only:
            self.messages += 1
            self.last_seen[name] = self.last_message = self.reactor.seconds()
            return
        if handler is None:
            self.messages += 1
            return
        try:
            data = orjson.loads(memoryview(payload)[start:-1])
        except orjson.JSONDecodeError:  # more than "data" after it: the whole message
            try:
                data = orjson.loads(payload).get("data")
            except (orjson.JSONDecodeError, AttributeError):
                _log.warn("unparseable stream message dropped")
                return
        self.dispatch(name, data, conn)

    def connection_lost(self, conn: Connection) -> None:
        for name in conn.streams:
            self.last_seen.pop(name, None)
        for callback in self.on_lost:
            callback(set(conn.streams))

    def connection_ready(self, conn: Connection) -> None:
        """All of ``conn``'s subscriptions are acknowledged: retire any
        connection it replaces."""
        for old in list(self.connections):
            if old is not conn and old.retiring and old.streams <= conn.streams | set():
                old.service.stopService()
                self.connections.remove(old)

    def rotate(self, conn: Connection, why: str) -> None:
        """Replace ``conn`` by a new connection carrying the same streams."""
        if conn.retiring or conn not in self.connections:
            return
        self.rotations += 1
        _log.info("rotating a {market} stream connection ({why}, {n} streams)",
                  market=self.market.name, why=why, n=len(conn.streams))
        fresh = Connection(self, conn.route)
        names = sorted(conn.streams)
        fresh.subscribe(names)
        conn.retiring = True
        self.connections.append(fresh)
        for name in names:
            self.placed[name] = fresh
        fresh.start()

    def _check_rotation(self) -> None:
        now = self.reactor.seconds()
        for conn in list(self.connections):
            if conn.opened_at is not None and now - conn.opened_at >= self.rotate_after:
                self.rotate(conn, "age")

    # -- the watchdog ------------------------------------------------------------------------
    def silent(self, conn: Connection, now: float) -> str | None:
        """Why ``conn`` counts as silent (None: it does not)."""
        if conn.retiring or conn.protocol is None or conn.opened_at is None:
            return None  # closed ones are ClientService's to reconnect
        if not conn.acked:
            return "unacknowledged" if now - conn.opened_at > ACK_DEADLINE else None
        since = conn.acked_at if conn.acked_at is not None else conn.opened_at
        ping = SERVER_PING_INTERVAL.get(self.market.name, 180.0) * 1.5
        if now - max(conn.last_frame, since) > ping:
            return "no frame"
        if conn.streams and now - max(conn.last_message, since) > NO_MESSAGE:
            return "no message"
        for name in conn.streams:
            limit = self.silent_after(name)
            if limit is not None and now - max(self.last_seen.get(name, since), since) > limit:
                return f"{name} silent"
        return None

    def _check_silence(self) -> None:
        now = self.reactor.seconds()
        found = [(c, why) for c in list(self.connections)
                 if (why := self.silent(c, now)) is not None]
        if not found:
            if all(c.last_message > (c.acked_at or now) for c in self.connections
                   if c.streams and c.protocol is not None):
                self._pace = PACE_MIN  # every connection delivers again: recovered
            return
        if now < self._not_before:
            return
        for conn, why in found:
            self.replace(conn, why)
        self._not_before = now + self._pace
        self._pace = min(PACE_MAX, self._pace * 2)

    def replace(self, conn: Connection, why: str) -> None:
        """Close a silent ``conn`` now (it delivers nothing: no gap to
        bridge) and carry its streams on a new connection."""
        _log.warn("replacing a silent {market} stream connection ({why}, {n} streams)",
                  market=self.market.name, why=why, n=len(conn.streams))
        self.replaced += 1
        self.reconnects += 1
        self.connections.remove(conn)
        conn.stop()
        self.connection_lost(conn)  # its streams are not fresh; books resync
        fresh = Connection(self, conn.route)
        names = sorted(conn.streams)
        fresh.subscribe(names)
        self.connections.append(fresh)
        for name in names:
            self.placed[name] = fresh
        if self.running:
            fresh.start()

    # -- reporting -------------------------------------------------------------------------
    def health(self, stale: set[str] | None = None) -> dict:
        now = self.reactor.seconds()
        samples = self._rate_samples
        samples.append((now, self.messages))
        while len(samples) > 2 and now - samples[1][0] >= 10:
            samples.popleft()  # keep one sample at least 10 s old, when there is one
        then, before = samples[0]
        rate = (self.messages - before) / (now - then) if now > then else 0.0
        return {
            "connections": len(self.connections),
            "open": sum(c.protocol is not None for c in self.connections),
            "streams": len(self.placed),
            "stale": sorted(stale or ()),
            "connects": self.connects,
            "reconnects": self.reconnects,
            "rotations": self.rotations,
            "replaced_silent": self.replaced,
            "messages": self.messages,
            "messages_per_second": round(rate, 1),
        }
