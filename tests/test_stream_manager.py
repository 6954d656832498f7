"""The stream manager: placement, batching, pacing, rotation (virtual time),
and serverShutdown handled as a rotation (the fake exchange in memory)."""

import attrs
import orjson
from streamhelpers import VirtualRig
from twisted.internet.testing import MemoryReactorClock

from bnproxy.binance.markets import PRODUCTION
from bnproxy.middleware.streams.manager import StreamManager, route_of

# Never started, never connected: the managers here only place and pace.
USDM = attrs.evolve(PRODUCTION["usdm"], stream_base="wss://usdm.example.test")


class FakeProtocol:
    def __init__(self):
        self.sent = []

    def sendMessage(self, payload):
        self.sent.append(orjson.loads(payload))


def test_streams_are_spread_over_connections_of_at_most_1024():
    manager = StreamManager(MemoryReactorClock(), PRODUCTION["spot"])
    for i in range(1030):
        manager.ensure(f"s{i}usdt@kline_1m", lambda d: None)
    assert [len(c.streams) for c in manager.connections] == [1024, 6]


def test_usdm_streams_follow_the_public_market_split():
    manager = StreamManager(MemoryReactorClock(), USDM)
    for name in ("btcusdt@depth@100ms", "btcusdt@bookTicker", "btcusdt@kline_1m",
                 "btcusdt@ticker"):
        manager.ensure(name, lambda d: None)
    routes = {c.route: sorted(c.streams) for c in manager.connections}
    assert routes == {"public": ["btcusdt@bookTicker", "btcusdt@depth@100ms"],
                      "market": ["btcusdt@kline_1m", "btcusdt@ticker"]}
    assert manager.url("public") == "wss://usdm.example.test/public/stream"
    legacy = StreamManager(MemoryReactorClock(), USDM, legacy_routes=True)
    assert legacy.url(None) == "wss://usdm.example.test/stream"
    assert route_of("!bookTicker") == "public" and route_of("btcusdt@markPrice") == "market"


def test_subscriptions_are_batched_and_paced_under_the_message_limit():
    clock = MemoryReactorClock()
    manager = StreamManager(clock, PRODUCTION["spot"])
    for i in range(1000):
        manager.ensure(f"s{i}usdt@kline_1m", lambda d: None)
    conn = manager.connections[0]
    proto = FakeProtocol()
    conn.opened(proto)
    clock.advance(0)
    assert [len(m["params"]) for m in proto.sent] == [200] * 4  # 4 a second on spot
    clock.advance(1.05)
    assert [len(m["params"]) for m in proto.sent] == [200] * 5
    assert all(m["method"] == "SUBSCRIBE" for m in proto.sent)
    for m in proto.sent:
        conn.received(orjson.dumps({"result": None, "id": m["id"]}))
    assert conn.acked


def test_old_connections_are_rotated_before_24_hours():
    clock = MemoryReactorClock()
    manager = StreamManager(clock, PRODUCTION["spot"], rotate_after=3600)
    manager.ensure("btcusdt@kline_1m", lambda d: None)
    old = manager.connections[0]
    old.opened(FakeProtocol())
    manager._check_rotation()
    assert manager.rotations == 0
    clock.advance(3601)
    manager._check_rotation()
    assert manager.rotations == 1 and old.retiring
    fresh = manager.connections[-1]
    assert fresh.streams == {"btcusdt@kline_1m"} and manager.placed["btcusdt@kline_1m"] is fresh
    proto = FakeProtocol()
    fresh.opened(proto)
    clock.advance(0)
    fresh.received(orjson.dumps({"result": None, "id": proto.sent[0]["id"]}))
    assert manager.connections == [fresh]  # the old one closes only once the new one is ready


def test_a_stream_is_stale_when_silent():
    clock = MemoryReactorClock()
    manager = StreamManager(clock, PRODUCTION["spot"])
    got = []
    manager.ensure("btcusdt@ticker", got.append)
    conn = manager.connections[0]
    conn.received(orjson.dumps({"stream": "btcusdt@ticker", "data": {"x": 1}}))
    assert got == [{"x": 1}] and manager.fresh("btcusdt@ticker", 5)
    clock.advance(6)
    assert not manager.fresh("btcusdt@ticker", 5)


def test_server_shutdown_is_a_planned_rotation_without_a_gap():
    """The proxy's autobahn client and the fake exchange's hub, in memory and
    virtual time (streamhelpers.VirtualRig)."""
    rig = VirtualRig()
    try:
        target = "/api/v3/depth?symbol=BTCUSDT&limit=50"
        rig.ask(target)
        streams = rig.streams
        rig.until(lambda: ("spot", "BTCUSDT") in streams.books
                  and streams.books[("spot", "BTCUSDT")].state == "live", 15)
        book = streams.books[("spot", "BTCUSDT")]
        resyncs = book.resyncs
        manager = streams.managers["spot"]
        old = list(manager.connections)
        assert rig.exchange.hubs["spot"].shutdown() >= 1
        rig.until(lambda: manager.rotations >= 1, 10)
        rig.sleep(3)  # past the exchange's 2 s grace: the old connection is gone
        assert book.state == "live" and book.resyncs == resyncs  # no gap, no resync
        assert len(manager.connections) == 1 and manager.reconnects == 0  # old one retired
        assert manager.connections[0] not in old
        assert rig.ask(target).source == "stream"
        assert rig.service.health.document()["middleware"]["streams"]["markets"]["spot"][
            "rotations"] >= 1
    finally:
        rig.stop()
