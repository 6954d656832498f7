"""Real clients on real sockets: ccxt.pro's ``watch_*`` through the proxy's
websocket gateway equal the same calls straight at the fake exchange
(``twistd bnproxy`` in front of ``twistd bnproxy-exchange``)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

import orjson
import pytest
from processes import free_port, get_json, twistd

from bnproxy.tools.freqtrade_config import ccxt_urls, ccxt_ws_urls

pytestmark = pytest.mark.integration

BIN = os.path.dirname(sys.executable)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    cwd = str(tmp_path_factory.mktemp("wsstack"))
    xport, pport = free_port(), free_port()
    with twistd("bnproxy-exchange", "--port", f"tcp:{xport}:interface=127.0.0.1",
                port=xport, cwd=cwd):
        args = []
        for m in ("spot", "usdm", "coinm"):
            args += ["--upstream", f"{m}=http://127.0.0.1:{xport}/{m}",
                     "--stream-upstream", f"{m}=ws://127.0.0.1:{xport}/{m}"]
        with twistd("bnproxy", "--port", f"tcp:{pport}:interface=127.0.0.1", *args,
                    "--state-dir", cwd, port=pport, cwd=cwd):
            yield {"exchange": f"http://127.0.0.1:{xport}", "proxy": f"http://127.0.0.1:{pport}"}


def pro_client(rest_base: str):
    import ccxt.pro

    return ccxt.pro.binance({
        "enableRateLimit": False, "timeout": 10000,
        "urls": {"api": {**ccxt_urls(rest_base), "ws": ccxt_ws_urls(rest_base)}},
        "options": {"fetchMarkets": {"types": ["spot"]}}})


async def same(proxied, direct, call, key, tries: int = 60):
    """Call ``call`` on both clients until both return the same update
    (``key`` of the result equal); then the whole results must be equal."""
    for _ in range(tries):
        a, b = await asyncio.wait_for(asyncio.gather(call(proxied), call(direct)), 30)
        if key(a) == key(b):
            return a, b
    raise AssertionError("the two clients never saw the same update")


def test_ccxt_pro_watch_calls_through_the_proxy_equal_direct(stack):
    async def run():
        proxied, direct = pro_client(stack["proxy"]), pro_client(stack["exchange"] + "/spot")
        try:
            await asyncio.gather(proxied.load_markets(), direct.load_markets())
            a, b = await same(proxied, direct, lambda c: c.watch_ticker("BTC/USDT"),
                              lambda t: t["timestamp"])
            assert a == b
            a, b = await same(proxied, direct, lambda c: c.watch_ohlcv("BTC/USDT", "1m"),
                              lambda rows: rows[-1])
            assert a[-1] == b[-1]
            a, b = await same(proxied, direct, lambda c: c.watch_trades("ETH/USDT"),
                              lambda trades: trades[-1]["id"])
            assert a[-1] == b[-1]
            a, b = await same(proxied, direct,
                              lambda c: c.watch_order_book("BTC/USDT", limit=20),
                              lambda book: book["nonce"])
            # Each client knows the levels of its own REST snapshot (taken at
            # its own moment: limit=20) plus those the diffs changed since, as
            # Binance documents; at the same update id every level both know
            # has the same quantity, and the best bid and ask are the same.
            for side in ("bids", "asks"):
                mine, theirs = dict(map(tuple, a[side])), dict(map(tuple, b[side]))
                common = mine.keys() & theirs.keys()
                assert len(common) >= 10, (side, a[side], b[side])
                assert {p: mine[p] for p in common} == {p: theirs[p] for p in common}
                assert a[side][0] == b[side][0]
        finally:
            await asyncio.gather(proxied.close(), direct.close())
    asyncio.run(run())
    health = get_json(stack["proxy"] + "/health")
    streams = health["middleware"]["streams"]["markets"]["spot"]
    assert streams["connections"] >= 1


def test_python_binance_socket_manager_through_the_proxy(stack):
    from binance import AsyncClient, BinanceSocketManager

    proxy = stack["proxy"].replace("http://", "ws://")

    class ProxiedSocketManager(BinanceSocketManager):  # as the README shows
        STREAM_URL = f"{proxy}/"
        FSTREAM_URL = f"{proxy}/usdm/"
        DSTREAM_URL = f"{proxy}/coinm/"

    async def run():
        client = AsyncClient()
        try:
            bsm = ProxiedSocketManager(client)
            async with bsm.kline_socket("BTCUSDT", "1m") as stream:
                kline = await asyncio.wait_for(stream.recv(), 30)
            async with bsm.multiplex_socket(["ethusdt@aggTrade", "btcusdt@bookTicker"]) as s:
                seen = set()
                while len(seen) < 2:
                    seen.add((await asyncio.wait_for(s.recv(), 30))["stream"])
            async with bsm.symbol_mark_price_socket("BTCUSDT") as stream:
                mark = await asyncio.wait_for(stream.recv(), 30)
        finally:
            await client.close_connection()
        return kline, seen, mark
    kline, seen, mark = asyncio.run(run())
    assert kline["e"] == "kline" and kline["s"] == "BTCUSDT"
    assert seen == {"ethusdt@aggTrade", "btcusdt@bookTicker"}
    assert mark["data"]["e"] == "markPriceUpdate"


def test_binance_connector_websocket_client_through_the_proxy(stack):
    import threading

    from binance.websocket.spot.websocket_stream import SpotWebsocketStreamClient

    got: list[str] = []
    done = threading.Event()

    def on_message(_, message):
        got.append(message)
        if sum('"e":"aggTrade"' in m for m in got) >= 3:
            done.set()
    client = SpotWebsocketStreamClient(stream_url=stack["proxy"].replace("http://", "ws://"),
                                       on_message=on_message)
    try:
        client.agg_trade(symbol="btcusdt")
        assert done.wait(30)
    finally:
        client.stop()
    assert orjson.loads(got[0])["result"] is None  # the SUBSCRIBE answer


@pytest.mark.e2e
@pytest.mark.skipif(not os.path.exists(os.path.join(BIN, "freqtrade")),
                    reason="freqtrade is not installed")
def test_freqtrade_spot_bots_keep_websockets_on_through_the_proxy(tmp_path):
    """Two Freqtrade spot dry-run bots configured by ``freqtrade-config``
    (``enable_ws: true``) run a minute through the proxy: their candles come
    over the proxy's gateway, nothing 1008 or falls back, and the fake sees
    only the proxy's stream connections."""
    from bnproxy.testing.freqtrade import ALWAYS_IN

    port = free_port()
    with twistd("bnproxy", "--port", f"tcp:{port}:interface=127.0.0.1",
                "--simulated-exchange", "--state-dir", str(tmp_path), port=port,
                cwd=str(tmp_path)):
        url = f"http://127.0.0.1:{port}"
        block = json.loads(subprocess.run(
            [sys.executable, "-m", "bnproxy", "freqtrade-config", "--url", url],
            capture_output=True, text=True, check=True, timeout=30).stdout)["exchange"]
        assert block["enable_ws"] is True
        block["pair_whitelist"] = ["BTC/USDT", "ETH/USDT", "BNB/USDT"]
        (tmp_path / "AlwaysIn.py").write_text(ALWAYS_IN)
        bots = []
        for n in range(2):
            home = tmp_path / f"bot{n}"
            (home / "user_data").mkdir(parents=True)
            config = {
                "max_open_trades": 3, "stake_currency": "USDT", "stake_amount": 100,
                "dry_run": True, "dry_run_wallet": 1000, "trading_mode": "spot",
                "unfilledtimeout": {"entry": 10, "exit": 10, "unit": "minutes"},
                "entry_pricing": {"price_side": "same"}, "exit_pricing": {"price_side": "same"},
                "exchange": block, "pairlists": [{"method": "StaticPairList"}],
                "bot_name": f"ws{n}", "initial_state": "running",
                "internals": {"process_throttle_secs": 5}}
            (home / "config.json").write_text(json.dumps(config))
            bots.append(subprocess.Popen(
                [os.path.join(BIN, "freqtrade"), "trade", "-c", str(home / "config.json"),
                 "--strategy", "AlwaysIn", "--strategy-path", str(tmp_path), "--userdir",
                 str(home / "user_data"), "--db-url", f"sqlite:///{home / 'trades.sqlite'}"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=home))
        time.sleep(50)
        metrics = urllib.request.urlopen(url + "/metrics", timeout=10).read().decode()
        fake = get_json(url + "/health")["markets"]["spot"]["rest"].rsplit("/", 1)[0]
        counters = get_json(fake + "/_fake/")
        outputs = []
        for bot in bots:
            bot.terminate()
            outputs.append(bot.communicate(timeout=30)[0])
    bot_connections = re.search(r'bnproxy_ws_bot_connections\{market="spot"\} (\S+)', metrics)
    assert bot_connections and float(bot_connections.group(1)) >= 2, metrics
    delivered = re.search(r"^bnproxy_ws_frames_delivered_total (\S+)", metrics, re.M)
    assert delivered and float(delivered.group(1)) > 0
    for output in outputs:
        assert "1008" not in output and "binance.com" not in output, output[-3000:]
        assert "Too many requests" not in output
    ws = counters["ws"]
    assert ws["connections"] <= 4  # the proxy's stream connections, not the bots'
