"""The fake exchange's websocket streams: in virtual time over in-memory
connections (bnproxy.testing.loopback), and one real-socket smoke test."""

import orjson
import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.client import Agent, readBody
from wsclient import connect, connect_virtual, wait_for

from bnproxy.testing.fake.run import start_exchange
from bnproxy.testing.loopback import LoopbackReactor, TimeoutError

START_MS = 1_767_225_600_000 + 3_600_000 + 17_000


async def rest(running, market, target):
    response = await treq.get(f"{running.rest(market)}{target}")
    return orjson.loads(await response.content())


def apply(book, levels):
    for price, qty in levels:
        if float(qty) == 0:
            book.pop(price, None)
        else:
            book[price] = qty


def top(book, n, reverse):
    return [[p, book[p]] for p in sorted(book, key=float, reverse=reverse)[:n]]


class Virtual:
    """The fake exchange on a LoopbackReactor, with synchronous helpers."""

    def __init__(self) -> None:
        self.reactor = LoopbackReactor(start=START_MS / 1000)
        self.running = start_exchange(self.reactor, start_ms=START_MS)
        self.exchange = self.running.exchange
        self.agent = Agent(self.reactor)

    def connect(self, path):
        return connect_virtual(self.reactor, self.running.host, self.running.port, path)

    def wait_for(self, ws, predicate, timeout=10.0):
        self.reactor.run_until(lambda: predicate(ws.messages), timeout)

    def rest(self, market, target):
        url = (self.running.rest(market) + target).encode()
        response = self.reactor.run_until(self.agent.request(b"GET", url))
        return orjson.loads(self.reactor.run_until(readBody(response)))


@pytest.fixture
def vx():
    v = Virtual()
    yield v
    v.running.stop()


def check_spot_book(snapshot, final, messages):
    """Binance's documented procedure (spot, corrected 2025-11-12)."""
    events = [x["data"] for x in messages if x["stream"] == "btcusdt@depth@100ms"]
    bids = {p: q for p, q in snapshot["bids"]}
    asks = {p: q for p, q in snapshot["asks"]}
    book_id = snapshot["lastUpdateId"]
    events = [e for e in events if e["u"] > book_id]
    assert events[0]["U"] <= book_id + 1 <= events[0]["u"]
    for e in events:
        assert e["U"] == book_id + 1, "gap in the diff stream"
        apply(bids, e["b"])
        apply(asks, e["a"])
        book_id = e["u"]
    assert book_id == final["lastUpdateId"]
    assert top(bids, 1000, True) == final["bids"]
    assert top(asks, 1000, False) == final["asks"]
    klines = [x["data"] for x in messages if x["stream"] == "btcusdt@kline_1s"]
    assert klines and all(k["e"] == "kline" and k["k"]["i"] == "1s" for k in klines)
    closed = [k["k"]["t"] for k in klines if k["k"]["x"]]
    assert len(closed) == len(set(closed)) >= 1  # x true exactly once per closed kline


def test_a_spot_book_rebuilt_from_diff_depth_equals_the_rest_snapshot(vx):
    ws = vx.connect("/spot/stream?streams=btcusdt@depth@100ms/btcusdt@kline_1s")
    vx.wait_for(ws, lambda m: sum(x["stream"].startswith("btcusdt@depth") for x in m) >= 2)
    snapshot = vx.rest("spot", "/api/v3/depth?symbol=BTCUSDT&limit=5000")
    vx.wait_for(ws, lambda m: any(
        x["stream"] == "btcusdt@depth@100ms" and x["data"]["u"] > snapshot["lastUpdateId"]
        for x in m))
    vx.wait_for(ws, lambda m: any(  # a 1 s kline closes at least once
        x["stream"] == "btcusdt@kline_1s" and x["data"]["k"]["x"] for x in m))
    vx.exchange.pause()
    vx.reactor.flush()
    final = vx.rest("spot", "/api/v3/depth?symbol=BTCUSDT&limit=1000")
    check_spot_book(snapshot, final, ws.messages)


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_over_real_sockets_a_spot_book_rebuilt_equals_the_snapshot(fake_exchange):
    ws = await connect(reactor, fake_exchange.host, fake_exchange.port,
                       "/spot/stream?streams=btcusdt@depth@100ms/btcusdt@kline_1s")
    await wait_for(reactor, ws, lambda m: sum(x["stream"].startswith("btcusdt@depth")
                                              for x in m) >= 2)
    snapshot = await rest(fake_exchange, "spot", "/api/v3/depth?symbol=BTCUSDT&limit=5000")
    await wait_for(reactor, ws, lambda m: any(
        x["stream"] == "btcusdt@depth@100ms" and x["data"]["u"] > snapshot["lastUpdateId"]
        for x in m))
    await wait_for(reactor, ws, lambda m: any(
        x["stream"] == "btcusdt@kline_1s" and x["data"]["k"]["x"] for x in m))
    fake_exchange.exchange.pause()
    final = await rest(fake_exchange, "spot", "/api/v3/depth?symbol=BTCUSDT&limit=1000")
    check_spot_book(snapshot, final, ws.messages)
    ws.proto.sendClose()


def test_a_futures_book_follows_the_pu_chain(vx):
    ws = vx.connect("/usdm/public/stream?streams=btcusdt@depth@100ms")
    vx.wait_for(ws, lambda m: len(m) >= 2)
    snapshot = vx.rest("usdm", "/fapi/v1/depth?symbol=BTCUSDT&limit=1000")
    vx.wait_for(ws, lambda m: m[-1]["data"]["u"] > snapshot["lastUpdateId"])
    vx.exchange.pause()
    vx.reactor.flush()
    final = vx.rest("usdm", "/fapi/v1/depth?symbol=BTCUSDT&limit=100")
    events = [x["data"] for x in ws.messages if x["data"]["u"] >= snapshot["lastUpdateId"]]
    first = events[0]
    assert first["U"] <= snapshot["lastUpdateId"] <= first["u"] or \
        first["pu"] == snapshot["lastUpdateId"]
    bids = {p: q for p, q in snapshot["bids"]}
    asks = {p: q for p, q in snapshot["asks"]}
    prev = None
    for e in events:
        if prev is not None:
            assert e["pu"] == prev
        apply(bids, e["b"])
        apply(asks, e["a"])
        prev = e["u"]
    assert prev == final["lastUpdateId"] and final["E"] == events[-1]["E"]
    assert top(bids, 100, True) == final["bids"]
    assert top(asks, 100, False) == final["asks"]


def test_the_control_protocol_and_usdm_routes(vx):
    ws = vx.connect("/usdm/market/ws")
    proto = ws.proto
    proto.sendMessage(b'{"method":"SUBSCRIBE","params":["btcusdt@markPrice@1s","btcusdt@depth"],'
                      b'"id":1}')
    proto.sendMessage(b'{"method":"LIST_SUBSCRIPTIONS","id":"x2"}')
    proto.sendMessage(b'{"method":"GET_PROPERTY","params":["combined"],"id":3}')
    proto.sendMessage(b'{"method":"NOPE","id":4}')
    vx.wait_for(ws, lambda m: any(x.get("id") == 4 for x in m))
    replies = {x["id"]: x for x in ws.messages if "id" in x}
    assert replies[1] == {"result": None, "id": 1}
    assert replies["x2"]["result"] == ["btcusdt@depth", "btcusdt@markPrice@1s"]
    assert replies[3] == {"result": False, "id": 3}
    assert replies[4]["error"]["code"] == 2
    vx.wait_for(ws, lambda m: any(x.get("e") == "markPriceUpdate" for x in m))
    vx.reactor.sleep(2)
    # depth is a /public stream: never delivered on /market
    assert not any(x.get("e") == "depthUpdate" for x in ws.messages)


def test_the_incoming_message_limit_disconnects(vx):
    ws = vx.connect("/spot/ws")
    for i in range(8):
        ws.proto.sendMessage(b'{"method":"LIST_SUBSCRIPTIONS","id":%d}' % i)
    vx.reactor.run_until(lambda: ws.closed, 10)
    assert vx.exchange.counters.ws_rate_disconnects == 1


def test_dropping_and_silencing_streams(vx):
    ws = vx.connect("/spot/ws/ethusdt@bookTicker")
    vx.wait_for(ws, lambda m: len(m) >= 1)
    vx.exchange.hubs["spot"].silenced.add("ethusdt@bookTicker")
    vx.reactor.flush()
    seen = len(ws.messages)
    with pytest.raises(TimeoutError):
        vx.wait_for(ws, lambda m: len(m) > seen, timeout=5)
    vx.exchange.hubs["spot"].drop("ethusdt@bookTicker")
    vx.reactor.run_until(lambda: ws.closed, 10)
