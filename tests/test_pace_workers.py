"""The upstream new-connection pace with ``--workers N`` and shared state:
every worker reserves in the same per-egress counter, so together they stay
within Binance's 300 new connections in any 5-minute span, however the
demand falls (virtual time over an in-memory shared state); and two Redis
connections, as two worker processes hold, never grant one too many
(a real redis-server)."""

from __future__ import annotations

import bisect

import pytest_twisted
from memory_shared import MemorySharedState
from twisted.internet import task

from bnproxy.binance.streams import CONNECTIONS_PER_5_MINUTES
from bnproxy.middleware.streams.pace import ConnectPace


def busiest_span(times: list[float], span: float = 300.0) -> int:
    """The most grants in any ``span``-second window."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + span) - i for i, t in enumerate(times)),
               default=0)


def storm(per_minute: int | None = None) -> tuple[dict[str, list[float]], int]:
    """Two workers' paces over one shared state, asked at the end of a
    minute for far more new connections than the pace allows (what a fleet
    of bots reconnecting at once asks): every grant's time per egress
    address, and the waits."""
    clock = task.Clock()
    shared = MemorySharedState(clock)
    kwargs = {} if per_minute is None else {"per_minute": per_minute}
    workers = [ConnectPace(clock, shared, **kwargs) for _ in range(2)]
    granted: dict[str, list[float]] = {"10.0.0.1": [], "10.0.0.2": []}

    def ask(worker: ConnectPace, egress: str) -> None:
        worker.acquire(egress).addCallback(lambda _: granted[egress].append(clock.seconds()))
    clock.advance(59.9)  # the end of a minute: a window's grants, then the next windows'
    for w in workers:
        for _ in range(200):
            ask(w, "10.0.0.1")
    for _ in range(100):
        ask(workers[1], "10.0.0.2")  # another egress address: its own count
    for _ in range(15 * 60):
        clock.advance(1)
    return granted, sum(w.waited for w in workers)


def test_workers_sharing_the_state_stay_within_300_in_any_5_minutes():
    granted, waited = storm()
    assert busiest_span(granted["10.0.0.1"]) == CONNECTIONS_PER_5_MINUTES  # full, never over
    assert busiest_span(granted["10.0.0.2"]) <= CONNECTIONS_PER_5_MINUTES
    # the pace was used, not starved: every connection asked was opened in the end
    assert waited > 0 and [len(t) for t in granted.values()] == [400, 100]


def test_sixty_a_minute_would_not_have_kept_it():
    # the rule the pace replaced: 60 per one-minute window lets a span that
    # straddles six windows hold 360 (a burst at a minute's end, then five)
    granted, _ = storm(per_minute=60)
    assert busiest_span(granted["10.0.0.1"]) == 360


# -- two workers' Redis connections -------------------------------------------------

@pytest_twisted.ensureDeferred
async def test_two_workers_redis_connections_grant_the_minute_once(redis_server):
    from test_cluster import started, wait_until

    states = [await started(redis_server, deadline=2.0) for _ in range(2)]
    try:
        clock = task.Clock()  # the pace's minute, fixed; Redis on the real reactor
        clock.advance(600)
        workers = [ConnectPace(clock, s) for s in states]
        asked = [w.acquire("10.0.0.1") for _ in range(60) for w in workers]
        # every answer in: granted, or refused and waiting for the next minute
        await wait_until(lambda: sum(d.called for d in asked)
                         + sum(w.waited for w in workers) == len(asked), "Redis's answers")
        assert sum(d.called for d in asked) == 50  # of 120 asked: one minute's pace
        assert await states[0].used("10.0.0.1", "ws-connections", 600) == 50
        for d in asked:
            d.addErrback(lambda f: None)
            d.cancel()
    finally:
        for s in states:
            await s.stop()
