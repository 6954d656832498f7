"""The proxy's configuration in one model.

Every field a setting fills takes its default from
:mod:`bnproxy.config.schema` (``default("attr")``): a default is written
once, in the schema; a test refuses a literal here. The fields below without
a setting (``max_connections_per_host``, the resolved ``listen`` and
``middleware``) are the model's own."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from bnproxy.config.schema import DEFAULT_CHAIN, DEFAULT_LISTEN, default

__all__ = ["DEFAULT_ADMIN_ALLOW", "DEFAULT_CHAIN", "ProxyConfig", "ServerLimits"]

DEFAULT_ADMIN_ALLOW: tuple[str, ...] = default("admin_allow")  # admin resources: loopback


@attrs.frozen
class ServerLimits:
    """Limits on bots' connections, where stock twisted.web has none
    (defaults like nginx's; see the schema's ``server.*`` settings)."""

    header_timeout: float = default("server.header_timeout")  # absolute: request line, headers
    body_timeout: float = default("server.body_timeout")  # absolute, for the request body
    max_body: int = default("server.max_body")
    max_headers: int = default("server.max_headers")
    max_header_bytes: int = default("server.max_header_bytes")
    max_connections_per_client: int = default("server.max_connections_per_client")
    keepalive_timeout: float = default("server.keepalive_timeout")
    send_timeout: float = default("server.send_timeout")
    drain_timeout: float = default("server.drain_timeout")


@attrs.frozen
class ProxyConfig:
    """Everything ``makeService`` needs. Built from the command line (and,
    by ``bnproxy.tac``, from ``BNPROXY_*`` environment variables)."""

    listen: tuple[str, ...] = DEFAULT_LISTEN
    testnet: bool = default("testnet")
    upstream_ca: tuple[str, ...] = default("upstream_ca")
    upstreams: Mapping[str, str] = attrs.field(factory=lambda: dict(default("upstreams")))
    stream_upstreams: Mapping[str, str] = attrs.field(
        factory=lambda: dict(default("stream_upstreams")))
    middleware: tuple[tuple[str, Mapping[str, Any]], ...] = tuple(
        (name, {}) for name in DEFAULT_CHAIN)
    trusted_proxies: tuple[str, ...] = default("trusted_proxies")
    forwarded_header: str = default("forwarded_header")
    admin_allow: tuple[str, ...] = DEFAULT_ADMIN_ALLOW
    connect_timeout: float = default("connect_timeout")
    response_timeout: float = default("response_timeout")
    body_timeout: float = default("body_timeout")
    max_connections_per_host: int = 32
    state_dir: str = default("state_dir")
    log_format: str = default("log_format")
    log_level: str = default("log_level")
    access_log: str = default("access_log")
    metrics_clients: int = default("metrics_clients")
    simulated_exchange: bool = default("simulated_exchange")
    shared_state: str = default("shared_state")
    shared_state_deadline: float = default("shared_state_deadline")
    shared_state_min_instances: int = default("shared_state_min_instances")
    egress: tuple[str, ...] = default("egress")
    workers: int = default("workers")
    server: ServerLimits = ServerLimits()
