"""The fake exchange behaves like Binance where a proxy can tell (virtual time)."""

import hashlib
import hmac

import orjson
import pytest
from twisted.internet import task

from bnproxy.testing import FakeExchange
from bnproxy.testing.fake.intervals import DAY, HOUR, open_time

START = 1_767_225_600_000 + 3_600_000 + 17_000  # 2026-01-01 01:00:17 UTC, a Thursday
KEY, SECRET = "bnproxy-test-key", "bnproxy-test-secret"


@pytest.fixture
def x():
    clock = task.Clock()
    ex = FakeExchange(clock, seed=7, start_ms=START, ban_scale=0.01)
    ex.start()
    for _ in range(30):
        clock.advance(0.1)
    return ex


def get(x, market, path, query=b"", ip="10.0.0.1", headers=None, method="GET", body=b""):
    status, payload, hdrs = x.answer(market, method, path, query, body, headers or {}, ip)
    return status, orjson.loads(payload) if payload else None, dict(hdrs)


def signed(query: str, body: bytes = b"", secret=SECRET) -> bytes:
    q = query.encode()
    sig = hmac.new(secret.encode(), q + body, hashlib.sha256).hexdigest()
    return q + b"&signature=" + sig.encode()


def test_kline_rows_have_binance_types_and_bounds(x):
    status, rows, hdrs = get(x, "spot", "/api/v3/klines", b"symbol=BTCUSDT&interval=1m&limit=3")
    assert status == 200 and len(rows) == 3
    for r in rows:
        assert len(r) == 12
        assert [type(v) for v in r] == [int, str, str, str, str, str, int, str, int, str, str, str]
        assert r[6] == r[0] + 60_000 - 1
        assert r[11] == "0"
        assert len(r[1].split(".")[1]) == 8  # spot prints 8 decimals
    assert rows[-1][0] == open_time("1m", x.market_ms())  # newest is the open candle
    assert hdrs[b"x-mbx-used-weight-1m"] == b"2"
    _, rows, _ = get(x, "spot", "/api/v3/klines", b"symbol=BTCUSDT&interval=1m&limit=5000")
    assert len(rows) == 1000
    _, rows, _ = get(x, "usdm", "/fapi/v1/klines", b"symbol=BTCUSDT&interval=1m&limit=5000")
    assert len(rows) == 1500
    assert len(get(x, "usdm", "/fapi/v1/klines", b"symbol=BTCUSDT&interval=1h&limit=2")[1][0][1]
               .split(".")[1]) == 1  # futures print the symbol's precision


def test_kline_start_and_end_time_semantics(x):
    now = x.market_ms()
    hour = HOUR
    start = open_time("1h", now) - 10 * hour + 1  # mid-candle: the next open is first
    _, rows, _ = get(x, "spot", "/api/v3/klines",
                     f"symbol=BTCUSDT&interval=1h&startTime={start}&limit=3".encode())
    assert [r[0] for r in rows] == [start - 1 + hour * k for k in (1, 2, 3)]
    end = open_time("1h", now) - 5 * hour + 5
    _, rows, _ = get(x, "spot", "/api/v3/klines",
                     f"symbol=BTCUSDT&interval=1h&endTime={end}&limit=3".encode())
    assert [r[0] for r in rows] == [end - 5 - hour * k for k in (2, 1, 0)]
    _, rows, _ = get(x, "spot", "/api/v3/klines",
                     f"symbol=BTCUSDT&interval=1h&startTime={start}&endTime={end}".encode())
    assert rows[0][0] == start - 1 + hour and rows[-1][0] == end - 5
    _, rows, _ = get(x, "spot", "/api/v3/klines",
                     f"symbol=BTCUSDT&interval=1h&startTime={now + DAY}".encode())
    assert rows == []
    status, body, _ = get(x, "spot", "/api/v3/klines",
                          f"symbol=BTCUSDT&interval=1h&startTime={end}&endTime={start}".encode())
    assert status == 400 and body["code"] == -1023


def test_weekly_and_monthly_boundaries(x):
    _, rows, _ = get(x, "spot", "/api/v3/klines", b"symbol=ETHUSDT&interval=1w&limit=2")
    assert rows[-1][0] == 1_766_966_400_000  # Monday 2025-12-29
    _, rows, _ = get(x, "spot", "/api/v3/klines", b"symbol=ETHUSDT&interval=1M&limit=2")
    assert [r[0] for r in rows] == [1_764_547_200_000, 1_767_225_600_000]  # Dec 1, Jan 1
    assert rows[0][6] == 1_767_225_600_000 - 1


@pytest.mark.parametrize("query,code", [
    (b"symbol=NOPE&interval=1m", -1121), (b"symbol=BTCUSDT&interval=2m", -1120),
    (b"symbol=BTCUSDT", -1102), (b"interval=1m", -1102),
    (b"symbol=BTCUSDT&interval=1m&limit=abc", -1100),
    (b"symbol=BTCUSDT&interval=1m&limit=", -1105),
])
def test_bad_kline_parameters_get_binance_codes(x, query, code):
    status, body, _ = get(x, "spot", "/api/v3/klines", query)
    assert status == 400 and body["code"] == code


def test_futures_have_no_1s_interval(x):
    status, body, _ = get(x, "usdm", "/fapi/v1/klines", b"symbol=BTCUSDT&interval=1s")
    assert body["code"] == -1120


def test_depth_limits_and_shapes(x):
    _, book, hdrs = get(x, "spot", "/api/v3/depth", b"symbol=BTCUSDT&limit=5000")
    assert len(book["bids"]) == 5000 and len(book["asks"]) == 5000
    assert hdrs[b"x-mbx-used-weight-1m"] == b"250"
    bids = [float(p) for p, _ in book["bids"]]
    asks = [float(p) for p, _ in book["asks"]]
    assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
    assert list(book) == ["lastUpdateId", "bids", "asks"]
    _, fut, _ = get(x, "usdm", "/fapi/v1/depth", b"symbol=BTCUSDT&limit=10")
    assert list(fut) == ["lastUpdateId", "E", "T", "bids", "asks"] and len(fut["bids"]) == 10
    status, body, _ = get(x, "usdm", "/fapi/v1/depth", b"symbol=BTCUSDT&limit=7")
    assert status == 400
    _, cm, _ = get(x, "coinm", "/dapi/v1/depth", b"symbol=BTCUSD_PERP&limit=5")
    assert cm["symbol"] == "BTCUSD_PERP" and cm["pair"] == "BTCUSD"


def test_update_ids_increase_monotonically(x):
    ids = []
    for _ in range(20):
        x.clock.advance(0.1)
        ids.append(get(x, "spot", "/api/v3/depth", b"symbol=BTCUSDT&limit=5")[1]["lastUpdateId"])
    assert ids == sorted(ids) and ids[-1] > ids[0]


def test_ticker_symbols_in_both_encodings_and_weights(x):
    _, a, _ = get(x, "spot", "/api/v3/ticker/24hr", b'symbols=["BTCUSDT","ETHUSDT"]', ip="1.1.1.1")
    _, b, h = get(x, "spot", "/api/v3/ticker/24hr",
                  b"symbols=%5B%22BTCUSDT%22,%22ETHUSDT%22%5D", ip="1.1.1.1")
    assert a == b and [t["symbol"] for t in a] == ["BTCUSDT", "ETHUSDT"]
    assert h[b"x-mbx-used-weight-1m"] == b"4"
    _, every, h = get(x, "spot", "/api/v3/ticker/24hr", ip="2.2.2.2")
    assert len(every) == 41 and h[b"x-mbx-used-weight-1m"] == b"80"
    status, body, _ = get(x, "spot", "/api/v3/ticker/24hr", b'symbols=["BTCUSDT","BTCUSDT"]')
    assert body["code"] == -1151
    _, one, _ = get(x, "spot", "/api/v3/ticker/24hr", b"symbol=BTCUSDT")
    assert one["lastPrice"] == get(x, "spot", "/api/v3/ticker/price", b"symbol=BTCUSDT")[1]["price"]
    assert isinstance(one["count"], int) and isinstance(one["openTime"], int)


def test_exchange_info_filters_and_rate_limits(x):
    _, info, _ = get(x, "spot", "/api/v3/exchangeInfo", b"symbol=BTCUSDT")
    assert [s["symbol"] for s in info["symbols"]] == ["BTCUSDT"]
    assert info["rateLimits"][0] == {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                                     "intervalNum": 1, "limit": 6000}
    _, info, _ = get(x, "usdm", "/fapi/v1/exchangeInfo")
    assert len(info["symbols"]) >= 5 and info["rateLimits"][0]["limit"] == 2400


def test_signed_requests_verify_the_hmac(x):
    hdr = {b"x-mbx-apikey": KEY.encode()}
    q = f"timestamp={x.server_ms()}&recvWindow=5000"
    assert get(x, "spot", "/api/v3/account", signed(q), headers=hdr)[0] == 200
    status, body, _ = get(x, "spot", "/api/v3/account", signed(q, secret="wrong"), headers=hdr)
    assert (status, body["code"]) == (400, -1022)
    status, body, _ = get(x, "spot", "/api/v3/account", signed(q))
    assert (status, body["code"]) == (401, -2014)
    status, body, _ = get(x, "spot", "/api/v3/account", signed(q),
                          headers={b"x-mbx-apikey": b"other"})
    assert (status, body["code"]) == (401, -2015)
    old = f"timestamp={x.server_ms() - 10_000}&recvWindow=5000"
    status, body, _ = get(x, "spot", "/api/v3/account", signed(old), headers=hdr)
    assert (status, body["code"]) == (400, -1021)
    x.skew_ms = 20_000  # clock skew fault: the bot's time is now too far behind
    status, body, _ = get(x, "spot", "/api/v3/account", signed(q), headers=hdr)
    assert body["code"] == -1021


def test_orders_fill_rest_and_cancel(x):
    hdr = {b"x-mbx-apikey": KEY.encode()}
    t = x.server_ms()
    status, order, h = get(x, "usdm", "/fapi/v1/order", signed(
        f"symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.010&timestamp={t}"),
        headers=hdr, method="POST")
    assert status == 200 and order["status"] == "FILLED"
    assert b"x-mbx-order-count-1m" in h
    _, order, _ = get(x, "spot", "/api/v3/order", signed(
        f"symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01000&price=1000.00"
        f"&timestamp={t}"), headers=hdr, method="POST")
    assert order["status"] == "NEW"
    _, open_, _ = get(x, "spot", "/api/v3/openOrders", signed(f"timestamp={t}"), headers=hdr)
    assert [o["orderId"] for o in open_] == [order["orderId"]]
    _, cancelled, _ = get(x, "spot", "/api/v3/order", signed(
        f"symbol=BTCUSDT&orderId={order['orderId']}&timestamp={t}"), headers=hdr,
        method="DELETE")
    assert cancelled["status"] == "CANCELED"


def test_429_then_418_with_escalating_retry_after():
    clock = task.Clock()
    x = FakeExchange(clock, start_ms=START - 17_000, weight_limits={"spot": 100}, ban_scale=1 / 120)
    statuses = [get(x, "spot", "/api/v3/depth", b"symbol=BTCUSDT&limit=100")[0]
                for _ in range(20)]
    assert statuses[:20].count(200) == 20
    status, body, h = get(x, "spot", "/api/v3/depth", b"symbol=BTCUSDT")
    assert status == 429 and body["code"] == -1003 and int(h[b"retry-after"]) > 0
    status, body, h = get(x, "spot", "/api/v3/ping")
    assert status == 418 and "banned until" in body["msg"]
    first_ban = int(h[b"retry-after"])  # 2 minutes / 120 → 1 s
    assert first_ban == 1
    clock.advance(60)  # next window; ban long over
    for _ in range(20):
        get(x, "spot", "/api/v3/depth", b"symbol=BTCUSDT&limit=100")
    assert get(x, "spot", "/api/v3/depth", b"symbol=BTCUSDT")[0] == 429
    status, _, h = get(x, "spot", "/api/v3/ping")
    assert status == 418 and int(h[b"retry-after"]) == 2 * first_ban  # doubled
    status, _, h2 = get(x, "spot", "/api/v3/ping")
    assert status == 418 and int(h2[b"retry-after"]) <= int(h[b"retry-after"])


def test_weight_is_per_ip_and_counters_see_every_request(x):
    get(x, "spot", "/api/v3/depth", b"symbol=BTCUSDT", ip="10.0.0.1")
    get(x, "spot", "/api/v3/depth", b"symbol=BTCUSDT", ip="10.0.0.2")
    assert x.limiters["spot"].used("10.0.0.1", x.market_ms()) == 5
    assert x.counters.requests[("/api/v3/depth", "GET", "10.0.0.2")] == 1


def test_the_market_is_deterministic_from_its_seed():
    def run():
        clock = task.Clock()
        ex = FakeExchange(clock, seed=3, start_ms=START).start()
        for _ in range(50):
            clock.advance(0.1)
        return ex.answer("spot", "GET", "/api/v3/klines", b"symbol=SOLUSDT&interval=1s&limit=5",
                         b"", {}, "1.2.3.4")[1]
    assert run() == run()
