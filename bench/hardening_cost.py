"""What the server hardening costs: cache-hit throughput through bnproxy's
hardened Site against the same resource tree behind a stock twisted.web Site,
interleaved rounds in one run (servers on core 0, wrk on core 1).

    python hardening_cost.py [--rounds 5] [--seconds 4] [--chain cache] [--instructions 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request

from common import TWISTD, counted, free_port, process
from exchange_throughput import wrk

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = "/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=100"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--chain", default="cache")
    parser.add_argument("--instructions", type=int, default=1000,
                        help="answers counted under callgrind per mode (0: skip)")
    args = parser.parse_args()
    xport = free_port()
    runs: dict[str, list[float]] = {"hardened": [], "plain": []}
    with process(TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                 f"tcp:{xport}:interface=127.0.0.1", port=xport, cpu=1):
        ports = {}
        procs = []
        for mode in runs:
            ports[mode] = free_port()
            procs.append(process("taskset", "-c", "0", sys.executable,
                                 os.path.join(HERE, "proxy_server.py"), str(ports[mode]), mode,
                                 f"http://127.0.0.1:{xport}/spot", args.chain, port=ports[mode]))
        with procs[0], procs[1]:
            for port in ports.values():
                urllib.request.urlopen(f"http://127.0.0.1:{port}{PATH}").read()  # fill
            for _ in range(args.rounds):
                for mode, port in ports.items():
                    runs[mode].append(wrk(f"http://127.0.0.1:{port}{PATH}", args.seconds))
        counts = {}
        for mode in runs if args.instructions else ():
            port = free_port()
            with counted(sys.executable, os.path.join(HERE, "proxy_server.py"), str(port), mode,
                         f"http://127.0.0.1:{xport}/spot", args.chain, port=port) as measure:
                counts[mode] = round(measure(f"http://127.0.0.1:{port}{PATH}",
                                             args.instructions))
    ratios = sorted(h / p for h, p in zip(runs["hardened"], runs["plain"]))
    extra = {}
    if counts:
        extra = {"instructions_per_answer": counts, "instruction_cost_percent": round(
            (counts["hardened"] / counts["plain"] - 1) * 100, 1)}
    print(json.dumps({**extra, "chain": args.chain, "runs": runs,
                      "ratio_per_round": [round(r, 3) for r in ratios],
                      "ratio": round(ratios[len(ratios) // 2], 3),
                      "cost_percent": round((1 - ratios[len(ratios) // 2]) * 100, 1)},
                     indent=2))


if __name__ == "__main__":
    main()
