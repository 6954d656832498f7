"""The bots' websocket gateway against the fake exchange, in virtual time:
a bot through the proxy receives byte for byte what a bot straight at the
fake receives, speaks the same control protocol, and shares one upstream
subscription per stream with every other bot and the REST responders."""

from __future__ import annotations

import orjson
import pytest
from streamhelpers import VirtualRig
from wsbots import open_bot, refused

CHAIN = (("allowlist", {}), ("streams", {}), ("cache", {}))


class GatewayRig(VirtualRig):
    def __init__(self, chain=CHAIN, **kwargs) -> None:
        super().__init__(chain=chain, **kwargs)
        self.port = self.reactor.listenTCP(0, self.service.site).getHost().port
        self.fake_port = self.running.port

    @property
    def streams(self):
        return self.service.middlewares[1]

    @property
    def gateway(self):
        return self.service.site.resource._gateway.gateway

    def via_proxy(self, path: str):
        return open_bot(self.reactor, self.port, path)

    def direct(self, market: str, path: str):
        return open_bot(self.reactor, self.fake_port, f"/{market}{path}")

    def stop(self) -> None:
        self.service.stopService()
        self.running.stop()


@pytest.fixture
def rig():
    r = GatewayRig()
    yield r
    r.stop()


SPOT = ["btcusdt@kline_1m", "btcusdt@depth", "btcusdt@depth@100ms", "btcusdt@depth5",
        "btcusdt@depth20@100ms", "btcusdt@ticker", "btcusdt@miniTicker", "btcusdt@bookTicker",
        "btcusdt@trade", "btcusdt@aggTrade", "ethusdt@aggTrade", "!miniTicker@arr"]
USDM_MARKET = ["btcusdt@kline_1m", "btcusdt@markPrice", "btcusdt@markPrice@1s",
               "!markPrice@arr", "btcusdt@aggTrade", "btcusdt@ticker"]
USDM_PUBLIC = ["btcusdt@depth", "btcusdt@depth5", "btcusdt@bookTicker"]


def contiguous(sub: list[bytes], full: list[bytes]) -> bool:
    """``sub`` appears in ``full`` as one unbroken run."""
    if not sub:
        return False
    return any(full[i:i + len(sub)] == sub for i in range(len(full) - len(sub) + 1))


def per_stream(frames: list[bytes]) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for f in frames:
        out.setdefault(orjson.loads(f)["stream"], []).append(f)
    return out


@pytest.mark.parametrize("market,mount,streams", [
    ("spot", "", SPOT), ("spot", "/spot", SPOT),
    ("usdm", "/usdm/market", USDM_MARKET), ("usdm", "/usdm/public", USDM_PUBLIC),
    ("coinm", "/coinm", ["btcusd_perp@kline_1m", "btcusd_perp@depth", "btcusd_perp@aggTrade",
                         "btcusd_perp@markPrice"])])
def test_combined_frames_are_byte_for_byte_the_fakes(rig, market, mount, streams):
    route = mount.removeprefix("/usdm") if market == "usdm" else ""
    query = "/".join(streams)
    proxied = rig.via_proxy(f"{mount}/stream?streams={query}")
    rig.until(lambda: len(per_stream(proxied.data_frames())) == len(streams), 60)
    direct = rig.direct(market, f"{route}/stream?streams={query}")
    rig.sleep(20)
    rig.reactor.flush()
    mine, theirs = per_stream(proxied.data_frames()), per_stream(direct.data_frames())
    assert set(theirs) == set(streams)
    for stream in streams:
        assert contiguous(theirs[stream], mine[stream]), stream


@pytest.mark.parametrize("stream", SPOT)
def test_raw_frames_are_byte_for_byte_the_fakes(rig, stream):
    proxied = rig.via_proxy(f"/ws/{stream}")
    rig.until(lambda: proxied.data_frames(), 60)
    direct = rig.direct("spot", f"/ws/{stream}")
    rig.sleep(12)
    rig.reactor.flush()
    assert not proxied.data_frames()[0].startswith(b'{"stream"')
    assert contiguous(direct.data_frames(), proxied.data_frames())


def test_the_control_protocol_answers_as_the_fake_does(rig):
    script = [
        {"method": "SUBSCRIBE", "params": ["btcusdt@trade", "ethusdt@aggTrade"], "id": 1},
        {"method": "LIST_SUBSCRIPTIONS", "id": 2},
        {"method": "UNSUBSCRIBE", "params": ["btcusdt@trade"], "id": "a3"},
        {"method": "LIST_SUBSCRIPTIONS", "id": 4},
        {"method": "GET_PROPERTY", "params": ["combined"], "id": 5},
        {"method": "SET_PROPERTY", "params": ["combined", True], "id": 6},
        {"method": "GET_PROPERTY", "params": ["combined"], "id": 7},
        {"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 8},
        {"method": "GET_PROPERTY", "params": ["colour"], "id": 9},
        {"method": "GET_PROPERTY", "params": [1], "id": 10},
        {"method": "PUBLISH", "id": 11},
        {"id": 12},
        {"method": "SUBSCRIBE", "params": "btcusdt@trade", "id": 13},
        {"method": "LIST_SUBSCRIPTIONS", "id": [1]},
    ]
    answers = {}
    for name, bot in (("proxy", rig.via_proxy("/ws")), ("fake", rig.direct("spot", "/ws"))):
        for i, message in enumerate(script):
            bot.send_json(message)
            if i % 4 == 3:
                rig.sleep(1.1)  # Binance's 5 messages a second
        bot.sendMessage(b"{not json")
        rig.sleep(1.1)
        answers[name] = bot.answers()
    assert answers["proxy"] == answers["fake"]
    assert answers["proxy"][1] == {"result": ["btcusdt@trade", "ethusdt@aggTrade"], "id": 2}


def test_combined_set_on_a_raw_connection_switches_the_framing(rig):
    bot = rig.via_proxy("/ws/btcusdt@trade")
    rig.until(lambda: bot.data_frames(), 60)
    bot.send_json({"method": "SET_PROPERTY", "params": ["combined", True], "id": 1})
    rig.sleep(0.5)
    n = len(bot.frames)
    rig.until(lambda: len(bot.frames) > n + 1, 60)
    assert bot.frames[-1].startswith(b'{"stream":"btcusdt@trade","data":{')


def test_an_invalid_stream_name_is_refused_as_binance_does(rig):
    bot = rig.via_proxy("/ws")
    bot.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@trade", "not a stream"],
                   "id": 7})
    bot.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 8})
    rig.sleep(0.5)
    assert bot.answers() == [{"error": {"code": 2, "msg": "Invalid request: invalid stream"},
                              "id": 7}, {"result": [], "id": 8}]


def test_an_unknown_symbol_is_accepted_but_never_subscribed_upstream(rig):
    bot = rig.via_proxy("/ws/nosuchcoin@trade")
    bot.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 1})
    rig.sleep(5)
    assert bot.answers() == [{"result": ["nosuchcoin@trade"], "id": 1}]
    assert "nosuchcoin@trade" not in rig.streams.managers["spot"].placed
    assert not bot.data_frames()


def test_over_the_message_rate_a_bot_is_closed_with_1008(rig):
    bot = rig.via_proxy("/ws")
    for i in range(6):
        bot.send_json({"method": "LIST_SUBSCRIPTIONS", "id": i})
    rig.sleep(2)
    assert bot.factory.closed is not None and bot.factory.closed[0] == 1008
    assert rig.gateway.rate_closes == 1


def test_too_many_streams_on_one_connection_are_refused(rig):
    bot = rig.via_proxy("/usdm/market/ws")
    names = [f"btcusdt@kline_{i}m" for i in range(201)]
    bot.send_json({"method": "SUBSCRIBE", "params": names, "id": 1})
    rig.sleep(0.5)
    assert bot.answers() == [{"error": {"code": 2, "msg": "Invalid request: too many streams"},
                              "id": 1}]


def test_user_data_streams_are_refused_and_paths_not_streams_too(rig):
    key = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"
    assert "400" in refused(rig.reactor, rig.port, f"/ws/{key}")
    assert "404" in refused(rig.reactor, rig.port, "/wsx/btcusdt@trade")


def test_a_time_unit_stream_is_refused_not_sent_in_milliseconds(rig):
    for path in ("/ws/btcusdt@trade?timeUnit=MICROSECOND",
                 "/stream?streams=btcusdt@trade&timeUnit=microsecond"):
        assert "[400]" in refused(rig.reactor, rig.port, path)
    assert not rig.streams.managers["spot"].placed  # nothing subscribed for them


def test_the_allowlist_applies_to_the_upgrade():
    rig = GatewayRig()
    try:
        rig.service.middlewares[0].networks = []  # nobody admitted
        rig.service.middlewares[0]._decided.clear()
        assert "403" in refused(rig.reactor, rig.port, "/ws/btcusdt@trade")
        assert not rig.streams.managers["spot"].placed
    finally:
        rig.stop()


def test_metrics_show_bots_subscriptions_frames_and_upstream_control_messages(rig):
    from prometheus_client import generate_latest

    bots = [rig.via_proxy("/ws/btcusdt@trade/ethusdt@trade") for _ in range(2)]
    rig.until(lambda: all(b.data_frames() for b in bots), 60)
    text = generate_latest(rig.service.metrics.registry).decode()
    lines = dict(line.rsplit(" ", 1) for line in text.splitlines()
                 if line and not line.startswith("#"))
    assert float(lines['bnproxy_ws_bot_connections{market="spot"}']) == 2
    assert float(lines['bnproxy_ws_bot_subscriptions{market="spot"}']) == 4
    assert float(lines["bnproxy_ws_frames_delivered_total"]) >= 2
    assert float(lines["bnproxy_ws_relayed_frames_total"]) >= 1
    assert float(lines["bnproxy_ws_relayed_bytes_total"]) > 0
    assert float(lines['bnproxy_stream_control_messages_total{egress="default",'
                       'market="spot"}']) >= 1


def test_the_upgrade_gets_an_access_line():
    rig = GatewayRig(chain=(("logger", {}), *CHAIN))
    try:
        lines: list[bytes] = []
        rig.service.access_log.write = lines.append
        rig.via_proxy("/ws/btcusdt@trade")
        assert any(b"/ws/btcusdt@trade" in line and b"101" in line for line in lines), lines
    finally:
        rig.stop()
