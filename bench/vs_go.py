"""bnproxy beside the Go proxy people use today (nightshift2k/binance-proxy),
built from its public source by ``bench/goproxy/build.sh`` (never committed),
both in front of the same fake exchange on loopback.

Each proxy is pinned to core 0 (one loaded at a time, interleaved rounds),
wrk runs on core 1, the fake on core 1; the figure is the proxy process's
CPU time per answer (user + system, from /proc) for each case, and the ratio
Go ÷ bnproxy (≥ 1.0: bnproxy costs at most what Go costs). Each case is
warmed on both proxies first, so both answer from their own state (Go from
its websocket-kept books, klines and tickers; bnproxy from streams and cache);
``time`` is forwarded by both. Then, with ``--instructions N``, bnproxy's
instructions per answer under callgrind for the same cases.

    bash bench/goproxy/build.sh /work/gobuild        # once
    python bench/vs_go.py --go /work/gobuild/binance-proxy [--rounds 6] [--seconds 4]

The fake listens on the port the build pointed Go at (``FAKE_PORT``, 19000).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request

from common import TWISTD, counted, free_port, loaded, process

CASES = {
    "depth_limit_5": "/api/v3/depth?symbol=BTCUSDT&limit=5",
    "depth_limit_20": "/api/v3/depth?symbol=BTCUSDT&limit=20",
    "ticker_24hr_symbol": "/api/v3/ticker/24hr?symbol=BTCUSDT",
    "exchangeInfo": "/api/v3/exchangeInfo",
    "klines_1m_500": "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=500",
    "forwarded_time": "/api/v3/time",
}


def warm(url: str, n: int = 20) -> None:
    for _ in range(n):
        with urllib.request.urlopen(url, timeout=10) as r:
            r.read()
            assert r.status == 200, (r.status, url)
        time.sleep(0.05)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--go", required=True, help="the binance-proxy binary")
    parser.add_argument("--fake-port", type=int, default=int(os.environ.get("FAKE_PORT", 19000)))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--instructions", type=int, default=0)
    parser.add_argument("--cases", default=",".join(CASES))
    args = parser.parse_args()
    cases = {k: CASES[k] for k in args.cases.split(",")}
    xport = args.fake_port
    fake = f"http://127.0.0.1:{xport}"
    out: dict = {"rounds": args.rounds, "seconds": args.seconds, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        stack.enter_context(process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null",
                                    "bnproxy-exchange", "--port",
                                    f"tcp:{xport}:interface=127.0.0.1", port=xport, cpu=1))
        gport, bport = free_port(), free_port()
        go = stack.enter_context(process(args.go, "-p", str(gport), "-f", port=gport, cpu=0))
        upstreams = ["--upstream", f"spot={fake}/spot",
                     "--stream-upstream", f"spot=ws://127.0.0.1:{xport}/spot"]
        bn = stack.enter_context(process(
            TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy",
            "--port", f"tcp:{bport}:interface=127.0.0.1", "--state-dir", tmp,
            *upstreams, port=bport, cpu=0))
        servers = {"go": (gport, go.pid), "bnproxy": (bport, bn.pid)}
        for path in cases.values():
            for port, _ in servers.values():
                warm(f"http://127.0.0.1:{port}{path}")
        for name, path in cases.items():
            runs: dict[str, list] = {s: [] for s in servers}
            for _ in range(args.rounds):
                for s, (port, pid) in servers.items():
                    runs[s].append(loaded(f"http://127.0.0.1:{port}{path}", args.seconds, pid,
                                          args.connections))
            cpu = {s: statistics.median(r.cpu_us_per_request for r in rs)
                   for s, rs in runs.items()}
            ratios = [g.cpu_us_per_request / b.cpu_us_per_request
                      for g, b in zip(runs["go"], runs["bnproxy"])]
            out["cases"][name] = {
                "path": path,
                "go_us_per_answer": round(cpu["go"], 1),
                "bnproxy_us_per_answer": round(cpu["bnproxy"], 1),
                "go_over_bnproxy": round(statistics.median(ratios), 3),
                "req_per_s": {s: round(statistics.median(r.req_per_s for r in rs))
                              for s, rs in runs.items()},
            }
        if args.instructions:
            port = free_port()
            with counted(sys.executable, TWISTD, "-n", "--pidfile=", "--logfile=/dev/null",
                         "bnproxy", "--port", f"tcp:{port}:interface=127.0.0.1",
                         "--state-dir", tmp, *upstreams,
                         port=port) as measure:
                for name, path in cases.items():
                    warm(f"http://127.0.0.1:{port}{path}", 5)
                    out["cases"][name]["bnproxy_instructions_per_answer"] = round(
                        measure(f"http://127.0.0.1:{port}{path}", args.instructions, 3.0))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
