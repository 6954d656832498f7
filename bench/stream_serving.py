"""Serving from streams: klines ``limit=1000`` answered from the stream state
against a bare twisted.web resource serving the same bytes, and how soon an
update is served after it arrives.

    python stream_serving.py [--seconds 5] [--rounds 3] [--chain streams] [--instructions 1000]

Processes: the fake exchange (core 1), the proxy with its default chain
(core 0), wrk or the latency client (core 1).

Latency: a client subscribes to ``btcusdt@depth@100ms`` straight from the
exchange and, at the same time, polls the proxy's ``depth?limit=5`` over one
keep-alive connection. For each update id ``u`` it records when the direct
stream delivered it and when the proxy first answered with a
``lastUpdateId >= u``; the difference is the proxy's delay (plus up to one
poll interval).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

from common import TWISTD, counted, free_port, process
from exchange_throughput import wrk

HERE = os.path.dirname(os.path.abspath(__file__))

LATENCY_CLIENT = r'''
import sys, time, json, http.client, threading, orjson
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
xport, pport, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
direct = {}
served = []
class P(WebSocketClientProtocol):
    def onMessage(self, payload, isBinary):
        d = orjson.loads(payload)
        direct.setdefault(d["u"], time.perf_counter())
def poll():
    conn = http.client.HTTPConnection("127.0.0.1", pport)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        conn.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5")
        r = conn.getresponse(); body = r.read()
        served.append((time.perf_counter(), orjson.loads(body)["lastUpdateId"],
                       r.getheader("X-Bnproxy-Source")))
    reactor.callFromThread(reactor.stop)
f = WebSocketClientFactory(f"ws://127.0.0.1:{xport}/spot/ws/btcusdt@depth@100ms")
f.protocol = P
reactor.connectTCP("127.0.0.1", xport, f)
reactor.callLater(1.0, lambda: threading.Thread(target=poll, daemon=True).start())
reactor.run()
delays = []
for u, t in direct.items():
    first = next((ts for ts, last, src in served if last >= u), None)
    if first is not None and t >= served[0][0]:
        delays.append(max(0.0, first - t))
delays.sort()
sources = {}
for _, _, src in served:
    sources[src] = sources.get(src, 0) + 1
print(json.dumps({"updates": len(delays), "polls": len(served), "sources": sources,
                  "median_ms": delays[len(delays) // 2] * 1000,
                  "p99_ms": delays[int(len(delays) * 0.99)] * 1000,
                  "max_ms": delays[-1] * 1000}))
'''


def count_instructions(args, xport: int, klines: str, body_path: str) -> dict[str, float]:
    """Instructions per answer under callgrind, proxy (answering from the
    stream; its ingestion meanwhile is counted too) and bare server."""
    out = {}
    port = free_port()
    with counted(sys.executable, TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy",
                 "--port", f"tcp:{port}:interface=127.0.0.1", "--state-dir", tempfile.mkdtemp(),
                 "--upstream", f"spot=http://127.0.0.1:{xport}/spot",
                 "--stream-upstream", f"spot=ws://127.0.0.1:{xport}/spot",
                 *[a for m in (args.chain.split(",") if args.chain else [])
                   for a in ("--middleware-chain", m)], port=port) as measure:
        url = f"http://127.0.0.1:{port}{klines}"
        deadline = time.monotonic() + 120
        while True:  # until the answers come from the stream
            with urllib.request.urlopen(url) as r:
                r.read()
                if r.headers["X-Bnproxy-Source"] == "stream":
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("klines never came from the stream under callgrind")
            time.sleep(0.5)
        # as counted, and net of the per-second background (stream ingestion,
        # samplers) counted 5 s with no request (see common.counted)
        out["proxy_net"] = round(measure(url, args.instructions, 5.0))
        out["proxy"] = round(measure.raw)
    port = free_port()
    with counted(sys.executable, os.path.join(HERE, "bare_server.py"), str(port), body_path,
                 port=port) as measure:
        out["bare"] = round(measure(f"http://127.0.0.1:{port}{klines}", args.instructions))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chain", default="", help="middleware chain (default: the default)")
    parser.add_argument("--instructions", type=int, default=1000,
                        help="answers counted under callgrind per server (0: skip)")
    args = parser.parse_args()
    xport, pport, bport = free_port(), free_port(), free_port()
    tmp = tempfile.mkdtemp()
    klines = "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1000"
    results = {}
    with process(TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                 f"tcp:{xport}:interface=127.0.0.1", port=xport, cpu=1), \
         process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy", "--port",
                 f"tcp:{pport}:interface=127.0.0.1", "--state-dir", tmp,
                 "--upstream", f"spot=http://127.0.0.1:{xport}/spot",
                 "--stream-upstream", f"spot=ws://127.0.0.1:{xport}/spot",
                 *[a for m in (args.chain.split(",") if args.chain else [])
                   for a in ("--middleware-chain", m)],
                 port=pport, cpu=0):
        url = f"http://127.0.0.1:{pport}{klines}"
        urllib.request.urlopen(url).read()
        urllib.request.urlopen(f"http://127.0.0.1:{pport}/api/v3/depth?symbol=BTCUSDT&limit=5")
        deadline = time.monotonic() + 20
        while True:
            with urllib.request.urlopen(url) as r:
                body = r.read()
                if r.headers["X-Bnproxy-Source"] == "stream":
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("klines never came from the stream")
            time.sleep(0.2)
        path = os.path.join(tmp, "klines.json")
        with open(path, "wb") as f:
            f.write(body)
        # Interleave proxy and bare rounds (both on core 0, wrk on core 1 beside the
        # exchange) and keep the medians: single runs drift by tens of percent here.
        with process("taskset", "-c", "0", sys.executable, os.path.join(HERE, "bare_server.py"),
                     str(bport), path, port=bport):
            proxy_runs, bare_runs = [], []
            for _ in range(args.rounds):
                proxy_runs.append(wrk(url, args.seconds))
                bare_runs.append(wrk(f"http://127.0.0.1:{bport}{klines}", args.seconds))
        results["klines_from_stream_req_per_s"] = sorted(proxy_runs)[len(proxy_runs) // 2]
        results["bare_twisted_web_req_per_s"] = sorted(bare_runs)[len(bare_runs) // 2]
        results["runs"] = {"proxy": proxy_runs, "bare": bare_runs}
        out = subprocess.run(["taskset", "-c", "1", sys.executable, "-c", LATENCY_CLIENT,
                              str(xport), str(pport), str(args.seconds)],
                             capture_output=True, text=True, timeout=args.seconds + 60,
                             check=True)
        results["update_latency"] = json.loads(out.stdout.strip().splitlines()[-1])
        if args.instructions:
            results["instructions_per_answer"] = count_instructions(args, xport, klines, path)
    results["chain"] = args.chain or "default"
    results["body_bytes"] = len(body)
    ratios = sorted(p / b for p, b in zip(results["runs"]["proxy"], results["runs"]["bare"]))
    results["ratio_per_round"] = [round(r, 3) for r in ratios]
    results["ratio"] = round(ratios[len(ratios) // 2], 3)  # median of the paired rounds
    if args.instructions:
        counts = results["instructions_per_answer"]
        results["instruction_ratio"] = round(counts["bare"] / counts["proxy"], 3)
        results["instruction_ratio_net"] = round(counts["bare"] / counts["proxy_net"], 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
