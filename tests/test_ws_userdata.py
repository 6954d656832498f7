"""User-data streams relayed one to one, against the fake exchange in virtual
time: a bot through the proxy receives byte for byte the ORDER_TRADE_UPDATE
frames a bot straight at the fake receives; each bot has its own upstream
connection (never shared, never fed to the stream hub); upstream refusals
and closes reach the bot, the bot's close reaches upstream; the upstream
connect has a deadline and waits for the per-egress pace; a bot that stops
reading is closed at its buffer bound; the listenKey never reaches a log, a
metric or the access log."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest
from autobahn.websocket.types import ConnectionDeny
from test_ws_gateway import GatewayRig
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from wsbots import refused

KEYS = {"key-a": "secret-a", "key-b": "secret-b"}
ORDER_PATH = {"usdm": "/fapi/v1/order", "coinm": "/dapi/v1/order"}
LISTEN_PATH = {"usdm": "/fapi/v1/listenKey", "coinm": "/dapi/v1/listenKey"}
SYMBOL = {"usdm": ("BTCUSDT", "0.010"), "coinm": ("BTCUSD_PERP", "1")}


@pytest.fixture
def rig():
    r = GatewayRig(keys=KEYS)
    yield r
    r.stop()


def listen_key(rig, market: str, api_key: str = "key-a") -> str:
    status, body, _ = rig.exchange.answer(market, "POST", LISTEN_PATH[market], b"", b"",
                                          {b"x-mbx-apikey": api_key.encode()}, "127.0.0.1")
    assert status == 200, body
    return orjson.loads(body)["listenKey"]


def place_order(rig, market: str, api_key: str = "key-a") -> None:
    symbol, qty = SYMBOL[market]
    query = (f"symbol={symbol}&side=BUY&type=MARKET&quantity={qty}"
             f"&timestamp={rig.exchange.server_ms()}")
    sig = hmac.new(KEYS[api_key].encode(), query.encode(), hashlib.sha256).hexdigest()
    status, body, _ = rig.exchange.answer(
        market, "POST", ORDER_PATH[market], f"{query}&signature={sig}".encode(), b"",
        {b"x-mbx-apikey": api_key.encode()}, "127.0.0.1")
    assert status == 200, body


def events(bot) -> list[dict]:
    return [orjson.loads(f) for f in bot.frames]


def upstream_of(rig, key: str) -> set:
    """The fake's connections carrying ``key``'s events."""
    return rig.exchange.user_streams.connections[key]


@pytest.mark.parametrize("market,path", [
    ("usdm", "/usdm/ws/{key}"),
    ("usdm", "/usdm/private/ws?listenKey={key}&events=ORDER_TRADE_UPDATE"),
    ("coinm", "/coinm/ws/{key}")])
def test_a_bot_through_the_proxy_receives_the_fakes_frames_byte_for_byte(rig, market, path):
    key = listen_key(rig, market)
    target = path.format(key=key)
    proxied = rig.via_proxy(target)
    direct = rig.direct(market, target.removeprefix(f"/{market}"))
    rig.until(lambda: len(upstream_of(rig, key)) == 2, 30)
    place_order(rig, market)
    rig.until(lambda: len(direct.frames) >= 2 and len(proxied.frames) >= len(direct.frames), 30)
    rig.sleep(1)
    assert proxied.frames == direct.frames
    kinds = [(e["e"], e["o"]["x"]) for e in events(proxied)]
    assert kinds[0] == ("ORDER_TRADE_UPDATE", "NEW") and ("ORDER_TRADE_UPDATE", "TRADE") in kinds
    # never fed to the hub nor subscribed upstream as a stream
    assert not rig.streams.hub.handles and not rig.streams.managers[market].placed
    relay = rig.gateway.user_data
    assert relay.open_count[market] == 1 and relay.frames_down == len(proxied.frames)


def test_each_bot_gets_its_own_upstream_connection_and_only_its_own_frames(rig):
    key_a, key_b = listen_key(rig, "usdm", "key-a"), listen_key(rig, "usdm", "key-b")
    assert key_a != key_b
    a1 = rig.via_proxy(f"/usdm/ws/{key_a}")
    a2 = rig.via_proxy(f"/usdm/ws/{key_a}")
    b = rig.via_proxy(f"/usdm/private/ws?listenKey={key_b}&events=ORDER_TRADE_UPDATE")
    rig.until(lambda: len(upstream_of(rig, key_a)) == 2 and len(upstream_of(rig, key_b)) == 1)
    place_order(rig, "usdm", "key-a")
    rig.until(lambda: len(a1.frames) >= 2 and len(a2.frames) == len(a1.frames), 30)
    rig.sleep(1)
    assert b.frames == [] and a1.frames == a2.frames
    place_order(rig, "usdm", "key-b")
    rig.until(lambda: len(b.frames) >= 2, 30)
    rig.sleep(1)
    order_a = {e["o"]["i"] for e in events(a1)}
    order_b = {e["o"]["i"] for e in events(b)}
    assert len(order_a) == len(order_b) == 1 and order_a != order_b
    assert len(a1.frames) == len(a2.frames)  # nothing of b's
    assert rig.gateway.user_data.open_count["usdm"] == 3


def test_closes_pass_through_both_ways(rig):
    key = listen_key(rig, "usdm")
    bot = rig.via_proxy(f"/usdm/ws/{key}")
    rig.until(lambda: len(upstream_of(rig, key)) == 1)
    upstream = next(iter(upstream_of(rig, key)))
    # Binance closing the connection (over its message rate, say): the same to the bot
    upstream.sendCloseFrame(code=1008, reasonUtf8=b"Too many requests", isReply=False)
    rig.until(lambda: bot.factory.closed is not None, 30)
    assert bot.factory.closed == (1008, "Too many requests")
    rig.until(lambda: not rig.gateway.bots, 30)
    assert rig.gateway.user_data.open_count["usdm"] == 0
    # the bot closing: the same code and reason upstream
    bot = rig.via_proxy(f"/usdm/ws/{key}")
    rig.until(lambda: len(upstream_of(rig, key)) == 1)
    upstream = next(iter(upstream_of(rig, key)))
    bot.sendClose(3001, "bot done")
    rig.until(lambda: not upstream_of(rig, key), 30)
    assert (upstream.remoteCloseCode, upstream.remoteCloseReason) == (3001, "bot done")


def test_an_upstream_that_drops_or_refuses_reaches_the_bot(rig):
    key = listen_key(rig, "usdm")
    bot = rig.via_proxy(f"/usdm/ws/{key}")
    rig.until(lambda: len(upstream_of(rig, key)) == 1)
    next(iter(upstream_of(rig, key))).dropConnection(abort=True)  # no close frame
    rig.until(lambda: bot.factory.closed is not None, 30)
    assert bot.factory.closed[0] == 1001 and "reconnect" in bot.factory.closed[1]
    # the upstream refuses the handshake: the bot's is refused with its status
    protocol = rig.exchange.hubs["usdm"].factory.protocol

    def deny(self, request):
        raise ConnectionDeny(400, "Bad Request")
    protocol.onConnect = deny
    assert "[400]" in refused(rig.reactor, rig.port, f"/usdm/ws/{key}")
    # the upstream cannot be reached: a close frame, never a silent socket
    rig.exchange.set_refuse(True)
    bot = rig.via_proxy(f"/usdm/ws/{key}")
    rig.until(lambda: bot.factory.closed is not None, 30)
    assert bot.factory.closed == (1011, "bnproxy: upstream user-data stream unreachable, "
                                        "reconnect")
    assert rig.gateway.user_data.failures == 2 and not rig.gateway.bots


def test_the_upstream_connect_has_a_deadline(rig):
    key = listen_key(rig, "usdm")
    protocol = rig.exchange.hubs["usdm"].factory.protocol
    protocol.onConnect = lambda self, request: defer.Deferred()  # never answers
    start = rig.reactor.seconds()
    bot = rig.via_proxy(f"/usdm/ws/{key}")
    rig.until(lambda: bot.factory.closed is not None, 30)
    assert bot.factory.closed == (1013, "bnproxy: upstream user-data stream did not answer "
                                        "in time, reconnect")
    assert rig.reactor.seconds() - start >= rig.gateway.user_data.deadline


def test_user_data_connections_over_the_pace_are_refused_at_once(rig):
    key = listen_key(rig, "usdm")
    pace = rig.streams.managers["usdm"].pace
    minute = int(rig.reactor.seconds() // 60) * 60
    pace._local.clear()
    pace.per_minute = 2
    first = [rig.via_proxy(f"/usdm/ws/{key}") for _ in range(2)]
    assert len(upstream_of(rig, key)) == 2 and pace._local[("default", minute)] == 2
    answer = refused(rig.reactor, rig.port, f"/usdm/ws/{key}")  # over the pace: told now
    assert "429" in answer and "retry in" in answer
    assert rig.gateway.user_data.paced == 1 and rig.gateway.user_data.failures == 0
    assert len(upstream_of(rig, key)) == 2 and all(b.factory.closed is None for b in first)


def test_a_bot_that_stops_reading_is_closed_at_its_buffer_bound(rig):
    key = listen_key(rig, "usdm")
    rig.gateway.limits.max_backlog = 300
    bot = rig.via_proxy(f"/usdm/ws/{key}")
    rig.until(lambda: len(upstream_of(rig, key)) == 1)
    upstream = next(iter(upstream_of(rig, key)))
    proxy_side = next(iter(rig.gateway.bots))
    proxy_side.transport.producer.pauseProducing()  # its socket buffer is full
    place_order(rig, "usdm")
    rig.until(lambda: bot.factory.closed is not None, 30)
    assert bot.factory.closed == (1008, "bnproxy: client too slow, send buffer full")
    assert rig.gateway.slow_closes == 1
    rig.until(lambda: upstream not in upstream_of(rig, key), 30)  # upstream closed too


def test_spot_user_data_streams_are_refused_as_retired(rig):
    key = "Lk0x7vQ2pZk9w1Yt4n8Rb5Jc3Hs6Dq0Ef1Ga2Mb7Nc8Pd9Re0Sf1Tg2Uh3Vi4Wj5"
    assert "400" in refused(rig.reactor, rig.port, f"/ws/{key}")
    assert "400" in refused(rig.reactor, rig.port, f"/spot/ws/{key}")


def test_a_listen_key_never_reaches_a_log_a_metric_or_the_access_log():
    from prometheus_client import generate_latest

    rig = GatewayRig(chain=(("allowlist", {}), ("logger", {}), ("streams", {}), ("cache", {})),
                     keys=KEYS)
    lines: list[bytes] = []
    rig.service.access_log.write = lines.append
    seen: list[str] = []

    def observer(event):
        seen.append(formatEvent(event) + repr(event))
    globalLogPublisher.addObserver(observer)
    try:
        key = listen_key(rig, "usdm")
        bot = rig.via_proxy(f"/usdm/ws/{key}")
        private = rig.via_proxy(f"/usdm/private/ws?listenKey={key}&events=ORDER_TRADE_UPDATE")
        place_order(rig, "usdm")
        rig.until(lambda: len(bot.frames) >= 2 and len(private.frames) >= 2, 30)
        metrics = generate_latest(rig.service.metrics.registry).decode()
        assert 'bnproxy_ws_user_data_connections{market="usdm"} 2.0' in metrics
        health = repr(rig.gateway.health())
        bot.sendClose(1000)

        def deny(self, request):
            raise ConnectionDeny(400, "Bad Request")
        rig.exchange.hubs["usdm"].factory.protocol.onConnect = deny
        refused(rig.reactor, rig.port, f"/usdm/ws/{key}")
        rig.exchange.set_refuse(True)
        failed = rig.via_proxy(f"/usdm/ws/{key}")
        rig.until(lambda: failed.factory.closed is not None, 30)
    finally:
        globalLogPublisher.removeObserver(observer)
        rig.stop()
    access = b"".join(lines).decode()
    assert access.count("[redacted]") >= 3 and "/usdm/ws/[redacted]" in access
    for text in (access, metrics, health, *seen):
        assert key not in text


def test_the_upstream_leaves_from_the_markets_egress_address_within_the_pace():
    from types import SimpleNamespace

    import attrs
    from autobahn.twisted.websocket import WebSocketClientFactory
    from twisted.internet.testing import MemoryReactorClock

    from bnproxy.binance.markets import PRODUCTION
    from bnproxy.chain.interfaces import PaceFullError
    from bnproxy.middleware.streams.dispatcher import Streams
    from bnproxy.middleware.streams.manager import StreamManager
    from bnproxy.middleware.streams.pace import (
        RESERVED_FOR_MARKET_DATA,
        USER_DATA_LIMIT,
        ConnectPace,
    )

    clock = MemoryReactorClock()
    market = attrs.evolve(PRODUCTION["usdm"], stream_base="wss://localhost:9443")  # in memory
    manager = StreamManager(clock, market, egresses=("127.0.0.2", "127.0.0.3"))
    manager.egress_banned = lambda egress: egress == "127.0.0.3"
    manager.pace = ConnectPace(clock)  # 50 new connections a minute per egress address
    streams = SimpleNamespace(managers={"usdm": manager})
    target = "/private/ws?listenKey=K&events=ORDER_TRADE_UPDATE"
    opened = [Streams.user_stream(streams, "usdm", target) for _ in range(USER_DATA_LIMIT + 1)]
    assert {url for _, url in opened} == {"wss://localhost:9443" + target}
    connecting = [endpoint.connect(WebSocketClientFactory(url, reactor=clock))
                  for endpoint, url in opened]
    clock.advance(1)
    assert {(c[0], c[1], c[4]) for c in clock.tcpClients} == {
        ("127.0.0.1", 9443, ("127.0.0.2", 0))}  # resolved in memory, from the unbanned address
    assert len(clock.tcpClients) == USER_DATA_LIMIT
    failed: list = []
    connecting[-1].addErrback(failed.append)
    assert failed and failed[0].check(PaceFullError)  # at once, not queued to the next minute
    granted: list = []  # the market data's own reconnects keep their slots this minute
    for _ in range(RESERVED_FOR_MARKET_DATA):
        manager.pace.acquire("127.0.0.2").addCallback(granted.append)
    assert len(granted) == RESERVED_FOR_MARKET_DATA
    assert Streams.user_stream(SimpleNamespace(managers={}), "coinm", "/ws/K") is None


KEY = "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"


@pytest.mark.parametrize("path,query,expected", [
    (f"/usdm/ws/{KEY}", "", ("usdm", f"/ws/{KEY}")),
    ("/usdm/private/ws", f"listenKey={KEY}&events=ORDER_TRADE_UPDATE",
     ("usdm", f"/private/ws?listenKey={KEY}&events=ORDER_TRADE_UPDATE")),
    ("/usdm/stream", f"streams={KEY}/btcusdt@depth", ("usdm", f"/stream?streams={KEY}/btcusdt@depth")),
    (f"/coinm/ws/{KEY}", "", ("coinm", f"/ws/{KEY}")),
    (f"/ws/{KEY}", "", ("spot", f"/ws/{KEY}")),  # refused by the gateway: retired
    ("/usdm/ws/btcusdt@depth", "", None),
    ("/ws/0", "", None),  # ccxt's numbered connections are public
    ("/usdm/private/api", "", None),
    ("/coinm/private/ws", f"listenKey={KEY}", None),
])
def test_user_data_urls_are_told_from_public_ones(path, query, expected):
    from bnproxy.binance.streams import user_data_path

    found = user_data_path(path, query)
    assert (None if found is None else (found.market, found.target)) == expected


def test_every_key_the_relay_takes_for_a_listen_key_is_redacted_where_shown():
    from bnproxy.binance import streams as bs
    from bnproxy.binance.privacy import REDACTED, shown_path
    from bnproxy.chain.messages import ProxyRequest

    for key in ("A" * 32, "b1" * 20, "c" * 64):  # the shortest taken for one, and longer
        assert bs.LISTEN_KEY.match(key)
        request = ProxyRequest("GET", "usdm", f"/ws/{key}", b"", (), b"", "bot", 0.0)
        assert shown_path(request) == f"/ws/{REDACTED}"
    assert not bs.LISTEN_KEY.match("A" * 31)
