"""The governor on a shared state (the lease model), in virtual time: several
governors share one in-process ``ISharedState`` as instances share Redis."""

from __future__ import annotations

from memory_shared import MemorySharedState
from twisted.internet import task
from twisted.internet.defer import Deferred

from bnproxy.binance.markets import build_markets
from bnproxy.middleware.ratelimit.bans import Ban, BanStore
from bnproxy.middleware.ratelimit.governor import GRANTED, Governor
from bnproxy.middleware.ratelimit.shared import SharedState
from bnproxy.middleware.ratelimit.state import LocalState

BUDGET = 100
SENT = object()
REFUSED = object()


class SlowStore(MemorySharedState):
    """A shared state whose answers come ``delay`` seconds later."""

    def __init__(self, clock, delay: float = 0.01) -> None:
        super().__init__(clock)
        self.delay = delay
        self.calls = 0
        self.decided = True

    def reserve(self, *args):
        self.calls += 1
        answer = super().reserve(*args).result
        d: Deferred = Deferred()
        self._clock.callLater(self.delay, d.callback, answer)
        return d


def instance(clock, store, egresses=("default",)):
    markets = build_markets()
    state = SharedState(clock, store, LocalState(BanStore(clock)))
    governor = Governor(clock, state, markets, {"spot": BUDGET}, 0.0, 5.0, egresses)
    state.wake = governor.wake
    state.budgets({n: p.budget for n, p in governor.pools.items()})
    return governor


def ask(governor, weight=1, egress="default"):
    pool = governor.pools["spot"]
    decision = governor.admit(pool, egress, weight)
    if isinstance(decision, Deferred):
        return decision.addCallback(lambda d: SENT if d == GRANTED else REFUSED)
    return SENT if decision == GRANTED else REFUSED


def test_the_fleet_never_grants_more_than_the_budget_and_wastes_little():
    clock = task.Clock()
    clock.advance(600)  # the start of a window
    store = MemorySharedState(clock)
    fleet = [instance(clock, store) for _ in range(3)]
    sent = 0
    for i in range(5 * BUDGET):
        if ask(fleet[i % 3]) is SENT:
            sent += 1
        clock.advance(0.001)
    assert sent <= BUDGET
    assert store._get("default", "spot", 600) <= BUDGET
    assert sent >= BUDGET - 3 * (BUDGET // 8)  # at most a slice per instance unused


def test_a_request_waits_for_a_renewal_not_for_the_next_window():
    clock = task.Clock()
    clock.advance(600)
    store = SlowStore(clock)
    governor = instance(clock, store)
    first = ask(governor)
    assert isinstance(first, Deferred)  # no slice yet: it waits for one
    got = []
    first.addCallback(got.append)
    clock.advance(0.02)
    assert got == [SENT]
    assert store.calls == 1
    # later requests come from the slice, without a call per request
    for _ in range(5):
        assert ask(governor) is SENT
    assert store.calls <= 2


def test_nothing_is_granted_before_the_store_has_decided():
    clock = task.Clock()
    clock.advance(600)
    store = SlowStore(clock, delay=0)
    store.decided = False
    governor = instance(clock, store)
    waiting = ask(governor)
    got = []
    waiting.addCallback(got.append)
    clock.advance(0.5)
    assert got == []
    store.decided = True
    clock.advance(0.2)
    assert got == [SENT]


def test_a_ban_set_by_one_instance_silences_the_others_at_once():
    clock = task.Clock()
    clock.advance(600)
    store = MemorySharedState(clock)
    a, b = instance(clock, store), instance(clock, store)
    pool = a.pools["spot"]
    a.start_ban(pool, "default", 418, b"120", b"", clock.seconds())
    assert b.ban_on(b.pools["spot"], "default", clock.seconds()) is not None
    # the ban's end is kept on b's own store (its state file) too
    assert b.state.bans()[0].until == 720


def test_a_banned_egress_gets_no_traffic_until_its_ban_ends():
    clock = task.Clock()
    clock.advance(600)
    store = MemorySharedState(clock)
    governor = instance(clock, store, egresses=("127.0.0.2", "127.0.0.3"))
    pool = governor.pools["spot"]
    chosen = [governor.route(pool, clock.seconds())[0] for _ in range(10)]
    assert set(chosen) == {"127.0.0.2", "127.0.0.3"}
    governor.state.ban(Ban("127.0.0.2", "spot", clock.seconds() + 30, 429))
    chosen = [governor.route(pool, clock.seconds())[0] for _ in range(10)]
    assert set(chosen) == {"127.0.0.3"}
    clock.advance(31)
    chosen = [governor.route(pool, clock.seconds())[0] for _ in range(10)]
    assert "127.0.0.2" in chosen


def test_each_egress_has_its_own_budget():
    clock = task.Clock()
    clock.advance(600)
    store = MemorySharedState(clock)
    governor = instance(clock, store, egresses=("127.0.0.2", "127.0.0.3"))
    pool = governor.pools["spot"]
    sent = {"127.0.0.2": 0, "127.0.0.3": 0}
    for _ in range(3 * BUDGET):
        egress = governor.route(pool, clock.seconds())[0]
        if ask(governor, egress=egress) is SENT:
            sent[egress] += 1
        clock.advance(0.001)
    for egress, n in sent.items():
        assert n <= BUDGET
        assert store._get(egress, "spot", 600) <= BUDGET
    assert sum(sent.values()) > BUDGET  # more than one address's worth


def test_a_report_above_the_fleets_count_shrinks_the_slice():
    clock = task.Clock()
    clock.advance(600)
    store = MemorySharedState(clock)
    governor = instance(clock, store)
    assert ask(governor) is SENT
    governor.state.reconcile("default", "spot", BUDGET, clock.seconds())
    assert ask(governor) is not SENT


def test_requests_queued_before_the_store_decides_are_all_served_once():
    # the store decides (Redis unreachable: after its connect timeout) while
    # several requests wait; waking them must not re-enter the queue's drain
    clock = task.Clock()
    clock.advance(600)
    store = SlowStore(clock, delay=0)
    store.decided = False
    governor = instance(clock, store)
    got: list = []
    for _ in range(5):
        waiting = ask(governor)
        assert isinstance(waiting, Deferred)
        waiting.addCallback(got.append)
    clock.advance(0.5)
    assert got == []
    store.decided = True
    for _ in range(10):
        clock.advance(0.1)
    assert got == [SENT] * 5


def test_redis_unreachable_at_start_with_requests_queued(tmp_path):
    # the real RedisSharedState, no Redis listening: it decides "degraded"
    # after its connect timeout and the queue is served from the local share
    from redis_server import free_port
    from twisted.internet.testing import MemoryReactorClock
    from twisted.logger import globalLogPublisher

    from bnproxy.cluster.redis_state import RedisSharedState
    clock = MemoryReactorClock()  # connections are attempted, never made
    clock.advance(600)
    redis = RedisSharedState(clock, f"redis://127.0.0.1:{free_port()}/0",
                             connect_timeout=0.3, min_instances=2)
    failures: list = []

    def observe(event):
        if event.get("log_failure") is not None or event.get("isError"):
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        redis.start()
        governor = instance(clock, redis)
        got: list = []
        for _ in range(5):
            waiting = ask(governor)
            assert isinstance(waiting, Deferred)
            waiting.addCallback(got.append)
        for _ in range(10):
            clock.advance(0.1)
        assert redis.decided and redis.status == "degraded"
        assert got == [SENT] * 5
        assert failures == []
    finally:
        globalLogPublisher.removeObserver(observe)
        redis.stop()
