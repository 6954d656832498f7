"""What the governor's hot path adds per request with --shared-state (the
lease model: grants from a slice reserved in the background) over the
in-process state, measured on ``Governor.admit`` against a real Redis on
loopback.  python bench/scale_governor.py [N]"""

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from redis_server import RedisServer
from twisted.internet import defer, reactor, task

from bnproxy.binance.markets import build_markets
from bnproxy.cluster.redis_state import RedisSharedState
from bnproxy.middleware.ratelimit.bans import BanStore
from bnproxy.middleware.ratelimit.governor import Governor
from bnproxy.middleware.ratelimit.shared import SharedState
from bnproxy.middleware.ratelimit.state import LocalState

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
LIMIT = 10**9  # never the limit: measure the bookkeeping


async def measure(state) -> list[float]:
    governor = Governor(reactor, state, build_markets(), {"spot": LIMIT}, 0.0, 5.0)
    if isinstance(state, SharedState):
        state.wake = governor.wake
    pool = governor.pools["spot"]
    times = []
    for i in range(N):
        t = time.perf_counter()
        r = governor.admit(pool, "default", 1)
        times.append(time.perf_counter() - t)
        if isinstance(r, defer.Deferred):
            await r
        if i % 200 == 0:  # let background renewals land
            await task.deferLater(reactor, 0, lambda: None)
    return times


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(tmp)
        server.start()
        shared = RedisSharedState(reactor, server.url)
        try:
            await shared.start()
            local = await measure(LocalState(BanStore(reactor)))
            leased = await measure(SharedState(reactor, shared, LocalState(BanStore(reactor))))
            for name, t in (("in-process", local), ("shared (Redis)", leased)):
                print(f"{name:15} median {statistics.median(t) * 1e6:6.2f} us  "
                      f"p99 {sorted(t)[int(len(t) * .99)] * 1e6:6.2f} us")
            print(f"added median: {(statistics.median(leased) - statistics.median(local)) * 1e3:.4f} ms")
        finally:
            await shared.stop()
            server.stop()


defer.ensureDeferred(main()).addBoth(lambda r: (print(r) if r else None, reactor.stop()))
reactor.run()
