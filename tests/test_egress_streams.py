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


def test_new_stream_connections_are_paced_per_egress_address():
    from bnproxy.middleware.streams.pace import ConnectPace

    clock = MemoryReactorClock()
    pace = ConnectPace(clock)
    fired = {"127.0.0.2": 0, "127.0.0.3": 0}
    for egress in fired:
        for _ in range(60):
            pace.acquire(egress).addCallback(lambda _, e=egress: fired.__setitem__(e, fired[e] + 1))
    # Binance: 300 per 5 minutes; 50 a minute keeps any 5-minute span (6 windows) within it
    assert fired == {"127.0.0.2": 50, "127.0.0.3": 50}
    clock.advance(61)
    assert fired == {"127.0.0.2": 60, "127.0.0.3": 60}
    waiting = pace.acquire(None)
    for _ in range(50):
        pace.acquire(None)
    late = pace.acquire(None)
    late.cancel()  # a stopped connection stops waiting
    late.addErrback(lambda f: None)
    clock.advance(61)
    assert waiting.called and pace.waited >= 11


def test_the_pace_is_counted_in_the_shared_state_when_there_is_one():
    from twisted.internet.defer import succeed

    from bnproxy.middleware.streams.pace import ConnectPace

    class Shared:
        def __init__(self):
            self.calls = []

        def reserve(self, egress, pool, weight, budget, window_start):
            self.calls.append((egress, pool, weight, budget, window_start))
            return succeed(len(self.calls) <= 2)  # the fleet took the rest
    clock = MemoryReactorClock()
    clock.advance(120)
    shared = Shared()
    pace = ConnectPace(clock, shared)
    results = [pace.acquire("127.0.0.2") for _ in range(3)]
    assert [d.called for d in results] == [True, True, False]
    assert shared.calls[0] == ("127.0.0.2", "ws-connections", 1, 50, 120)


def test_a_market_s_connections_wait_for_the_pace():
    from bnproxy.middleware.streams.pace import ConnectPace

    clock = MemoryReactorClock()
    manager = StreamManager(clock, PRODUCTION["spot"])
    manager.pace = ConnectPace(clock, per_minute=2)
    manager.startService()
    for i in range(4 * 1024):
        manager.ensure(f"s{i}@trade", lambda m: None)
    clock.advance(1)
    assert len(clock.tcpClients) == 2
    clock.advance(60)
    assert len(clock.tcpClients) == 4
