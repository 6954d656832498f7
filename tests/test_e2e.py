"""End to end with the real clients (slow: marked e2e; `.ci/run` runs them).

A Freqtrade dry-run bot with 3 pairs, spot and futures, configured from
`python -m bnproxy freqtrade-config`, runs for about a minute against
`twistd -n bnproxy --simulated-exchange`; and the real ccxt client makes every
call the README lists through the same proxy.
"""

import collections
import json
import os
import sqlite3
import subprocess
import sys
from urllib.parse import parse_qsl

import pytest
from processes import free_port, get_json, twistd

from bnproxy.binance.endpoints import load_endpoints
from bnproxy.testing.freqtrade import ALWAYS_IN

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)

def access_records(log_text: str):
    """The access lines of a ``--log-format json`` run (every line is a JSON
    object; access lines have a status), ``time`` as epoch seconds."""
    from datetime import datetime
    for line in log_text.splitlines():
        record = json.loads(line)
        if "status" in record:
            record["time"] = datetime.fromisoformat(record["time"].replace("Z", "+00:00")
                                                    ).timestamp()
            yield record


@pytest.fixture
def simulated(tmp_path):
    port = free_port()
    with twistd("bnproxy", "--port", f"tcp:{port}:interface=127.0.0.1", "--simulated-exchange",
                "--log-format", "json", "--state-dir", str(tmp_path),
                port=port, cwd=str(tmp_path)) as proc:
        yield f"http://127.0.0.1:{port}", proc, tmp_path


@pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "freqtrade")),
                    reason="freqtrade is not installed")
@pytest.mark.parametrize("futures", [False, True], ids=["spot", "futures"])
def test_a_freqtrade_dry_run_bot_trades_through_the_proxy(simulated, futures):
    url, proc, tmp = simulated
    block = json.loads(subprocess.run(
        [sys.executable, "-m", "bnproxy", "freqtrade-config", "--url", url]
        + (["--futures"] if futures else []), capture_output=True, text=True, check=True,
        timeout=30).stdout)["exchange"]
    suffix = ":USDT" if futures else ""
    block["pair_whitelist"] = [f"BTC/USDT{suffix}", f"ETH/USDT{suffix}", f"BNB/USDT{suffix}"]
    block["pair_blacklist"] = []
    config = {
        "max_open_trades": 3, "stake_currency": "USDT", "stake_amount": 100,
        "tradable_balance_ratio": 0.99, "fiat_display_currency": "", "dry_run": True,
        "dry_run_wallet": 1000, "cancel_open_orders_on_exit": False,
        "trading_mode": "futures" if futures else "spot",
        "unfilledtimeout": {"entry": 10, "exit": 10, "exit_timeout_count": 0,
                            "unit": "minutes"},
        "entry_pricing": {"price_side": "same", "use_order_book": True, "order_book_top": 1,
                          "price_last_balance": 0.0,
                          "check_depth_of_market": {"enabled": False, "bids_to_ask_delta": 1}},
        "exit_pricing": {"price_side": "same", "use_order_book": True, "order_book_top": 1},
        "exchange": block, "pairlists": [{"method": "StaticPairList"}],
        "telegram": {"enabled": False, "token": "", "chat_id": ""},
        "bot_name": "e2e", "initial_state": "running",
        "internals": {"process_throttle_secs": 5},
    }
    if futures:
        config["margin_mode"] = "isolated"
    (tmp / "config.json").write_text(json.dumps(config))
    (tmp / "AlwaysIn.py").write_text(ALWAYS_IN)
    (tmp / "user_data").mkdir()
    db = tmp / "trades.sqlite"
    try:
        bot = subprocess.run(
            [os.path.join(BIN, "freqtrade"), "trade", "-c", str(tmp / "config.json"),
             "--strategy", "AlwaysIn", "--strategy-path", str(tmp), "--userdir",
             str(tmp / "user_data"), "--db-url", f"sqlite:///{db}"],
            capture_output=True, text=True, timeout=65, cwd=tmp)
        output = bot.stdout + bot.stderr
    except subprocess.TimeoutExpired as e:  # it runs until stopped: a minute is enough
        output = (e.stdout or b"").decode() + (e.stderr or b"").decode()
    assert "Configuration error" not in output, output[-2000:]
    assert "binance.com" not in output  # nothing went around the proxy
    with sqlite3.connect(db) as conn:
        trades = conn.execute("select pair from trades").fetchall()
    assert len(trades) >= 2, output[-3000:]
    health = get_json(url + "/health")
    fake = health["markets"]["spot"]["rest"].rsplit("/", 1)[0]
    counters = get_json(fake + "/_fake/")
    assert counters["rest_total"] > 0
    # What the bot asked for, priced by the endpoint table, against what reached Binance.
    log_text = (tmp / f"twistd-{url.rsplit(':', 1)[1]}.log").read_text()
    endpoints = load_endpoints()
    records = list(access_records(log_text))
    start = records[0]["time"]
    asked = collections.Counter()  # by half: warm-up (first 30 s) and steady
    upstream = collections.Counter()
    sources = collections.Counter()
    for r in records:
        half = "warm" if r["time"] - start < 30 else "steady"
        if r["client"] == "127.0.0.1":  # the bot (the proxy's own calls say "bnproxy")
            ep = endpoints.lookup(r["market"], r["method"], r["path"])
            asked[half] += ep.weight(dict(parse_qsl(r["query"]))) if ep else 1
            sources[r["source"]] += 1
        if r["source"] == "upstream":
            upstream[half] += r["weight"]
    assert sources["stream"] + sources["cache"] > sources["upstream"], sources
    total_up, total_asked = sum(upstream.values()), sum(asked.values())
    assert total_up < total_asked, (upstream, asked)  # one-off snapshots included
    assert upstream["steady"] < 0.2 * asked["steady"], (upstream, asked, sources)


CCXT_CALLS = ["load_markets", "fetch_ohlcv", "fetch_order_book", "fetch_ticker",
              "fetch_tickers", "fetch_bids_asks", "fetch_balance", "create_order",
              "fetch_order", "fetch_open_orders", "cancel_order", "fetch_my_trades",
              "fetch_funding_rate", "set_leverage", "fetch_positions"]


@pytest.mark.parametrize("kind", ["binance", "binanceusdm"])
def test_the_real_ccxt_client_through_the_simulated_proxy(simulated, kind):
    import ccxt

    from bnproxy.tools.freqtrade_config import ccxt_urls

    url, _, _ = simulated
    ex = getattr(ccxt, kind)({"apiKey": "bnproxy-test-key", "secret": "bnproxy-test-secret",
                              "enableRateLimit": False, "timeout": 15000,
                              "urls": {"api": ccxt_urls(url)},
                              "options": {"fetchMarkets": {"types": ["spot"] if kind == "binance"
                                                           else ["linear"]}}})
    symbol = "BTC/USDT" if kind == "binance" else "BTC/USDT:USDT"
    ex.load_markets()
    assert len(ex.fetch_ohlcv(symbol, "1m", limit=50)) == 50
    since = ex.milliseconds() - 2 * 3600_000
    assert ex.fetch_ohlcv(symbol, "5m", since=since)[0][0] >= since
    assert ex.fetch_order_book(symbol, 20)["bids"]
    last = ex.fetch_ticker(symbol)["last"]
    assert symbol in ex.fetch_tickers() and symbol in ex.fetch_bids_asks()
    assert ex.fetch_balance()["total"]["USDT"] > 0
    order = ex.create_order(symbol, "limit", "buy", 0.01, round(last * 0.9, 1))
    assert ex.fetch_order(order["id"], symbol)["status"] == "open"
    assert [o["id"] for o in ex.fetch_open_orders(symbol)] == [order["id"]]
    assert ex.cancel_order(order["id"], symbol)["status"] == "canceled"
    assert ex.create_order(symbol, "market", "buy", 0.01)["status"] == "closed"
    assert len(ex.fetch_my_trades(symbol)) >= 1
    if kind == "binanceusdm":
        assert ex.fetch_funding_rate(symbol)["fundingRate"] is not None
        ex.set_leverage(5, symbol)
        positions = ex.fetch_positions([symbol])
        assert positions and positions[0]["contracts"] > 0
