"""The upstream connection pool: keep-alive without the idle-timeout race.

An upstream closes a keep-alive connection it has seen idle for its idle
timeout. If the proxy writes a request on that connection as the close is
in flight, the request is lost: nothing comes back (RFC 9110 §9.2.2 allows an
idempotent request to be retried automatically then). Three rules keep this
rare and harmless:

- A connection idle for ``POOL_IDLE_LIMIT`` seconds is closed, never reused:
  Binance does not publish the idle timeout of its front ends; common front
  ends close idle client connections after 60 s (AWS load balancers' default)
  or 75 s (nginx's). 20 s keeps a margin of at least 40 s to the smallest of
  these, which also covers a reactor that runs a timer late; a fleet that
  polls at all keeps its connections warm well within 20 s. The limit is
  checked when a connection is taken, not only by its timer.
- The most recently used idle connection is taken first; the older ones age
  out instead of being kept just alive.
- A reused connection that fails before any byte of the response arrived
  fails with :class:`StaleConnectionError`, and every other idle connection to
  that host (all idle for longer) is closed with it, so a retry opens a fresh
  connection. The upstream client decides what is retried (only an
  idempotent public request, once, within its deadline).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.python.failure import Failure
from twisted.web import client as wclient
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

POOL_IDLE_LIMIT = 20.0

# Failures of a request on a connection that produced no byte of a response.
_NOTHING_RECEIVED = (wclient.RequestNotSent, wclient.RequestTransmissionFailed,
                     wclient.ResponseNeverReceived)


class StaleConnectionError(Exception):
    """A connection taken from the pool failed before any byte of the
    response arrived: most likely the upstream closed it idle as the request
    was written. ``reasons`` holds the failure twisted.web reported."""

    def __init__(self, failure: Failure) -> None:
        super().__init__("reused connection closed before the response")
        self.reasons = [failure]


@implementer(IAgentEndpointFactory)
class EndpointCache:
    """One endpoint per (scheme, host, port), made on first use and kept:
    twisted.web's Agent otherwise builds a new endpoint for every request
    (the host IDNA-encoded, for https a TLS connection creator). The hosts
    are the configured markets' few; DNS is still resolved at each connect."""

    def __init__(self, factory: Any) -> None:
        self._factory = factory
        self._made: dict[tuple[bytes, bytes, int], Any] = {}

    def endpointForURI(self, uri: Any) -> Any:
        key = (uri.scheme, uri.host, uri.port)
        endpoint = self._made.get(key)
        if endpoint is None:
            endpoint = self._made[key] = self._factory.endpointForURI(uri)
        return endpoint


class _QuietFactory(wclient._HTTP11ClientFactory):
    noisy = False  # no "Starting factory" line per upstream connection


class _Reused:
    """A pooled connection lent for one request: its failures before any
    response byte become :class:`StaleConnectionError`."""

    def __init__(self, connection: Any, pool: UpstreamPool, key: Hashable) -> None:
        self._connection = connection
        self._pool = pool
        self._key = key

    def request(self, request: Any) -> Deferred:
        return self._connection.request(request).addErrback(self._stale)

    def _stale(self, failure: Failure) -> Failure:
        reasons = getattr(failure.value, "reasons", None) or [failure]
        if (failure.check(*_NOTHING_RECEIVED)
                and not any(r.check(CancelledError) for r in reasons)):
            self._pool.close_idle(self._key)
            return Failure(StaleConnectionError(failure))
        return failure

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


class UpstreamPool(wclient.HTTPConnectionPool):
    """twisted.web's persistent pool with the three rules above; no
    automatic retries (the upstream client decides)."""

    _factory = _QuietFactory
    retryAutomatically = False

    def __init__(self, reactor: Any, max_per_host: int = 32,
                 idle_limit: float = POOL_IDLE_LIMIT) -> None:
        super().__init__(reactor, persistent=True)
        self.maxPersistentPerHost = max_per_host
        self.cachedConnectionTimeout = idle_limit  # type: ignore[assignment]  # a float is fine

    def getConnection(self, key: Hashable, endpoint: Any) -> Deferred:
        connections = self._connections.get(key)
        now = self._reactor.seconds()
        while connections:
            connection = connections.pop()  # the most recently used
            timeout = self._timeouts.pop(connection)
            due = timeout.getTime()  # idle since ``due - idle_limit``
            timeout.cancel()
            if connection.state == "QUIESCENT" and now < due:
                return succeed(_Reused(connection, self, key))
            connection.transport.loseConnection()
        return self._newConnection(key, endpoint)

    def close_idle(self, key: Hashable) -> None:
        """Close every idle connection to ``key``."""
        for connection in self._connections.pop(key, []):
            self._timeouts.pop(connection).cancel()
            connection.transport.loseConnection()
