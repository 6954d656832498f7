"""The fake exchange's twisted.web resources: REST under ``/api``, ``/fapi``,
``/dapi``, ``/futures/data`` and the mounts ``/spot``, ``/usdm``,
``/coinm``; websocket streams at ``/<market>/ws``, ``/<market>/stream`` and
USD-M's ``/usdm/public``, ``/usdm/market`` and ``/usdm/private`` (user data);
the admin API at ``/_fake/``.

:class:`RestLeaf` applies the REST faults and hands each request to an
``answer`` callable (the exchange's gateway: limits, then the handlers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from autobahn.twisted.resource import WebSocketResource
from twisted.web import server
from twisted.web.resource import Resource

from bnproxy.binance.errors import error_body
from bnproxy.binance.markets import implicit_market
from bnproxy.testing.fake.control import AdminError, Counters, Faults, optional, required
from bnproxy.testing.fake.state import MARKETS

if TYPE_CHECKING:
    from bnproxy.testing.fake.exchange import FakeExchange

#: (market, method, path, query, body, headers, client ip) -> (status, body, headers)
Answer = Callable[[str, str, str, bytes, bytes, dict, str], tuple[int, bytes, list]]


class RestLeaf(Resource):
    """Every REST path of one mount (``market``) or of the implicit root."""

    isLeaf = True

    def __init__(self, market: str | None, answer: Answer, faults: Faults, counters: Counters,
                 clock) -> None:
        super().__init__()
        self.market = market
        self.answer = answer
        self.faults = faults
        self.counters = counters
        self.clock = clock

    def render(self, request):
        path_b, _, query = request.uri.partition(b"?")
        path = path_b.decode("latin-1")
        if self.market is not None:
            path = "/" + (path.split("/", 2)[2] if path.count("/") >= 2 else "")
            market: str | None = self.market
        else:
            market = implicit_market(path)
        request.setHeader(b"content-type", b"application/json;charset=UTF-8")
        if market not in MARKETS:
            request.setResponseCode(404)
            return error_body(-1000, "fake exchange: unknown path")
        f = self.faults
        faulty = path.startswith(f.path_prefix)
        if faulty and f.stall_headers:
            return server.NOT_DONE_YET
        request.content.seek(0)
        body = request.content.read()
        headers = {k.lower(): v[0] for k, v in request.requestHeaders.getAllRawHeaders()}
        ip = request.getClientAddress().host
        method = request.method.decode()
        if faulty and f.inject_error():
            self.counters.requests[(path, method, ip)] += 1
            request.setResponseCode(f.error_status)
            return error_body(-1000, "fake exchange: injected error")
        status, payload, extra = self.answer(market, method, path, query, body, headers, ip)
        request.setResponseCode(status)
        for k, v in extra:
            request.setHeader(k, v)
        if faulty and f.stall_body:
            request.setHeader(b"content-length", str(len(payload)).encode())
            request.write(payload[: len(payload) // 2])
            return server.NOT_DONE_YET
        if faulty and f.latency > 0:
            def later():
                if not request.finished and not getattr(request, "_disconnected", False):
                    request.write(payload)
                    request.finish()
            self.clock.callLater(f.latency, later)
            return server.NOT_DONE_YET
        return payload


class AdminResource(Resource):
    """``/_fake/...``: counters, faults, pause/resume, bans, websocket faults.
    The admin API controls the whole exchange, so it gets the exchange."""

    isLeaf = True

    def __init__(self, exchange: FakeExchange) -> None:
        super().__init__()
        self.exchange = exchange

    def render_GET(self, request):
        x = self.exchange
        request.setHeader(b"content-type", b"application/json")
        c = x.counters
        return orjson.dumps({
            "requests": [{"path": p, "method": m, "ip": ip, "count": n}
                         for (p, m, ip), n in c.requests.items()],
            "rest_total": c.rest_total(),
            "statuses": {str(k): v for k, v in c.statuses.items()},
            "weight": {m: {ip: st.used for ip, st in lim.ips.items()}
                       for m, lim in x.limiters.items()},
            "ws": {"connections": c.ws_connections, "connections_total": c.ws_connections_total,
                   "subscriptions": c.ws_subscriptions, "messages": c.ws_messages},
            "faults": x.faults.public(), "server_time": x.server_ms(),
            "paused": x.paused})

    def render_POST(self, request):
        action = request.postpath[-1].decode() if request.postpath else ""
        request.setHeader(b"content-type", b"application/json")
        try:
            self._act(action, admin_args(request))
        except AdminError as e:
            request.setResponseCode(400)
            return orjson.dumps({"error": str(e)})
        except LookupError as e:
            request.setResponseCode(404)
            return orjson.dumps({"error": str(e)})
        return b'{"ok":true}'

    def _act(self, action: str, args: dict[str, Any]) -> None:
        x = self.exchange
        if action == "faults":
            refuse = optional(args, "refuse", bool, None)
            x.faults.update({k: v for k, v in args.items() if k != "refuse"})
            if refuse is not None:
                x.set_refuse(refuse)
        elif action == "skew":
            x.skew_ms = optional(args, "ms", int, 0)
        elif action == "reset":
            x.reset()
        elif action == "pause":
            x.pause()
        elif action == "resume":
            x.resume()
        elif action == "ban":
            market = optional(args, "market", str, None)
            if market is not None and market not in MARKETS:
                raise AdminError(f"market: unknown market {market!r} ({', '.join(MARKETS)})")
            x.ban(required(args, "ip", str, "ban"), optional(args, "seconds", float, 120.0),
                  market)
        elif action in ("ws-drop", "ws-silence", "ws-unsilence", "ws-shutdown"):
            market = optional(args, "market", str, None)
            if market and market not in x.hubs:
                raise AdminError(f"market: unknown market {market!r} ({', '.join(x.hubs)})")
            hubs = [x.hubs[market]] if market else list(x.hubs.values())
            stream = optional(args, "stream", str, None)
            for hub in hubs:
                if action == "ws-drop":
                    hub.drop(stream)
                elif action == "ws-silence":
                    if stream:
                        hub.silenced.add(stream)
                    else:
                        hub.silence_all = True
                elif action == "ws-unsilence":
                    hub.silenced.clear()
                    hub.silence_all = False
                else:
                    hub.shutdown()
        else:
            raise LookupError(f"unknown action {action}")


def admin_args(request) -> dict[str, Any]:
    """An admin action's arguments: a JSON object in the body and the query
    string's parameters (``?ip=127.0.0.1&seconds=5``); the query wins."""
    request.content.seek(0)
    raw = request.content.read()
    args: dict[str, Any] = {}
    if raw.strip():
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise AdminError("the body must be a JSON object (or send ?key=value)") from None
        if not isinstance(body, dict):
            raise AdminError("the body must be a JSON object (or send ?key=value)")
        args.update(body)
    for key, values in (request.args or {}).items():
        args[key.decode("utf-8", "replace")] = values[-1].decode("utf-8", "replace")
    return args


class _Mount(Resource):
    """A path whose children are named resources, else the REST leaf."""

    def __init__(self, rest: RestLeaf) -> None:
        super().__init__()
        self._rest = rest

    def getChild(self, path, request):
        return self._rest

    def render(self, request):
        return self._rest.render(request)


def root_resource(answer: Answer, faults: Faults, counters: Counters, clock,
                  ws_factories: Mapping[str, object], admin: Resource) -> Resource:
    """The exchange's root: REST (implicit and mounted), streams, admin."""

    def rest(market: str | None) -> RestLeaf:
        return RestLeaf(market, answer, faults, counters, clock)

    root = _Mount(rest(None))
    for m in MARKETS:
        mount = _Mount(rest(m))
        ws = WebSocketResource(ws_factories[m])
        for name in (b"ws", b"stream", b"public", b"market", b"private"):
            mount.putChild(name, ws)
        root.putChild(m.encode(), mount)
    root.putChild(b"_fake", admin)
    spot_ws = WebSocketResource(ws_factories["spot"])
    usdm_ws = WebSocketResource(ws_factories["usdm"])
    for name, ws in ((b"ws", spot_ws), (b"stream", spot_ws), (b"public", usdm_ws),
                     (b"market", usdm_ws), (b"private", usdm_ws)):
        root.putChild(name, ws)
    return root
