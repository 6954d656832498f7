"""What a middleware factory gets to build with."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs
from prometheus_client import CollectorRegistry
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web.iweb import IPolicyForHTTPS
from twisted.web.resource import IResource
from zope.interface import Interface

from bnproxy.binance.endpoints import EndpointTable
from bnproxy.binance.markets import Market
from bnproxy.binance.privacy import AcceptedKeys
from bnproxy.chain.interfaces import IAccessLog, IMiddleware, ISharedState
from bnproxy.chain.messages import ProxyRequest, ProxyResponse

#: A way to Binance: a request in, a Deferred answer out (``upstream``, the
#: chain's terminal, and ``chain``, the whole chain).
Send = Callable[[ProxyRequest], "Deferred[ProxyResponse]"]


@attrs.frozen
class MiddlewareContext:
    """Shared pieces a middleware may use.

    - ``reactor``: the reactor (also the clock: ``callLater``, ``seconds``;
      the running reactor also provides ``IReactorTCP`` and
      ``IReactorSSL`` for a middleware that connects);
    - ``upstream``: the terminal of the chain, a callable
      ``ProxyRequest -> Deferred[ProxyResponse]`` that reaches Binance
      directly (bypassing the chain: use it only for what must not be
      governed; prefer ``chain``);
    - ``chain``: a callable that sends a request through the whole chain
      (resolved lazily, after the chain is composed), returning a
      ``Deferred[ProxyResponse]``, for background fetches that must be cached
      and rate-limited like bot traffic;
    - ``endpoints``, ``markets``: the Binance tables;
    - ``add_admin(name, resource)``: mount an admin resource at ``/NAME``,
      behind the admin allowlist;
    - ``state_dir``: a directory for small state files;
    - ``log_format``: ``text`` or ``json`` (``--log-format``);
    - ``log``: a ``twisted.logger.Logger``;
    - ``streams``: the stream managers by market (empty until the streams
      middleware is in the chain);
    - ``metrics``: the ``prometheus_client`` registry;
    - ``find(interface)``: the middleware of the chain that provides a
      capability (``context.find(IWeightGovernor)``), or None: call it when
      handling, not while building (a later middleware is not built yet);
    - ``lookup(name)``: the middleware configured under ``name``, or None
      (prefer ``find``: a capability, not a name);
    - ``tls_policy``: the ``IPolicyForHTTPS`` every upstream https/wss
      connection uses (platform trust plus ``--upstream-ca``);
    - ``shared_state``: the ``ISharedState`` shared by instances
      (``--shared-state``), or None when everything is in-process;
    - ``egresses``: the source addresses requests may leave from
      (``--egress``), empty for the host's default;
    - ``access_log``: where access lines go, an ``IAccessLog`` (``write(line:
      bytes)``), or None when the access log is off (``--access-log none``);
    - ``accepted_keys``: the API keys Binance accepted (salted hashes, in
      memory), shared by the cache and the streams (``binance.privacy``).
    """

    reactor: IReactorTime
    upstream: Send
    chain: Send
    endpoints: EndpointTable
    markets: Mapping[str, Market]
    add_admin: Callable[[str, IResource], None]
    state_dir: str
    log_format: str = "text"
    log: Logger = attrs.field(factory=Logger)
    streams: dict[str, object] = attrs.field(factory=dict)
    metrics: CollectorRegistry | None = None
    shared_state: ISharedState | None = None
    tls_policy: IPolicyForHTTPS | None = None
    built: dict[str, IMiddleware] = attrs.field(factory=dict)
    access_log: IAccessLog | None = None
    egresses: tuple[str, ...] = ()
    accepted_keys: AcceptedKeys = attrs.field(factory=AcceptedKeys)

    def lookup(self, name: str) -> Any:
        """The middleware configured under ``name``, or None."""
        return self.built.get(name)

    def find(self, interface: type[Interface]) -> Any:
        """The first middleware of the chain that provides ``interface``
        (``IWeightGovernor``, ``IHealthReporter``, a plugin's own), or None."""
        for middleware in self.built.values():
            if interface.providedBy(middleware):
                return middleware
        return None
