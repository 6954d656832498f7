"""Resident memory of ``twistd bnproxy`` (default chain, spot on the fake
exchange with its streams): idle after start, then after bots asked for
depth, klines and 24 h tickers of N symbols (served from streams once
subscribed).

    python bench/rss.py [--symbols 40] [--settle 15]
    python bench/rss.py --floor

``--floor``: what the layers under bnproxy cost, each measured in a fresh
interpreter (VmRSS after importing it and everything above it): bare Python,
Twisted's reactor with pyOpenSSL hidden (no TLS), the reactor as installed
(its TCP module loads its TLS support, pyOpenSSL and cryptography, whenever
pyOpenSSL is importable), a TLS client context with the platform trust,
twisted.web, autobahn's websocket (streams), then bnproxy with its default
configuration built (https upstream; not started).
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import tempfile
import time

from common import TWISTD, free_port, process

# (label, code run after the previous layers' code, in one fresh interpreter)
LAYERS = [
    ("python", ""),
    ("+ twisted reactor, pyOpenSSL hidden (no TLS)",
     "sys.modules['OpenSSL'] = None\nfrom twisted.internet import reactor"),
    ("+ twisted reactor as installed (TLS support loaded)", "from twisted.internet import reactor"),
    ("+ a TLS client context, platform trust",
     "from twisted.internet.ssl import optionsForClientTLS, platformTrust\n"
     "optionsForClientTLS('localhost', trustRoot=platformTrust())"),
    ("+ twisted.web.server", "import twisted.web.server"),
    ("+ autobahn websocket (streams, gateway)", "import autobahn.twisted.websocket"),
    ("+ bnproxy, default configuration built (https upstream)",
     "import tempfile\nfrom bnproxy.config.model import ProxyConfig\n"
     "from bnproxy.service import ProxyService\n"
     "ProxyService(reactor, ProxyConfig(listen=(), upstreams={'spot': 'https://127.0.0.1:9'},"
     " access_log='none', state_dir=tempfile.mkdtemp()))"),
]
MEASURE = ("import gc\ngc.collect()\nprint([l for l in open('/proc/self/status')"
           " if l.startswith('VmRSS:')][0].split()[1])")


def floor() -> None:
    """VmRSS (MB) of each layer, cumulative, each in a fresh interpreter."""
    rows = []
    for i, (label, _) in enumerate(LAYERS):
        steps = [code for _, code in LAYERS[:i + 1]]
        if i > 1 and "hidden" not in label:
            steps = [c for c in steps if "OpenSSL'] = None" not in c]
        code = "import sys\n" + "\n".join(steps) + "\n" + MEASURE
        kb = int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True, timeout=120).stdout.split()[-1])
        rows.append({"layer": label, "rss_mb": round(kb / 1024, 1)})
    print(json.dumps(rows, indent=2))


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
    parser.add_argument("--floor", action="store_true")
    args = parser.parse_args()
    if args.floor:
        floor()
        return
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
