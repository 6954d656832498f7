"""A real client on real sockets: ccxt.pro's USD-M ``watch_orders`` through
the proxy (listenKey over REST, the user-data stream over the proxy's
one-to-one relay, the order placed over REST) sees the same order as the
same call straight at the fake exchange (``twistd bnproxy`` in front of
``twistd bnproxy-exchange``); the proxy's access log shows no listenKey."""

from __future__ import annotations

import asyncio
import os

import pytest
from processes import free_port, twistd

from bnproxy.tools.freqtrade_config import ccxt_urls, ccxt_ws_urls

pytestmark = pytest.mark.integration


def pro_client(rest_base: str):
    import ccxt.pro

    return ccxt.pro.binance({
        "apiKey": "bnproxy-test-key", "secret": "bnproxy-test-secret",
        "enableRateLimit": False, "timeout": 10000,
        "urls": {"api": {**ccxt_urls(rest_base), "ws": ccxt_ws_urls(rest_base)}},
        "options": {"defaultType": "swap", "fetchMarkets": {"types": ["linear"]}}})


def test_ccxt_pro_watch_orders_through_the_proxy_equals_direct(tmp_path):
    cwd = str(tmp_path)
    xport, pport = free_port(), free_port()
    with twistd("bnproxy-exchange", "--port", f"tcp:{xport}:interface=127.0.0.1",
                port=xport, cwd=cwd):
        args = []
        for m in ("spot", "usdm", "coinm"):
            args += ["--upstream", f"{m}=http://127.0.0.1:{xport}/{m}",
                     "--stream-upstream", f"{m}=ws://127.0.0.1:{xport}/{m}"]
        log = os.path.join(cwd, "access.log")
        with twistd("bnproxy", "--port", f"tcp:{pport}:interface=127.0.0.1", *args,
                    "--state-dir", cwd, "--access-log", log, port=pport, cwd=cwd) as proxy:

            async def run():
                proxied = pro_client(f"http://127.0.0.1:{pport}")
                direct = pro_client(f"http://127.0.0.1:{xport}")
                try:
                    await asyncio.gather(proxied.load_markets(), direct.load_markets())
                    symbol = "BTC/USDT:USDT"
                    watching = [asyncio.ensure_future(c.watch_orders(symbol))
                                for c in (proxied, direct)]
                    await asyncio.sleep(2)  # both user-data streams open
                    placed = await proxied.create_order(symbol, "market", "buy", 0.01)
                    a, b = await asyncio.wait_for(asyncio.gather(*watching), 30)
                    assert a[-1]["id"] == b[-1]["id"] == placed["id"]
                    assert a == b
                    return proxied.options["linear"]["listenKey"]
                finally:
                    await asyncio.gather(proxied.close(), direct.close())
            key = asyncio.run(run())
        with open(log) as f:
            access = f.read()
        assert key and len(key) == 64
        assert key not in access and key not in proxy.log_text
        assert "listenKey=[redacted]" in access
