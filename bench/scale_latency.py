"""Latency --shared-state adds to a forwarded request: two proxies (the
ratelimit middleware only, so every request is forwarded) in front of one
fake exchange, one in-process and one sharing a loopback Redis, asked in
interleaved rounds.

    python bench/scale_latency.py [--requests 2000] [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from common import TWISTD, free_port, process, summary, timed_gets

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from redis_server import RedisServer

PATH = "/api/v3/depth?symbol=BTCUSDT&limit=5"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    xport, plain, shared = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(os.path.join(tmp, "redis"))
        redis.start()
        proxy = [TWISTD, "-n", "--pidfile=", "bnproxy", "--upstream",
                 f"spot=http://127.0.0.1:{xport}/spot", "--middleware-chain",
                 "ratelimit:limit.spot=100000000", "--access-log", "none"]
        try:
            with process(TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                         f"tcp:{xport}:interface=127.0.0.1", "--spot-weight-limit",
                         "1000000000", port=xport), \
                 process(*proxy, "--port", f"tcp:{plain}:interface=127.0.0.1",
                         "--state-dir", tmp, port=plain), \
                 process(*proxy, "--port", f"tcp:{shared}:interface=127.0.0.1",
                         "--state-dir", os.path.join(tmp, "redis"), "--shared-state",
                         redis.url, port=shared):
                timed_gets(plain, PATH, 300)
                timed_gets(shared, PATH, 300)
                times: dict[int, list[float]] = {plain: [], shared: []}
                for _ in range(args.rounds):
                    for port in (plain, shared):
                        times[port] += timed_gets(port, PATH, args.requests // args.rounds)
        finally:
            redis.stop()
    a, b = summary(times[plain]), summary(times[shared])
    print(f"in-process     median {a['median_ms']:.3f} ms  p99 {a['p99_ms']:.3f} ms")
    print(f"shared (Redis) median {b['median_ms']:.3f} ms  p99 {b['p99_ms']:.3f} ms")
    print(f"added median: {b['median_ms'] - a['median_ms']:.3f} ms")


if __name__ == "__main__":
    main()
