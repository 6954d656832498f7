"""The fake exchange's websocket streams (autobahn), per market: connections,
the control protocol (SUBSCRIBE, ...), and when each stream emits.

A :class:`StreamHub` gets what it uses (its market's state, the counters and
the clock), not the exchange; events are built by ``formats``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import orjson
from autobahn.exception import Disconnected
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

from bnproxy.testing.fake import formats
from bnproxy.testing.fake.state import Candle, DepthEvent, Market, SymbolState, Trade

if TYPE_CHECKING:
    from bnproxy.testing.fake.control import Counters
    from bnproxy.testing.fake.userdata import UserStreams

MAX_STREAMS = 1024
PUBLIC_ROUTE = ("depth", "bookTicker", "rpiDepth")


def stream_route(name: str) -> str:
    """USD-M's 2026 split: depth and book tickers on /public, the rest on /market."""
    kind = name.split("@", 1)[1] if "@" in name else name
    if kind.startswith(PUBLIC_ROUTE) or name == "!bookTicker":
        return "public"
    return "market"


class FakeStreamProtocol(WebSocketServerProtocol):
    hub: StreamHub

    def onConnect(self, request):
        path = urlsplit(request.path).path if "?" in request.path else request.path
        parts = [p for p in path.split("/") if p]
        if parts and parts[0] in ("spot", "usdm", "coinm"):
            parts = parts[1:]
        self.route = None
        if parts and parts[0] in ("public", "market", "private"):
            self.route = parts[0]
            parts = parts[1:]
        self.combined = bool(parts) and parts[0] == "stream"
        initial: list[str] = []
        if parts and parts[0] == "ws":
            initial = [unquote(p) for p in parts[1:]]
        elif self.combined:
            for value in request.params.get("streams", []):
                initial += [unquote(s) for s in value.split("/") if s]
        self.streams: set[str] = set()
        self.initial = initial
        # a futures user-data connection: /ws/<listenKey>, /private/ws?listenKey=…
        key = (request.params.get("listenKey", [None])[0] if self.route == "private"
               else initial[0] if len(initial) == 1 else None)
        self.listen_key = key if self.hub.user_streams is not None and \
            self.hub.user_streams.keys.get(key or "", ("",))[0] == self.hub.market else None
        if self.listen_key is not None:
            self.initial = []
        self.window = -1
        self.in_window = 0
        return None

    def onOpen(self):
        self.opened_ms = self.hub.markets.now()
        self.hub.register(self)
        self.hub.subscribe(self, self.initial)
        users = self.hub.user_streams
        if self.listen_key is not None and users is not None:
            users.attach(self.hub.market, self.listen_key, self)

    def allowed(self, name: str) -> bool:
        if self.hub.market != "usdm":
            return True
        route = stream_route(name)
        return route == self.route or (self.route is None and route == "public")

    def onMessage(self, payload, isBinary):
        now = self.hub.markets.now()
        if now // 1000 != self.window:
            self.window, self.in_window = now // 1000, 0
        self.in_window += 1
        if self.in_window > self.hub.message_limit:
            self.hub.counters.ws_rate_disconnects += 1
            self.dropConnection(abort=True)
            return
        self.hub.counters.ws_control_messages += 1
        deliver(self, orjson.dumps(self.hub.control(self, payload)))

    def onClose(self, wasClean, code, reason):
        self.hub.unregister(self)
        key, users = getattr(self, "listen_key", None), self.hub.user_streams
        if key is not None and users is not None:
            users.detach(key, self)


def deliver(p: WebSocketServerProtocol, payload: bytes) -> bool:
    """Send ``payload`` to ``p`` unless it is closing or closed (a client may
    close its side at any moment: its ``onClose`` comes only once the TCP
    connection is gone, and autobahn raises on a send in between). True if sent."""
    if getattr(p, "state", WebSocketServerProtocol.STATE_OPEN) != \
            WebSocketServerProtocol.STATE_OPEN:  # (a duck-typed subscriber has none)
        return False
    try:
        p.sendMessage(payload)
    except Disconnected:
        return False
    return True


class StreamHub:
    """Subscriptions and emission for one market's streams."""

    def __init__(self, market: str, markets: Market, counters: Counters, clock,
                 time_scale: float = 1.0) -> None:
        self.market = market
        self.markets = markets
        self.counters = counters
        self.clock = clock
        self.futures = market != "spot"
        self.message_limit = 10 if self.futures else 5
        self.protocols: set[FakeStreamProtocol] = set()
        self.subs: dict[str, set[FakeStreamProtocol]] = defaultdict(set)
        self.buckets: dict[str, int] = {}
        self.pending_depth: dict[str, list[DepthEvent]] = defaultdict(list)
        self.silenced: set[str] = set()
        self.silence_all = False
        self.lifetime_ms = int(24 * 3600_000 * time_scale)
        self.user_streams: UserStreams | None = None  # futures: set by the exchange
        hub = self

        class Protocol(FakeStreamProtocol):
            pass

        Protocol.hub = hub
        self.factory = WebSocketServerFactory(reactor=clock)
        self.factory.protocol = Protocol
        ping = 180 if self.futures else 20
        self.factory.setProtocolOptions(
            autoPingInterval=ping * time_scale, autoPingTimeout=(600 if self.futures else 60)
            * time_scale, maxMessagePayloadSize=65536, maxFramePayloadSize=65536)

    # -- connections and control ----------------------------------------------------
    def register(self, p: FakeStreamProtocol) -> None:
        self.protocols.add(p)
        self.counters.ws_connections += 1
        self.counters.ws_connections_total += 1

    def unregister(self, p: FakeStreamProtocol) -> None:
        if p in self.protocols:
            self.protocols.discard(p)
            self.counters.ws_connections -= 1
        for name in list(getattr(p, "streams", ())):
            self.subs[name].discard(p)
            self.counters.ws_subscriptions -= 1

    def subscribe(self, p: FakeStreamProtocol, names: list[str]) -> str | None:
        for name in names:
            if name in p.streams:
                continue
            if len(p.streams) >= MAX_STREAMS:
                return "too many streams"
            p.streams.add(name)
            self.subs[name].add(p)
            self.counters.ws_subscriptions += 1
        return None

    def unsubscribe(self, p: FakeStreamProtocol, names: list[str]) -> None:
        for name in names:
            if name in p.streams:
                p.streams.discard(name)
                self.subs[name].discard(p)
                self.counters.ws_subscriptions -= 1

    def control(self, p: FakeStreamProtocol, payload: bytes) -> dict[str, Any]:
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return {"error": {"code": 3, "msg": "Invalid JSON: expected value at line 1 column 1"}}
        if not isinstance(msg, dict) or "method" not in msg:
            return {"error": {"code": 2, "msg": "Invalid request: missing field `method` at "
                                                "line 1 column 1"}, "id": None}
        rid = msg.get("id")
        if rid is not None and not isinstance(rid, (int, str)):
            return {"error": {"code": 2, "msg": "Invalid request: request ID must be an "
                                                "unsigned integer"}, "id": None}
        method = msg["method"]
        params = msg.get("params", [])
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(s, str) for s in params):
                return {"error": {"code": 2, "msg": "Invalid request: invalid params"}, "id": rid}
            if method == "SUBSCRIBE":
                err = self.subscribe(p, params)
                if err:
                    return {"error": {"code": 2, "msg": f"Invalid request: {err}"}, "id": rid}
            else:
                self.unsubscribe(p, params)
            return {"result": None, "id": rid}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(p.streams), "id": rid}
        if method in ("SET_PROPERTY", "GET_PROPERTY"):
            if not params or not isinstance(params[0], str):
                return {"error": {"code": 2, "msg": "Invalid request: property name must be a "
                                                    "string"}, "id": rid}
            if params[0] != "combined":
                return {"error": {"code": 0, "msg": "Unknown property"}, "id": rid}
            if method == "GET_PROPERTY":
                return {"result": p.combined, "id": rid}
            if len(params) < 2 or not isinstance(params[1], bool):
                return {"error": {"code": 1, "msg": "Invalid value type: expected Boolean"},
                        "id": rid}
            p.combined = params[1]
            return {"result": None, "id": rid}
        return {"error": {"code": 2, "msg": f"Invalid request: unknown variant {method}, "
                                            "expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, "
                                            "`LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, "
                                            "`GET_PROPERTY` at line 1 column 28"}, "id": rid}

    # -- emission -----------------------------------------------------------------
    def send(self, name: str, payload: bytes) -> None:
        if self.silence_all or name in self.silenced:
            return
        listeners = self.subs.get(name)
        if not listeners:
            return
        combined = None
        for p in list(listeners):
            if not p.allowed(name):
                continue
            if p.combined:
                if combined is None:
                    combined = formats.combined(name, payload)
                sent = deliver(p, combined)
            else:
                sent = deliver(p, payload)
            if sent:
                self.counters.ws_messages += 1

    def due(self, name: str, now: int, cadence: int) -> bool:
        bucket = now // cadence
        if self.buckets.get(name) == bucket:
            return False
        self.buckets[name] = bucket
        return True

    def on_trades(self, st: SymbolState, trades: list[Trade]) -> None:
        s = st.inst.stream_name
        for kind in ("aggTrade", "trade"):
            name = f"{s}@{kind}"
            if name in self.subs and self.subs[name]:
                for t in trades:
                    self.send(name, formats.trade_event(st, t, kind))

    def on_kline_closed(self, st: SymbolState, interval: str, candle: Candle) -> None:
        name = f"{st.inst.stream_name}@kline_{interval}"
        if self.subs.get(name):
            self.send(name, formats.kline_event(st, interval, candle, True,
                                                   self.markets.now()))

    def on_depth(self, st: SymbolState, event: DepthEvent) -> None:
        s = st.inst.stream_name
        for suffix in ("@depth", "@depth@100ms", "@depth@250ms", "@depth@500ms"):
            if self.subs.get(s + suffix):
                self.pending_depth[s + suffix].append(event)

    def tick(self, now: int, flush: bool = False) -> None:
        """Emit every stream that is due (or all, when ``flush``)."""
        for name, listeners in list(self.subs.items()):
            if not listeners:
                continue
            self._emit(name, now, flush)
        if self.lifetime_ms:
            for p in list(self.protocols):
                if now - getattr(p, "opened_ms", now) >= self.lifetime_ms:
                    p.dropConnection(abort=False)

    def _emit(self, name: str, now: int, flush: bool) -> None:
        if name.startswith("!"):
            kind = name[1:]
            if kind == "miniTicker@arr" and (flush or self.due(name, now, 1000)):
                states = self.markets.symbols[self.market].values()
                self.send(name, b"[" + b",".join(
                    formats.ticker_event(self.markets.ticker(st), st.inst, mini=True)
                    for st in states) + b"]")
            elif kind.startswith("markPrice@arr") and self.futures:
                cadence = 1000 if kind.endswith("@1s") else 3000
                if flush or self.due(name, now, cadence):
                    states = self.markets.symbols[self.market].values()
                    self.send(name, b"[" + b",".join(formats.mark_price_event(st, now)
                                                     for st in states) + b"]")
            return
        sym, _, kind = name.partition("@")
        st = self.markets.stream_symbols[self.market].get(sym)
        if st is None:
            return
        if kind.startswith("kline_"):
            interval = kind[6:]
            if interval not in st.current:
                return
            cadence = 250 if self.futures else (1000 if interval == "1s" else 2000)
            if flush or self.due(name, now, cadence):
                self.send(name, formats.kline_event(st, interval, st.current[interval], False,
                                                       now))
        elif kind.startswith("depth@") or kind == "depth":
            speed = kind[6:] or ("250ms" if self.futures else "1000ms")
            cadence = int(speed[:-2])
            pending = self.pending_depth.get(name)
            if pending and (flush or self.due(name, now, cadence)):
                self.send(name, formats.depth_event(st, pending))
                self.pending_depth[name] = []
        elif kind.startswith("depth"):
            level, _, speed = kind[5:].partition("@")
            if level not in ("5", "10", "20"):
                return
            cadence = int(speed[:-2]) if speed else (250 if self.futures else 1000)
            if flush or self.due(name, now, cadence):
                self.send(name, formats.partial_depth_event(st, int(level), now))
        elif kind == "bookTicker":
            last = self.buckets.get(name)
            if flush or last != st.update_id:
                self.buckets[name] = st.update_id
                self.send(name, formats.book_ticker_event(st, now))
        elif kind in ("ticker", "miniTicker"):
            cadence = 2000 if self.futures else 1000
            if flush or self.due(name, now, cadence):
                self.send(name, formats.ticker_event(self.markets.ticker(st), st.inst,
                                                   mini=kind == "miniTicker"))
        elif kind.startswith("markPrice") and self.futures:
            cadence = 1000 if kind.endswith("@1s") else 3000
            if flush or self.due(name, now, cadence):
                self.send(name, formats.mark_price_event(st, now))







    # -- faults ---------------------------------------------------------------------
    def drop(self, stream: str | None = None) -> int:
        victims = [p for p in self.protocols if stream is None or stream in p.streams]
        for p in victims:
            p.dropConnection(abort=True)
        return len(victims)

    def shutdown(self, grace: float = 2.0) -> int:
        """Announce ``serverShutdown`` (Binance: "reconnect on receipt") and
        close the connections ``grace`` seconds later."""
        now = self.markets.now()
        victims = list(self.protocols)
        payload = formats.server_shutdown_event(now)
        for p in victims:
            deliver(p, formats.combined("!serverShutdown", payload) if p.combined else payload)

        def close() -> None:
            for p in victims:
                if p in self.protocols:
                    p.sendClose(1000)
        self.clock.callLater(grace, close)
        return len(victims)
