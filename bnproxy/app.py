"""The composition root: everything the proxy is made of, built from a
``ProxyConfig``.

``build_proxy`` builds the parts (markets, upstream, middlewares, chain, site,
admin resources, readiness) for a reactor; ``build_service`` is what
``twistd bnproxy`` runs: the assembled proxy (with the offline fake exchange
when asked) as a service, its listening ports bound before anything starts so
that a port in use is one line and a non-zero exit.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import attrs
from twisted.web.resource import IResource

from bnproxy.binance.endpoints import EndpointTable, load_endpoints
from bnproxy.binance.markets import Market, build_markets
from bnproxy.chain.compose import as_deferred, compose
from bnproxy.chain.context import MiddlewareContext
from bnproxy.chain.guards import ChainGuards
from bnproxy.chain.interfaces import IBotLedger, IHealthReporter, IMetricsSource, IStreamHub
from bnproxy.chain.registry import build_middlewares, discover
from bnproxy.config.model import ProxyConfig
from bnproxy.config.reader import ConfigError
from bnproxy.dashboard.feed import DashboardFeed
from bnproxy.dashboard.resource import mount_dashboard
from bnproxy.readiness import Readiness
from bnproxy.server.accesslog import open_access_log
from bnproxy.server.admin import (
    AdminGuard,
    HealthResource,
    LiveResource,
    MetricsResource,
    ReadyResource,
)
from bnproxy.server.clientaddr import ClientResolver, parse_networks
from bnproxy.server.forwarding import ForwardingResource, RootResource
from bnproxy.server.metrics import Metrics
from bnproxy.server.site import ProxySite
from bnproxy.upstream.client import Deadlines, Upstream, make_agent
from bnproxy.upstream.tls import upstream_tls_policy

if TYPE_CHECKING:
    from bnproxy.service import ProxyService

ADMIN_NAMES = ("health", "metrics", "live", "ready", "dashboard")


@attrs.define
class Proxy:
    """The assembled proxy; ``ProxyService`` runs it."""

    config: ProxyConfig
    reactor: Any
    markets: dict[str, Market]
    endpoints: EndpointTable
    metrics: Metrics
    upstream: Upstream
    context: MiddlewareContext
    middlewares: list[Any]
    handler: Any
    forward: ForwardingResource
    health: HealthResource
    readiness: Readiness
    dashboard: DashboardFeed
    access_log: Any
    site: ProxySite
    shared_state: Any = None
    gateway: Any = None


def check_state_dir(path: str) -> None:
    """The state directory must exist (or be creatable) and be writable now,
    not at the first ban."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"--state-dir {path}: cannot create it: {e.strerror}") from None
    if not os.path.isdir(path):
        raise ConfigError(f"--state-dir {path}: not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"--state-dir {path}: not writable by this user")


def build_proxy(config: ProxyConfig, reactor: Any, agent: Any = None) -> Proxy:
    """Build every part of the proxy for ``reactor``. Raises ConfigError."""
    try:
        markets = build_markets(config.testnet, config.upstreams, config.stream_upstreams)
        resolver = ClientResolver(parse_networks(config.trusted_proxies),
                                  config.forwarded_header)
        admin_allow = parse_networks(config.admin_allow)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    endpoints = load_endpoints()
    metrics = Metrics(max_clients=config.metrics_clients)
    try:
        access_log = open_access_log(reactor, config.access_log)
    except OSError as e:
        raise ConfigError(f"access log {config.access_log}: {e.strerror} "
                          "(--access-log: -, none or a writable file)") from None
    deadlines = Deadlines(config.connect_timeout, config.response_timeout, config.body_timeout)
    tls_policy = upstream_tls_policy(config.upstream_ca or None)
    shared_state = open_shared(reactor, config)
    egresses, agents = egress_setup(reactor, config, deadlines, tls_policy)
    if agent is None:
        agent = agents[egresses[0]] if agents else make_agent(
            reactor, deadlines, config.max_connections_per_host, tls_policy=tls_policy)
    upstream = Upstream(
        reactor, markets, agent=agent,
        deadlines=deadlines, max_per_host=config.max_connections_per_host,
        egress_agents=agents or None,
        egress_of=(lambda request: request.egress) if agents else None,
        metrics=metrics.registry)
    latency: dict[str, Any] = {}  # market -> its histogram child, looked up once

    def observe(market: str, seconds: float) -> None:
        child = latency.get(market)
        if child is None:
            child = latency[market] = metrics.upstream_latency.labels(market)
        child.observe(seconds)
    upstream.observe = observe

    admin: dict[str, IResource] = {}

    def add_admin(name: str, resource: IResource) -> None:
        if name in admin or name in ADMIN_NAMES:
            raise ConfigError(f"admin resource /{name} is mounted twice")
        admin[name] = resource

    chain_ref: list[Any] = []
    context = MiddlewareContext(
        reactor=reactor, upstream=upstream,
        chain=lambda request: as_deferred(chain_ref[0](request)),
        endpoints=endpoints, markets=markets, add_admin=add_admin,
        state_dir=config.state_dir, log_format=config.log_format,
        metrics=metrics.registry, tls_policy=tls_policy, access_log=access_log,
        shared_state=shared_state, egresses=egresses)
    middlewares = build_middlewares(config.middleware, discover(), context)
    guards = ChainGuards(middlewares)
    guards.warn()
    handler = compose(middlewares, upstream)
    chain_ref.append(handler)

    gateways: list[Any] = []  # the bots' websocket gateway, for the dashboard (below)
    dashboard = DashboardFeed(reactor, lambda: [*middlewares, *gateways], metrics, endpoints,
                              verdict=lambda: readiness.verdict(),
                              # the offline demo's exchange is new at each start: no
                              # history kept, nothing left in the working directory
                              state_file=None if config.simulated_exchange else
                              os.path.join(config.state_dir, "bnproxy-dashboard.json"))
    forward = ForwardingResource(handler, markets, endpoints, reactor, resolver,
                                 dashboard.observer(metrics.answered), middlewares)
    readiness = Readiness(reactor, markets, upstream, handler, endpoints,
                          lambda: [*middlewares, access_log], shared_state)
    metrics.watch(lambda: [m for m in [*middlewares, readiness, dashboard, shared_state]
                           if IMetricsSource.providedBy(m)])
    metrics.track_inflight(lambda: forward.inflight)
    metrics.watch_upstream(upstream)
    health = HealthResource(reactor, markets,
                            [m for m in [*middlewares, shared_state, guards]
                             if IHealthReporter.providedBy(m)],
                            readiness.verdict, [m.name for m in middlewares],
                            clients=metrics.clients)

    hub = next((m for m in middlewares if IStreamHub.providedBy(m)), None)  # as find_hub
    gateway = None
    if hub is not None:  # the bots' websocket gateway (server/websocket.py)
        # imported only then: autobahn (~7 MB resident) for a chain with streams
        from bnproxy.server.websocket import Gateway, GatewayResource, Limits, StreamRoot

        ledger = next((m for m in middlewares if IBotLedger.providedBy(m)), None)
        gateway = Gateway(reactor, hub, Limits(
            per_client=config.server.max_connections_per_client),
            name_of=ledger.name_of if ledger is not None else None)
        gateways.append(gateway)
        metrics.watch(lambda: [gateway])
        root: RootResource = StreamRoot(forward, GatewayResource(gateway, handler, reactor,
                                                                 resolver))
    else:
        root = RootResource(forward)
    root.putChild(b"health", AdminGuard(health, admin_allow, resolver))
    root.putChild(b"metrics", AdminGuard(MetricsResource(metrics.registry), admin_allow,
                                         resolver))
    root.putChild(b"live", LiveResource())
    root.putChild(b"ready", ReadyResource(readiness.verdict))
    mount_dashboard(root, dashboard, lambda resource: AdminGuard(resource, admin_allow, resolver))
    for name, resource in admin.items():
        root.putChild(name.encode("ascii"), AdminGuard(resource, admin_allow, resolver))
    site = ProxySite(root, config.server, reactor=reactor)
    site.displayTracebacks = False
    return Proxy(config, reactor, markets, endpoints, metrics, upstream, context, middlewares,
                 handler, forward, health, readiness, dashboard, access_log, site,
                 shared_state, gateway)


def open_shared(reactor: Any, config: ProxyConfig) -> Any:
    """The state shared with the fleet (``--shared-state``), not started
    yet, or None: everything in-process."""
    if not config.shared_state:
        return None
    from bnproxy.cluster import open_shared_state
    from bnproxy.cluster.url import RedisURLError

    try:
        return open_shared_state(reactor, config.shared_state,
                                 deadline=config.shared_state_deadline,
                                 min_instances=config.shared_state_min_instances)
    except RedisURLError as e:
        raise ConfigError(f"--shared-state: {e}") from None


def egress_setup(reactor: Any, config: ProxyConfig, deadlines: Deadlines,
                 tls_policy: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The egress addresses (checked: each must be this host's) and one
    agent bound to each; ``((), {})`` without ``--egress``."""
    if not config.egress:
        return (), {}
    from bnproxy.upstream.egress import EgressAddressError, check_egress_address, egress_agents

    try:
        egresses = tuple(dict.fromkeys(check_egress_address(a) for a in config.egress))
    except EgressAddressError as e:
        raise ConfigError(str(e)) from None
    return egresses, egress_agents(reactor, egresses, deadlines,
                                   config.max_connections_per_host, tls_policy)


def build_service(reactor: Any, config: ProxyConfig,
                  argv: list[str] | None = None) -> ProxyService:
    """The service ``twistd bnproxy`` runs, listening already. Raises
    ConfigError for every mistake a user can make (one line each).

    ``--workers N``: this process binds the socket and starts N-1 workers
    with the same command line (``argv``; in the foreground, no pid file),
    each adopting the socket; stopping this one drains every worker."""
    from bnproxy.service import ProxyService

    check_state_dir(config.state_dir)
    from bnproxy.server.workers import WorkersConfigError, check_workers
    try:
        check_workers(config.workers, config.shared_state or None)
    except WorkersConfigError as e:
        raise ConfigError(str(e)) from None
    service: ProxyService
    if config.simulated_exchange:
        from bnproxy.testing.simulated import with_simulated_exchange

        service = with_simulated_exchange(reactor, config, ProxyService)
    else:
        service = ProxyService(reactor, config)
    from bnproxy.server.workers import WorkerPool, watch_parent, worker_fd_from_env

    worker_fd = worker_fd_from_env()
    service.listen(worker_fd)
    if worker_fd is not None:  # a worker: stops when its parent goes
        watch_parent(reactor, reactor.stop)
    elif config.workers > 1:
        WorkerPool(reactor, config.workers, service.shared_socket, worker_argv(argv),
                   drain_timeout=config.server.drain_timeout).setServiceParent(service)
    return service


def worker_argv(argv: list[str] | None) -> list[str]:
    """A worker's command line: this one, in the foreground without a pid
    file (twistd options go before the ``bnproxy`` subcommand)."""
    import sys

    argv = list(sys.argv if argv is None else argv)
    at = argv.index("bnproxy") if "bnproxy" in argv else 1  # twistd -ny bnproxy.tac
    return [*argv[:at], "--nodaemon", "--pidfile=", *argv[at:]]
