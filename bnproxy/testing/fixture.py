"""A pytest fixture for plugin authors: ``fake_exchange``.

Add ``pytest_plugins = ["bnproxy.testing.fixture"]`` to a ``conftest.py``
(needs pytest-twisted). The fixture starts a ``FakeExchange`` on an ephemeral
loopback port of the running reactor and yields a :class:`RunningExchange`.
"""

from __future__ import annotations

import attrs
import pytest

from bnproxy.testing.exchange import MARKETS, FakeExchange


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


@pytest.fixture
def fake_exchange():
    from twisted.internet import reactor

    running = start_exchange(reactor)
    yield running
    running.exchange.stop()
    if running.exchange.port is not None:
        running.exchange.port.stopListening()
