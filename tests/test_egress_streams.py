"""Websocket connections spread over the egress addresses."""

from collections import Counter

from twisted.internet.testing import MemoryReactorClock

from bnproxy.binance.markets import PRODUCTION
from bnproxy.middleware.streams.manager import StreamManager


def test_stream_connections_are_spread_over_the_egress_addresses():
    manager = StreamManager(MemoryReactorClock(), PRODUCTION["spot"],
                            egresses=("127.0.0.2", "127.0.0.3"))
    for i in range(4 * 1024):
        manager.ensure(f"s{i}@trade", lambda m: None)
    spread = Counter(c.egress for c in manager.connections)
    assert spread == {"127.0.0.2": 2, "127.0.0.3": 2}


def test_without_egress_addresses_connections_leave_from_the_default():
    manager = StreamManager(MemoryReactorClock(), PRODUCTION["spot"])
    manager.ensure("btcusdt@trade", lambda m: None)
    assert [c.egress for c in manager.connections] == [None]
