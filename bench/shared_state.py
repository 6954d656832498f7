"""Round trip of one shared-state reservation (what a forwarded request adds
with --shared-state): an in-memory ISharedState vs RedisSharedState against a
redis-server on loopback.  python bench/shared_state.py [N]"""

import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from memory_shared import MemorySharedState
from redis_server import RedisServer
from twisted.internet import defer, reactor

from bnproxy.cluster.redis_state import RedisSharedState

N = int(sys.argv[1]) if len(sys.argv) > 1 else 5000


async def measure(state) -> list[float]:
    times = []
    window = int(time.time() // 60 * 60)
    for _ in range(N):
        t = time.perf_counter()
        await state.reserve("default", "spot", 1, 10**9, window)
        times.append(time.perf_counter() - t)
    return times


async def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        server = RedisServer(d)
        server.start()
        try:
            local = await measure(MemorySharedState(reactor))
            redis = RedisSharedState(reactor, server.url)
            await redis.start()
            remote = await measure(redis)
            await redis.stop()
        finally:
            server.stop()
    for name, t in (("local", local), ("redis", remote)):
        print(f"{name}: median {statistics.median(t) * 1e6:.0f} us, "
              f"p99 {sorted(t)[int(len(t) * 0.99)] * 1e6:.0f} us over {N}")
    print(f"added median: {(statistics.median(remote) - statistics.median(local)) * 1e3:.3f} ms")


def run() -> None:
    d = defer.ensureDeferred(main())
    d.addErrback(lambda f: f.printTraceback())
    d.addBoth(lambda _: reactor.stop())
    reactor.run()


if __name__ == "__main__":
    assert subprocess.run(["redis-server", "--version"], capture_output=True).returncode == 0
    run()
