"""``twistd bnproxy --simulated-exchange``: the proxy with an in-process fake
exchange as every market's upstream, for trying bnproxy offline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import attrs
from twisted.application.service import MultiService, Service
from twisted.logger import Logger

from bnproxy.binance.markets import MARKET_NAMES
from bnproxy.config.model import ProxyConfig
from bnproxy.testing.fake.run import start_exchange

_log = Logger(namespace="bnproxy.simulated")


class _StopsExchange(Service):
    def __init__(self, handle: Any) -> None:
        self.handle = handle  # not "running": Service uses that name

    def stopService(self) -> Any:
        self.handle.exchange.stop()
        super().stopService()
        return self.handle.exchange.port.stopListening()


P = TypeVar("P", bound=MultiService)


def with_simulated_exchange(reactor: Any, config: ProxyConfig,
                            proxy_factory: Callable[..., P]) -> P:
    """The proxy pointed at a fake exchange on an ephemeral loopback port."""
    running = start_exchange(reactor)  # binds now, so the URLs are known
    _log.info("simulated exchange on {base} (admin: {base}/_fake/)", base=running.base)
    config = attrs.evolve(
        config,
        # Every market, so nothing can reach Binance (options and pm answer 404).
        upstreams={m: running.rest(m) for m in MARKET_NAMES},
        stream_upstreams={m: running.stream(m) for m in MARKET_NAMES})
    proxy = proxy_factory(reactor, config)
    proxy.exchange = running.exchange  # type: ignore[attr-defined]  # for tests and demos
    _StopsExchange(running).setServiceParent(proxy)
    return proxy
