"""Resident memory of ``twistd bnproxy`` (default chain, spot on the fake
exchange with its streams): idle after start, then after bots asked for
depth, klines and 24 h tickers of N symbols (served from streams once
subscribed).

    python bench/rss.py [--symbols 40] [--settle 15]
"""

from __future__ import annotations

import argparse
import http.client
import json
import tempfile
import time

from common import TWISTD, free_port, process


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--symbols", type=int, default=40)
    parser.add_argument("--settle", type=float, default=15.0)
    args = parser.parse_args()
    xport, port = free_port(), free_port()
    with process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy-exchange",
                 "--port", f"tcp:{xport}:interface=127.0.0.1",
                 "--spot-weight-limit", "100000000", port=xport), \
         process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy", "--port",
                 f"tcp:{port}:interface=127.0.0.1", "--state-dir", tempfile.mkdtemp(),
                 "--access-log", "none",
                 "--upstream", f"spot=http://127.0.0.1:{xport}/spot",
                 "--stream-upstream", f"spot=ws://127.0.0.1:{xport}/spot",
                 port=port) as proxy:
        time.sleep(args.settle)
        idle = rss_mb(proxy.pid)
        info = json.loads(get(port, "/api/v3/exchangeInfo"))
        symbols = [s["symbol"] for s in info["symbols"]][:args.symbols]
        for _ in range(3):
            for s in symbols:
                get(port, f"/api/v3/depth?symbol={s}&limit=5")
                get(port, f"/api/v3/klines?symbol={s}&interval=1m&limit=100")
                get(port, f"/api/v3/ticker/24hr?symbol={s}")
            time.sleep(args.settle / 3)
        busy = rss_mb(proxy.pid)
    print(json.dumps({"idle_rss_mb": round(idle, 1), "symbols": len(symbols),
                      "rss_mb_with_symbols": round(busy, 1)}, indent=2))


if __name__ == "__main__":
    main()
