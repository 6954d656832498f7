"""The dashboard's websocket panel, in virtual time: bots connected through
the proxy's gateway to the fake exchange, as ``/dashboard/state`` and the
live events show them (named as the Bots table names them, their streams
bounded, no secret), the upstream side per egress address, frames a second
in the history, and the empty state."""

from __future__ import annotations

import json
import re

import orjson
import pytest
from autobahn.twisted.websocket import WebSocketClientFactory
from test_ws_gateway import GatewayRig
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint
from wsbots import RawBot

from bnproxy.dashboard.feed import EVENT_WS_BOTS, WS_BOTS, WS_NAMES
from bnproxy.dashboard.firstpaint import first_paint

CHAIN = (("logger", {}), ("allowlist", {}), ("streams", {}), ("cache", {}))
API_KEY = "k" * 64


@pytest.fixture
def rig():
    r = GatewayRig(chain=CHAIN)
    yield r
    r.stop()


def bot(rig, path: str, headers: dict | None = None) -> RawBot:
    """A bot through the proxy, sending ``headers`` with its upgrade."""
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{rig.port}{path}", reactor=rig.reactor,
                                     headers=headers or {})
    factory.protocol = RawBot
    factory.frames, factory.closed, factory.opened = [], None, defer.Deferred()
    factory.setProtocolOptions(autoPingInterval=None)
    rig.reactor.run_until(TCP4ClientEndpoint(rig.reactor, "127.0.0.1", rig.port, timeout=5)
                          .connect(factory), 10)
    return rig.reactor.run_until(factory.opened, 10)


def state(rig) -> dict:
    return json.loads(rig.service.dashboard.state_bytes())


def panel(rig) -> dict:
    return rig.service.dashboard.document["websocket"]


def test_no_bot_on_websockets_is_an_empty_panel(rig):
    rig.sleep(2)
    w = panel(rig)
    assert (w["connections"], w["clients"], w["subscriptions"], w["bots"]) == (0, 0, 0, [])
    page = first_paint("<tbody><!--ws-bots--></tbody>", rig.service.dashboard.document)
    assert b"no bot uses websockets" in page
    series = state(rig)["history"]["series"]
    assert series["ws.delivered"][-1] == 0 and series["ws.relayed"][-1] == 0


def test_bots_their_streams_and_the_upstream_side_are_shown(rig):
    a1 = bot(rig, "/ws/btcusdt@trade/btcusdt@ticker", {"X-Bnproxy-Client": "ws-a"})
    a2 = bot(rig, "/usdm/market/ws/btcusdt@markPrice", {"X-Bnproxy-Client": "ws-a"})
    keyed = bot(rig, "/stream?streams=ethusdt@aggTrade", {"X-MBX-APIKEY": API_KEY})
    rig.until(lambda: a1.data_frames() and a2.data_frames() and keyed.data_frames())
    a1.send_json({"method": "SUBSCRIBE", "params": ["ethusdt@trade"], "id": 1})
    rig.sleep(5)
    w = panel(rig)
    assert (w["connections"], w["clients"], w["subscriptions"], w["streams"]) == (3, 2, 5, 5)
    rows = {r["client"]: r for r in w["bots"]}
    a = rows["ws-a"]  # two connections of one bot, named by its header as in the Bots table
    assert (a["connections"], a["markets"], a["subscriptions"], a["distinct"]) == (
        2, ["spot", "usdm"], 4, 4)
    assert set(a["streams"]) == {"spot:btcusdt@trade", "spot:btcusdt@ticker",
                                 "spot:ethusdt@trade", "usdm:btcusdt@markPrice"}
    # the keyed bot is named by its key's salted hash, as the access log names it
    bots = {c["client"] for c in state(rig)["clients"]}
    (hashed,) = set(rows) - {"ws-a"}
    assert hashed in bots and API_KEY not in hashed
    assert rows[hashed]["streams"] == ["ethusdt@aggTrade"]
    # frames relayed: counted, and a second's worth in the history
    assert w["frames"] > 0 and w["relayed_frames"] > 0 and w["relayed_bytes"] > 0
    series = state(rig)["history"]["series"]
    assert sum(series["ws.delivered"][-3:]) > 0 and sum(series["ws.relayed"][-3:]) > 0
    # upstream: one connection per market for every bot, the SUBSCRIBEs it took
    spot, usdm = w["upstream"]["spot"], w["upstream"]["usdm"]
    assert spot["egress"] == [{"egress": None, "connections": 1,
                               "control_messages": spot["egress"][0]["control_messages"]}]
    assert spot["egress"][0]["control_messages"] >= 2  # the URL's, then ethusdt@trade
    assert spot["bot_streams"] == 4 and usdm["bot_streams"] == 1
    assert (spot["stale"], usdm["stale"]) == (0, 0)
    # the first paint shows the same rows
    page = first_paint("<tbody><!--ws-bots--></tbody><tbody><!--ws-upstream--></tbody>",
                       rig.service.dashboard.document).decode()
    assert 'data-client="ws-a"' in page and "usdm:btcusdt@markPrice" in page
    assert re.search(r'<td title="since 09:30:\d\d UTC">0:0[5-9]</td>', page)  # connected for
    assert '<tr data-market="spot"><td>spot</td><td>default</td><td>1</td>' in page
    # a bot that leaves is gone at the next tick; the last one leaving empties the panel
    a2.sendClose()
    rig.sleep(2)
    assert {r["client"]: r["connections"] for r in panel(rig)["bots"]}["ws-a"] == 1
    for b in (a1, keyed):
        b.sendClose()
    rig.sleep(2)
    assert panel(rig)["bots"] == [] and panel(rig)["connections"] == 0


def test_stale_streams_of_the_bots_are_shown_upstream(rig):
    b = bot(rig, "/ws/btcusdt@trade/btcusdt@kline_1m", {"X-Bnproxy-Client": "quiet"})
    rig.until(lambda: b.data_frames())
    rig.sleep(2)
    assert panel(rig)["upstream"]["spot"]["stale"] == 0
    rig.exchange.hubs["spot"].silence_all = True  # open, answering pings, but no message
    rig.sleep(4)
    spot = panel(rig)["upstream"]["spot"]
    assert spot["stale"] >= 1 and "btcusdt@trade" in spot["stale_streams"]
    rig.exchange.hubs["spot"].silence_all = False


def test_rows_and_names_are_bounded_and_no_secret_is_shown(rig):
    many = [f"{s}@{k}" for s in ("btcusdt", "ethusdt", "solusdt", "bnbusdt", "xrpusdt")
            for k in ("trade", "aggTrade", "ticker", "bookTicker")]
    wide = bot(rig, "/stream?streams=" + "/".join(many), {"X-Bnproxy-Client": "wide"})
    for i in range(WS_BOTS + 5):
        bot(rig, "/ws/btcusdt@trade", {"X-Bnproxy-Client": f"bot-{i:02d}"})
    # a name in the URL that is no stream name (ccxt's /ws/0) is never shown
    odd = bot(rig, "/ws/0", {"X-MBX-APIKEY": API_KEY})
    odd.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@depth"], "id": 1})
    rig.until(lambda: wide.data_frames())
    rig.sleep(3)
    w = panel(rig)
    assert w["clients"] == WS_BOTS + 7 and len(w["bots"]) == WS_BOTS
    first = w["bots"][0]  # the most subscriptions first
    assert first["client"] == "wide" and first["subscriptions"] == len(many) == 20
    assert first["streams"] == many[:WS_NAMES]
    odd_row = next((r for r in w["bots"] if r["subscriptions"] == 2), None)
    assert odd_row is not None and odd_row["streams"] == ["btcusdt@depth"]
    text = rig.service.dashboard.state_bytes() + rig.service.dashboard.event
    assert API_KEY.encode() not in text
    # the live event: the panel's rows once, then a second later only the counters
    rig.sleep(1)
    patch = orjson.loads(rig.service.dashboard.delta.split(b"data: ", 1)[1])
    assert set(patch.get("websocket", {})) <= {"frames", "relayed_frames", "relayed_bytes",
                                               "upstream"}
    # a page's first event: the 20 busiest bots, the state all 50
    live = orjson.loads(rig.service.dashboard.event.split(b"data: ", 1)[1])
    assert live["websocket"]["bots"] == w["bots"][:EVENT_WS_BOTS]
    assert len(state(rig)["websocket"]["bots"]) == WS_BOTS
    assert len(orjson.dumps(live["websocket"])) < 6_000


def test_the_gateway_and_hub_are_found_by_interface_and_none_is_an_empty_state():
    from twisted.internet import task
    from zope.interface import implementer

    from bnproxy.chain.interfaces import IStreamGateway, IStreamHub
    from bnproxy.dashboard.feed import DashboardFeed
    from bnproxy.server.metrics import Metrics

    view = {"connections": 1, "clients": 1, "subscriptions": 2, "streams": 2, "frames": 10,
            "control_messages": 0, "slow_closes": 1, "rate_closes": 0, "upstream_closes": 0,
            "refused": 0, "bots": [{"client": "b", "connections": 1, "markets": ["spot"],
                                    "subscriptions": 2, "distinct": 2,
                                    "streams": ["btcusdt@trade", "btcusdt@depth"],
                                    "since": 0.0}]}

    @implementer(IStreamGateway)
    class Gateway:
        frames = 10

        def gateway_view(self, limit, names):
            return {**view, "frames": self.frames}

    @implementer(IStreamHub)
    class Hub:
        def stream_markets(self):
            return ("spot",)

        def subscribe(self, market, stream, listener, lost=None):
            raise NotImplementedError

        def upstream_view(self):
            return {"frames": 7, "bytes": 700, "markets": {"spot": {"streams": 2}}}

    class LooksLikeAGateway:  # the method, not the interface: ignored
        def gateway_view(self, limit, names):
            raise AssertionError("asked by its shape")

    clock = task.Clock()
    gateway = Gateway()
    feed = DashboardFeed(clock, lambda: [LooksLikeAGateway(), gateway, Hub()], Metrics())
    feed.tick()
    gateway.frames = 25
    clock.advance(1)
    feed.tick()
    w = feed.document["websocket"]
    assert (w["frames"], w["relayed_frames"], w["relayed_bytes"], w["slow_closes"]) == (
        25, 7, 700, 1)
    assert w["upstream"] == {"spot": {"streams": 2}} and w["bots"] == view["bots"]
    assert json.loads(feed.state_bytes())["history"]["series"]["ws.delivered"] == [10, 15]
    page = first_paint("<dl><!--ws-figures--></dl><tbody><!--ws-bots--></tbody>",
                       feed.document).decode()
    assert "<dt>slow-client closes</dt><dd>1</dd>" in page
    assert "btcusdt@trade, btcusdt@depth</td>" in page
    alone = DashboardFeed(clock, lambda: [LooksLikeAGateway()], Metrics())
    alone.tick()
    assert alone.document["websocket"] is None
    assert "ws.delivered" not in json.loads(alone.state_bytes())["history"]["series"]
    assert b"no websocket gateway" in first_paint("<!--ws-bots-->", alone.document)
