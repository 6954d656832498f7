"""Every pair the fake lists can be traded by a Freqtrade dry-run with an
ordinary stake, and the test-order endpoints validate like real orders."""

import hashlib
import hmac
from decimal import ROUND_DOWN, Decimal

import orjson
import pytest
from twisted.internet import task

from bnproxy.testing import FakeExchange

START = 1_767_225_600_000 + 3_600_000 + 17_000
KEY, SECRET = "bnproxy-test-key", "bnproxy-test-secret"
# Freqtrade's stake sizes per stake currency (its default examples: 10-100 USDT).
STAKES = {"USDT": (Decimal(10), Decimal(100)), "BTC": (Decimal("0.0002"), Decimal("0.002"))}
# Freqtrade's amount reserve is at most 1.5x the exchange minimum.
FREQTRADE_RESERVE_MAX = Decimal("1.5")
ORDER_TEST = {"spot": "/api/v3/order/test", "usdm": "/fapi/v1/order/test"}
ORDER = {"spot": "/api/v3/order", "usdm": "/fapi/v1/order"}


@pytest.fixture(scope="module")
def x():
    clock = task.Clock()
    ex = FakeExchange(clock, seed=11, start_ms=START)
    ex.start()
    for _ in range(20):
        clock.advance(0.1)
    return ex


def call(x, market, method, path, query: str, signed=True, secret=SECRET):
    q = query.encode()
    if signed:
        q += b"&timestamp=" + str(x.server_ms()).encode()
        q += b"&signature=" + hmac.new(secret.encode(), q, hashlib.sha256).hexdigest().encode()
    status, body, _ = x.answer(market, method, path, q, b"", {b"x-mbx-apikey": KEY.encode()},
                               "10.1.1.1")
    return status, orjson.loads(body)


def filters(symbol_info: dict) -> dict:
    return {f["filterType"]: f for f in symbol_info["filters"]}


def markets_and_symbols():
    x = FakeExchange(task.Clock(), seed=11, start_ms=START)
    return [(m, s) for m in ("spot", "usdm") for s in x.symbols[m]]


@pytest.mark.parametrize("market, symbol", markets_and_symbols())
def test_every_pair_takes_a_freqtrade_stake(x, market, symbol):
    info_path = "/api/v3/exchangeInfo" if market == "spot" else "/fapi/v1/exchangeInfo"
    price_path = "/api/v3/ticker/price" if market == "spot" else "/fapi/v1/ticker/price"
    _, info = call(x, market, "GET", info_path, f"symbol={symbol}", signed=False)
    if market == "usdm":
        info = {"symbols": [s for s in info["symbols"] if s["symbol"] == symbol]}
    sym = info["symbols"][0]
    f = filters(sym)
    _, ticker = call(x, market, "GET", price_path, f"symbol={symbol}", signed=False)
    price = Decimal(ticker["price"])
    tick = Decimal(f["PRICE_FILTER"]["tickSize"])
    assert Decimal(f["PRICE_FILTER"]["minPrice"]) <= price <= Decimal(f["PRICE_FILTER"]["maxPrice"])
    assert price % tick == 0
    lot = f["LOT_SIZE"]
    step, min_qty, max_qty = (Decimal(lot[k]) for k in ("stepSize", "minQty", "maxQty"))
    market_max = Decimal(f["MARKET_LOT_SIZE"]["maxQty"])
    min_notional = Decimal(f["NOTIONAL"]["minNotional"] if market == "spot"
                           else f["MIN_NOTIONAL"]["notional"])
    # Freqtrade's smallest stake for the pair (exchange minimum times its reserve)
    freqtrade_min = max(min_notional, min_qty * price) * FREQTRADE_RESERVE_MAX
    for stake in STAKES[sym["quoteAsset"]]:
        assert freqtrade_min <= stake, (symbol, freqtrade_min, stake)
        amount = (stake / price / step).to_integral_value(ROUND_DOWN) * step
        assert min_qty <= amount <= min(max_qty, market_max)
        assert amount * price >= min_notional
        assert amount * price <= stake
        # The exchange accepts the order Freqtrade would send (live, not dry-run).
        status, body = call(x, market, "POST", ORDER_TEST[market],
                            f"symbol={symbol}&side=BUY&type=MARKET&quantity={amount}")
        assert (status, body) == (200, {}), (symbol, amount, body)


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_a_valid_test_order_answers_empty_and_places_nothing(x, market):
    before = call(x, market, "GET", "/api/v3/openOrders" if market == "spot"
                  else "/fapi/v1/openOrders", "symbol=ETHUSDT")
    status, body = call(x, market, "POST", ORDER_TEST[market],
                        "symbol=ETHUSDT&side=BUY&type=LIMIT&timeInForce=GTC"
                        "&quantity=0.1&price=100.00")
    assert (status, body) == (200, {})
    after = call(x, market, "GET", "/api/v3/openOrders" if market == "spot"
                 else "/fapi/v1/openOrders", "symbol=ETHUSDT")
    assert after == before


@pytest.mark.parametrize("market", ["spot", "usdm"])
@pytest.mark.parametrize("query", [
    "symbol=ETHUSDT&side=BUY&type=MARKET&quantity=0.001",  # notional under the minimum
    "symbol=ETHUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=1.001",  # tick
    "symbol=ETHUSDT&side=UP&type=MARKET&quantity=1",  # side
    "symbol=NOPE&side=BUY&type=MARKET&quantity=1",  # symbol
    "symbol=ETHUSDT&side=BUY&type=MARKET&quantity=99999999",  # LOT_SIZE maxQty
])
def test_an_invalid_test_order_fails_like_a_real_order(x, market, query):
    test = call(x, market, "POST", ORDER_TEST[market], query)
    real = call(x, market, "POST", ORDER[market], query)
    assert test == real
    assert test[0] == 400 and test[1]["code"] < 0


def test_the_notional_filter_names_itself(x):
    status, body = call(x, "spot", "POST", ORDER_TEST["spot"],
                        "symbol=ETHUSDT&side=BUY&type=MARKET&quantity=0.001")
    assert (status, body) == (400, {"code": -1013, "msg": "Filter failure: NOTIONAL"})
    status, body = call(x, "usdm", "POST", ORDER_TEST["usdm"],
                        "symbol=ETHUSDT&side=BUY&type=MARKET&quantity=0.001")
    assert status == 400 and body["code"] == -4164


@pytest.mark.parametrize("market", ["spot", "usdm"])
def test_a_test_order_with_a_bad_signature_is_refused(x, market):
    status, body = call(x, market, "POST", ORDER_TEST[market],
                        "symbol=ETHUSDT&side=BUY&type=MARKET&quantity=1", secret="wrong")
    assert status == 400
    assert body == {"code": -1022, "msg": "Signature for this request is not valid."}
