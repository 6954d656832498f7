"""CPU per answer, bnproxy against the Go proxy (nightshift2k/binance-proxy),
in one run: the same fake exchange, each proxy on core 0, wrk on core 1,
rounds interleaved; CPU time of each proxy process from /proc.

    python bench/go_side_by_side.py --go /work/goproxy/binance-proxy [--rounds 6] [--seconds 3]

The Go binary is built from its public source with its dependencies vendored
and patched only to take its REST base from ``BPX_REST`` and its websocket
base from ``BPX_WS`` (see BENCHMARKS.md); it is never part of this repository.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import urllib.request

from common import TWISTD, free_port, loaded, process

PATHS = {"depth limit=5": "/api/v3/depth?symbol=BTCUSDT&limit=5",
         "depth limit=20": "/api/v3/depth?symbol=BTCUSDT&limit=20",
         "ticker/24hr": "/api/v3/ticker/24hr?symbol=BTCUSDT",
         "exchangeInfo": "/api/v3/exchangeInfo",
         "klines 1m limit=1000": "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--go", required=True)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    xport, bport, gport = free_port(), free_port(), free_port()
    env = {**os.environ, "BPX_REST": f"http://127.0.0.1:{xport}/spot",
           "BPX_WS": f"ws://127.0.0.1:{xport}/spot"}
    cpu: dict[str, dict[str, list[float]]] = {p: {"bnproxy": [], "go": []} for p in PATHS}
    with process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy-exchange",
                 "--port", f"tcp:{xport}:interface=127.0.0.1",
                 "--spot-weight-limit", "100000000", port=xport), \
         process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy", "--port",
                 f"tcp:{bport}:interface=127.0.0.1", "--state-dir", tempfile.mkdtemp(),
                 "--access-log", "none",
                 "--upstream", f"spot=http://127.0.0.1:{xport}/spot",
                 "--stream-upstream", f"spot=ws://127.0.0.1:{xport}/spot",
                 port=bport, cpu=0) as bn:
        os.environ.update(env)  # the Go proxy reads its upstream from the environment
        with process(args.go, "-p", str(gport), "-f", port=gport, cpu=0) as go:
            for path in PATHS.values():  # subscribe and fill both
                for port in (bport, gport):
                    for _ in range(3):
                        urllib.request.urlopen(f"http://127.0.0.1:{port}{path}").read()
            time.sleep(5)
            for _ in range(args.rounds):
                for name, path in PATHS.items():
                    for who, port, pid in (("bnproxy", bport, bn.pid), ("go", gport, go.pid)):
                        cpu[name][who].append(loaded(f"http://127.0.0.1:{port}{path}",
                                                     args.seconds, pid).cpu_us_per_request)
    out = {}
    for name in PATHS:
        b, g = statistics.median(cpu[name]["bnproxy"]), statistics.median(cpu[name]["go"])
        out[name] = {"bnproxy_us": round(b, 1), "go_us": round(g, 1),
                     "go_over_bnproxy": round(g / b, 2)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
