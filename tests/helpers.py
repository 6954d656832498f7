"""Test helpers: an in-memory proxy wired to an in-memory upstream."""

from __future__ import annotations

import hashlib
import hmac
import json
from urllib.parse import urlsplit

import attrs
from treq.testing import RequestTraversalAgent
from twisted.internet import task
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource

from bnproxy.binance.markets import MARKET_NAMES
from bnproxy.config.model import ProxyConfig
from bnproxy.service import ProxyService
from bnproxy.upstream.client import BytesProducer

SECRET = b"test-secret-0123456789"
API_KEY = b"test-key-abcdef"

UPSTREAM_HOSTS = {m: f"http://{m}.upstream.test" for m in MARKET_NAMES}


@attrs.define
class Seen:
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
    sig = hmac.new(secret, query + body, hashlib.sha256).hexdigest().encode()
    return query + b"&signature=" + sig


class RecordingUpstream(Resource):
    """Records each request; answers with ``respond(request)`` or a JSON echo."""

    isLeaf = True

    def __init__(self, respond=None) -> None:
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
        request.setHeader(b"x-mbx-used-weight-1m", b"7")
        return json.dumps({"uri": seen.uri.decode(), "method": seen.method}).encode()


@attrs.define
class Answer:
    status: int
    headers: Headers
    body: bytes
    length: object = None  # the Content-Length the proxy wrote (Agent moves it out of headers)

    def header(self, name: bytes) -> bytes | None:
        v = self.headers.getRawHeaders(name)
        return v[0] if v else None

    def json(self):
        return json.loads(self.body)


def _tmpdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="bnproxy-test-")


def chain(*names: str, **settings) -> tuple:
    """A middleware chain spec: ``chain("cache", "ratelimit", ratelimit={...})``."""
    return tuple((n, settings.get(n, {})) for n in names)


DEFAULT = ("logger", "allowlist", "cache", "ratelimit")


class Harness:
    """A ProxyService in virtual time whose upstream is an in-memory resource."""

    def __init__(self, upstream: Resource | None = None, agent=None, clock=None,
                 **config) -> None:
        self.upstream = upstream if upstream is not None else RecordingUpstream()
        self.clock = clock or task.Clock()
        self.upstream_agent = agent or RequestTraversalAgent(self.upstream)
        config.setdefault("upstreams", dict(UPSTREAM_HOSTS))
        config.setdefault("listen", ())
        config.setdefault("middleware", ())  # the spine alone unless a test names a chain
        config.setdefault("state_dir", _tmpdir())
        self.service = ProxyService(self.clock, ProxyConfig(**config), agent=self.upstream_agent)
        self.client = RequestTraversalAgent(self.service.site.resource)

    def flush(self) -> None:
        for _ in range(20):
            if isinstance(self.upstream_agent, RequestTraversalAgent):
                self.upstream_agent.flush()
            self.client.flush()

    def start(self, method: bytes | str, target: bytes | str, headers=None,
              body: bytes | None = None):
        """Send a request; return the Deferred for its ``Answer``."""
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

        from twisted.internet.defer import Deferred
        return d.addCallback(lambda r: Deferred.fromCoroutine(answer(r)))

    def request(self, method, target, headers=None, body=None) -> Answer:
        d = self.start(method, target, headers, body)
        self.flush()
        results = []
        d.addBoth(results.append)
        self.flush()
        assert results, f"no answer to {method} {target}"
        if hasattr(results[0], "raiseException"):
            results[0].raiseException()
        return results[0]

    def path_of(self, seen: Seen) -> str:
        return urlsplit(seen.uri.decode()).path


def raw_exchange(harness: Harness, data: bytes, peer: str = "127.0.0.1") -> bytes:
    """Feed raw bytes to the proxy's HTTP server; return what it wrote back."""
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    protocol = harness.service.site.buildProtocol(IPv4Address("TCP", peer, 40000))
    transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 40000))
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    harness.flush()
    return transport.value()


class FakeResponse:
    """An IResponse with a body delivered at once."""

    version = (b"HTTP", 1, 1)
    phrase = b"OK"

    def __init__(self, code: int = 200, headers: dict | None = None, body: bytes = b"{}") -> None:
        from twisted.web.http_headers import Headers

        self.code = code
        self.headers = Headers({k: [v] for k, v in (headers or {}).items()})
        self.body = body
        self.length = len(body)

    def deliverBody(self, protocol):  # noqa: N802
        from twisted.python.failure import Failure
        from twisted.web.client import ResponseDone

        class T:
            def abortConnection(self):
                pass

        protocol.makeConnection(T())
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


def controlled_agent():
    """An IAgent whose requests wait until the test answers them:
    ``agent.pending`` is a list of (method, uri, headers, Deferred)."""
    from twisted.internet.defer import Deferred
    from twisted.web.iweb import IAgent
    from zope.interface import implementer

    @implementer(IAgent)
    class Agent:
        def __init__(self):
            self.pending = []
            self.calls = []

        def request(self, method, uri, headers=None, bodyProducer=None):
            d = Deferred()
            self.pending.append((method, uri, headers, d))
            self.calls.append((method, uri, headers))
            return d

        def answer_all(self, response_factory):
            pending, self.pending = self.pending, []
            for method, uri, _headers, d in pending:
                d.callback(response_factory(method, uri))

    return Agent()
