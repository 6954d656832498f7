"""A faithful fake Binance exchange for tests, benchmarks and an offline demo.

``FakeExchange(reactor)`` holds the simulated market, REST API, websocket
streams, limits, faults and counters; ``.listen(endpoint)`` serves it on one
port (REST at ``/api``, ``/fapi``, ``/dapi``, ``/futures/data`` and under the
mounts ``/spot``, ``/usdm``, ``/coinm``; streams at ``/<market>/ws``,
``/<market>/stream`` and USD-M's ``/usdm/public`` and ``/usdm/market``;
admin at ``/_fake/``).
"""

from bnproxy.testing.fake.exchange import Counters, FakeExchange, Faults

__all__ = ["Counters", "FakeExchange", "Faults"]
