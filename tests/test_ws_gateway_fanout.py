"""Fan-out: one upstream subscription per stream however many bots (and REST
responders) want it, a frame framed once per framing, subscriptions released
after the idle rule, and Binance's control-message rate kept upstream."""

from __future__ import annotations

from collections import Counter, defaultdict

import orjson
import pytest
from test_ws_gateway import GatewayRig

from bnproxy.server import websocket


@pytest.fixture
def rig():
    r = GatewayRig()
    yield r
    r.stop()


def upstream_subscribers(rig, market: str, stream: str) -> int:
    """How many of the fake's connections carry ``stream`` (the proxy's only)."""
    return len(rig.exchange.hubs[market].subs.get(stream, ()))


def test_many_bots_share_one_upstream_subscription_and_frames_are_framed_once(rig,
                                                                              monkeypatch):
    made = Counter()
    real = websocket.text_frame

    def counting(payload):
        made[payload[:12]] += 1
        return real(payload)
    raw = [rig.via_proxy("/ws/btcusdt@trade") for _ in range(10)]
    combined = [rig.via_proxy("/stream?streams=btcusdt@trade") for _ in range(10)]
    rig.until(lambda: all(b.data_frames() for b in raw + combined), 60)
    assert upstream_subscribers(rig, "spot", "btcusdt@trade") == 1
    frames_before = rig.gateway.frames_out
    monkeypatch.setattr(websocket, "text_frame", counting)
    upstream_before = rig.streams.hub.frames
    rig.sleep(10)
    upstream = rig.streams.hub.frames - upstream_before
    assert upstream > 0
    assert sum(made.values()) == 2 * upstream  # once raw, once combined: not once a bot
    assert rig.gateway.frames_out - frames_before == 20 * upstream
    last = {b.frames[-1] for b in raw}
    assert len(last) == 1  # every bot got the same bytes


def test_a_subscription_is_released_after_the_idle_rule_once_the_last_bot_leaves(rig):
    bots = [rig.via_proxy("/ws/ethusdt@bookTicker") for _ in range(3)]
    rig.until(lambda: upstream_subscribers(rig, "spot", "ethusdt@bookTicker") == 1, 60)
    for bot in bots[:2]:
        bot.sendClose(1000)
    rig.sleep(60)
    assert upstream_subscribers(rig, "spot", "ethusdt@bookTicker") == 1
    bots[2].sendClose(1000)
    idle = rig.streams.settings.idle_depth
    rig.sleep(idle - 30)
    assert upstream_subscribers(rig, "spot", "ethusdt@bookTicker") == 1
    rig.sleep(60)
    assert upstream_subscribers(rig, "spot", "ethusdt@bookTicker") == 0


def test_a_stream_held_for_rest_is_relayed_to_bots_without_a_second_subscription(rig):
    rig.ask("/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=10")
    rig.until(lambda: upstream_subscribers(rig, "spot", "btcusdt@kline_1m") == 1, 60)
    before = rig.exchange.counters.ws_control_messages
    bot = rig.via_proxy("/ws/btcusdt@kline_1m")
    rig.until(lambda: bot.data_frames(), 60)
    assert upstream_subscribers(rig, "spot", "btcusdt@kline_1m") == 1
    assert rig.exchange.counters.ws_control_messages == before  # nothing sent upstream
    assert orjson.loads(bot.data_frames()[-1])["e"] == "kline"
    bot.sendClose(1000)  # the bot leaves: REST still holds it, so does the subscription
    rig.sleep(120)
    assert upstream_subscribers(rig, "spot", "btcusdt@kline_1m") == 1


def test_a_stream_bots_watch_serves_rest_with_no_new_subscription(rig):
    bot = rig.via_proxy("/ws/btcusdt@kline_1m")
    rig.until(lambda: bot.data_frames(), 60)
    before = rig.exchange.counters.ws_control_messages
    rig.ask("/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=10")
    rig.sleep(5)
    assert rig.exchange.counters.ws_control_messages == before
    assert upstream_subscribers(rig, "spot", "btcusdt@kline_1m") == 1
    bot.sendClose(1000)  # REST now also holds it: the bots' leaving does not end it
    rig.sleep(300)
    assert upstream_subscribers(rig, "spot", "btcusdt@kline_1m") == 1


STORM_SYMBOLS = ["btcusdt", "ethusdt", "solusdt", "bnbusdt", "xrpusdt", "adausdt"]
STORM_KINDS = ["trade", "aggTrade", "bookTicker", "ticker", "miniTicker", "depth",
               "depth@100ms", "depth5"]


def test_a_subscribe_storm_gives_one_upstream_subscription_per_stream_within_the_rate():
    rig = GatewayRig()
    try:
        fake = rig.exchange.hubs["spot"]
        sent: dict[object, list[float]] = defaultdict(list)
        control = fake.control

        def recording(p, payload):
            sent[p].append(rig.reactor.seconds())
            return control(p, payload)
        fake.control = recording
        names = [f"{s}@{k}" for s in STORM_SYMBOLS for k in STORM_KINDS]  # 48 streams
        bots = [rig.via_proxy("/ws") for _ in range(50)]
        for i, bot in enumerate(bots):
            mine = [names[(i + j) % len(names)] for j in range(40)]
            for k in range(0, 40, 10):  # four SUBSCRIBEs of ten, as a bot would
                bot.send_json({"method": "SUBSCRIBE", "params": mine[k:k + 10], "id": k})
        rig.sleep(30)
        assert all(b.factory.closed is None for b in bots)
        assert all(len(b.answers()) == 4 and all(a["result"] is None for a in b.answers())
                   for b in bots)
        assert all(upstream_subscribers(rig, "spot", n) == 1 for n in names)
        assert rig.exchange.counters.ws_rate_disconnects == 0
        for times in sent.values():  # never more than 5 in any second
            assert all(sum(1 for u in times if t <= u < t + 1) <= 5 for t in times)
        assert sum(len(t) for t in sent.values()) < 10  # batched, not one per stream
    finally:
        rig.stop()


def test_a_stream_waiting_for_exchange_info_is_placed_once_it_can_be_fetched(rig):
    faults = rig.exchange.faults
    faults.error_status, faults.error_rate = 503, 1.0
    faults.path_prefix = "/api/v3/exchangeInfo"
    bot = rig.via_proxy("/ws/btcusdt@aggTrade")
    rig.sleep(15)
    assert upstream_subscribers(rig, "spot", "btcusdt@aggTrade") == 0  # symbols not known
    faults.reset()
    rig.sleep(60)
    assert upstream_subscribers(rig, "spot", "btcusdt@aggTrade") == 1
    assert bot.data_frames()


def test_a_malformed_name_in_a_bots_url_never_joins_the_shared_subscription(rig):
    """A URL's names are taken as given (ccxt opens /ws/0), but one Binance
    would refuse is never subscribed upstream beside other bots' streams."""
    odd = rig.via_proxy("/ws/btcusdt@trade%20x/0")
    good = rig.via_proxy("/ws/btcusdt@trade")
    rig.until(lambda: good.data_frames(), 60)
    hub = rig.exchange.hubs["spot"]
    assert upstream_subscribers(rig, "spot", "btcusdt@trade") == 1
    assert not any(" " in name or name == "0" for name in hub.subs)
    assert odd.frames == [] or not odd.data_frames()
