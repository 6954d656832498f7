"""Cache-hit throughput through the whole default chain against a bare
twisted.web resource serving the same bytes to the same request (a leaf at
the root answers any path), in interleaved rounds of one run:
every server pinned to core 0 (one loaded at a time), wrk on core 1, each
ratio the median of the per-round ratios. Two figures per server: requests
per second, and the server's CPU time per answer (steady where the
hypervisor steals time: the CPU ratio is bare CPU / proxy CPU per answer,
the throughput ratio one saturated core would reach). Then each server again
under callgrind: instructions per answer, deterministic (``--instructions``
answers each; 0 skips), as counted and net of the server's per-second
background work (``--idle`` seconds counted with no request, subtracted pro
rata of the time the answers took under valgrind).

    python cache_hit.py [--rounds 7] [--seconds 4] [--instructions 1000] [--path ...]

The default path is a large body (klines, 16.7 kB); issue 13's small-body
case is ``--path "/api/v3/ticker/24hr?symbol=BTCUSDT"`` (or
``"/api/v3/depth?symbol=BTCUSDT&limit=5"``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import urllib.request

from common import TWISTD, counted, free_port, loaded, process

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--instructions", type=int, default=1000)
    parser.add_argument("--path", default="/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=100")
    parser.add_argument("--idle", type=float, default=5.0,
                        help="seconds of idle counting per server, to report instructions "
                             "per answer net of per-second background work (0: raw only)")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp()
    # Every answer a hit (one miss to fill) for the large body (klines) and
    # the small ones (``ticker/24hr?symbol=``, ``depth?limit=5``).
    cache = "cache:ttl.klines=3600,ttl.ticker24hr=3600,ttl.depth=3600"
    chains = {
        # The default chain with the default access log: its own buffered
        # writer on standard output (here /dev/null), not twistd's log.
        "default_chain": ["logger", "allowlist", "streams", cache, "ratelimit"],
        # The same without the logger: what the access line costs.
        "default_chain_no_logger": ["allowlist", "streams", cache, "ratelimit"],
        "cache_only": [cache],
    }
    xport = free_port()
    urls: dict[str, str] = {}
    pids: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(process(TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                                    f"tcp:{xport}:interface=127.0.0.1", port=xport, cpu=1))
        for name, chain in chains.items():
            port = free_port()
            specs = [a for m in chain for a in ("--middleware-chain", m)]
            pids[name] = stack.enter_context(process(
                TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy",
                "--port", f"tcp:{port}:interface=127.0.0.1", "--state-dir", tmp,
                "--upstream", f"spot=http://127.0.0.1:{xport}/spot", *specs, port=port, cpu=0))
            urls[name] = f"http://127.0.0.1:{port}{args.path}"
            pids[name] = pids[name].pid
            with urllib.request.urlopen(urls[name]) as r:
                body = r.read()
                assert r.headers["X-Cache"] == "MISS"
            with urllib.request.urlopen(urls[name]) as r:
                assert r.headers["X-Cache"] == "HIT"
        path = os.path.join(tmp, "body.json")
        with open(path, "wb") as f:
            f.write(body)
        bport = free_port()
        pids["bare"] = stack.enter_context(process(
            sys.executable, os.path.join(HERE, "bare_server.py"), str(bport), path,
            port=bport, cpu=0)).pid
        urls["bare"] = f"http://127.0.0.1:{bport}{args.path}"  # the same request bytes
        runs: dict[str, list] = {name: [] for name in urls}
        for _ in range(args.rounds):
            for name, url in urls.items():
                runs[name].append(loaded(url, args.seconds, pids[name]))
        for name in chains:
            stats = json.loads(urllib.request.urlopen(
                urls[name].split("/api/")[0] + "/cache/stats").read())
            endpoint = stats["endpoints"][args.path.split("?")[0]]
            assert endpoint["misses"] == 1, endpoint  # every other answer a hit
        instructions: dict[str, float] = {}
        raw: dict[str, float] = {}
        if args.instructions:
            for name, chain in chains.items():
                port = free_port()
                specs = [a for m in chain for a in ("--middleware-chain", m)]
                with counted(sys.executable, TWISTD, "-n", "--pidfile=",
                             "--logfile=/dev/null", "bnproxy", "--port",
                             f"tcp:{port}:interface=127.0.0.1", "--state-dir", tmp,
                             "--upstream", f"spot=http://127.0.0.1:{xport}/spot", *specs,
                             port=port) as measure:
                    instructions[name] = measure(f"http://127.0.0.1:{port}{args.path}",
                                                 args.instructions, args.idle)
                    raw[name] = measure.raw
            port = free_port()
            with counted(sys.executable, os.path.join(HERE, "bare_server.py"), str(port), path,
                         port=port) as measure:
                instructions["bare"] = measure(f"http://127.0.0.1:{port}{args.path}",
                                               args.instructions, args.idle)
                raw["bare"] = measure.raw
    out: dict = {"body_bytes": len(body), "rounds": args.rounds}
    for name in urls:
        out[name] = {"req_per_s": [round(r.req_per_s) for r in runs[name]],
                     "cpu_us_per_request": [round(r.cpu_us_per_request, 1)
                                            for r in runs[name]]}
        if name in instructions:
            out[name]["instructions_per_answer"] = round(raw[name])
            out[name]["instructions_per_answer_net"] = round(instructions[name])
    for name in chains:
        if args.rounds:
            rate = [p.req_per_s / b.req_per_s for p, b in zip(runs[name], runs["bare"])]
            cpu = [b.cpu_us_per_request / p.cpu_us_per_request
                   for p, b in zip(runs[name], runs["bare"])]
            out[name]["throughput_ratio"] = round(statistics.median(rate), 3)
            out[name]["cpu_ratio"] = round(statistics.median(cpu), 3)
        if instructions:
            out[name]["instruction_ratio"] = round(raw["bare"] / raw[name], 3)
            out[name]["instruction_ratio_net"] = round(instructions["bare"] / instructions[name],
                                                       3)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
