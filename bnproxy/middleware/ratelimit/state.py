"""Where the governor keeps budgets, bans and the client ledger.

``State`` is the small interface between the governor and its storage. The
in-process ``LocalState`` is the embedded default; ``shared.SharedState``
(on ``context.shared_state``, Redis with ``--shared-state``) keeps the same
calls. The calls are synchronous on purpose: the
governor decides in the reactor thread without waiting on I/O, so a shared
implementation answers from its local view and synchronises in the
background (with deadlines); when it cannot, it falls back to its share of
the budget and keeps every ban it knew.

Keys carry an egress address (``DEFAULT_EGRESS`` until the proxy sends from
several source addresses) beside the weight pool or ban scope.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from bnproxy.binance.limits import WEIGHT_WINDOW
from bnproxy.middleware.ratelimit.bans import Ban, BanStore
from bnproxy.middleware.ratelimit.ledger import ClientLedger

DEFAULT_EGRESS = "default"


def window_of(now: float) -> int:
    """The index of the one-minute weight window holding ``now``."""
    return int(now // WEIGHT_WINDOW)


class State(Protocol):
    """Budget, bans and ledger for the governor. ``now`` is clock seconds."""

    def reserve(self, egress: str, pool: str, weight: int, budget: int | None,
                now: float) -> bool:
        """Add ``weight`` to this minute's use of (egress, pool) if the sum
        stays within ``budget`` (None: no budget); True if taken."""

    def used(self, egress: str, pool: str, now: float) -> int:
        """This minute's weight used on (egress, pool)."""

    def reconcile(self, egress: str, pool: str, used: int, now: float) -> None:
        """Binance reported ``used`` for this minute: the count never goes
        below it."""

    def ban(self, ban: Ban) -> Ban:
        """Record a ban (durably where the implementation can); a ban on the
        same (egress, scope) that ends later keeps its end. Returns what is
        recorded."""

    def bans(self) -> list[Ban]:
        """Every ban remembered: in force, or ended recently (repeat 418s)."""

    def ban_in_force(self, egress: str, scopes: tuple[str, ...], now: float) -> Ban | None:
        """The ban silencing any of ``scopes`` from ``egress`` that ends last."""

    def strikes(self, egress: str, scope: str, status: int, now: float) -> int:
        """The strike number a new ban with ``status`` on ``scope`` would be."""

    def ledger_add(self, client: str, now: float, weight: int = 0, requests: int = 0,
                   rejected: int = 0, order_counts: Mapping[str, str] | None = None) -> None:
        """Count for ``client``."""

    def ledger_window(self, client: str, now: float) -> int:
        """The weight ``client`` spent this minute."""

    def ledger(self) -> dict[str, dict]:
        """``{client: {"weight", "requests", "rejected", "order_counts"}}``."""


class LocalState:
    """The in-process ``State``: counters in memory, bans in a ``BanStore``
    (mirrored to its state file), the ledger in a ``ClientLedger``."""

    def __init__(self, store: BanStore, ledger: ClientLedger | None = None) -> None:
        self.store = store
        self._ledger = ledger or ClientLedger()
        self._use: dict[tuple[str, str], list[int]] = {}  # -> [window, used]

    def _counter(self, egress: str, pool: str, now: float) -> list[int]:
        window = int(now // WEIGHT_WINDOW)  # window_of(now), inline: every request
        counter = self._use.get((egress, pool))
        if counter is None:
            counter = self._use[(egress, pool)] = [window, 0]
        elif counter[0] != window:
            counter[0], counter[1] = window, 0
        return counter

    def reserve(self, egress: str, pool: str, weight: int, budget: int | None,
                now: float) -> bool:
        counter = self._counter(egress, pool, now)
        if budget is not None and weight and counter[1] + weight > budget:
            return False
        counter[1] += weight
        return True

    def used(self, egress: str, pool: str, now: float) -> int:
        return self._counter(egress, pool, now)[1]

    def reconcile(self, egress: str, pool: str, used: int, now: float) -> None:
        counter = self._counter(egress, pool, now)
        counter[1] = max(counter[1], used)

    def ban(self, ban: Ban) -> Ban:
        return self.store.start(ban)

    def bans(self) -> list[Ban]:
        return self.store.all()

    def ban_in_force(self, egress: str, scopes: tuple[str, ...], now: float) -> Ban | None:
        return self.store.in_force(egress, scopes, now)

    def strikes(self, egress: str, scope: str, status: int, now: float) -> int:
        return self.store.strikes(egress, scope, status, now)

    def ledger_add(self, client: str, now: float, weight: int = 0, requests: int = 0,
                   rejected: int = 0, order_counts: Mapping[str, str] | None = None) -> None:
        self._ledger.add(client, window_of(now), weight, requests, rejected, order_counts)

    def ledger_window(self, client: str, now: float) -> int:
        return self._ledger.window_weight(client, window_of(now))

    def ledger(self) -> dict[str, dict]:
        return self._ledger.read()
