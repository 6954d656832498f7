"""``MemorySharedState``: an in-memory ``ISharedState`` for tests (the
proxy itself keeps everything in its rate limiter's ``LocalState`` when no
``--shared-state`` is given)."""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from bnproxy.chain.interfaces import IHealthReporter, ISharedState
from bnproxy.cluster.bans import BanBook, BanCallback
from bnproxy.cluster.ledger import METRICS


@implementer(ISharedState, IHealthReporter)
class MemorySharedState:
    """An ``ISharedState`` in memory, for tests: several governors share one
    as instances share Redis. Same semantics as ``RedisSharedState`` with a
    store that is always there (``status`` is always ``ok``); every Deferred
    has already fired."""

    status = "ok"

    def __init__(self, clock) -> None:
        self._clock = clock
        self._counters: dict[tuple[str, str], tuple[int, int]] = {}  # -> (window, used)
        self._book = BanBook(clock)
        self._ledger: dict[str, dict[str, int]] = {}

    def _get(self, egress: str, pool: str, window_start: int) -> int:
        window, used = self._counters.get((egress, pool), (None, 0))
        return used if window == int(window_start) else 0

    def reserve(self, egress: str, pool: str, weight: int, budget: int,
                window_start: int) -> Deferred:
        used = self._get(egress, pool, window_start)
        if used + weight > budget:
            return succeed(False)
        self._counters[(egress, pool)] = (int(window_start), used + weight)
        return succeed(True)

    def reconcile(self, egress: str, pool: str, window_start: int, used: int) -> Deferred:
        current = self._get(egress, pool, window_start)
        self._counters[(egress, pool)] = (int(window_start), max(current, int(used)))
        return succeed(None)

    def used(self, egress: str, pool: str, window_start: int) -> Deferred:
        return succeed(self._get(egress, pool, window_start))

    def set_ban(self, egress: str, scope: str, until: float, status: int,
                cause: str) -> Deferred:
        self._book.merge(egress, scope, until, status, cause)
        return succeed(None)

    def bans(self) -> Deferred:
        return succeed(self._book.in_force())

    def banned_until(self, egress: str, scope: str) -> float:
        return self._book.until(egress, scope)

    def on_ban(self, callback: BanCallback) -> None:
        self._book.on_ban(callback)

    def add(self, client: str, weight: int, requests: int, rejected: int) -> None:
        row = self._ledger.setdefault(client, dict.fromkeys(METRICS, 0))
        row["weight"] += weight
        row["requests"] += requests
        row["rejected"] += rejected

    def clients(self) -> Deferred:
        return succeed({c: dict(row) for c, row in self._ledger.items()})

    def live_instances(self) -> int:
        return 1

    def health(self) -> dict:
        return {"status": "ok", "store": "in-process", "live_instances": 1}
