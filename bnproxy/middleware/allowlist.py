"""``allowlist``: only listed networks reach Binance through the proxy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.logger import Logger
from zope.interface import implementer

from bnproxy.binance.errors import UNAUTHORIZED
from bnproxy.chain.addresses import Network, in_networks, parse_networks
from bnproxy.chain.compose import Answer
from bnproxy.chain.context import MiddlewareContext
from bnproxy.chain.interfaces import IAdmission, IFastPathSafe, IHealthReporter, IMiddleware
from bnproxy.chain.messages import INTERNAL, ProxyRequest, local_error
from bnproxy.chain.options import ConfigError, Option

_log = Logger(namespace="bnproxy.allowlist")

DEFAULT_ALLOW = ("127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
                 "fc00::/7")


@implementer(IAdmission, IHealthReporter, IMiddleware, IFastPathSafe)
class Allowlist:
    """Admits ``request.client`` (normalised: IPv4-mapped IPv6 is IPv4, scope
    ids dropped; behind a trusted proxy, the first untrusted forwarded hop)
    when it is in one of the networks, and the proxy's own requests (marked
    ``INTERNAL``, which no bot can send); anyone else gets 403."""

    plain_next = True

    def __init__(self, name: str, networks: Sequence[Network]) -> None:
        self.name = name
        self.networks = list(networks)
        self.denied = 0
        self._decided: dict[str, bool] = {}

    def admits(self, client: str) -> bool:
        decision = self._decided.get(client)
        if decision is None:
            if len(self._decided) > 65536:
                self._decided.clear()
            decision = self._decided[client] = in_networks(client, self.networks)
        return decision

    def handle(self, request: ProxyRequest, next: Callable) -> Answer:
        admitted = self._decided.get(request.client)  # admits(), its memo inline
        if admitted is None:
            admitted = self.admits(request.client)
        if admitted or request.header(INTERNAL) is not None:
            return next(request)
        self.denied += 1
        _log.warn("denied {client}: not in the allowlist", client=request.client)
        return local_error(403, UNAUTHORIZED,
                           "bnproxy: your address is not allowed to use this proxy",
                           detail="denied")

    def fast_handle(self, request: ProxyRequest, next: Callable) -> Any:
        """``IFastPathSafe``: an admitted client's request goes on; a
        refusal is the chain's (its warning, its count, its 403)."""
        admitted = self._decided.get(request.client)
        if admitted is None:
            admitted = self.admits(request.client)
        return next(request) if admitted else None

    def health(self) -> dict:
        return {"networks": [str(n) for n in self.networks], "denied": self.denied}


OPTIONS = (
    Option("allow", "list", DEFAULT_ALLOW, "Client networks (CIDR) admitted; open to the world "
           "only with an explicit 0.0.0.0/0 ::/0."),
)


def build_allowlist(name: str, settings: dict[str, Any],
                    context: MiddlewareContext) -> Allowlist:
    try:
        networks = parse_networks(settings["allow"])
    except ValueError as e:
        raise ConfigError(f"middleware.{name}.allow: {e}") from None
    return Allowlist(name, networks)
