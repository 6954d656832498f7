"""The fake exchange must not be the bottleneck of the proxy's benchmarks:
klines REST requests per second (wrk, keep-alive) and websocket messages per
second, the exchange pinned to one core.

    python bench/exchange_throughput.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

from common import TWISTD, free_port, process


def wrk(url: str, seconds: int, connections: int = 32) -> float:
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t2", f"-c{connections}",
                          f"-d{seconds}s", url], capture_output=True, text=True,
                         timeout=seconds + 30, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


WS_CLIENT = r'''
import sys, time, orjson
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
port, conns, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
streams = sys.argv[4].split(",")
count = [0]
class P(WebSocketClientProtocol):
    def onMessage(self, payload, isBinary):
        count[0] += 1
def start():
    for i in range(conns):
        f = WebSocketClientFactory(f"ws://127.0.0.1:{port}/spot/stream?streams=" + "/".join(streams))
        f.protocol = P
        reactor.connectTCP("127.0.0.1", port, f)
    def begin():
        count[0] = 0
        t0 = time.perf_counter()
        def end():
            print(count[0] / (time.perf_counter() - t0))
            reactor.stop()
        reactor.callLater(seconds, end)
    reactor.callLater(2.0, begin)
reactor.callWhenRunning(start)
reactor.run()
'''


def ws_rate(port: int, seconds: float, connections: int) -> float:
    symbols = ["btcusdt", "ethusdt", "bnbusdt", "solusdt", "xrpusdt", "adausdt", "dogeusdt",
               "trxusdt", "dotusdt", "linkusdt", "ltcusdt", "avaxusdt"]
    streams = [f"{s}@{k}" for s in symbols for k in ("depth@100ms", "bookTicker", "kline_1m",
                                                       "aggTrade")]
    out = subprocess.run(["taskset", "-c", "1", sys.executable, "-c", WS_CLIENT, str(port),
                          str(connections), str(seconds), ",".join(streams)],
                         capture_output=True, text=True, timeout=seconds + 60, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--ws-connections", type=int, default=60)
    args = parser.parse_args()
    port = free_port()
    result = {}
    with process(TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                 f"tcp:{port}:interface=127.0.0.1", "--spot-weight-limit", "1000000000",
                 "--trade-rate", "2", port=port, cpu=0):
        time.sleep(1)
        for limit in (100, 500, 1000):
            url = (f"http://127.0.0.1:{port}/api/v3/klines?symbol=BTCUSDT&interval=1m"
                   f"&limit={limit}")
            result[f"klines_limit_{limit}_req_per_s"] = wrk(url, args.seconds)
        result["ws_messages_per_s"] = ws_rate(port, args.seconds, args.ws_connections)
        result["ws_connections"] = args.ws_connections
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
