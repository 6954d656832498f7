"""A proxy with the streams middleware on the real reactor, in front of the
fake exchange fixture."""

from __future__ import annotations

import treq
from helpers import state_dir
from twisted.internet import reactor
from twisted.internet.task import deferLater

from bnproxy.chain.compose import as_deferred
from bnproxy.chain.messages import ProxyRequest
from bnproxy.config.model import ProxyConfig
from bnproxy.server.forwarding import resolve_market, split_target
from bnproxy.service import ProxyService

MARKETS = ("spot", "usdm", "coinm")


def start_proxy(running, chain=(("streams", {}), ("cache", {}))) -> ProxyService:
    config = ProxyConfig(
        listen=(), upstreams={m: running.rest(m) for m in MARKETS},
        stream_upstreams={m: running.stream(m) for m in MARKETS},
        middleware=tuple(chain), state_dir=state_dir())
    service = ProxyService(reactor, config)
    service.startService()
    return service


async def ask(service: ProxyService, target: str, headers=()):
    path, query = split_target(target.encode())
    market, binance_path = resolve_market(path.decode())
    request = ProxyRequest("GET", market, binance_path, query, tuple(headers), b"",
                           "127.0.0.1", reactor.seconds(),
                           service.endpoints.lookup(market, "GET", binance_path))
    return await as_deferred(service.handler(request))


async def rest(running, market: str, target: str) -> bytes:
    response = await treq.get(running.rest(market) + target)
    return await response.content()


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def until(predicate, timeout: float = 10.0, step: float = 0.05) -> None:
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise TimeoutError("condition not met")
        await sleep(step)


async def stop(service: ProxyService) -> None:
    await service.stopService()
