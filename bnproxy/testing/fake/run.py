"""Running the fake exchange on a loopback port, without pytest.

``start_exchange(reactor)`` binds an ephemeral port of ``reactor`` and
returns a :class:`RunningExchange`; ``twistd bnproxy --simulated-exchange``,
the benchmarks and the pytest fixture (``bnproxy.testing.pytest_plugin``) use it.
"""

from __future__ import annotations

import attrs

from bnproxy.testing.fake.exchange import MARKETS, FakeExchange


@attrs.define
class RunningExchange:
    """A listening fake exchange: base URLs per market, and the exchange
    itself for faults (``exchange.faults``), counters (``exchange.counters``),
    ``pause()``/``resume()`` and bans."""

    exchange: FakeExchange
    host: str
    port: int

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    def rest(self, market: str) -> str:
        return f"{self.base}/{market}"

    def stream(self, market: str) -> str:
        return f"ws://{self.host}:{self.port}/{market}"

    @property
    def upstream_args(self) -> list[str]:
        """``--upstream``/``--stream-upstream`` arguments for ``twistd bnproxy``."""
        args = []
        for m in MARKETS:
            args += ["--upstream", f"{m}={self.rest(m)}", "--stream-upstream",
                     f"{m}={self.stream(m)}"]
        return args


def start_exchange(reactor, **kwargs) -> RunningExchange:
    from twisted.web import server

    exchange = FakeExchange(reactor, **kwargs)
    site = server.Site(exchange.resource(), reactor=reactor)
    site.log = lambda request: None  # type: ignore[method-assign]
    port = reactor.listenTCP(0, site, interface="127.0.0.1")
    exchange.port = port
    exchange.start()
    return RunningExchange(exchange, "127.0.0.1", port.getHost().port)
