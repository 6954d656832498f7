"""A forwarded request's cost in the middleware chain alone, in process: the
chain (``default``, ``none`` or ``NAME,NAME``) composed over a stub upstream
whose Deferred fires after the chain returned, as a real upstream's does;
``GET /api/v3/time`` (public, never cached), the clock moved 20 ms a request
(inside the weight budget). Prints microseconds per request; under
callgrind, the difference of two request counts gives instructions per
request (``N`` in the environment sets the count):

    python bench/chain_cost.py default [--profile]
    for n in 1000 6000; do N=$n valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python bench/chain_cost.py default; done   # (I(6000) - I(1000)) / 5000
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import tempfile
import time

from twisted.internet import task
from twisted.internet.defer import Deferred

from bnproxy.chain.compose import compose
from bnproxy.chain.messages import ProxyRequest, ProxyResponse
from bnproxy.config.model import ProxyConfig
from bnproxy.service import ProxyService

HEADERS = ((b"content-type", b"application/json;charset=UTF-8"),
           (b"x-mbx-used-weight-1m", b"2"), (b"x-mbx-used-weight", b"2"), (b"server", b"nginx"))
ANSWER = ProxyResponse(200, HEADERS, b'{"serverTime":1}', "upstream", "", 1)
BOT_HEADERS = ((b"host", b"proxy"), (b"user-agent", b"ccxt/4"))


def main() -> None:
    names = sys.argv[1] if len(sys.argv) > 1 and not sys.argv[1].startswith("-") else "default"
    clock = task.Clock()
    chain = {} if names == "default" else {"middleware": tuple(
        (n, {}) for n in names.split(",") if n != "none")}
    service = ProxyService(clock, ProxyConfig(
        listen=(), upstreams={"spot": "http://127.0.0.1:9/spot"}, access_log="none",
        state_dir=tempfile.mkdtemp(), **chain))
    pending: list[Deferred] = []

    def upstream(request: ProxyRequest) -> Deferred:
        d: Deferred = Deferred()
        pending.append(d)
        return d

    handler = compose(service.middlewares, upstream)
    endpoint = service.endpoints.lookup("spot", "GET", "/api/v3/time")

    def one() -> None:
        clock.advance(0.02)
        handler(ProxyRequest("GET", "spot", "/api/v3/time", b"", BOT_HEADERS, b"",
                             "127.0.0.1", clock.seconds(), endpoint))
        pending.pop().callback(ANSWER)

    for _ in range(2000):
        one()
    n = int(os.environ.get("N", "50000"))
    start = time.perf_counter()
    for _ in range(n):
        one()
    print(names, round((time.perf_counter() - start) / n * 1e6, 2), "µs per request")
    if "--profile" in sys.argv:
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(20000):
            one()
        profile.disable()
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
