"""The pace of new upstream stream connections: Binance allows 300 new
connections per 5 minutes per IP (``bnproxy.binance.streams``). Each egress
address may open at most ``CONNECTIONS_PER_MINUTE`` a minute, counted in the
shared state when there is one (every instance and worker behind the address
together: ``--workers N`` needs ``--shared-state``, and each worker reserves
in the same counter, atomically), else in this process. A connection over
the pace waits for the next minute; reconnects after a drop are paced the
same way. Fixed one-minute windows of ``CONNECTIONS_PER_MINUTE`` (50) keep
every 5-minute span, aligned or not (it touches at most 6 windows), within
Binance's 300.

``stream_endpoint`` is a paced endpoint for one upstream websocket URL (the
user-data relay's: one connection per bot, counted like the others). The
relay's connections take a slot only while the minute's count is under
``USER_DATA_LIMIT`` and never wait for the next minute (``PaceFullError``): bots
reconnecting their user-data streams in a loop can neither hold back the
market data's own reconnects (``RESERVED_FOR_MARKET_DATA`` slots a minute
stay theirs) nor queue past the relay's deadline."""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import endpoints
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer

from bnproxy.binance.streams import CONNECTIONS_PER_MINUTE
from bnproxy.chain.interfaces import PaceFullError

POOL = "ws-connections"  # the shared state's pool name for the count
RESERVED_FOR_MARKET_DATA = 10  # slots a minute user-data connections may not take
USER_DATA_LIMIT = CONNECTIONS_PER_MINUTE - RESERVED_FOR_MARKET_DATA


class ConnectPace:
    """``acquire(egress)`` fires once a new connection from ``egress`` (None:
    the host's default) fits this minute's count; cancelling it stops waiting."""

    def __init__(self, clock, shared: Any = None, per_minute: int = CONNECTIONS_PER_MINUTE):
        self._clock = clock
        self._shared = shared
        self.per_minute = per_minute
        self._local: Counter[tuple[str, int]] = Counter()
        self.waited = 0

    def acquire(self, egress: str | None, limit: int | None = None,
                wait: bool = True) -> Deferred:
        """``limit``: the minute's count this connection may bring it up to
        (default ``per_minute``); ``wait=False``: fail with ``PaceFullError``
        instead of waiting for the next minute."""
        label = egress or "default"
        most = self.per_minute if limit is None else min(limit, self.per_minute)
        timer: list[Any] = []

        def cancel(_: Deferred) -> None:
            if timer and timer[0].active():
                timer[0].cancel()
        d: Deferred = Deferred(cancel)

        def attempt() -> None:
            timer.clear()
            minute = int(self._clock.seconds() // 60) * 60
            taken = self._take(label, minute, most)
            taken.addCallback(decided, minute)
            taken.addErrback(lambda _: decided(False, minute))

        def decided(ok: bool, minute: int) -> None:
            if d.called:
                return
            if ok:
                d.callback(None)
                return
            if not wait:
                d.errback(PaceFullError(minute + 60 - self._clock.seconds()))
                return
            self.waited += 1
            timer.append(self._clock.callLater(max(0.0, minute + 60 - self._clock.seconds())
                                               + 0.01, attempt))
        attempt()
        return d

    def endpoint(self, endpoint: IStreamClientEndpoint, egress: str | None,
                 limit: int | None = None, wait: bool = True) -> PacedEndpoint:
        """``endpoint``, its connections paced for ``egress`` (``limit`` and
        ``wait`` as ``acquire``'s)."""
        return PacedEndpoint(endpoint, self, egress, limit, wait)

    def _take(self, label: str, minute: int, limit: int) -> Deferred:
        if self._shared is not None:
            return maybeDeferred(self._shared.reserve, label, POOL, 1, limit, minute)
        key = (label, minute)
        for old in [k for k in self._local if k[1] < minute]:
            del self._local[old]
        if self._local[key] >= limit:
            return maybeDeferred(lambda: False)
        self._local[key] += 1
        return maybeDeferred(lambda: True)


@implementer(IStreamClientEndpoint)
class PacedEndpoint:
    """An endpoint whose every ``connect`` waits for the pace first."""

    def __init__(self, endpoint: IStreamClientEndpoint, pace: ConnectPace,
                 egress: str | None, limit: int | None = None, wait: bool = True) -> None:
        self._endpoint = endpoint
        self._pace = pace
        self._egress = egress
        self._limit = limit
        self._wait = wait

    def connect(self, protocolFactory: Any) -> Deferred:
        return self._pace.acquire(self._egress, self._limit, self._wait).addCallback(
            lambda _: self._endpoint.connect(protocolFactory))


def stream_endpoint(reactor: Any, url: str, egress: str | None, tls_policy: Any,
                    pace: ConnectPace | None, user_data: bool = False) -> IStreamClientEndpoint:
    """The endpoint of upstream websocket ``url`` (``ws``/``wss``): from
    ``egress`` (None: the host's default), TLS with ``tls_policy`` (an
    ``IPolicyForHTTPS``) for ``wss``, its connections paced by ``pace``
    (``user_data``: within ``USER_DATA_LIMIT``, never waiting)."""
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    host = parts.hostname or ""
    endpoint: IStreamClientEndpoint = endpoints.HostnameEndpoint(
        reactor, host, port, timeout=10, bindAddress=(egress, 0) if egress else None)
    if secure:
        endpoint = endpoints.wrapClientTLS(
            tls_policy.creatorForNetloc(host.encode("idna"), port), endpoint)
    if pace is None:
        return endpoint
    if user_data:
        return pace.endpoint(endpoint, egress, USER_DATA_LIMIT, wait=False)
    return pace.endpoint(endpoint, egress)
