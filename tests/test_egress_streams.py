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


def test_new_stream_connections_avoid_a_banned_egress_address():
    manager = StreamManager(MemoryReactorClock(), PRODUCTION["spot"],
                            egresses=("127.0.0.2", "127.0.0.3"))
    manager.egress_banned = lambda egress: egress == "127.0.0.2"
    for i in range(3 * 1024):
        manager.ensure(f"s{i}@trade", lambda m: None)
    assert {c.egress for c in manager.connections} == {"127.0.0.3"}


def test_a_ban_moves_the_connections_of_the_banned_address_to_the_others():
    from bnproxy.middleware.streams.egress import move_banned

    manager = StreamManager(MemoryReactorClock(), PRODUCTION["spot"],
                            egresses=("127.0.0.2", "127.0.0.3", "127.0.0.4"))
    for i in range(3 * 1024):
        manager.ensure(f"s{i}@trade", lambda m: None)
    banned = {"127.0.0.2"}
    manager.egress_banned = lambda egress: egress in banned
    assert move_banned(manager) == 1
    live = [c for c in manager.connections if not c.retiring]
    assert Counter(c.egress for c in live) == {"127.0.0.3": 2, "127.0.0.4": 1}
    # every stream is placed on a connection from an unbanned address
    assert all(manager.placed[f"s{i}@trade"].egress != "127.0.0.2" for i in range(3 * 1024))
    banned.update({"127.0.0.3", "127.0.0.4"})  # all banned: nothing to move to
    assert move_banned(manager) == 0


def test_the_ban_reader_asks_the_weight_governor_per_market_and_address():
    from zope.interface import implementer

    from bnproxy.chain.interfaces import IWeightGovernor
    from bnproxy.middleware.streams.egress import ban_reader

    @implementer(IWeightGovernor)
    class Governor:
        def banned_for(self, pool, egress=None):
            return 120.0 if (pool, egress) == ("usdm", "127.0.0.2") else 0.0

    read = ban_reader("usdm", lambda: Governor())
    assert read("127.0.0.2") and not read("127.0.0.3")
    assert not ban_reader("spot", lambda: Governor())("127.0.0.2")
    assert not ban_reader("usdm", lambda: None)("127.0.0.2")
