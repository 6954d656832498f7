"""Real processes on loopback: twistd bnproxy in front of twistd bnproxy-exchange,
driven by the real ccxt client."""

import os
import subprocess
import sys
import time

import pytest
from processes import free_port, get_json, post_json, twistd

pytestmark = pytest.mark.integration

KEY, SECRET = "bnproxy-test-key", "bnproxy-test-secret"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    cwd = str(tmp_path_factory.mktemp("stack"))
    xport, pport = free_port(), free_port()
    with twistd("bnproxy-exchange", "--port", f"tcp:{xport}:interface=127.0.0.1",
                port=xport, cwd=cwd) as exchange:
        upstreams = []
        for m in ("spot", "usdm", "coinm"):
            upstreams += ["--upstream", f"{m}=http://127.0.0.1:{xport}/{m}"]
        with twistd("bnproxy", "--port", f"tcp:{pport}:interface=127.0.0.1", *upstreams,
                    "--middleware-chain", "stamp:value=integration",
                    port=pport, cwd=cwd) as proxy:
            yield {"exchange": f"http://127.0.0.1:{xport}", "proxy": f"http://127.0.0.1:{pport}",
                   "procs": (exchange, proxy), "cwd": cwd}


def ccxt_client(cls_name, base):
    import ccxt

    from bnproxy.tools.freqtrade_config import ccxt_urls

    cls = getattr(ccxt, cls_name)
    return cls({"apiKey": KEY, "secret": SECRET, "enableRateLimit": False, "timeout": 10000,
                "urls": {"api": ccxt_urls(base)},
                "options": {"fetchMarkets": {"types": ["spot"] if cls_name == "binance"
                                             else ["linear"]}}})


@pytest.mark.parametrize("cls_name,symbol", [("binance", "BTC/USDT"),
                                             ("binanceusdm", "BTC/USDT:USDT")])
def test_ccxt_signed_calls_verify_through_the_proxy(stack, cls_name, symbol):
    post_json(stack["exchange"] + "/_fake/reset")
    ex = ccxt_client(cls_name, stack["proxy"])
    ex.load_markets()
    balance = ex.fetch_balance()
    assert balance["total"]["USDT"] > 0
    ticker = ex.fetch_ticker(symbol)
    order = ex.create_order(symbol, "limit", "buy", 0.01, round(ticker["last"] * 0.9, 1))
    assert order["status"] == "open"
    assert ex.fetch_order(order["id"], symbol)["status"] == "open"
    assert ex.cancel_order(order["id"], symbol)["status"] == "canceled"
    assert ex.create_order(symbol, "market", "buy", 0.01)["status"] == "closed"
    counters = get_json(stack["exchange"] + "/_fake/")
    assert counters["statuses"].get("400", 0) == 0 and counters["statuses"].get("401", 0) == 0
    assert counters["rest_total"] >= 7


@pytest.mark.parametrize("cls_name,symbol", [("binance", "ETH/USDT"),
                                             ("binanceusdm", "ETH/USDT:USDT")])
def test_ccxt_against_the_fake_exchange_directly(stack, cls_name, symbol):
    ex = ccxt_client(cls_name, stack["exchange"])
    ex.load_markets()
    assert len(ex.fetch_ohlcv(symbol, "1m", limit=20)) == 20
    since = ex.milliseconds() - 3 * 3600_000
    candles = ex.fetch_ohlcv(symbol, "15m", since=since)
    assert candles[0][0] >= since and len(candles) >= 12
    book = ex.fetch_order_book(symbol, 5)
    assert len(book["bids"]) == 5 and book["bids"][0][0] < book["asks"][0][0]
    assert ex.fetch_ticker(symbol)["last"] > 0
    assert symbol in ex.fetch_tickers()
    assert symbol in ex.fetch_bids_asks()
    if cls_name == "binanceusdm":
        assert ex.fetch_funding_rate(symbol)["fundingRate"] is not None
    assert ex.fetch_balance()["total"]["USDT"] > 0
    limit = ex.create_order(symbol, "limit", "buy", 0.1, round(ex.fetch_ticker(symbol)["last"] * 0.8, 1))
    assert ex.fetch_order(limit["id"], symbol)["status"] == "open"
    assert ex.cancel_order(limit["id"], symbol)["status"] == "canceled"
    assert ex.create_order(symbol, "market", "sell", 0.1)["status"] == "closed"


def test_the_third_party_plugin_runs_in_the_real_process(stack):
    import urllib.request

    with urllib.request.urlopen(stack["proxy"] + "/api/v3/time", timeout=10) as r:
        assert r.headers["X-Stamp"] == "integration"
        assert r.headers["X-Bnproxy-Source"] == "upstream"
    assert get_json(stack["proxy"] + "/health")["chain"] == ["stamp"]


def test_unreachable_upstream_is_a_502_and_the_proxy_lives_on(stack, tmp_path):
    dead, pport = free_port(), free_port()
    with twistd("bnproxy", "--port", f"tcp:{pport}:interface=127.0.0.1", "--upstream",
                f"spot=http://127.0.0.1:{dead}", "--connect-timeout", "2",
                port=pport, cwd=str(tmp_path)):
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{pport}/api/v3/ping", timeout=10)
        assert e.value.code == 502
        assert b'"code":-1001' in e.value.read()
        # The proxy lives on and says why it cannot serve (/health agrees with /ready):
        # never reached, then unreachable once a second failure in a row (the
        # confirming ping, a second later) stands.
        health = get_json(f"http://127.0.0.1:{pport}/health")
        assert health["status"] == "not ready"
        for _ in range(100):
            health = get_json(f"http://127.0.0.1:{pport}/health")
            if any(p.startswith("upstream spot unreachable") for p in health["problems"]):
                break
            time.sleep(0.1)
        assert health["status"] == "not ready"
        assert any(p.startswith("upstream spot unreachable") for p in health["problems"])


def test_tac_file_reads_the_environment(stack, tmp_path):
    pport = free_port()
    tac = os.path.join(os.path.dirname(__file__), "..", "bnproxy.tac")
    xbase = stack["exchange"]
    with twistd("-y", os.path.abspath(tac), port=pport, cwd=str(tmp_path), env={
            "BNPROXY_PORT": f"tcp:{pport}:interface=127.0.0.1",
            "BNPROXY_UPSTREAM": f"spot={xbase}/spot usdm={xbase}/usdm"}):
        body = get_json(f"http://127.0.0.1:{pport}/fapi/v1/time")
        assert body["serverTime"] > 0


def test_simulated_exchange_mode_serves_offline(tmp_path):
    pport = free_port()
    with twistd("bnproxy", "--port", f"tcp:{pport}:interface=127.0.0.1", "--simulated-exchange",
                port=pport, cwd=str(tmp_path)):
        rows = get_json(f"http://127.0.0.1:{pport}/api/v3/klines?symbol=BTCUSDT&interval=1m"
                        "&limit=3")
        assert len(rows) == 3
        health = get_json(f"http://127.0.0.1:{pport}/health")
        assert all(m["rest"].startswith("http://127.0.0.1:") for m in health["markets"].values())


def test_python_m_bnproxy_freqtrade_config():
    out = subprocess.run([sys.executable, "-m", "bnproxy", "freqtrade-config", "--url",
                          "http://127.0.0.1:8080", "--futures"], capture_output=True, text=True,
                         timeout=30, check=True)
    import json

    block = json.loads(out.stdout)["exchange"]
    urls = block["ccxt_config"]["urls"]["api"]
    assert urls["fapiData"] == "http://127.0.0.1:8080/usdm/futures/data"
    assert urls["dapiData"] == "http://127.0.0.1:8080/coinm/futures/data"
    assert block["ccxt_config"]["enableRateLimit"] is False
