"""Real python-binance ``Client(key, secret)`` and binance-connector
``Spot(api_key=…)`` through `twistd -n bnproxy --simulated-exchange` (issue 18
item 1): they send X-MBX-APIKEY on every call, yet their klines, books and
tickers come from streams and cache, as an anonymous bot's do, counted at the
fake exchange."""

import time

import pytest
from processes import free_port, get_json, twistd

pytestmark = pytest.mark.integration

KEY, SECRET = "bnproxy-test-key", "bnproxy-test-secret"
MARKET_DATA = ("/api/v3/klines", "/api/v3/depth", "/api/v3/ticker/24hr")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("keyed")
    port = free_port()
    with twistd("bnproxy", "--port", f"tcp:{port}:interface=127.0.0.1", "--simulated-exchange",
                "--access-log", "none", "--state-dir", str(tmp), port=port, cwd=str(tmp)):
        url = f"http://127.0.0.1:{port}"
        fake = get_json(url + "/health")["markets"]["spot"]["rest"].rsplit("/", 1)[0]
        yield url, fake


def python_binance(url):
    from binance.client import Client

    client = Client(KEY, SECRET, ping=False)  # no ping to binance.com
    client.API_URL = url + "/api"

    def calls():
        out = []
        for call in (lambda: client.get_klines(symbol="BTCUSDT", interval="1m", limit=100),
                     lambda: client.get_order_book(symbol="BTCUSDT", limit=5),
                     lambda: client.get_ticker(symbol="BTCUSDT")):
            assert call()
            out.append(client.response.headers.get("X-Bnproxy-Source"))
        return out
    client.ping()
    assert client.response.request.headers["X-MBX-APIKEY"] == KEY  # it does send its key
    return calls


def connector(url):
    from binance.spot import Spot

    spot = Spot(api_key=KEY, api_secret=SECRET, base_url=url, show_header=True)

    def calls():
        out = []
        for call in (lambda: spot.klines("BTCUSDT", "1m", limit=100),
                     lambda: spot.depth("BTCUSDT", limit=5),
                     lambda: spot.ticker_24hr("BTCUSDT")):
            answer = call()
            assert answer["data"]
            out.append(answer["header"].get("X-Bnproxy-Source"))
        return out
    spot.time()
    return calls


def market_data_requests(fake):
    counts = dict.fromkeys(MARKET_DATA, 0)
    for row in get_json(fake + "/_fake/")["requests"]:
        if row["path"] in counts:
            counts[row["path"]] += row["count"]
    return counts


@pytest.mark.parametrize("make", [python_binance, connector], ids=["python-binance",
                                                                   "binance-connector"])
def test_keyed_clients_public_calls_come_from_streams_and_cache(proxy, make):
    url, fake = proxy
    calls = make(url)
    deadline = time.monotonic() + 30
    while set(calls()) - {"stream", "cache"}:  # warming: subscriptions, snapshots, seeds
        assert time.monotonic() < deadline, "never served from streams or cache"
        time.sleep(0.5)
    before = market_data_requests(fake)
    sources = [s for _ in range(10) for s in calls()]
    assert set(sources) <= {"stream", "cache"}
    assert sources.count("stream") >= 20
    assert market_data_requests(fake) == before  # none of the 30 calls reached Binance
