"""An in-memory bnproxy for testing middlewares and plugins, without sockets.

``Harness(state_dir=...)`` builds a :class:`bnproxy.service.ProxyService` in
virtual time (a ``task.Clock``) whose upstream is an in-memory
``twisted.web`` resource (by default a :class:`RecordingUpstream`); requests
go in through ``harness.request(method, target)`` and come back as an
:class:`Answer`. :func:`controlled_agent` is an upstream whose answers the
test releases by hand; :class:`FakeResponse` is an ``IResponse`` to release
them with.

Importable without pytest. The request plumbing uses ``treq.testing``
(``pip install bnproxy[test]``), imported when a harness is built.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import attrs
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from twisted.web.resource import Resource
from zope.interface import implementer

from bnproxy.binance.limits import USED_WEIGHT_HEADER
from bnproxy.binance.markets import MARKET_NAMES
from bnproxy.config.model import ProxyConfig
from bnproxy.config.schema import DEFAULT_CHAIN
from bnproxy.service import ProxyService
from bnproxy.upstream.client import BytesProducer

__all__ = ["API_KEY", "DEFAULT", "SECRET", "UPSTREAM_HOSTS", "Answer", "FakeResponse",
           "Harness", "RecordingUpstream", "Seen", "chain", "controlled_agent",
           "raw_exchange", "sign", "verify_hmac"]

SECRET = b"test-secret-0123456789"
API_KEY = b"test-key-abcdef"

#: Where the harness points every market: never resolved, never contacted.
UPSTREAM_HOSTS = {m: f"http://{m}.upstream.test" for m in MARKET_NAMES}

#: The built-in chain in its default order (the proxy's own default: streams
#: included; a harness whose markets have no websocket upstream leaves it out
#: with ``chain(*(n for n in DEFAULT if n != "streams"))``).
DEFAULT = DEFAULT_CHAIN


@attrs.define
class Seen:
    """One request as the upstream received it."""

    method: str
    uri: bytes
    headers: dict[bytes, list[bytes]]
    body: bytes

    @property
    def host(self) -> bytes:
        return self.headers.get(b"host", [b""])[0]

    def header(self, name: bytes) -> bytes | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None


def verify_hmac(query: bytes, body: bytes, secret: bytes = SECRET) -> bool:
    """Binance's rule: HMAC-SHA256 over query (without the signature) + body."""
    head, sep, sig = query.rpartition(b"&signature=")
    if not sep:
        if query.startswith(b"signature="):
            head, sig = b"", query[len(b"signature="):]
        else:
            return False
    expected = hmac.new(secret, head + body, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, sig.lower())


def sign(query: bytes, body: bytes = b"", secret: bytes = SECRET) -> bytes:
    """``query`` with Binance's ``signature`` parameter appended."""
    sig = hmac.new(secret, query + body, hashlib.sha256).hexdigest().encode()
    return query + b"&signature=" + sig


class RecordingUpstream(Resource):
    """Records each request in ``seen``; answers with ``respond(request,
    seen)`` or a JSON echo of the method and URI."""

    isLeaf = True

    def __init__(self, respond: Callable[[Any, Seen], bytes] | None = None) -> None:
        super().__init__()
        self.seen: list[Seen] = []
        self.respond = respond

    def render(self, request):
        request.content.seek(0)
        seen = Seen(request.method.decode(), request.uri,
                    {k.lower(): list(v) for k, v in request.requestHeaders.getAllRawHeaders()},
                    request.content.read())
        self.seen.append(seen)
        if self.respond is not None:
            return self.respond(request, seen)
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(USED_WEIGHT_HEADER, b"7")
        return json.dumps({"uri": seen.uri.decode(), "method": seen.method}).encode()


@attrs.define
class Answer:
    """What the bot received."""

    status: int
    headers: Headers
    body: bytes
    length: object = None  # the Content-Length the proxy wrote (Agent moves it out of headers)

    def header(self, name: bytes) -> bytes | None:
        v = self.headers.getRawHeaders(name)
        return v[0] if v else None

    def json(self):
        return json.loads(self.body)


def chain(*names: str, **settings) -> tuple:
    """A middleware chain spec: ``chain("cache", "ratelimit", ratelimit={...})``."""
    return tuple((n, settings.get(n, {})) for n in names)


def _traversal_agent(resource: Resource):
    try:
        from treq.testing import RequestTraversalAgent
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("bnproxy.testing.harness needs treq: pip install bnproxy[test]") from e
    return RequestTraversalAgent(resource)


class Harness:
    """A ProxyService in virtual time whose upstream is an in-memory resource.

    ``state_dir`` is where the proxy keeps its state (bans): give it a
    temporary directory of your test (pytest's ``tmp_path``). Other keyword
    arguments are :class:`bnproxy.config.model.ProxyConfig` fields; by
    default no listening port, every market on :data:`UPSTREAM_HOSTS` and no
    middleware (name a chain with :func:`chain`).
    """

    def __init__(self, upstream: Resource | None = None, agent=None, clock=None, *,
                 state_dir: str, **config) -> None:
        self.upstream = upstream if upstream is not None else RecordingUpstream()
        self.clock = clock or task.Clock()
        self.upstream_agent = agent or _traversal_agent(self.upstream)
        config.setdefault("upstreams", dict(UPSTREAM_HOSTS))
        config.setdefault("listen", ())
        config.setdefault("middleware", ())
        config["state_dir"] = str(state_dir)
        self.service = ProxyService(self.clock, ProxyConfig(**config), agent=self.upstream_agent)
        self.client = _traversal_agent(self.service.site.resource)

    def flush(self) -> None:
        """Deliver every byte waiting in the in-memory connections."""
        for _ in range(20):
            flush = getattr(self.upstream_agent, "flush", None)
            if flush is not None:
                flush()
            self.client.flush()

    def start(self, method: bytes | str, target: bytes | str, headers=None,
              body: bytes | None = None) -> Deferred:
        """Send a request; return the Deferred for its :class:`Answer`."""
        if isinstance(method, str):
            method = method.encode()
        if isinstance(target, str):
            target = target.encode()
        url = target if target.startswith(b"http") else b"http://proxy.test" + target
        h = Headers()
        for k, v in (headers or {}).items():
            h.addRawHeader(k, v)
        producer = BytesProducer(body) if body is not None else None
        d = self.client.request(method, url, h, producer)

        async def answer(response):
            data = await readBody(response)
            return Answer(response.code, response.headers, data, response.length)

        return d.addCallback(lambda r: Deferred.fromCoroutine(answer(r)))

    def request(self, method, target, headers=None, body=None) -> Answer:
        """Send a request and return its answer (which must come without
        advancing the clock)."""
        d = self.start(method, target, headers, body)
        self.flush()
        results: list = []
        d.addBoth(results.append)
        self.flush()
        assert results, f"no answer to {method} {target}"
        if hasattr(results[0], "raiseException"):
            results[0].raiseException()
        return results[0]

    def path_of(self, seen: Seen) -> str:
        return urlsplit(seen.uri.decode()).path


def raw_exchange(harness: Harness, data: bytes, peer: Any = "127.0.0.1") -> bytes:
    """Feed raw bytes to the proxy's HTTP server; return what it wrote back.
    ``peer``: an IPv4 address's text, or an ``IAddress`` (a
    ``UNIXAddress`` for a bot on a unix socket)."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    address = IPv4Address("TCP", peer, 40000) if isinstance(peer, str) else peer
    protocol = harness.service.site.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    harness.flush()
    return transport.value()


class FakeResponse:
    """An IResponse with a body delivered at once."""

    version = (b"HTTP", 1, 1)
    phrase = b"OK"

    def __init__(self, code: int = 200, headers: dict | None = None, body: bytes = b"{}") -> None:
        self.code = code
        self.headers = Headers({k: [v] for k, v in (headers or {}).items()})
        self.body = body
        self.length = len(body)

    def deliverBody(self, protocol):
        from twisted.python.failure import Failure
        from twisted.web.client import ResponseDone

        class T:
            def abortConnection(self):
                pass

        protocol.makeConnection(T())
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


@implementer(IAgent)
class ControlledAgent:
    """An IAgent whose requests wait until the test answers them:
    ``pending`` holds (method, uri, headers, Deferred); ``calls`` every
    request ever made."""

    def __init__(self) -> None:
        self.pending: list[tuple[bytes, bytes, Any, Deferred]] = []
        self.calls: list[tuple[bytes, bytes, Any]] = []

    def request(self, method, uri, headers=None, bodyProducer=None):
        d: Deferred = Deferred()
        self.pending.append((method, uri, headers, d))
        self.calls.append((method, uri, headers))
        return d

    def answer_all(self, response_factory) -> None:
        """Answer every pending request with ``response_factory(method, uri)``."""
        pending, self.pending = self.pending, []
        for method, uri, _headers, d in pending:
            d.callback(response_factory(method, uri))


def controlled_agent() -> ControlledAgent:
    return ControlledAgent()
