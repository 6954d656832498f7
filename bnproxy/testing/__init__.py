"""A faithful fake Binance exchange for tests, benchmarks and an offline demo.

``FakeExchange(reactor)`` holds the simulated market, REST API, websocket
streams, limits, faults and counters; ``.listen(endpoint)`` serves it on one
port (REST at ``/api``, ``/fapi``, ``/dapi``, ``/futures/data`` and under the
mounts ``/spot``, ``/usdm``, ``/coinm``; streams at ``/<market>/ws``,
``/<market>/stream`` and USD-M's ``/usdm/public`` and ``/usdm/market``;
admin at ``/_fake/``). ``bnproxy.testing.fake.run.start_exchange`` runs it on
a port (``tls=True``: https/wss with a throwaway CA).

For plugin authors, all importable without pytest:
``bnproxy.testing.harness`` (an in-memory proxy in virtual time, a recording
upstream, a controllable agent), ``bnproxy.testing.loopback`` (a virtual-time
reactor whose TCP connections reach in-memory servers: the proxy and the fake
exchange, websockets included, with no socket) and
``bnproxy.testing.pytest_plugin`` (the ``fake_exchange`` and
``fake_exchange_tls`` fixtures; needs pytest).
"""

from bnproxy.testing.fake.exchange import Counters, FakeExchange, Faults

__all__ = ["Counters", "FakeExchange", "Faults"]
