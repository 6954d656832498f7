"""Building the running proxy from a ``ProxyConfig``."""

from __future__ import annotations

import signal
from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.web.resource import IResource

from bnproxy.server.accesslog import open_access_log
from bnproxy.server.admin import AdminGuard
from bnproxy.binance.endpoints import load_endpoints
from bnproxy.binance.markets import build_markets
from bnproxy.chain.compose import as_deferred, compose
from bnproxy.server.clientaddr import ClientResolver, parse_networks
from bnproxy.config.model import ProxyConfig
from bnproxy.chain.context import MiddlewareContext
from bnproxy.server.health import HealthResource
from bnproxy.chain.messages import INTERNAL, ProxyRequest
from bnproxy.server.metrics import LiveResource, Metrics, MetricsResource, ReadyResource
from bnproxy.chain.registry import build_middlewares, discover
from bnproxy.server.forwarding import ForwardingResource, ProxySite, RootResource
from bnproxy.config.reader import ConfigError
from bnproxy.upstream.client import Deadlines, Upstream

_log = Logger(namespace="bnproxy.service")

PING = {"spot": "/api/v3/ping", "usdm": "/fapi/v1/ping", "coinm": "/dapi/v1/ping",
        "options": "/eapi/v1/ping", "pm": "/papi/v1/ping"}
PROBE_EVERY = 15.0
RECENT = 300.0  # a market used within this many seconds is checked by /ready


class ProxyService(MultiService):
    """The proxy: listeners plus any middleware that is a service.

    ``site``, ``handler``, ``middlewares`` and ``upstream`` are exposed for
    tests and embedding. Stopping drains: listeners close first, in-flight
    requests get ``server.drain_timeout`` seconds, then the rest stops
    (stream connections close cleanly, logs flush).
    """

    def __init__(self, reactor, config: ProxyConfig, agent=None) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        try:
            markets = build_markets(config.testnet, config.upstreams, config.stream_upstreams)
            trusted = parse_networks(config.trusted_proxies)
            admin_allow = parse_networks(config.admin_allow)
            resolver = ClientResolver(trusted, config.forwarded_header)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.markets = markets
        self.endpoints = load_endpoints()
        self.metrics = Metrics(max_clients=config.metrics_clients)
        try:
            self.access_log = open_access_log(reactor, config.access_log)
        except OSError as e:
            raise ConfigError(f"access log {config.access_log}: {e.strerror}") from None
        if self.access_log is not None:
            self.access_log.setServiceParent(self)  # first in: stopped last, after the drain
        self.upstream = Upstream(
            reactor, markets, agent=agent,
            deadlines=Deadlines(config.connect_timeout, config.response_timeout,
                                config.body_timeout),
            max_per_host=config.max_connections_per_host)
        self.upstream.observe = lambda market, s: self.metrics.upstream_latency.labels(
            market).observe(s)
        admin: dict[str, IResource] = {}

        def add_admin(name: str, resource: IResource) -> None:
            if name in admin or name in ("health", "metrics", "live", "ready"):
                raise ConfigError(f"admin resource /{name} is mounted twice")
            admin[name] = resource

        chain_ref: list[Any] = []
        context = MiddlewareContext(
            reactor=reactor, upstream=self.upstream,
            chain=lambda request: as_deferred(chain_ref[0](request)),
            endpoints=self.endpoints, markets=markets, add_admin=add_admin,
            state_dir=config.state_dir, log_format=config.log_format,
            metrics=self.metrics.registry, access_log=self.access_log)
        self.context = context
        self.middlewares = build_middlewares(config.middleware, discover(), context)
        self.handler = compose(self.middlewares, self.upstream)
        chain_ref.append(self.handler)

        self.forward = ForwardingResource(self.handler, markets, self.endpoints, reactor,
                                          resolver, self.metrics.answered)
        self.metrics.watch(lambda: [*self.middlewares, self])
        self.metrics.watch_upstream(self.upstream)
        root = RootResource(self.forward)
        self.health = HealthResource(reactor, markets, self.middlewares,
                                     clients=self.metrics.clients)
        root.putChild(b"health", AdminGuard(self.health, admin_allow, resolver))
        root.putChild(b"metrics", AdminGuard(MetricsResource(self.metrics.registry),
                                             admin_allow, resolver))
        root.putChild(b"live", LiveResource())
        root.putChild(b"ready", ReadyResource(self.readiness))
        for name, resource in admin.items():
            root.putChild(name.encode("ascii"), AdminGuard(resource, admin_allow, resolver))
        self.site = ProxySite(root, config.server, reactor=reactor)
        self.site.displayTracebacks = False

        for middleware in self.middlewares:
            if IService.providedBy(middleware):
                middleware.setServiceParent(self)
        self.listeners: list[StreamServerEndpointService] = []
        for description in config.listen:
            try:
                endpoint = serverFromString(reactor, description)
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise ConfigError(f"listen {description!r}: {e}") from None
            listener = StreamServerEndpointService(endpoint, self.site)
            listener._raiseSynchronously = True  # as strports.service: a bind error stops start-up
            listener.setServiceParent(self)
            self.listeners.append(listener)
        self.draining = False
        self._probe = task.LoopingCall(self._probe_upstreams)
        self._probe.clock = reactor

    # -- readiness ----------------------------------------------------------------------
    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._probe.start(PROBE_EVERY, now=True)

    def _checked_markets(self) -> list[str]:
        now = self.reactor.seconds()
        used = [m for m, s in self.upstream.reachability.items()
                if max(s["ok"] or 0, s["error"] or 0) > now - RECENT]
        return sorted(set(used) | {"spot"}) if self.markets["spot"].rest_base else used

    def _probe_upstreams(self) -> None:
        for market in self._checked_markets():
            request = ProxyRequest("GET", market, PING[market], b"", ((INTERNAL, b"ready"),),
                                   b"", "bnproxy", self.reactor.seconds(),
                                   self.endpoints.lookup(market, "GET", PING[market]))
            as_deferred(self.handler(request)).addErrback(lambda f: None)

    def readiness(self) -> list[str]:
        problems = []
        if self.draining:
            problems.append("draining")
        for market in self._checked_markets():
            state = self.upstream.reachability.get(market) or {"ok": None, "error": None}
            if state["error"] is not None and (state["ok"] is None
                                               or state["error"] > state["ok"]):
                problems.append(f"upstream {market} unreachable: {state['reason']}")
            elif state["ok"] is None:
                problems.append(f"upstream {market} not reached yet")
        for m in self.middlewares:
            banned = getattr(m, "bans_in_force", None)
            if callable(banned):
                problems += [f"Binance ban in force for {pool} ({s:.0f} s left)"
                             for pool, s in banned().items()]
            managers = getattr(m, "managers", None)
            if isinstance(managers, dict):
                problems += [f"stream manager {name} not running"
                             for name, mgr in managers.items() if not mgr.running]
        return problems

    def collect_metrics(self):
        from prometheus_client.core import GaugeMetricFamily
        self.metrics.inflight.set(self.forward.inflight)
        g = GaugeMetricFamily("bnproxy_upstream_reachable",
                              "1 if the last exchange with the upstream succeeded.",
                              labels=["market"])
        for market, s in self.upstream.reachability.items():
            down = s["error"] is not None and (s["ok"] is None or s["error"] > s["ok"])
            g.add_metric([market], 0.0 if down else 1.0)
        yield g

    # -- draining -----------------------------------------------------------------------
    def stopService(self) -> Deferred:  # noqa: N802
        Service.stopService(self)
        self.draining = True
        if self._probe.running:
            self._probe.stop()
        return Deferred.fromCoroutine(self._drain())

    async def _drain(self) -> None:
        await gatherResults([maybeDeferred(s.stopService) for s in self.listeners])
        deadline = self.reactor.seconds() + self.config.server.drain_timeout
        if self.forward.inflight:
            _log.info("draining {n} request(s), at most {s:.0f} s",
                      n=self.forward.inflight, s=self.config.server.drain_timeout)
        while self.forward.inflight and self.reactor.seconds() < deadline:
            await task.deferLater(self.reactor, 0.05, lambda: None)
        if self.forward.inflight:
            _log.warn("drain deadline reached with {n} request(s) unfinished",
                      n=self.forward.inflight)
        rest = [s for s in reversed(list(self)) if s not in self.listeners and s.running]
        try:
            await gatherResults([maybeDeferred(s.stopService) for s in rest],
                                consumeErrors=True)
        except Exception:
            _log.failure("a service failed to stop cleanly")
        if not self.forward.inflight and getattr(self.reactor, "_exitSignal", None) == \
                signal.SIGTERM:
            # A drained SIGTERM is a clean stop: exit 0 (twistd would otherwise
            # re-raise the signal to report it as the cause of death).
            self.reactor._exitSignal = None
