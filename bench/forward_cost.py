"""Instructions per forwarded request: the proxy (bnproxy's hardened Site, no
middleware: the forwarding spine and the upstream client alone) under
valgrind's callgrind, every request forwarded to the fake exchange on
loopback over the pooled keep-alive connection.

    python bench/forward_cost.py [--requests 1000] [--path /api/v3/depth?...]
    python bench/forward_cost.py --chain default --path /api/v3/time

``--chain default``: the default middleware chain (logger, allowlist,
streams, cache, ratelimit; no access log written) instead of none, or
``--chain NAME,NAME``: those middlewares with their defaults; give a path
the chain forwards (``/api/v3/time``: never cached). ``--tls``: the fake
serves https (a throwaway CA the proxy is given with ``upstream_ca``), as
Binance does.

With ``--latency N``: no valgrind; the same request N times straight to the
fake exchange and N times through the proxy, interleaved in 10 rounds over
one keep-alive connection each (the fake on core 0, the proxy on core 1),
and the latency the proxy adds (median, p99).

(``--serve PORT UPSTREAM`` is the proxy process the bench starts.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PATH = "/api/v3/depth?symbol=BTCUSDT&limit=5"


def serve(port: int, upstream: str, chain: str = "none", ca: str = "") -> None:
    import gc

    from twisted.internet import reactor

    from bnproxy.config.model import ProxyConfig
    from bnproxy.service import ProxyService

    options: dict = {} if chain == "default" else {"middleware": tuple(
        (name, {}) for name in chain.split(",") if name != "none")}
    if ca:
        options["upstream_ca"] = (ca,)
    config = ProxyConfig(listen=(), upstreams={"spot": upstream}, access_log="none",
                         state_dir=tempfile.mkdtemp(), **options)
    service = ProxyService(reactor, config)
    reactor.listenTCP(port, service.site, interface="127.0.0.1")
    service.startService()
    gc.freeze()
    reactor.run()


def main() -> None:
    from common import TWISTD, counted, free_port, process

    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--path", default=PATH)
    parser.add_argument("--idle", type=float, default=3.0)
    parser.add_argument("--latency", type=int, default=0)
    parser.add_argument("--chain", default="none", help="none, default or NAME,NAME")
    parser.add_argument("--tls", action="store_true", help="https upstream (instructions only)")
    args = parser.parse_args()
    xport, port = free_port(), free_port()
    if args.latency:
        latency(args.path, args.latency, xport, port, args.chain)
        return
    tls_dir = tempfile.mkdtemp()
    tls = ["--tls", "--tls-dir", tls_dir] if args.tls else []
    scheme, ca = ("https", os.path.join(tls_dir, "fake-exchange-ca.pem")) if args.tls \
        else ("http", "")
    with process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy-exchange",
                 "--port", f"tcp:{xport}:interface=127.0.0.1", *tls,
                 "--spot-weight-limit", "100000000", port=xport), \
         counted(sys.executable, os.path.abspath(__file__), "--serve", str(port),
                 f"{scheme}://127.0.0.1:{xport}/spot", args.chain, ca, port=port) as measure:
        net = measure(f"http://127.0.0.1:{port}{args.path}", args.requests, args.idle)
        print(json.dumps({"path": args.path, "chain": args.chain, "tls": args.tls,
                          "requests": args.requests,
                          "instructions_per_request": round(net),
                          "raw": round(measure.raw)}, indent=2))  # type: ignore[attr-defined]


def latency(path: str, n: int, xport: int, port: int, chain: str = "none") -> None:
    from common import TWISTD, process, summary, timed_gets

    with process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy-exchange",
                 "--port", f"tcp:{xport}:interface=127.0.0.1",
                 "--spot-weight-limit", "100000000", port=xport, cpu=0), \
         process(sys.executable, os.path.abspath(__file__), "--serve", str(port),
                 f"http://127.0.0.1:{xport}/spot", chain, port=port, cpu=1):
        timed_gets(xport, path, 200)  # warm up both
        timed_gets(port, path, 200)
        direct: list[float] = []
        proxied: list[float] = []
        for _ in range(10):  # interleaved so drift hits both alike
            direct += timed_gets(xport, path, n // 10)
            proxied += timed_gets(port, path, n // 10)
    d, p = summary(direct), summary(proxied)
    print(json.dumps({"path": path, "direct": d, "proxied": p,
                      "added_median_ms": round(p["median_ms"] - d["median_ms"], 3),
                      "added_p99_ms": round(p["p99_ms"] - d["p99_ms"], 3)}, indent=2))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3], *sys.argv[4:6])
    else:
        sys.path.insert(0, HERE)
        main()
