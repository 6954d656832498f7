"""Running the fake exchange on a loopback port, without pytest.

``start_exchange(reactor)`` binds an ephemeral port of ``reactor`` and
returns a :class:`RunningExchange`; ``twistd bnproxy --simulated-exchange``,
the benchmarks and the pytest fixture (``bnproxy.testing.pytest_plugin``) use it.
``start_exchange(reactor, tls=True, tls_dir=path)`` serves https and wss with
a throwaway CA written under ``path`` (:attr:`RunningExchange.ca_file`).
"""

from __future__ import annotations

from pathlib import Path

import attrs

from bnproxy.testing.fake.exchange import MARKETS, FakeExchange
from bnproxy.testing.fake.tls import TlsFiles, make_certificates, wrap


@attrs.define
class RunningExchange:
    """A listening fake exchange: base URLs per market, and the exchange
    itself for faults (``exchange.faults``), counters (``exchange.counters``),
    ``pause()``/``resume()`` and bans. With TLS the URLs are https/wss and
    ``ca_file`` is the CA a client must trust."""

    exchange: FakeExchange
    host: str
    port: int
    tls: TlsFiles | None = None

    @property
    def base(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def ca_file(self) -> str | None:
        """The CA certificate (PEM) that signed the server's certificate."""
        return self.tls.ca if self.tls else None

    def rest(self, market: str) -> str:
        return f"{self.base}/{market}"

    def stream(self, market: str) -> str:
        return f"{'wss' if self.tls else 'ws'}://{self.host}:{self.port}/{market}"

    @property
    def upstream_args(self) -> list[str]:
        """``--upstream``/``--stream-upstream`` arguments for ``twistd bnproxy``."""
        args = []
        for m in MARKETS:
            args += ["--upstream", f"{m}={self.rest(m)}", "--stream-upstream",
                     f"{m}={self.stream(m)}"]
        return args

    def stop(self):
        """Stop the market and the listening port (a Deferred)."""
        self.exchange.stop()
        if self.exchange.port is not None:
            return self.exchange.port.stopListening()
        return None


def start_exchange(reactor, *, tls: bool = False, tls_dir: str | Path | None = None,
                   tls_files: TlsFiles | None = None, **kwargs) -> RunningExchange:
    """A :class:`FakeExchange` (``kwargs`` are its options) listening on an
    ephemeral 127.0.0.1 port of ``reactor``, started.

    ``tls=True`` serves https/wss: with ``tls_files`` (certificate and key
    files), or with a new CA and certificate written under ``tls_dir``.
    """
    from twisted.web import server

    if tls and tls_files is None:
        if tls_dir is None:
            raise ValueError("start_exchange(tls=True) needs tls_dir (where to write the CA) "
                             "or tls_files")
        tls_files = make_certificates(tls_dir)
    exchange = FakeExchange(reactor, **kwargs)
    site = server.Site(exchange.resource(), reactor=reactor)
    site.log = lambda request: None  # type: ignore[method-assign]
    factory = wrap(site, tls_files) if tls else site
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    exchange.port = port
    exchange.start()
    return RunningExchange(exchange, "127.0.0.1", port.getHost().port,
                           tls_files if tls else None)
