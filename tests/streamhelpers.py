"""A proxy with the streams middleware on the real reactor, in front of the
fake exchange fixture."""

from __future__ import annotations

import treq
from helpers import state_dir
from twisted.internet import defer, reactor
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


# -- virtual time: the proxy and the fake exchange in one LoopbackReactor ---------------

START_MS = 1_767_225_600_000 + 9 * 3_600_000 + 30 * 60_000 + 7_000  # 2026-01-01 09:30:07 UTC


RIG_SYMBOLS = {"BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "ADAUSDT", "BTCUSD_PERP"}


class VirtualRig:
    """The fake exchange and a proxy with the streams middleware on one
    :class:`bnproxy.testing.loopback.LoopbackReactor`: REST and websocket
    connections in memory, every wait in virtual seconds."""

    def __init__(self, chain=(("streams", {}), ("cache", {})), **exchange_options) -> None:
        from bnproxy.testing.fake.instruments import default_instruments
        from bnproxy.testing.fake.run import start_exchange
        from bnproxy.testing.loopback import LoopbackReactor

        self.reactor = LoopbackReactor(start=START_MS / 1000)
        exchange_options.setdefault("start_ms", START_MS)
        exchange_options.setdefault("instruments", [  # fewer symbols: less to simulate
            i for i in default_instruments() if i.symbol in RIG_SYMBOLS])
        self.running = start_exchange(self.reactor, **exchange_options)
        self.exchange = self.running.exchange
        self._agent = None
        self.start_proxy(chain)

    def start_proxy(self, chain) -> None:
        """A new proxy with middleware ``chain`` (nothing held but its files)
        on the rig's exchange and clock."""
        config = ProxyConfig(
            listen=(), upstreams={m: self.running.rest(m) for m in MARKETS},
            stream_upstreams={m: self.running.stream(m) for m in MARKETS},
            middleware=tuple(chain), state_dir=state_dir())
        self.service = ProxyService(self.reactor, config)
        self.service.startService()

    def stop_proxy(self) -> None:
        """Stop the proxy (as on SIGTERM), the exchange running on."""
        self.reactor.run_until(defer.ensureDeferred(self.service.stopService()), 30)

    @property
    def streams(self):
        return self.service.middlewares[0]

    def request(self, target: str, headers=(), client: str = "127.0.0.1") -> ProxyRequest:
        """A bot's GET of ``target`` as the proxy's chain gets it."""
        path, query = split_target(target.encode())
        market, binance_path = resolve_market(path.decode())
        return ProxyRequest("GET", market, binance_path, query, tuple(headers), b"", client,
                            self.reactor.seconds(),
                            self.service.endpoints.lookup(market, "GET", binance_path))

    def ask(self, target: str, headers=()):
        """The proxy's answer (a ProxyResponse) to a bot's GET."""
        return self.reactor.run_until(
            as_deferred(self.service.handler(self.request(target, headers))), 30)

    def ask_together(self, targets, each_its_own_bot: bool = False) -> list:
        """Every target asked at the same moment (by a bot of its own each,
        if told); their answers."""
        answers = [as_deferred(self.service.handler(self.request(
            target, client=f"10.0.0.{i}" if each_its_own_bot else "127.0.0.1")))
            for i, target in enumerate(targets)]
        return self.reactor.run_until(defer.gatherResults(answers), 30)

    def rest(self, market: str, target: str) -> bytes:
        """What the fake exchange's REST answers (over in-memory HTTP)."""
        from twisted.web.client import Agent, readBody

        if self._agent is None:
            self._agent = Agent(self.reactor)
        url = (self.running.rest(market) + target).encode()
        response = self.reactor.run_until(self._agent.request(b"GET", url), 30)
        return self.reactor.run_until(readBody(response), 30)

    def until(self, predicate, timeout: float = 30.0) -> None:
        self.reactor.run_until(predicate, timeout)

    def sleep(self, seconds: float) -> None:
        self.reactor.sleep(seconds, step=0.1)

    def stop(self) -> None:
        self.reactor.run_until(defer.ensureDeferred(self._stop()), 30)

    async def _stop(self) -> None:
        await self.service.stopService()
        self.running.stop()
