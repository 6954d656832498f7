"""The proxy's configuration in one model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from bnproxy.admin import DEFAULT_ADMIN_ALLOW

# The default chain, in order. Built-in middlewares register as plugins.
DEFAULT_CHAIN: tuple[str, ...] = ("logger", "allowlist", "streams", "cache", "ratelimit")


@attrs.frozen
class ProxyConfig:
    """Everything ``makeService`` needs. Built from the command line (and,
    by ``bnproxy.tac``, from ``BNPROXY_*`` environment variables)."""

    listen: tuple[str, ...] = ("tcp:8080",)
    testnet: bool = False
    upstreams: Mapping[str, str] = attrs.field(factory=dict)
    stream_upstreams: Mapping[str, str] = attrs.field(factory=dict)
    middleware: tuple[tuple[str, Mapping[str, Any]], ...] = tuple(
        (name, {}) for name in DEFAULT_CHAIN)
    trusted_proxies: tuple[str, ...] = ()
    forwarded_header: str = "x-forwarded-for"
    admin_allow: tuple[str, ...] = DEFAULT_ADMIN_ALLOW
    connect_timeout: float = 5.0
    response_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections_per_host: int = 32
    state_dir: str = "."
    log_format: str = "text"
    simulated_exchange: bool = False
