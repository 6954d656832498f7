"""The terminal of the chain: forwards a request to its market's host.

Hygiene (each was a real leak or hang in other proxies): no redirects are
followed and no cookie jar exists; headers cross through allowlists; the URL
is the market's base plus the raw path and query, never the client's Host or
an absolute-form target; every wait has a deadline; only an idempotent
public GET is ever retried.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, TimeoutError, succeed
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import client as wclient
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from bnproxy.binance.errors import DISCONNECTED, TIMEOUT
from bnproxy.binance.markets import Market
from bnproxy.upstream.headers import request_headers, response_headers
from bnproxy.chain.messages import ProxyRequest, ProxyResponse, local_error
from bnproxy.binance.privacy import is_private

_log = Logger(namespace="bnproxy.upstream.client")


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory (no cooperator, no global reactor)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer):  # noqa: N802 (Twisted interface)
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


class BodyTooLargeError(Exception):
    pass


class _Collect(Protocol):
    """Collects a response body up to ``limit`` bytes, aborting beyond it."""

    def __init__(self, finished: Deferred, limit: int) -> None:
        self._finished = finished
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._finished.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._finished.errback(BodyTooLargeError(self._size))
            self._abort()
            return
        self._parts.append(data)

    def _abort(self) -> None:
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            stop = getattr(self.transport, "stopProducing", None)
            if stop is not None:
                stop()

    def connectionLost(self, reason: Failure) -> None:  # noqa: N802
        if self._finished.called:
            return
        if reason.check(wclient.ResponseDone, wclient.PotentialDataLoss):
            self._finished.callback(b"".join(self._parts))
        else:
            self._finished.errback(reason)


def read_body(response: IResponse, limit: int) -> Deferred:
    """The whole body; cancelling the Deferred aborts the connection."""
    protocol: _Collect

    def cancel(d: Deferred) -> None:
        protocol._abort()

    d: Deferred = Deferred(cancel)
    protocol = _Collect(d, limit)
    response.deliverBody(protocol)
    return d


@attrs.frozen
class Deadlines:
    """Seconds allowed for each phase of one upstream exchange."""

    connect: float = 5.0
    headers: float = 10.0
    body: float = 30.0


_RETRYABLE = (wclient.ResponseNeverReceived, wclient.RequestTransmissionFailed,
              wclient.RequestNotSent)


class _QuietFactory(wclient._HTTP11ClientFactory):
    noisy = False  # no "Starting factory" line per upstream connection


class _Pool(wclient.HTTPConnectionPool):
    _factory = _QuietFactory


def make_agent(reactor, deadlines: Deadlines, max_per_host: int = 32,
               bind_address: str | None = None) -> IAgent:
    """The production agent: persistent pool, no automatic retries (we decide
    what is retried), TLS verified, connect deadline; connections leave from
    ``bind_address`` when given (an egress address this host owns)."""
    pool = _Pool(reactor, persistent=True)
    pool.maxPersistentPerHost = max_per_host
    pool.cachedConnectionTimeout = 60
    pool.retryAutomatically = False
    return wclient.Agent(reactor, connectTimeout=deadlines.connect, pool=pool,
                         bindAddress=(bind_address, 0) if bind_address else None)


class Upstream:
    """Forwards ``ProxyRequest``s to Binance; always answers, never raises
    (except ``CancelledError`` when the bot went away)."""

    name = "upstream"

    def __init__(self, reactor, markets: Mapping[str, Market], agent: IAgent | None = None,
                 deadlines: Deadlines = Deadlines(), max_body: int = 64 * 1024 * 1024,
                 max_per_host: int = 32, egress_agents: Mapping[str, IAgent] | None = None,
                 egress_of: Callable[[ProxyRequest], str | None] | None = None) -> None:
        self._clock = reactor
        self._markets = markets
        self.deadlines = deadlines
        self._max_body = max_body
        base = agent if agent is not None else make_agent(reactor, deadlines, max_per_host)
        self._agent = wclient.ContentDecoderAgent(base, [(b"gzip", wclient.GzipDecoder)])
        # several egress addresses: one agent (and connection pool) per address,
        # the address of each request named by ``egress_of`` (None: the default agent)
        self._egress_agents = {
            a: wclient.ContentDecoderAgent(g, [(b"gzip", wclient.GzipDecoder)])
            for a, g in (egress_agents or {}).items()}
        self._egress_of = egress_of
        # market -> {"ok": time of the last answer, "error": time, "reason": str}
        self.reachability: dict[str, dict[str, Any]] = {}
        self.observe: Callable[[str, float], None] | None = None  # (market, seconds)

    def url(self, request: ProxyRequest) -> bytes | None:
        market = self._markets.get(request.market)
        if market is None or market.rest_base is None:
            return None
        return market.rest_base.encode("ascii") + request.target

    def __call__(self, request: ProxyRequest) -> Deferred:
        url = self.url(request)
        if url is None:
            return succeed(local_error(
                502, DISCONNECTED,
                f"bnproxy: no upstream is configured for market {request.market}; "
                f"set --upstream {request.market}=URL", detail="no-upstream"))
        retry = request.method in ("GET", "HEAD") and not is_private(request)
        return Deferred.fromCoroutine(self._forward(request, url, retry))

    def _send(self, request: ProxyRequest, url: bytes) -> Deferred:
        headers = Headers()
        for k, v in request_headers(request.headers):
            headers.addRawHeader(k, v)
        headers.setRawHeaders(b"accept-encoding", [b"gzip"])
        body = BytesProducer(request.body) if (
            request.body or request.method in ("POST", "PUT", "PATCH")) else None
        agent = self._agent
        egress = self._egress_of(request) if self._egress_of is not None else None
        if egress is not None:  # an address without an agent fails closed (502), never
            agent = self._egress_agents[egress]  # leaves from another address
        d = agent.request(request.method.encode("ascii"), url, headers, body)
        return d.addTimeout(self.deadlines.headers, self._clock)

    async def _forward(self, request: ProxyRequest, url: bytes, retry: bool) -> ProxyResponse:
        started = self._clock.seconds()
        state = self.reachability.setdefault(request.market, {"ok": None, "error": None,
                                                              "reason": ""})
        for attempt in (1, 2):
            try:
                response = await self._send(request, url)
                body = await read_body(response, self._max_body).addTimeout(
                    self.deadlines.body, self._clock)
            except CancelledError:
                raise
            except Exception:
                failure = Failure()
                if retry and attempt == 1 and failure.check(*_RETRYABLE):
                    _log.debug("retrying public {method} {path} after {error}",
                               method=request.method, path=request.path,
                               error=failure.getErrorMessage())
                    continue
                state["error"], state["reason"] = self._clock.seconds(), \
                    failure.getErrorMessage()[:200]
                return self._failed(request, failure)
            now = self._clock.seconds()
            state["ok"] = now
            if self.observe is not None:
                self.observe(request.market, now - started)
            headers = response_headers(
                (k, v) for k, vs in response.headers.getAllRawHeaders() for v in vs)
            weight = request.endpoint.weight(request.params) if request.endpoint else 1
            return ProxyResponse(response.code, headers, body, "upstream",
                                 str(response.code), weight)
        raise AssertionError("unreachable")

    def _failed(self, request: ProxyRequest, failure: Failure) -> ProxyResponse:
        where = f"upstream {request.market}"
        if failure.check(TimeoutError, ierror.TimeoutError):
            status, code = 504, TIMEOUT
            msg = (f"bnproxy: timeout waiting for {where}; "
                   "send status unknown; execution status unknown.")
        elif failure.check(BodyTooLargeError):
            status, code = 502, DISCONNECTED
            msg = f"bnproxy: response from {where} exceeds {self._max_body} bytes"
        else:
            status, code = 502, DISCONNECTED
            reason = failure.value
            if isinstance(reason, wclient.ResponseFailed | wclient.ResponseNeverReceived):
                reasons = getattr(reason, "reasons", [])
                text = "; ".join(r.getErrorMessage() for r in reasons) or str(reason)
            else:
                text = failure.getErrorMessage()
            msg = f"bnproxy: {where} failed: {text}"
            if request.method not in ("GET", "HEAD"):
                msg += "; execution status unknown."
        _log.warn("{method} {market}{path} -> {status}: {msg}", method=request.method,
                  market=request.market, path=request.path, status=status, msg=msg)
        return local_error(status, code, msg, detail="upstream-error")
