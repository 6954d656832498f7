"""The fake exchange survives its clients (issue 18 item 6): clients that
close their websockets while the market sends to them (autobahn: "Attempt to
send on a closed protocol") never stop the market loop; trading and the
other clients' streams go on. In virtual time."""

import hashlib
import hmac

import orjson
from autobahn.websocket.protocol import WebSocketProtocol
from wsclient import connect_virtual

from bnproxy.testing.fake.auth import DEFAULT_KEYS
from bnproxy.testing.fake.run import start_exchange
from bnproxy.testing.loopback import LoopbackReactor

START_MS = 1_767_225_600_000 + 3_600_000 + 17_000
STREAMS = "btcusdt@depth@100ms/btcusdt@kline_1s/ethusdt@ticker/ethusdt@bookTicker"
KEY, SECRET = next(iter(DEFAULT_KEYS.items()))


def order(exchange):
    q = (b"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.01&timestamp=%d"
         % exchange.server_ms())
    q += b"&signature=" + hmac.new(SECRET.encode(), q, hashlib.sha256).hexdigest().encode()
    status, body, _ = exchange.answer("spot", "POST", "/api/v3/order", q, b"",
                                      {b"x-mbx-apikey": KEY.encode()}, "10.1.1.1")
    return status, orjson.loads(body)


def test_clients_closing_during_sends_do_not_stop_the_market():
    reactor = LoopbackReactor(start=START_MS / 1000)
    running = start_exchange(reactor, start_ms=START_MS)
    exchange = running.exchange
    hub = exchange.hubs["spot"]

    def connect():
        return connect_virtual(reactor, running.host, running.port,
                               f"/spot/stream?streams={STREAMS}")
    survivor = connect()
    kept = set(hub.protocols)  # the survivor's server side
    leaving = [connect() for _ in range(40)]
    reactor.run_until(lambda: all(ws.messages for ws in leaving), 10)
    # Half close their side the ordinary way, mid-stream ...
    for ws in leaving[:20]:
        ws.proto.sendClose(1000)
    # ... the others are caught between their close frame and the end of their
    # TCP connection, when autobahn refuses every send, as the market ticks.
    caught = [p for p in hub.protocols if p not in kept][:20]
    for p in caught:
        p.state = WebSocketProtocol.STATE_CLOSING
    assert sum(p.state == WebSocketProtocol.STATE_CLOSING for p in hub.protocols) >= 10
    for _ in range(30):
        reactor.advance(0.1)  # ticks, each sending to every subscriber
    assert exchange._loop.running
    seen, market_ms = len(survivor.messages), exchange.market_ms()
    reactor.sleep(3, step=0.1)
    assert exchange.market_ms() > market_ms
    assert len(survivor.messages) > seen + 20  # depth, klines, tickers still come
    status, filled = order(exchange)
    assert status == 200 and filled["status"] == "FILLED"
    running.stop()
