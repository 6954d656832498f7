"""Cache-hit throughput through the whole default chain (logger, allowlist,
cache, ratelimit) against a bare twisted.web resource serving the same bytes,
each server pinned to core 0 and wrk to core 1, in one run.

    python cache_hit.py [--seconds 10] [--path /api/v3/depth?symbol=BTCUSDT&limit=20]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import urllib.request

from common import TWISTD, free_port, process
from exchange_throughput import wrk

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--path", default="/api/v3/klines?symbol=BTCUSDT&interval=1h&limit=100")
    parser.add_argument("--log", default="/dev/null", help="where the proxy's log goes")
    args = parser.parse_args()
    xport, pport, bport = free_port(), free_port(), free_port()
    tmp = tempfile.mkdtemp()
    results = {}
    chains = {
        # The default chain, access lines through twisted.logger into twistd's log.
        "default_chain": ["logger", "allowlist", "cache:ttl.klines=3600", "ratelimit"],
        # The same, access lines to a buffered file of their own (logger:file=...).
        "default_chain_log_file": [f"logger:file={tmp}/access.log", "allowlist",
                                   "cache:ttl.klines=3600", "ratelimit"],
        "cache_only": ["cache:ttl.klines=3600"],
    }
    with process(TWISTD, "-n", "--pidfile=", "bnproxy-exchange", "--port",
                 f"tcp:{xport}:interface=127.0.0.1", port=xport, cpu=1):
        for name, chain in chains.items():
            pport = free_port()
            specs = [a for m in chain for a in ("--middleware", m)]
            with process(TWISTD, "-n", "--pidfile=", f"--logfile={args.log}", "bnproxy",
                         "--port", f"tcp:{pport}:interface=127.0.0.1", "--state-dir", tmp,
                         "--upstream", f"spot=http://127.0.0.1:{xport}/spot", *specs,
                         port=pport, cpu=0):
                url = f"http://127.0.0.1:{pport}{args.path}"
                with urllib.request.urlopen(url) as r:
                    body = r.read()
                    assert r.headers["X-Cache"] == "MISS"
                with urllib.request.urlopen(url) as r:
                    assert r.headers["X-Cache"] == "HIT"
                results[f"{name}_req_per_s"] = wrk(url, args.seconds)
                stats = json.loads(urllib.request.urlopen(
                    f"http://127.0.0.1:{pport}/cache/stats").read())
                assert stats["misses"] == 1, stats
    path = os.path.join(tmp, "body.json")
    with open(path, "wb") as f:
        f.write(body)
    with process("taskset", "-c", "0", sys.executable, os.path.join(HERE, "bare_server.py"),
                 str(bport), path, port=bport):
        results["bare_twisted_web_req_per_s"] = wrk(f"http://127.0.0.1:{bport}/", args.seconds)
    results["body_bytes"] = len(body)
    for name in chains:
        results[f"{name}_ratio"] = round(results[f"{name}_req_per_s"]
                                         / results["bare_twisted_web_req_per_s"], 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
