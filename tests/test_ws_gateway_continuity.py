"""Rotation of an upstream connection (the 24 h cut, ``serverShutdown``) is
invisible to a subscribed bot: no gap, no duplicate, the diff-depth sequence
intact."""

from __future__ import annotations

import orjson
import pytest
from test_ws_gateway import GatewayRig


@pytest.fixture
def rig():
    r = GatewayRig()
    yield r
    r.stop()


def assert_continuous(frames: list[bytes]) -> None:
    events = [orjson.loads(f) for f in frames]
    assert len({f for f in frames}) == len(frames), "a duplicate frame"
    for before, after in zip(events, events[1:], strict=False):
        assert after["U"] == before["u"] + 1, (before["u"], after["U"])


@pytest.mark.parametrize("how", ["age", "serverShutdown"])
def test_a_rotation_is_invisible_to_a_bot(rig, how):
    bot = rig.via_proxy("/ws/btcusdt@depth@100ms")
    trades = rig.via_proxy("/ws/btcusdt@trade")
    rig.until(lambda: len(bot.data_frames()) > 20 and trades.data_frames(), 60)
    manager = rig.streams.managers["spot"]
    # The old connection closes a second after the new one is acknowledged
    # (on a real network both carry the streams for a while): both deliver.
    ready = manager.connection_ready
    manager.connection_ready = lambda conn: rig.reactor.callLater(1.0, ready, conn)
    before = manager.rotations
    if how == "age":
        manager.rotate(manager.placed["btcusdt@depth@100ms"], "age")
    else:
        rig.exchange.hubs["spot"].shutdown()
    rig.until(lambda: manager.rotations > before and all(
        not c.retiring for c in manager.connections), 60)
    n = len(bot.data_frames())
    rig.sleep(10)
    assert len(bot.data_frames()) > n + 20
    assert_continuous(bot.data_frames())
    ids = [orjson.loads(f)["t"] for f in trades.data_frames()]
    assert ids == sorted(set(ids))
    assert bot.factory.closed is None


def test_a_dropped_upstream_connection_closes_its_bots_with_a_frame_they_reconnect_from(rig):
    depth = rig.via_proxy("/ws/btcusdt@depth@100ms")
    other = rig.via_proxy("/usdm/market/ws/btcusdt@markPrice@1s")  # another connection
    rig.until(lambda: depth.data_frames() and other.data_frames(), 60)
    assert rig.exchange.hubs["spot"].drop() == 1  # the proxy's spot connection
    rig.sleep(2)
    assert depth.factory.closed is not None and depth.factory.closed[0] == 1001
    assert other.factory.closed is None  # its upstream did not drop
    again = rig.via_proxy("/ws/btcusdt@depth@100ms")  # the bot reconnects
    rig.until(lambda: len(again.data_frames()) > 5, 60)
    assert_continuous(again.data_frames())
    assert rig.gateway.upstream_closes == 1


def test_a_local_book_built_through_the_proxy_is_the_fakes_book(rig):
    """Binance's spot procedure (FACTS.md §4.3) through the proxy: buffer
    diff events, take the REST snapshot through the proxy, drop events up to
    its lastUpdateId, apply the rest; the book equals the fake's."""
    bot = rig.via_proxy("/ws/btcusdt@depth@100ms")
    rig.until(lambda: len(bot.data_frames()) >= 3, 60)
    first_u = orjson.loads(bot.data_frames()[0])["U"]
    snapshot = orjson.loads(rig.ask("/api/v3/depth?symbol=BTCUSDT&limit=5000").body)
    assert snapshot["lastUpdateId"] >= first_u
    book = {side: {p: q for p, q in snapshot[side]} for side in ("bids", "asks")}
    book_id = snapshot["lastUpdateId"]
    rig.sleep(5)
    rig.exchange.pause()  # every event flushed; REST and streams at the same moment
    rig.reactor.flush()
    applied = 0
    for frame in bot.data_frames():
        event = orjson.loads(frame)
        if event["u"] <= book_id:
            continue
        assert event["U"] <= book_id + 1, "a gap"
        for side, key in (("bids", "b"), ("asks", "a")):
            for price, qty in event[key]:
                if float(qty) == 0:
                    book[side].pop(price, None)
                else:
                    book[side][price] = qty
        book_id = event["u"]
        applied += 1
    assert applied > 10
    truth = orjson.loads(rig.rest("spot", "/api/v3/depth?symbol=BTCUSDT&limit=5000"))
    assert truth["lastUpdateId"] == book_id
    # Levels past the snapshot's 5000 stay unknown until they change
    # (FACTS.md §4.3, 8): the top 1000 of each side must be exact.
    for side, reverse in (("bids", True), ("asks", False)):
        mine = sorted(book[side].items(), key=lambda pq: float(pq[0]), reverse=reverse)
        assert [list(pq) for pq in mine[:1000]] == truth[side][:1000]
    rig.exchange.resume()


def test_when_the_proxy_stops_its_bots_get_a_close_frame(rig):
    bots = [rig.via_proxy("/ws/btcusdt@trade"), rig.via_proxy("/stream?streams=ethusdt@trade")]
    rig.until(lambda: all(b.data_frames() for b in bots), 60)
    rig.service.stopService()
    rig.sleep(2)
    assert [b.factory.closed[0] for b in bots] == [1001, 1001]
