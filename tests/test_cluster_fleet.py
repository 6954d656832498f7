"""The building blocks together, without the governor: three instances
(a RedisSharedState and an upstream bound to 127.0.0.2 each) and twenty bots
asking five times the budget of the fake exchange. Whatever the governor
adds, these are the guarantees it builds on."""

from __future__ import annotations

import time

import pytest
import pytest_twisted
from test_cluster import sleep, started, wait_until, window_now
from twisted.internet import defer

from bnproxy.binance.endpoints import load_endpoints
from bnproxy.binance.markets import build_markets
from bnproxy.chain.messages import ProxyRequest
from bnproxy.testing.fake.run import start_exchange
from bnproxy.upstream.client import Deadlines, Upstream, make_agent

EGRESS = "127.0.0.2"
LIMIT = 200
BUDGET = 180  # the governor's 10 % margin


async def run_fleet(redis_server, during=None):
    from twisted.internet import reactor
    # Requests in flight across a minute boundary are reserved in one window
    # and counted by the exchange in the next (the governor's margin is for
    # that): keep this test inside one minute.
    if time.time() % 60 > 45:
        await sleep(60.5 - time.time() % 60)
    running = start_exchange(reactor, weight_limits={"spot": LIMIT})
    markets = build_markets(rest={"spot": running.rest("spot")})
    endpoint = load_endpoints().lookup("spot", "GET", "/api/v3/time")
    request = ProxyRequest("GET", "spot", "/api/v3/time", b"", (), b"", "bot", 0.0, endpoint)
    weight = endpoint.weight({})
    instances = []
    for _ in range(3):
        state = await started(redis_server)
        agent = make_agent(reactor, Deadlines(5, 5, 5), bind_address=EGRESS)
        instances.append((state, Upstream(reactor, markets, agent=agent), agent))
    # the fallback divides by the live instances each one last saw
    await wait_until(lambda: all(s.live_instances() == 3 for s, _, _ in instances),
                     "three live instances")
    statuses: list[int] = []
    rejected = [0]
    fired = [during is None]

    async def bot(n: int) -> None:
        state, upstream, _ = instances[n % 3]
        for _ in range(5 * BUDGET // weight // 20):
            window = window_now()
            if not await state.reserve(EGRESS, "spot", weight, BUDGET, window):
                rejected[0] += 1
                continue
            response = await upstream(request)
            statuses.append(response.status)
            used = response.header(b"x-mbx-used-weight-1m")
            if used is not None:
                await state.reconcile(EGRESS, "spot", window, int(used))
            if not fired[0] and len(statuses) >= BUDGET // weight // 3:
                fired[0] = True
                during(instances)

    try:
        await defer.gatherResults([defer.ensureDeferred(bot(n)) for n in range(20)])
        limiter = running.exchange.limiters["spot"]
        return statuses, rejected[0], limiter.used(EGRESS, running.exchange.market_ms()), \
            [s for s, _, _ in instances]
    finally:
        for state, _, agent in instances:
            await state.stop()
            await agent._pool.closeCachedConnections()
        running.exchange.stop()
        await running.exchange.port.stopListening()


@pytest.mark.integration
@pytest.mark.e2e  # real Redis and several real proxy processes, minutes of the budget
@pytest_twisted.ensureDeferred
async def test_three_instances_one_address_never_a_429(redis_server):
    statuses, rejected, used, _ = await run_fleet(redis_server)
    print(f"sent {len(statuses)}, rejected {rejected}, fake counted {used}")
    assert statuses and set(statuses) == {200}  # no 429, no 418
    assert used <= BUDGET
    assert rejected > 0  # five times the budget was asked


@pytest.mark.integration
@pytest.mark.e2e  # real Redis and several real proxy processes, minutes of the budget
@pytest_twisted.ensureDeferred
async def test_redis_stopped_during_the_load_still_no_429(redis_server):
    def stop_redis(instances):
        redis_server.stop()

    statuses, rejected, used, states = await run_fleet(redis_server, during=stop_redis)
    print(f"sent {len(statuses)}, rejected {rejected}, fake counted {used}")
    assert statuses and set(statuses) == {200}
    assert used <= BUDGET  # every instance kept to budget / 3 of the window in all
    assert rejected > 0
    assert [s.status for s in states] == ["degraded"] * 3, [s.health() for s in states]
