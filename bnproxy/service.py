"""Building the running proxy from a ``ProxyConfig``."""

from __future__ import annotations

from typing import Any

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.web.resource import IResource

from bnproxy.admin import AdminGuard
from bnproxy.binance.endpoints import load_endpoints
from bnproxy.binance.markets import build_markets
from bnproxy.chain import compose
from bnproxy.clientaddr import ClientResolver, parse_networks
from bnproxy.config import ProxyConfig
from bnproxy.context import MiddlewareContext
from bnproxy.health import HealthResource
from bnproxy.registry import build_middlewares, discover
from bnproxy.routing import ForwardingResource, ProxySite, RootResource
from bnproxy.settings import ConfigError
from bnproxy.upstream import Deadlines, Upstream


class ProxyService(MultiService):
    """The proxy: listeners plus any middleware that is a service.

    ``site``, ``handler``, ``middlewares`` and ``upstream`` are exposed for
    tests and embedding.
    """

    def __init__(self, reactor, config: ProxyConfig, agent=None) -> None:
        super().__init__()
        self.config = config
        try:
            markets = build_markets(config.testnet, config.upstreams, config.stream_upstreams)
            trusted = parse_networks(config.trusted_proxies)
            admin_allow = parse_networks(config.admin_allow)
            resolver = ClientResolver(trusted, config.forwarded_header)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.markets = markets
        self.endpoints = load_endpoints()
        self.upstream = Upstream(
            reactor, markets, agent=agent,
            deadlines=Deadlines(config.connect_timeout, config.response_timeout,
                                config.body_timeout),
            max_per_host=config.max_connections_per_host)
        admin: dict[str, IResource] = {}

        def add_admin(name: str, resource: IResource) -> None:
            if name in admin or name == "health":
                raise ConfigError(f"admin resource /{name} is mounted twice")
            admin[name] = resource

        chain_ref: list[Any] = []
        context = MiddlewareContext(
            reactor=reactor, upstream=self.upstream,
            chain=lambda request: chain_ref[0](request),
            endpoints=self.endpoints, markets=markets, add_admin=add_admin,
            state_dir=config.state_dir, log_format=config.log_format)
        self.context = context
        self.middlewares = build_middlewares(config.middleware, discover(), context)
        self.handler = compose(self.middlewares, self.upstream)
        chain_ref.append(self.handler)

        forward = ForwardingResource(self.handler, markets, self.endpoints, reactor, resolver)
        root = RootResource(forward)
        self.health = HealthResource(reactor, markets, self.middlewares)
        root.putChild(b"health", AdminGuard(self.health, admin_allow, resolver))
        for name, resource in admin.items():
            root.putChild(name.encode("ascii"), AdminGuard(resource, admin_allow, resolver))
        self.site = ProxySite(root, config.server, reactor=reactor)
        self.site.displayTracebacks = False

        for middleware in self.middlewares:
            if IService.providedBy(middleware):
                middleware.setServiceParent(self)
        for description in config.listen:
            try:
                endpoint = serverFromString(reactor, description)
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise ConfigError(f"listen {description!r}: {e}") from None
            listener = StreamServerEndpointService(endpoint, self.site)
            listener._raiseSynchronously = True  # as strports.service: a bind error stops start-up
            listener.setServiceParent(self)
