"""The terminal of the chain: forwards a request to its market's host.

Hygiene (each was a real leak or hang in other proxies): no redirects are
followed and no cookie jar exists; headers cross through allowlists; the URL
is the market's base plus the raw path and query, never the client's Host or
an absolute-form target; every wait has a deadline.

A deadline means 504 -1007 ("execution status unknown"), once: nothing that
timed out is retried. Only an idempotent public GET (or HEAD) is ever sent
again, once, within the same response-header deadline, and only when its
connection failed before the request was written, or when a reused pooled
connection closed before any byte of the response arrived (the upstream's
idle-timeout race, RFC 9110 §9.2.2; see ``bnproxy.upstream.http11``); the
retry goes out on a fresh connection and is counted in
``bnproxy_upstream_retries_total{market,reason}``. A signed or keyed request,
or any other method, is never retried. A request that provably never left
(DNS failure, refused or unfinished connect) answers 502 saying it was not
sent.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs
from prometheus_client import CollectorRegistry, Counter
from twisted.internet import error as ierror
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import client as wclient
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IBodyProducer, IResponse
from zope.interface import implementer

from bnproxy.binance.errors import DISCONNECTED, TIMEOUT
from bnproxy.binance.markets import Market
from bnproxy.binance.privacy import is_private
from bnproxy.chain.messages import ProxyRequest, ProxyResponse, local_error
from bnproxy.upstream.headers import request_headers, response_headers
from bnproxy.upstream.http11 import (
    POOL_IDLE_LIMIT,
    BodyTooLargeError,
    HostPool,
    Listener,
    StaleConnectionError,
    UpstreamResponse,
)

_log = Logger(namespace="bnproxy.upstream.client")


@implementer(IBodyProducer)
class BytesProducer:
    """A request body already in memory (no cooperator, no global reactor)."""

    def __init__(self, body: bytes) -> None:
        self._body = body
        self.length = len(body)

    def startProducing(self, consumer):
        consumer.write(self._body)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class _Collect(Protocol):
    """Collects a response body up to ``limit`` bytes, aborting beyond it."""

    def __init__(self, finished: Deferred, limit: int) -> None:
        self._finished = finished
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def dataReceived(self, data: bytes) -> None:
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

    def connectionLost(self, reason: Failure = connectionDone) -> None:
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


# Failures that prove the request never left: nothing reached Binance.
_NOT_CONNECTED = (ierror.ConnectError, ierror.DNSLookupError, ierror.ConnectingCancelledError)
# Failures of a connection before the request was written (a stale pooled
# connection): an idempotent public GET may be sent again, once.
_NOT_WRITTEN = (wclient.RequestNotSent, wclient.RequestTransmissionFailed)
_REPR = re.compile(r"<[^<>]* object at 0x[0-9a-fA-F]+>")


def _reasons(failure: Failure) -> list[Failure]:
    """The failures inside twisted.web's wrappers (``ResponseNeverReceived``,
    ``RequestTransmissionFailed``, ``StaleConnectionError``...), or the failure
    itself."""
    inner = getattr(failure.value, "reasons", None)
    if not inner:
        return [failure]
    return [r for f in inner for r in _reasons(f)]


def never_sent(failure: Failure) -> bool:
    """True when the failure proves no byte of the request reached the host:
    no connection was made (DNS, refused, connect timeout) or the pooled
    connection was found dead before the request was written."""
    return all(r.check(*_NOT_CONNECTED, wclient.RequestNotSent) for r in _reasons(failure))


def retryable(failure: Failure) -> str | None:
    """Why an idempotent public GET may be sent once more after ``failure``,
    or None: ``"stale-connection"`` when a reused pooled connection closed
    before any response byte, ``"not-written"`` when a connection failed
    before the request was written. A fresh connect that failed (DNS,
    refused) is not retried: it would fail again at once."""
    if failure.check(StaleConnectionError):
        return "stale-connection"
    if failure.check(*_NOT_CONNECTED):
        return None
    if failure.check(*_NOT_WRITTEN) or never_sent(failure):
        return "not-written"
    return None


def cause(failure: Failure) -> str:
    """A short cause for logs and answers: names, not object reprs."""
    parts = []
    for r in _reasons(failure):
        if r.check(ierror.DNSLookupError):
            parts.append("DNS lookup failed")
        elif r.check(ierror.ConnectionRefusedError):
            parts.append("connection refused")
        elif r.check(ierror.TimeoutError):
            parts.append("connect timed out")
        elif r.check(ierror.ConnectingCancelledError):
            parts.append("connect not completed")
        else:
            text = _REPR.sub("", r.getErrorMessage()).strip(" :") or type(r.value).__name__
            parts.append(f"{type(r.value).__name__}: {text}")
    return "; ".join(parts)[:300]


class LeanClient:
    """The production client: one :class:`HostPool` per upstream base URL
    (made on first use, for this egress address), requests written from
    precomputed parts (``bnproxy.upstream.http11``)."""

    def __init__(self, reactor, deadlines: Deadlines, max_per_host: int = 32,
                 tls_policy=None, bind_address: str | None = None,
                 idle_limit: float = POOL_IDLE_LIMIT, endpoint_factory=None) -> None:
        self._reactor = reactor
        self._deadlines = deadlines
        self._max_per_host = max_per_host
        self._tls_policy = tls_policy
        self._bind = bind_address
        self._idle_limit = idle_limit
        self._endpoints = endpoint_factory
        self._pools: dict[str, HostPool] = {}
        self._pool = self  # twisted.web Agent's name: ``agent._pool.closeCachedConnections()``

    def pool(self, base: str) -> HostPool:
        pool = self._pools.get(base)
        if pool is None:
            endpoint = (self._endpoints.endpointForURI(wclient.URI.fromBytes(base.encode()))
                        if self._endpoints is not None else None)
            pool = self._pools[base] = HostPool(
                self._reactor, base, tls_policy=self._tls_policy,
                connect_timeout=self._deadlines.connect, bind_address=self._bind,
                max_idle=self._max_per_host, idle_limit=self._idle_limit, endpoint=endpoint)
        return pool

    def start(self, base: str, method: bytes, target: bytes,
              headers: Sequence[tuple[bytes, bytes]], body: bytes | None, limit: int,
              listener: Listener) -> Any:
        """Send a request; ``listener`` hears the answer (``HostPool.start``).
        Returns a handle whose ``abort()`` gives the exchange up."""
        pool = self._pools.get(base) or self.pool(base)
        return pool.start(method, target, headers, body, limit, listener)

    def send(self, base: str, method: bytes, target: bytes,
             headers: Sequence[tuple[bytes, bytes]], body: bytes | None,
             limit: int) -> Deferred:
        """:meth:`start` with Deferreds (an ``UpstreamResponse``)."""
        return self.pool(base).request(method, target, headers, body, limit)

    def closeCachedConnections(self) -> Deferred:
        for pool in self._pools.values():
            pool.close()
        return succeed(None)


class AgentClient:
    """Any ``IAgent`` (tests' scripted agents, a custom one) behind the same
    ``send`` as :class:`LeanClient`; gzip decoded by twisted.web."""

    def __init__(self, agent: IAgent) -> None:
        self._agent = wclient.ContentDecoderAgent(agent, [(b"gzip", wclient.GzipDecoder)])

    def send(self, base: str, method: bytes, target: bytes,
             headers: Sequence[tuple[bytes, bytes]], body: bytes | None,
             limit: int) -> Deferred:
        h = Headers()
        for k, v in headers:
            h.addRawHeader(k, v)
        h.setRawHeaders(b"accept-encoding", [b"gzip"])
        d = self._agent.request(method, base.encode("ascii") + target, h,
                                BytesProducer(body) if body is not None else None)
        return d.addCallback(lambda r: UpstreamResponse(
            r.code, [(k, v) for k, vs in r.headers.getAllRawHeaders() for v in vs],
            read_body(r, limit)))

    def start(self, base: str, method: bytes, target: bytes,
              headers: Sequence[tuple[bytes, bytes]], body: bytes | None, limit: int,
              listener: Listener) -> Any:
        """:meth:`send`, heard by ``listener`` as ``LeanClient.start``."""
        return _AgentExchange(self.send(base, method, target, headers, body, limit), listener)


class _AgentExchange:
    """An exchange of :class:`AgentClient` told to a ``Listener``; ``abort``
    cancels the Deferred waited on."""

    def __init__(self, response: Deferred, listener: Listener) -> None:
        self._listener = listener
        self._waiting = response
        response.addCallbacks(self._head, listener.failed)

    def _head(self, response: UpstreamResponse) -> None:
        self._listener.head(response.code, response.headers)
        self._waiting = response.body
        response.body.addCallbacks(self._listener.done, self._listener.failed)

    def abort(self) -> None:
        self._waiting.cancel()


def make_agent(reactor, deadlines: Deadlines, max_per_host: int = 32,
               tls_policy=None, extra_ca=None, bind_address: str | None = None,
               idle_limit: float = POOL_IDLE_LIMIT, endpoint_factory=None) -> LeanClient:
    """The production client: persistent pools (idle connections retired
    after ``idle_limit`` seconds; retries decided by ``Upstream``), TLS
    verified, connect deadline; connections leave from ``bind_address`` when
    given (an egress address this host owns).

    TLS trust: ``tls_policy`` (an ``IPolicyForHTTPS``), else
    ``bnproxy.upstream.tls.upstream_tls_policy(extra_ca)``: the platform store
    (``SSL_CERT_FILE``/``SSL_CERT_DIR``) plus the CA file(s) ``extra_ca``.
    ``endpoint_factory`` (an ``IAgentEndpointFactory``) replaces the TCP/TLS
    endpoints, for tests over in-memory connections."""
    if tls_policy is None and endpoint_factory is None:
        from bnproxy.upstream.tls import upstream_tls_policy

        tls_policy = upstream_tls_policy(extra_ca)
    return LeanClient(reactor, deadlines, max_per_host, tls_policy, bind_address, idle_limit,
                      endpoint_factory)


def _client(agent: Any) -> Any:
    return agent if isinstance(agent, LeanClient) else AgentClient(agent)


_METHODS = {m: m.encode("ascii") for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")}
_STATUS = {code: str(code) for code in range(100, 600)}


def _new_state() -> dict[str, Any]:
    return {"ok": None, "error": None, "reason": "", "failures": 0}


class _Timer:
    """The deadlines of every exchange in flight on one reactor timer.

    A timer per exchange and phase (set, then cancelled: twisted's reactor
    heaps and sweeps each) was most of an exchange's cost in timers; here an
    exchange notes its deadline in a dict, and one timer, set for the
    earliest deadline, expires what is due when it runs and sets itself for
    the next. Requests in a row each leave it as it is: a later request's
    deadline comes after the one it is set for."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._due: dict[Any, float] = {}  # exchange -> when it expires (``expire()``)
        self._call: Any = None
        self._at = float("inf")

    def set(self, item: Any, when: float) -> None:
        self._due[item] = when
        if when < self._at:
            if self._call is not None and self._call.active():
                self._call.cancel()
            self._at = when
            self._call = self._clock.callLater(max(0.0, when - self._clock.seconds()),
                                               self._run)

    def clear(self, item: Any) -> None:
        self._due.pop(item, None)

    def _run(self) -> None:
        self._call, self._at = None, float("inf")
        now = self._clock.seconds()
        due = [item for item, when in self._due.items() if when <= now]
        for item in due:
            del self._due[item]
        for item in due:
            try:
                item.expire()
            except Exception:  # never leave the other deadlines without their timer
                _log.failure("expiring an upstream exchange")
        if self._due and self._call is None:
            when = min(self._due.values())
            self._at = when
            self._call = self._clock.callLater(max(0.0, when - now), self._run)

    def stop(self) -> None:
        """Cancel the timer (the exchanges' deadlines are forgotten)."""
        self._due.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call, self._at = None, float("inf")


class _Forward:
    """One forwarded request: up to two attempts (``Upstream._gave_up``
    decides), each heard as a ``Listener``, within the deadlines: the
    response head within ``deadlines.headers`` of the start (one deadline
    for both attempts), the body within ``deadlines.body`` of the head.
    ``answer`` fires with the ProxyResponse; cancelling it (the bot went
    away) gives the exchange up."""

    __slots__ = ("answer", "attempt", "base", "code", "deadline", "expired", "gone", "handle",
                 "headers", "live", "request", "started", "upstream")

    def __init__(self, upstream: Upstream, request: ProxyRequest, base: str) -> None:
        self.upstream = upstream
        self.request = request
        self.base = base
        self.answer: Deferred = Deferred(self._cancelled)
        self.started = now = upstream._clock.seconds()
        self.deadline = now + upstream.deadlines.headers  # one deadline for every attempt
        self.expired: str | None = None
        self.code = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.attempt = 0
        self.live = 0  # the attempt under way (0: none)
        self.gone = False
        self.handle: Any = None
        self._send()

    def _send(self) -> None:
        self.attempt += 1
        self.live = attempt = self.attempt
        self.upstream._timer.set(self, self.deadline)
        try:
            handle = self.upstream._start(self)
        except Exception:  # e.g. an egress address without a client: a 502
            self.failed(Failure())
            return
        if self.live == attempt:  # not over at once (answered, failed or retried)
            self.handle = handle

    # Listener

    def head(self, code: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.code, self.headers = code, headers
        self.upstream._timer.set(self, self.upstream._clock.seconds()
                                 + self.upstream.deadlines.body)

    def done(self, body: bytes) -> None:
        self.handle, self.live = None, 0
        self.upstream._timer.clear(self)
        if not self.answer.called:
            self.answer.callback(self.upstream._succeeded(self, self.code, self.headers, body))

    def failed(self, failure: Failure) -> None:
        self.handle, self.live = None, 0
        self.upstream._timer.clear(self)
        if self.gone or self.answer.called:
            return  # the bot went away
        self.code = 0
        try:
            answer = self.upstream._gave_up(self, failure)
        except Exception:
            self.answer.errback()
            return
        if answer is None:
            self._send()
        else:
            self.answer.callback(answer)

    def expire(self) -> None:
        """The deadline of the current phase ran out: give the exchange up."""
        self.expired = "body" if self.code else "headers"
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.abort()  # the listener hears the failure
        elif self.live:  # (an exchange always has its handle; never left waiting)
            self.failed(Failure(CancelledError()))

    def _cancelled(self, d: Deferred) -> None:
        self.gone = True
        self.upstream._timer.clear(self)
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.abort()


class Upstream:
    """Forwards ``ProxyRequest``s to Binance; always answers, never raises
    (except ``CancelledError`` when the bot went away). ``agent`` (and each
    of ``egress_agents``) is ``make_agent``'s client, or any ``IAgent``."""

    name = "upstream"

    def __init__(self, reactor, markets: Mapping[str, Market],
                 agent: LeanClient | IAgent | None = None,
                 deadlines: Deadlines = Deadlines(), max_body: int = 64 * 1024 * 1024,
                 max_per_host: int = 32,
                 egress_agents: Mapping[str, LeanClient | IAgent] | None = None,
                 egress_of: Callable[[ProxyRequest], str | None] | None = None,
                 metrics: CollectorRegistry | None = None) -> None:
        self._clock = reactor
        self._markets = markets
        self.deadlines = deadlines
        self._timer = _Timer(reactor)
        self._max_body = max_body
        self._agent = _client(agent if agent is not None
                              else make_agent(reactor, deadlines, max_per_host))
        # several egress addresses: one client (and connection pools) per address,
        # the address of each request named by ``egress_of`` (None: the default one)
        self._egress_agents = {a: _client(g) for a, g in (egress_agents or {}).items()}
        self._egress_of = egress_of
        # market -> {"ok": time of the last answer, "error": time, "reason": str}
        self.reachability: dict[str, dict[str, Any]] = {}
        self.observe: Callable[[str, float], None] | None = None  # (market, seconds)
        # per market, exported on /metrics: weight of the requests Binance
        # answered, and connections that could not be made
        self.weight_spent: dict[str, int] = defaultdict(int)
        self.connect_failures: dict[str, int] = defaultdict(int)
        self.retries = Counter(
            "bnproxy_upstream_retries",
            "Idempotent public requests sent upstream a second time, by why: "
            "stale-connection (a reused connection closed before any response byte), "
            "not-written (a connection failed before the request was written).",
            ["market", "reason"], registry=metrics)

    def __call__(self, request: ProxyRequest) -> Deferred:
        market = self._markets.get(request.market)
        url = None if market is None else market.rest_base
        if url is None:
            return succeed(local_error(
                502, DISCONNECTED,
                f"bnproxy: no upstream is configured for market {request.market}; "
                f"set --upstream {request.market}=URL", detail="no-upstream"))
        if request.market not in self.reachability:
            self.reachability[request.market] = _new_state()
        return _Forward(self, request, url).answer

    def _start(self, forward: _Forward) -> Any:
        """Send ``forward``'s request (an attempt); the handle of the exchange."""
        request = forward.request
        body = request.body if (
            request.body or request.method in ("POST", "PUT", "PATCH")) else None
        agent = self._agent
        egress = self._egress_of(request) if self._egress_of is not None else None
        if egress is not None:  # an address without an agent fails closed (502), never
            agent = self._egress_agents[egress]  # leaves from another address
        method = request.method
        return agent.start(forward.base, _METHODS.get(method) or method.encode("ascii"),
                           request.target, request_headers(request.headers), body,
                           self._max_body, forward)

    def _host(self, request: ProxyRequest) -> str:
        market = self._markets.get(request.market)
        base = market.rest_base if market is not None else None
        return (urlsplit(base).netloc if base else "") or "?"

    def _succeeded(self, forward: _Forward, code: int,
                   headers: list[tuple[bytes, bytes]], body: bytes) -> ProxyResponse:
        request = forward.request
        now = self._clock.seconds()
        state = self.reachability[request.market]
        state["ok"], state["failures"] = now, 0
        if self.observe is not None:
            self.observe(request.market, now - forward.started)
        weight = request.weight
        self.weight_spent[request.market] += weight
        return ProxyResponse(code, response_headers(headers), body, "upstream",
                             _STATUS.get(code) or str(code), weight)

    def _gave_up(self, forward: _Forward, failure: Failure) -> ProxyResponse | None:
        """After a failed attempt: None when it is sent again (a retry), else
        the answer to the bot."""
        request = forward.request
        expired = forward.expired
        # Only an idempotent public request is sent again (decided here, on a
        # failure: not for every request).
        why = retryable(failure) if forward.attempt == 1 and expired is None \
            and request.method in ("GET", "HEAD") and not is_private(request) else None
        if why is not None and self._clock.seconds() < forward.deadline:
            _log.info("retrying public {method} {market}{path} on {host}: {cause}",
                      method=request.method, market=request.market, path=request.path,
                      host=self._host(request), cause=cause(failure))
            self.retries.labels(request.market, why).inc()
            return None
        if all(r.check(*_NOT_CONNECTED) for r in _reasons(failure)):  # a failed connect
            self.connect_failures[request.market] += 1
        state = self.reachability[request.market]
        state["error"], state["reason"] = self._clock.seconds(), cause(failure)[:200]
        state["failures"] = state.get("failures", 0) + 1  # in a row
        return self._failed(request, failure, expired)

    def _failed(self, request: ProxyRequest, failure: Failure,
                expired: str | None) -> ProxyResponse:
        where = f"upstream {request.market} ({self._host(request)})"
        why = cause(failure)
        if never_sent(failure):
            # Provably not sent (also when the deadline ran out while connecting).
            status, code = 502, DISCONNECTED
            msg = f"bnproxy: could not reach {where}: {why}; the request was not sent."
        elif expired is not None:
            status, code = 504, TIMEOUT
            what = "response headers" if expired == "headers" else "the response body"
            msg = (f"bnproxy: timeout waiting for {what} from {where}; "
                   "send status unknown; execution status unknown.")
        elif failure.check(BodyTooLargeError):
            status, code = 502, DISCONNECTED
            msg = f"bnproxy: response from {where} exceeds {self._max_body} bytes"
        else:
            status, code = 502, DISCONNECTED
            msg = f"bnproxy: {where} failed: {why}"
            if request.method not in ("GET", "HEAD"):
                msg += "; execution status unknown."
        _log.warn("{method} {market}{path} -> {status}: {msg}", method=request.method,
                  market=request.market, path=request.path, status=status, msg=msg)
        return local_error(status, code, msg, detail="upstream-error")
