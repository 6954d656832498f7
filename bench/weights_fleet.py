"""Conditional weights under load: three bnproxy processes sharing one Redis,
sending from 127.0.0.2, with bots polling ``GET /api/v3/openOrders`` without a
symbol (weight 80) and ``GET /api/v3/myTrades`` (20) at five times the budget;
the fake exchange (in this process, its own weight table) counts the weight
of each minute. Prints the weight used per whole minute against the budget,
and Binance's 429/418 count.

    python bench/weights_fleet.py [MINUTES]   (default 2; starts at the next
    whole minute, so at most MINUTES + 1 minutes in all)
"""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from urllib.parse import urlencode

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import treq
from redis_server import RedisServer
from twisted.internet import defer, reactor, task

from bnproxy.testing.fake.auth import DEFAULT_KEYS
from bnproxy.testing.fake.run import start_exchange
from bnproxy.testing.processes import TWISTD, free_port

MINUTES = int(sys.argv[1]) if len(sys.argv) > 1 else 2
EGRESS = "127.0.0.2"
LIMIT = 1200
BUDGET = LIMIT * 9 // 10  # the governor's 10 % margin
BOTS = 12
KEY, SECRET = next(iter(DEFAULT_KEYS.items()))
# 5 × the budget a minute, half the requests of each kind (mean weight 50).
INTERVAL = 60.0 * BOTS * 50 / (5 * BUDGET)


def sleep(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


def signed(path: str, **params: str) -> str:
    query = urlencode({**params, "timestamp": str(int(time.time() * 1000))})
    signature = hmac.new(SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
    return f"{path}?{query}&signature={signature}"


async def start_proxy(tmp: str, n: int, redis_url: str, spot: str) -> tuple[int, subprocess.Popen]:
    port = free_port()
    state = os.path.join(tmp, f"state{n}")
    os.mkdir(state)
    log = open(os.path.join(tmp, f"proxy{n}.log"), "w")
    proc = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "bnproxy", "--port", f"tcp:{port}:interface=127.0.0.1",
         "--upstream", f"spot={spot}", "--shared-state", redis_url, "--state-dir", state,
         "--access-log", "none", "--egress", EGRESS,
         "--middleware", f"ratelimit:limit.spot={LIMIT}"],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    log.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            r = await treq.get(f"http://127.0.0.1:{port}/live", timeout=2, persistent=False)
            await r.content()
            if r.code == 200:
                return port, proc
        except Exception:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(open(os.path.join(tmp, f"proxy{n}.log")).read())
        await sleep(0.1)


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(tmp)
        redis.start()
        running = start_exchange(reactor, weight_limits={"spot": LIMIT})
        x = running.exchange
        procs: list[subprocess.Popen] = []
        try:
            ports = []
            for n in range(3):
                port, proc = await start_proxy(tmp, n, redis.url, running.rest("spot"))
                ports.append(port)
                procs.append(proc)
            limiter = x.limiters["spot"]
            used: dict[int, int] = defaultdict(int)  # fake's minute -> most weight seen
            answers: Counter = Counter()
            # the fake's windows are the wall clock's minutes: load whole ones
            await sleep(60.2 - time.time() % 60)
            first = x.market_ms() // 60_000
            end = time.monotonic() + MINUTES * 60 - 0.5

            def watch() -> None:
                st = limiter.ips.get(EGRESS)
                if st is not None:
                    now = x.market_ms()
                    used[now // 60_000] = max(used[now // 60_000], limiter.used(EGRESS, now))
            watcher = task.LoopingCall(watch)
            watcher.start(0.05)

            async def bot(n: int) -> None:
                await sleep(INTERVAL * n / BOTS)
                i = n
                while time.monotonic() < end:
                    started = time.monotonic()
                    target = (signed("/api/v3/openOrders") if i % 2 == 0
                              else signed("/api/v3/myTrades", symbol="BTCUSDT"))
                    port = ports[i % 3]
                    try:
                        r = await treq.get(f"http://127.0.0.1:{port}{target}", timeout=10,
                                           headers={"X-MBX-APIKEY": KEY}, persistent=False)
                        await r.content()
                        answers[(r.code, r.headers.getRawHeaders("x-bnproxy-source",
                                                                 ["upstream"])[0])] += 1
                    except Exception as e:  # counted; the bench goes on
                        answers[type(e).__name__] += 1
                    i += 1
                    await sleep(max(0.0, INTERVAL - (time.monotonic() - started)))

            await defer.gatherResults([defer.ensureDeferred(bot(n)) for n in range(BOTS)])
            watcher.stop()
            minutes = [m for m in sorted(used) if first <= m < first + MINUTES]
            print(f"budget {BUDGET} of limit {LIMIT} a minute; asked about {5 * BUDGET}")
            for m in minutes:
                print(f"minute {m - first + 1}: {used[m]} used ({100 * used[m] / BUDGET:.1f} % of the budget)")
            print("answers (status, source):", dict(answers))
            print("Binance 429/418:", x.counters.statuses.get(429, 0) + x.counters.statuses.get(418, 0))
            print("within the budget every whole minute:", all(used[m] <= BUDGET for m in minutes))
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
            x.stop()
            await x.port.stopListening()
            redis.stop()


defer.ensureDeferred(main()).addBoth(lambda r: (print(r) if r else None, reactor.stop()))
reactor.run()
