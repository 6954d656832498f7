"""``LocalSharedState``: the in-process ``ISharedState`` (one instance, no
store), and the pieces ``RedisSharedState`` keeps locally (the ban book and
the unwritten ledger)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from bnproxy.chain.interfaces import IHealthReporter, ISharedState
from bnproxy.cluster.validate import ban_end, ban_status

_log = Logger(namespace="bnproxy.cluster")

Ban = tuple[float, int, str]  # until (epoch s), status, cause
BanCallback = Callable[[str, str, float, int, str], Any]
METRICS = ("weight", "requests", "rejected")


class BanBook:
    """Known bans, the later ``until`` winning; callbacks on every change."""

    def __init__(self, clock) -> None:
        self._clock = clock
        self.bans: dict[tuple[str, str], Ban] = {}
        self._callbacks: list[BanCallback] = []

    def on_ban(self, callback: BanCallback) -> None:
        self._callbacks.append(callback)

    def merge(self, egress: str, scope: str, until: float, status: int, cause: str) -> bool:
        """Record a ban; True (and callbacks called) if it is new or later."""
        key = (egress, scope)
        now = self._clock.seconds()
        if ban_end(until, now) is None or ban_status(status) is None:
            return False  # never Binance's (see bnproxy.cluster.validate)
        known = self.bans.get(key)
        if known is not None and known[0] >= until:
            return False
        if until <= now:
            return False
        self.bans[key] = (float(until), int(status), cause)
        for callback in list(self._callbacks):
            try:
                callback(egress, scope, float(until), int(status), cause)
            except Exception:
                _log.failure("a ban callback failed")
        return True

    def in_force(self) -> dict[tuple[str, str], Ban]:
        now = self._clock.seconds()
        for key in [k for k, b in self.bans.items() if b[0] <= now]:
            del self.bans[key]
        return dict(self.bans)

    def until(self, egress: str, scope: str) -> float:
        ban = self.bans.get((egress, scope))
        if ban is None:
            return 0.0
        if ban[0] <= self._clock.seconds():
            del self.bans[(egress, scope)]
            return 0.0
        return ban[0]


class LedgerBuffer:
    """Per-client counters not yet written to the store."""

    def __init__(self) -> None:
        self.pending: dict[str, list[int]] = {}

    def add(self, client: str, weight: int, requests: int, rejected: int) -> None:
        row = self.pending.setdefault(client, [0, 0, 0])
        row[0] += weight
        row[1] += requests
        row[2] += rejected

    def take(self) -> dict[str, list[int]]:
        pending, self.pending = self.pending, {}
        return pending

    def put_back(self, taken: dict[str, list[int]]) -> None:
        for client, (w, n, r) in taken.items():
            self.add(client, w, n, r)

    def merged_into(self, table: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        for client, row in self.pending.items():
            entry = table.setdefault(client, dict.fromkeys(METRICS, 0))
            for name, value in zip(METRICS, row):
                entry[name] = entry.get(name, 0) + value
        return table


@implementer(ISharedState, IHealthReporter)
class LocalSharedState:
    """Everything in this process: the embedded default. Same semantics as
    ``RedisSharedState`` with one live instance and a store that is always
    there (``status`` is always ``ok``); every Deferred has already fired."""

    status = "ok"

    def __init__(self, clock, window: float = 60.0) -> None:
        self._clock = clock
        self._window = window
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
