"""The fake exchange answers in exactly the shape of Binance's documented
examples (tests/data/binance, sources in its README): same keys in the same
order, same JSON types, strings where Binance sends strings."""

from pathlib import Path

import orjson
import pytest
from twisted.internet import task

from bnproxy.testing import FakeExchange
from bnproxy.testing.fake import formats

SAMPLES = Path(__file__).parent / "data" / "binance"
START = 1_767_225_600_000 + 3_600_000 + 17_000


def shape(value):
    """A value's JSON shape: objects keep their key order; an array whose
    items share one shape is ``["array", item]``, else positional."""
    if isinstance(value, dict):
        return {"object": [(k, shape(v)) for k, v in value.items()]}
    if isinstance(value, list):
        items = [shape(v) for v in value]
        if items and all(i == items[0] for i in items):
            return ["array", items[0]]
        return ["tuple", items]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if value is None:
        return "null"
    return "string"


def sample(name: str):
    return orjson.loads((SAMPLES / f"{name}.json").read_bytes())


@pytest.fixture(scope="module")
def x():
    clock = task.Clock()
    ex = FakeExchange(clock, seed=3, start_ms=START)
    ex.start()
    for _ in range(50):
        clock.advance(0.1)
    return ex


def rest(x, path: str, query: str):
    status, body, _ = x.answer("spot", "GET", path, query.encode(), b"", {}, "10.9.9.9")
    return status, orjson.loads(body)


@pytest.mark.parametrize("name, path, query", [
    ("spot_klines", "/api/v3/klines", "symbol=BTCUSDT&interval=1m&limit=3"),
    ("spot_klines", "/api/v3/uiKlines", "symbol=ETHUSDT&interval=1h&limit=2"),
    ("spot_depth", "/api/v3/depth", "symbol=BTCUSDT&limit=5"),
    ("spot_ticker_24hr", "/api/v3/ticker/24hr", "symbol=BNBUSDT"),
    ("spot_ticker_24hr_mini", "/api/v3/ticker/24hr", "symbol=BNBUSDT&type=MINI"),
    ("spot_ticker_price", "/api/v3/ticker/price", "symbol=ETHBTC"),
    ("spot_ticker_price_list", "/api/v3/ticker/price", ""),
    ("spot_book_ticker", "/api/v3/ticker/bookTicker", "symbol=ETHBTC"),
])
def test_rest_answers_have_the_documented_shape(x, name, path, query):
    status, body = rest(x, path, query)
    assert status == 200
    assert shape(body) == shape(sample(name))


def test_an_error_has_the_documented_shape(x):
    status, body = rest(x, "/api/v3/depth", "symbol=NOSUCH")
    assert status == 400
    assert shape(body) == shape(sample("error_body"))
    assert body == sample("error_body")  # the same code and message


def test_stream_events_have_the_documented_shape(x):
    st = x.symbols["spot"]["BTCUSDT"]
    now = x.market_ms()
    events = {
        "stream_kline": formats.kline_event(st, "1m", st.current["1m"], False, now),
        "stream_depth_update": formats.depth_event(st, list(st.events)[-3:]),
        "stream_partial_depth": formats.partial_depth_event(st, 5, now),
        "stream_ticker_24hr": formats.ticker_event(x.ticker(st), st.inst),
        "stream_mini_ticker": formats.ticker_event(x.ticker(st), st.inst, mini=True),
        "stream_book_ticker": formats.book_ticker_event(st, now),
    }
    for name, payload in events.items():
        assert shape(orjson.loads(payload)) == shape(sample(name)), name


def test_the_shape_comparison_can_fail():
    row = sample("spot_klines")
    row[0][1] = 0.0163  # a number where Binance sends a string
    assert shape(row) != shape(sample("spot_klines"))
    reordered = dict(reversed(list(sample("spot_book_ticker").items())))
    assert shape(reordered) != shape(sample("spot_book_ticker"))
