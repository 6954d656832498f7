"""Instructions per forwarded request: the proxy (bnproxy's hardened Site, no
middleware: the forwarding spine and the upstream client alone) under
valgrind's callgrind, every request forwarded to the fake exchange on
loopback over the pooled keep-alive connection.

    python bench/forward_cost.py [--requests 1000] [--path /api/v3/depth?...]

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


def serve(port: int, upstream: str) -> None:
    import gc

    from twisted.internet import reactor

    from bnproxy.config.model import ProxyConfig
    from bnproxy.service import ProxyService

    config = ProxyConfig(listen=(), upstreams={"spot": upstream}, middleware=(),
                         access_log="none", state_dir=tempfile.mkdtemp())
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
    args = parser.parse_args()
    xport, port = free_port(), free_port()
    with process(TWISTD, "-n", "--pidfile=", "--logfile=/dev/null", "bnproxy-exchange",
                 "--port", f"tcp:{xport}:interface=127.0.0.1",
                 "--spot-weight-limit", "100000000", port=xport), \
         counted(sys.executable, os.path.abspath(__file__), "--serve", str(port),
                 f"http://127.0.0.1:{xport}/spot", port=port) as measure:
        net = measure(f"http://127.0.0.1:{port}{args.path}", args.requests, args.idle)
        print(json.dumps({"path": args.path, "requests": args.requests,
                          "instructions_per_request": round(net),
                          "raw": round(measure.raw)}, indent=2))  # type: ignore[attr-defined]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        sys.path.insert(0, HERE)
        main()
