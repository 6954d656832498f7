"""Slow and hostile bots cost bounded memory: a bot that stops reading is
closed at its send-buffer bound while the others keep receiving; connections
are capped per address and in total; a bot that stops answering pings is
dropped; a listenKey never reaches a log."""

from __future__ import annotations

import pytest
from test_ws_gateway import GatewayRig
from twisted.logger import formatEvent, globalLogPublisher
from wsbots import refused


@pytest.fixture
def rig():
    r = GatewayRig()
    yield r
    r.stop()


def gateway_bot(rig, n: int):
    """The proxy's side of the ``n``-th bot connection."""
    return sorted(rig.gateway.bots, key=id)[n]


def test_a_bot_that_stops_reading_is_closed_at_its_buffer_bound_the_others_keep_receiving(
        rig):
    rig.gateway.limits.max_backlog = 4096
    bots = [rig.via_proxy("/ws/btcusdt@depth@100ms") for _ in range(3)]
    rig.until(lambda: all(b.data_frames() for b in bots), 60)
    slow = next(b for b in rig.gateway.bots)
    slow.transport.producer.pauseProducing()  # its socket buffer is full
    others = [b for b in rig.gateway.bots if b is not slow]
    rig.until(lambda: slow not in rig.gateway.bots, 60)
    assert rig.gateway.slow_closes == 1
    closed = [b.factory.closed for b in bots if b.factory.closed is not None]
    assert closed == [(1008, "bnproxy: client too slow, send buffer full")]
    assert slow.backlog <= 4096  # never past the bound
    counts = [len(b.frames) for b in bots]
    rig.sleep(5)
    receiving = [len(b.frames) > c for b, c in zip(bots, counts, strict=True)]
    assert receiving.count(True) == 2 and len(others) == 2


def test_a_slow_bot_that_catches_up_is_not_closed(rig):
    rig.gateway.limits.max_backlog = 1 << 20
    bot = rig.via_proxy("/ws/btcusdt@trade")
    rig.until(lambda: bot.data_frames(), 60)
    proxy_side = next(iter(rig.gateway.bots))
    proxy_side.transport.producer.pauseProducing()
    rig.sleep(2)
    proxy_side.transport.producer.resumeProducing()
    rig.sleep(2)
    assert proxy_side in rig.gateway.bots and proxy_side.backlog == 0


def test_connections_are_capped_per_client_address_and_in_total(rig):
    rig.gateway.limits.per_client = 2
    first = [rig.via_proxy("/ws") for _ in range(2)]
    assert "429" in refused(rig.reactor, rig.port, "/ws")
    first[0].sendClose(1000)
    rig.sleep(1)
    rig.via_proxy("/ws")  # room again
    rig.gateway.limits.per_client = 100
    rig.gateway.limits.total = 2
    assert "429" in refused(rig.reactor, rig.port, "/ws")
    assert rig.gateway.refused == 2


def test_a_taken_over_connection_is_not_counted_as_an_http_connection(rig):
    for _ in range(5):
        rig.via_proxy("/ws")
    assert not rig.service.site._open  # the HTTP cap counts none of them


def test_a_bot_that_never_answers_pings_is_dropped(rig):
    bot = rig.via_proxy("/ws/btcusdt@trade")
    bot.onPing = lambda payload: None  # no pong
    rig.sleep(20 + 60 + 5)
    assert bot.factory.closed is not None
    assert not rig.gateway.bots


def test_a_listen_key_never_reaches_a_log(rig):
    key = "Lk0x7vQ2pZk9w1Yt4n8Rb5Jc3Hs6Dq0Ef1Ga2Mb7Nc8Pd9Re0Sf1Tg2Uh3Vi4Wj5"
    seen: list[str] = []

    def observer(event):
        seen.append(formatEvent(event) + repr(event))
    globalLogPublisher.addObserver(observer)
    try:
        refused(rig.reactor, rig.port, f"/ws/{key}")  # spot: retired
        bot = rig.via_proxy(f"/usdm/ws/{key}")  # futures: relayed (test_ws_userdata.py)
        bot.sendClose(1000)
        rig.sleep(1)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert not any(key in line for line in seen)
