"""The proxy's configuration in one model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

DEFAULT_ADMIN_ALLOW = ("127.0.0.0/8", "::1/128")  # admin resources: loopback only

# The default chain, in order. Built-in middlewares register as plugins.
DEFAULT_CHAIN: tuple[str, ...] = ("logger", "allowlist", "streams", "cache", "ratelimit")


@attrs.frozen
class ServerLimits:
    """Limits on bots' connections, where stock twisted.web has none
    (defaults like nginx's)."""

    header_timeout: float = 60.0  # absolute, for the request line and headers
    body_timeout: float = 60.0  # absolute, for the request body
    max_body: int = 1024 * 1024  # client_max_body_size 1m
    max_headers: int = 100
    max_header_bytes: int = 32 * 1024  # large_client_header_buffers 4 8k
    max_connections_per_client: int = 256
    keepalive_timeout: float = 75.0
    send_timeout: float = 60.0
    drain_timeout: float = 30.0


@attrs.frozen
class ProxyConfig:
    """Everything ``makeService`` needs. Built from the command line (and,
    by ``bnproxy.tac``, from ``BNPROXY_*`` environment variables)."""

    listen: tuple[str, ...] = ("tcp:8080",)
    testnet: bool = False
    upstream_ca: tuple[str, ...] = ()
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
    log_level: str = "info"  # operational events: debug, info, warn, error
    access_log: str = "-"  # "-": standard output; "none"; or a file path
    metrics_clients: int = 64  # distinct client labels on /metrics and /health
    simulated_exchange: bool = False
    shared_state: str = ""  # redis://… or rediss://…; "": in-process
    shared_state_deadline: float = 0.05
    shared_state_min_instances: int = 1
    egress: tuple[str, ...] = ()  # source addresses; () : the host's default
    workers: int = 1
    server: ServerLimits = ServerLimits()
