"""The HTTP side: root resource, market routing, writing answers back."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import RESPONSES
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource, Resource

from bnproxy.binance.endpoints import EndpointTable
from bnproxy.binance.errors import ILLEGAL_CHARS, UNKNOWN
from bnproxy.binance.markets import MARKET_NAMES, Market, implicit_market
from bnproxy.binance.privacy import is_private
from bnproxy.chain.addresses import normalise
from bnproxy.chain.interfaces import IFastPathSafe
from bnproxy.chain.messages import (
    INTERNAL,
    HeaderPairs,
    ProxyRequest,
    ProxyResponse,
    local_error,
)
from bnproxy.server.clientaddr import ClientResolver

_log = Logger(namespace="bnproxy.server.forwarding")

SOURCE_HEADER = b"x-bnproxy-source"
ROUTES_REMEMBERED = 4096


def split_target(uri: bytes) -> tuple[bytes, bytes]:
    """(raw path, raw query) of a request target. An absolute-form target
    (``http://elsewhere/path``) contributes only its path: the authority never
    steers the proxy."""
    if uri[:1] == b"/" and uri.find(b"#") == -1:  # origin form, as bots send it
        path, _, query = uri.partition(b"?")
        return path, query
    lower = uri[:8].lower()
    if lower.startswith((b"http://", b"https://")):
        rest = uri.split(b"://", 1)[1]
        slash = rest.find(b"/")
        query_at = rest.find(b"?")
        if slash == -1 or (query_at != -1 and query_at < slash):
            uri = b"/" + (rest[query_at:] if query_at != -1 else b"")
        else:
            uri = rest[slash:]
    path, _, query = uri.partition(b"?")
    path = path.split(b"#", 1)[0]
    query = query.split(b"#", 1)[0]
    return path, query


def ambiguous_path(raw_path: bytes) -> str | None:
    """Why a raw request path could mean two things, or None.

    A path is decided once: the market, weight pool, ban, cache key and the
    upstream path must all concern the same string. Refused: dot segments
    (``.``, ``..``), any percent-encoding (``%2e``, ``%2f``, ``%5c``, ``%00``,
    and ``%61`` that would turn ``/s%61pi`` into ``/sapi`` upstream; no
    Binance path needs one), a backslash, a NUL or another control byte.
    """
    if b"%" in raw_path:
        return "a percent-encoded path"
    if b"\\" in raw_path:
        return "a backslash in the path"
    if any(b < 0x21 or b == 0x7F for b in raw_path):
        return "a control character in the path"
    if b"/." in raw_path:
        for segment in raw_path.split(b"/"):
            if segment in (b".", b".."):
                return "a dot segment in the path"
    return None


def resolve_market(path: str) -> tuple[str | None, str]:
    """(market, Binance path) for a proxy path: an explicit mount
    (``/usdm/futures/data/...``) or the implicit prefix (``/fapi/...``)."""
    first, sep, rest = path[1:].partition("/")
    if first in MARKET_NAMES:
        return (first, "/" + rest) if sep and rest else (None, path)
    return implicit_market(path), path


def _canonical(name: bytes) -> bytes:
    """twisted.web's own spelling of a header name (``x-cache`` is
    ``X-Cache``), as its ``Headers`` keys it; remembered."""
    spelled = _NAMES.get(name)
    if spelled is None:
        spelled = next(iter(Headers({name: [b""]}).getAllRawHeaders()))[0]
        if len(_NAMES) < ROUTES_REMEMBERED:
            _NAMES[name] = spelled
    return spelled


_NAMES: dict[bytes, bytes] = {}
_SOURCE = _canonical(SOURCE_HEADER)
_LENGTH = _canonical(b"content-length")
_SOURCES: dict[str, bytes] = {}
_CLEAN: set[bytes] = set()  # short header values known to hold no line break
_FIELDS = attrs.fields(ProxyRequest)
_new = object.__new__
_set = object.__setattr__  # (ProxyRequest is frozen: its own __setattr__ refuses)
_DATE_MARK = b"\x00date\x00"  # where the Date value goes (no header value holds a NUL)
_LENGTH_MARK = b"\x00length\x00"  # where the Content-Length value goes


def write_response(request: server.Request, response: ProxyResponse) -> None:
    """Send ``response`` to the bot, unless it has gone."""
    if request.finished or getattr(request, "_disconnected", False):
        return
    request.setResponseCode(response.status)
    response_headers(request.responseHeaders._rawHeaders, response)
    if request.method != b"HEAD":
        request.write(response.body)
    request.finish()


def response_headers(raw: dict[bytes, list[bytes]], response: ProxyResponse) -> None:
    """Add ``response``'s headers to twisted.web's raw header dict ``raw``
    as it keeps them (names in its spelling, values of one name together),
    with the source and the length: what every answer carries."""
    # What Headers.addRawHeader / setRawHeaders do (the name in twisted.web's
    # spelling, line breaks in a value folded to a space), without their
    # calls per header: this runs for every answer.
    clean = _CLEAN
    for k, v in response.headers:
        name = _NAMES.get(k) or _canonical(k)
        if v not in clean:  # a value seen before is known to hold no line break
            # (find, not ``in``: ``bytes in bytes`` first tries the needle as
            # an int and formats a TypeError, ~1,800 instructions, every time)
            if v.find(b"\n") != -1 or v.find(b"\r") != -1:
                v = b" ".join(v.splitlines())
            elif len(v) <= 256:
                if len(clean) >= ROUTES_REMEMBERED:
                    clean.clear()
                clean.add(v)
        values = raw.get(name)
        if values is None:
            raw[name] = [v]
        else:
            values.append(v)
    source = _SOURCES.get(response.source)
    if source is None:
        source = _SOURCES.setdefault(response.source, response.source.encode("ascii"))
    raw[_SOURCE] = [source]
    raw[_LENGTH] = [b"%d" % len(response.body)]


def serialised_head(response: ProxyResponse) -> tuple[bytes, bytes, bytes]:
    """The bytes twisted.web writes before ``response``'s body, in three
    parts around its ``Date`` value and its ``Content-Length`` value: (status
    line, ``Server`` and ``Date: ``; the rest of the ``Date`` line and the
    headers up to ``Content-Length: ``; the rest, to the blank line). The
    fast path writes ``before + date + middle + length + after + body``:
    one head for every answer of the same status, headers and source."""
    raw: dict[bytes, list[bytes]] = {b"Server": [server.version], b"Date": [_DATE_MARK]}
    response_headers(raw, response)
    raw[_LENGTH] = [_LENGTH_MARK]  # (in place: where twisted.web writes it)
    status = response.status
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, RESPONSES.get(status, b"Unknown Status"))]
    for name, values in raw.items():
        for value in values:
            lines.append(b"%s: %s\r\n" % (name, value))
    lines.append(b"\r\n")
    before, _, rest = b"".join(lines).partition(_DATE_MARK)
    middle, _, after = rest.partition(_LENGTH_MARK)
    return before, middle, after


class ForwardingResource(Resource):
    """Every non-admin path: builds a ``ProxyRequest`` and runs the chain."""

    isLeaf = True

    def __init__(self, handler: Callable, markets: Mapping[str, Market],
                 endpoints: EndpointTable, clock, resolve_client: ClientResolver,
                 answered: Callable[[ProxyRequest | None, ProxyResponse], None] | None = None,
                 middlewares: Sequence[object] = (),
                 ) -> None:
        super().__init__()
        # hits answered before the chain (``answer_fast``); None: never
        self.fast = fast_chain(middlewares)
        # the ProxyRequest answer_fast made for a request it left to the chain
        self.unanswered: ProxyRequest | None = None
        self.inflight = 0
        self._idle_waiters: list[Deferred] = []
        self._answered = answered
        self._handler = handler
        self._markets = markets
        self._endpoints = endpoints
        self._clock = clock
        # A bound method is called without the lookup of ``__call__`` a
        # callable instance costs per call.
        self._resolve_client = (resolve_client.__call__
                                if isinstance(resolve_client, ClientResolver) else resolve_client)
        # With no trusted proxy the client is the peer, normalised: what the
        # resolver returns, without its call (the same list: changes are seen).
        self._trusted = resolve_client.trusted if isinstance(resolve_client, ClientResolver) \
            else None
        self._routes: dict[tuple[bytes, bytes], tuple] = {}
        # public targets hit before: a request's fields (``__dict__``), weight included
        self._prepared: dict[bytes, dict[str, Any]] = {}

    def _route(self, method_raw: bytes, raw_path: bytes) -> tuple | ProxyResponse:
        """(method, market, Binance path, endpoint), or the answer to a
        request no market serves; remembered per (method, raw path)."""
        key = (method_raw, raw_path)
        route = self._routes.get(key)
        if route is not None:
            return route
        try:
            path = raw_path.decode("ascii")
            method = method_raw.decode("ascii")
        except UnicodeDecodeError:
            return local_error(400, ILLEGAL_CHARS, "Illegal characters found in a parameter.")
        refused = ambiguous_path(raw_path)
        if refused is not None:
            return local_error(400, ILLEGAL_CHARS,
                               f"Illegal characters found in a parameter. bnproxy: {refused} "
                               "is refused (the request was not sent).", detail="bad-path")
        market, binance_path = resolve_market(path)
        if market is None:
            return local_error(404, UNKNOWN, f"bnproxy: no Binance market serves the path {path}",
                               detail="no-route")
        if len(self._routes) >= ROUTES_REMEMBERED:
            self._routes.clear()
        route = self._routes[key] = (method, market, binance_path,
                                     self._endpoints.lookup(market, method, binance_path))
        return route

    def render(self, request: server.Request):
        # The common case inline (one call each less per answer): an
        # origin-form target, a route seen before.
        request.defaultContentType = None
        uri = request.uri
        if uri[:1] == b"/" and uri.find(b"#") == -1:
            raw_path, _, query = uri.partition(b"?")
        else:
            raw_path, query = split_target(uri)
        route = self._routes.get((request.method, raw_path)) or \
            self._route(request.method, raw_path)
        if isinstance(route, ProxyResponse):
            if self._answered is not None:
                self._answered(None, route)  # counted as unrouted
            write_response(request, route)
            return server.NOT_DONE_YET
        method, market, binance_path, endpoint = route
        pairs = []
        for k, vs in request.requestHeaders.getAllRawHeaders():
            lower = k.lower()
            if lower != INTERNAL:
                for v in vs:
                    pairs.append((lower, v))
        headers = tuple(pairs)
        peer = getattr(request.getClientAddress(), "host", None) or "unix"
        content: Any = request.content
        content.seek(0)
        trusted = self._trusted
        client = normalise(peer) if trusted is not None and not trusted \
            else self._resolve_client(peer, headers)
        proxy_request = ProxyRequest(method, market, binance_path, query, headers,
                                     content.read(), client, self._clock.seconds(), endpoint)
        return self.render_request(request, proxy_request)

    def render_request(self, request: Any, proxy_request: ProxyRequest) -> Any:
        """``render`` of ``request`` once its ``ProxyRequest`` is made (by
        ``render``, or by ``answer_fast`` for a request the middlewares'
        fast path left to the chain: ``unanswered``)."""
        request.defaultContentType = None
        answer = self._handler(proxy_request)
        if isinstance(answer, ProxyResponse):  # answered at once: no Deferred made
            try:
                if self._answered is not None:
                    self._answered(proxy_request, answer)
                write_response(request, answer)
            except Exception:
                self._failed(Failure(), request, proxy_request.path)
            return server.NOT_DONE_YET
        self.inflight += 1
        cancel_if_lost = getattr(request, "cancel_if_lost", None)
        if cancel_if_lost is not None:  # the fast path's request: no Deferred of its own
            cancel_if_lost(answer)
        else:
            request.notifyFinish().addErrback(lambda _: answer.cancel())
        answer.addBoth(self._finished, request, proxy_request)  # one callback: each costs
        return server.NOT_DONE_YET

    def client_of_peer(self, peer: Any) -> str | None:
        """The client ``render`` names for requests from ``peer`` when the
        peer alone decides it (no trusted proxy); None otherwise."""
        trusted = self._trusted
        if trusted is None or trusted:
            return None
        return normalise(getattr(peer, "host", None) or "unix")

    def answer_fast(self, uri: bytes, headers: HeaderPairs, peer: Any,
                    client: str | None = None, now: float | None = None
                    ) -> ProxyResponse | None:
        """The answer to a bot's plain ``GET`` of origin-form ``uri`` with
        ``headers`` (lower-case names, the ``INTERNAL`` marker dropped) from
        ``peer`` (``client``: ``client_of_peer(peer)``, if known) at ``now``
        (the clock's time, if known), when the
        middlewares' fast path gives one (a hit: see ``IFastPathSafe``),
        counted as ``render`` counts an answer; None: the request is for
        ``render`` (the chain), nothing was done; the ``ProxyRequest`` made
        for it, if any, is left in ``unanswered`` for ``render_request``."""
        self.unanswered = None
        fast = self.fast
        if fast is None:
            return None
        trusted = self._trusted
        if client is None or trusted:  # (a proxy trusted since the connection began)
            host = getattr(peer, "host", None) or "unix"
            client = normalise(host) if trusted is not None and not trusted \
                else self._resolve_client(host, headers)
        prepared = self._prepared.get(uri)
        if prepared is not None:  # a public target hit before: routed and weighed
            # The request as ``ProxyRequest(...)`` makes it, with its weight
            # (``Once``: a cached property) known, without its generated __init__.
            fields = prepared.copy()
            fields["headers"] = headers
            fields["client"] = client
            fields["arrival"] = self._clock.seconds() if now is None else now
            request = _new(ProxyRequest)
            _set(request, "__dict__", fields)
        else:
            raw_path, _, query = uri.partition(b"?")
            route = self._routes.get((b"GET", raw_path)) or self._route(b"GET", raw_path)
            if isinstance(route, ProxyResponse):
                return None
            method, market, binance_path, endpoint = route
            request = ProxyRequest(method, market, binance_path, query, headers, b"", client,
                                   self._clock.seconds() if now is None else now, endpoint)
        try:
            answer = fast[0](request, fast[1])
        except Exception:
            # the contract says it must not; the chain answers (and logs) instead
            _log.failure("fast path: answering {path}", path=request.path)
            return None
        if answer is None:
            self.unanswered = request
            return None
        if self._answered is not None:
            self._answered(request, answer)
        if prepared is None and not is_private(attrs.evolve(request, headers=())):
            # a public target (nothing secret in it), hit: routed and weighed once
            if len(self._prepared) >= ROUTES_REMEMBERED:
                self._prepared.clear()
            # (the headers and client are each request's own: none kept)
            self._prepared[uri] = {**{a.name: getattr(request, a.name) for a in _FIELDS},
                                   "headers": (), "client": "", "arrival": 0.0,
                                   "weight": request.weight}
        return answer

    def _write(self, request: server.Request, proxy_request: ProxyRequest,
               response: ProxyResponse) -> None:
        if self._answered is not None:
            self._answered(proxy_request, response)
        write_response(request, response)

    def _finished(self, result: ProxyResponse | Failure, request: server.Request,
                  proxy_request: ProxyRequest) -> None:
        """The chain's Deferred answer came: written (or, failed, a logged
        500; nothing for a bot that went away), then no longer in flight."""
        try:
            if isinstance(result, ProxyResponse):
                try:
                    self._write(request, proxy_request, result)
                except Exception:
                    self._failed(Failure(), request, proxy_request.path)
            elif isinstance(result, Failure):
                self._failed(result, request, proxy_request.path)
            else:
                self._failed(Failure(TypeError(f"the chain answered {type(result).__name__}")),
                             request, proxy_request.path)
        finally:
            self._settled()

    @staticmethod
    def _failed(f: Failure, request: server.Request, path: str) -> None:
        if f.check(CancelledError):
            return None
        _log.failure("unhandled error answering {path}", f, path=path)
        write_response(request, local_error(500, UNKNOWN, "bnproxy: internal error"))
        return None

    def _settled(self) -> None:
        self.inflight -= 1
        if not self.inflight:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def idle(self) -> Deferred:
        """A Deferred that fires when no request is in flight (at once if none
        is); cancelling it stops waiting."""
        if not self.inflight:
            return succeed(None)
        d: Deferred = Deferred(lambda d: self._idle_waiters.remove(d))
        self._idle_waiters.append(d)
        return d


def _stop(request: ProxyRequest) -> None:
    return None


def fast_chain(middlewares: Sequence[object]) -> tuple[Callable, Callable] | None:
    """The middlewares' ``fast_handle`` composed in chain order (see
    ``IFastPathSafe``): the first one's ``fast_handle`` and the ``next`` it
    is called with (the rest, composed), giving a hit's answer or None. The
    first middleware that does not declare it ends it (None: the chain's);
    None when that is the first."""
    handler: Callable[[ProxyRequest], Any] = _stop
    first = None
    for middleware in reversed(middlewares):
        if IFastPathSafe.providedBy(middleware):
            first = (middleware.fast_handle, handler)
            handler = _layer(middleware.fast_handle, handler)
        else:
            handler = _stop
            first = None
    return first


def _layer(fast_handle: Callable, nxt: Callable) -> Callable[[ProxyRequest], Any]:
    return lambda request: fast_handle(request, nxt)


class RootResource(Resource):
    """Admin resources by name; everything else to the forwarder."""

    def __init__(self, forward: IResource) -> None:
        super().__init__()
        self._forward = forward

    def getChildWithDefault(self, path: bytes, request: server.Request) -> IResource:
        """As ``Resource.getChildWithDefault`` (an admin child by name, else
        ``getChild``), with ``getChild``'s work inline: once per request."""
        child = self.children.get(path)
        if child is not None:
            return child
        request.prepath.pop()  # type: ignore[union-attr]  # lists while traversing
        request.postpath.insert(0, path)  # type: ignore[union-attr]
        return self._forward

    def getChild(self, path: bytes, request: server.Request) -> IResource:
        request.prepath.pop()  # type: ignore[union-attr]  # lists while traversing
        request.postpath.insert(0, path)  # type: ignore[union-attr]
        return self._forward

    def render(self, request: server.Request):
        return self._forward.render(request)
