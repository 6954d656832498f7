"""Latency the proxy adds: the same request straight to a loopback upstream and
through ``twistd bnproxy``, interleaved in one run.

    python bench/latency.py [--requests 5000]
"""

from __future__ import annotations

import argparse
import json

from common import TWISTD, free_port, process, summary, timed_gets

PATH = "/api/v3/depth?symbol=BTCUSDT&limit=5"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    xport, pport = free_port(), free_port()
    with process(TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                 f"tcp:{xport}:interface=127.0.0.1", "--spot-weight-limit", "100000000",
                 port=xport, cpu=0), \
         process(TWISTD, "-n", "--pidfile=", "bnproxy", "--port",
                 f"tcp:{pport}:interface=127.0.0.1", "--upstream",
                 f"spot=http://127.0.0.1:{xport}/spot", port=pport, cpu=1):
        timed_gets(xport, PATH, 200)  # warm up both
        timed_gets(pport, PATH, 200)
        direct: list[float] = []
        proxied: list[float] = []
        per = args.requests // args.rounds
        for _ in range(args.rounds):  # interleave so drift hits both alike
            direct += timed_gets(xport, PATH, per)
            proxied += timed_gets(pport, PATH, per)
    d, p = summary(direct), summary(proxied)
    result = {"path": PATH, "direct": d, "proxied": p,
              "added_median_ms": p["median_ms"] - d["median_ms"],
              "added_p99_ms": p["p99_ms"] - d["p99_ms"]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
