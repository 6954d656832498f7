"""Take docs/dashboard.png: the dashboard of a proxy in front of the fake
exchange, with a few bots' traffic, one error and a ban in force.

    python bench/dashboard_screenshot.py [--seconds 60] [--out docs/dashboard.png]

Needs /usr/bin/chromium and Playwright (the test extra).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

from bnproxy.testing.processes import TWISTD, free_port, stop, wait_listening

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
HERE = os.path.dirname(os.path.abspath(__file__))
PATHS = ["/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=100",
         "/api/v3/klines?symbol=ETHUSDT&interval=5m&limit=200",
         "/api/v3/depth?symbol=BTCUSDT&limit=20", "/api/v3/ticker/24hr?symbol=SOLUSDT",
         "/api/v3/time", "/api/v3/exchangeInfo", "/fapi/v1/klines?symbol=BTCUSDT&interval=1m",
         "/fapi/v1/depth?symbol=ETHUSDT&limit=50", "/api/v3/avgPrice?symbol=BNBUSDT"]


@contextlib.contextmanager
def running(args: list[str], port: int, cwd: str):
    proc = subprocess.Popen([TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        stop(proc)


def get(url: str, bot: str) -> None:
    request = urllib.request.Request(url, headers={"X-Bnproxy-Client": bot})
    with contextlib.suppress(urllib.error.HTTPError):
        urllib.request.urlopen(request, timeout=10).read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--out", default=os.path.join(HERE, "..", "docs", "dashboard.png"))
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    cwd = tempfile.mkdtemp()
    xport, pport = free_port(), free_port()
    upstreams = []
    for m in ("spot", "usdm", "coinm"):
        upstreams += ["--upstream", f"{m}=http://127.0.0.1:{xport}/{m}",
                      "--stream-upstream", f"{m}=ws://127.0.0.1:{xport}/{m}"]
    chain = ["logger", "allowlist", "streams", "cache", "ratelimit:client_header=X-Bnproxy-Client"]
    proxy = f"http://127.0.0.1:{pport}"
    rng = random.Random(7)
    with running(["bnproxy-exchange", "--port", f"tcp:{xport}:interface=127.0.0.1"], xport, cwd), \
            running(["bnproxy", "--port", f"tcp:{pport}:interface=127.0.0.1", "--state-dir", cwd,
                     *upstreams, *[a for m in chain for a in ("--middleware-chain", m)]], pport, cwd), \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(proxy + "/dashboard")
        bots = ["freqtrade-btc", "freqtrade-eth", "grid-bot", "arb-scanner", "backtest-1"]
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            for bot in bots:
                for _ in range(rng.randint(1, 4)):
                    get(proxy + rng.choice(PATHS), bot)
            time.sleep(0.2)
        get(proxy + "/api/v3/order?symbol=BTCUSDT&timestamp=1&signature=0123abcd", "grid-bot")
        req = urllib.request.Request(f"http://127.0.0.1:{xport}/_fake/ban", method="POST",
                                     data=json.dumps({"ip": "127.0.0.1", "seconds": 300,
                                                      "market": "usdm"}).encode())
        urllib.request.urlopen(req, timeout=10).read()
        get(proxy + "/fapi/v1/time", "arb-scanner")
        page.wait_for_selector(".ban", timeout=10000)
        page.wait_for_timeout(1500)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"wrote {os.path.abspath(args.out)}")


if __name__ == "__main__":
    main()
