"""``SharedState``: the governor's ``State`` on a fleet-wide store
(``context.shared_state``, an ``ISharedState``: Redis with
``--shared-state``), without waiting on the store per request.

The lease model
---------------
Per (egress address, pool) and minute window, each instance holds a
*slice* of the budget it reserved atomically in the store
(``ISharedState.reserve`` of a chunk: ``budget / (8 × live instances)``, at
least the request's weight). Requests are granted locally from the slice,
synchronously, in the reactor thread. When what is left of the slice falls
below half a chunk, the next chunk is reserved in the background; a request
that finds the slice empty waits in the governor's queue (at most
``max_wait``) and is released as soon as the renewal lands. When the store
refuses a chunk, one of just the weight wanted is tried; when that is refused
too by a store that answers, the window is spent for this instance (requests
wait for the next window, as with a local budget). A refusal while the store
is away (only the local share answered: a missed deadline) is not final: the
next grant tries again after ``RENEW_WAIT``, so a hiccup at a minute's start
costs at most the slice in flight, not the rest of the minute. What is left
of a slice at the window's end is simply lost.

Guarantee: every weight granted anywhere was first counted in the store's
window counter, whose reservations never pass the budget (one Lua script,
Redis runs them one at a time): while the store answers, the fleet's grants
in a window never exceed the budget. Worst case while ``ok``: the budget is
under-used by up to one slice per instance per window (slices not spent
before the window ends); clock skew between hosts moves requests near a
minute boundary into the neighbouring window (the margin absorbs it).

Degraded (the store unreachable or slower than its deadline): the store's
``reserve`` answers from its local fallback at once, which grants at most
``budget / live instances last seen`` per instance and window (what was
reserved before counts), so chunks keep coming, smaller; bans are kept (the
local ban store is the authority here; the store only spreads them). The
worst case is the store's (see ``bnproxy.cluster.redis_state``): instances the
others did not count may add their share on top.

Bans: set locally (the state file) and with ``set_ban`` in the store; a ban
another instance heard of (``on_ban``) is applied here at once, written to
the local state file too, and queued requests for it are answered. Start-up:
until the store has decided (connected and read the fleet's bans, or given
up after its connect timeout), nothing is granted: requests wait.

Reconciliation: the used-weight headers go to the store's ``reconcile``
(the counter becomes at least what Binance said; the highest figure at most
every 0.25 s, not one call per answer); when Binance reports more than the
fleet counted, this instance's unspent slice shrinks to fit at once.

Ledger: every addition also goes to the store's batched ledger; ``ledger()``
shows the fleet's table (refreshed in the background at most once a second;
this instance's own while the store is away). A client's share of a budget
(``client_share``) is enforced per instance.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import attrs
from twisted.logger import Logger

from bnproxy.binance.limits import BAN_STATUSES, LONGEST_BAN_HEARD, WEIGHT_WINDOW
from bnproxy.middleware.ratelimit.bans import Ban
from bnproxy.middleware.ratelimit.state import LocalState, window_of

_log = Logger(namespace="bnproxy.ratelimit")

CHUNKS = 8  # a slice is about budget / (CHUNKS × live instances)
REFRESH = 1.0  # fleet figures for /health and the egress choice, at most this often
RENEW_WAIT = 0.1  # what a request waits for a renewal before it is tried again
MAX_STRIKES = 64  # a strike count heard from the fleet is capped here
RECONCILE_EVERY = 0.25  # Binance's used-weight figures go to the store this often at most


@attrs.define
class Lease:
    """This instance's slice of one (egress, pool) window."""

    window: int
    held: int = 0  # reserved in the store for this instance
    spent: int = 0  # granted from it
    renewing: bool = False
    exhausted: bool = False  # the store (answering) refused even the weight wanted
    retry_at: float = 0.0  # refused while the store was away: not before this
    reported: int = 0  # the highest use Binance reported in the window


class SharedState:
    """``State`` for the governor on an ``ISharedState`` (see the module
    docstring). ``local`` keeps the ban file, strikes and order counts."""

    def __init__(self, clock, shared: Any, local: LocalState, chunks: int = CHUNKS) -> None:
        self._clock = clock
        self.shared = shared
        self.local = local
        self.store = local.store
        self._chunks = chunks
        self._leases: dict[tuple[str, str], Lease] = {}
        self._fleet_used: dict[tuple[str, str], tuple[int, int]] = {}  # -> (window, used)
        self._refreshed: dict[tuple[str, str], float] = {}
        self._fleet_ledger: dict[str, dict[str, int]] | None = None
        self._ledger_refreshed = -REFRESH
        self.wake: Callable[[str, str], Any] = lambda egress, pool: None
        self.heard: Callable[[Ban], Any] = lambda ban: None
        self._budget_hint: Mapping[str, int | None] = {}
        self._reconciling: dict[tuple[str, str], list[int]] = {}
        self._released = False
        shared.on_ban(self._heard)
        now = clock.seconds()
        for ban in local.bans():  # the state file's bans, for the fleet
            if ban.until > now:
                self._spread(ban)

    # -- start-up -------------------------------------------------------------------
    def _decided(self) -> bool:
        if not self._released and getattr(self.shared, "decided", True):
            self._released = True
            # later, not here: this runs inside the governor's drain of a queue
            for egress, pool in list(self._leases):
                self._clock.callLater(0, self.wake, egress, pool)
        return self._released

    # -- budget ---------------------------------------------------------------------
    def _lease(self, egress: str, pool: str, window: int) -> Lease:
        lease = self._leases.get((egress, pool))
        if lease is None or lease.window != window:
            lease = self._leases[(egress, pool)] = Lease(window)
        return lease

    def reserve(self, egress: str, pool: str, weight: int, budget: int | None,
                now: float) -> bool:
        if budget is None or not weight:
            return self.local.reserve(egress, pool, weight, budget, now)
        window = window_of(now)
        lease = self._lease(egress, pool, window)
        if not self._decided():
            self._recheck(egress, pool)
            return False
        if lease.reported + weight > budget:  # Binance counted more than the fleet did
            return False
        if lease.spent + weight > lease.held:
            self._renew(lease, egress, pool, budget, weight)
            if lease.spent + weight > lease.held:  # a renewal may answer at once
                return False
        lease.spent += weight
        self.local.reserve(egress, pool, weight, None, now)
        if lease.held - lease.spent < self._chunk(budget, weight) // 2:
            self._renew(lease, egress, pool, budget, weight)
        return True

    def _chunk(self, budget: int, weight: int) -> int:
        live = max(1, int(self.shared.live_instances()))
        return min(budget, max(weight, budget // (self._chunks * live)))

    def _renew(self, lease: Lease, egress: str, pool: str, budget: int, weight: int,
               chunk: int | None = None) -> None:
        if lease.renewing or lease.exhausted or self._clock.seconds() < lease.retry_at:
            return
        size = self._chunk(budget, weight) if chunk is None else chunk
        lease.renewing = True
        start = lease.window * int(WEIGHT_WINDOW)

        def answered(taken: bool) -> None:
            lease.renewing = False
            if self._leases.get((egress, pool)) is not lease:
                return  # the window ended: the slice is lost
            if taken:
                lease.held += size
                self._clock.callLater(0, self.wake, egress, pool)
            elif size > weight:
                self._renew(lease, egress, pool, budget, weight, weight)
            elif self.shared.status == "ok":
                lease.exhausted = True  # the fleet's window is spent
            else:  # only the local share while the store is away: not for the
                # rest of the window; tried again at the next grant after a pause
                lease.retry_at = self._clock.seconds() + RENEW_WAIT
                self._recheck(egress, pool)

        def failed(failure: Any) -> None:
            lease.renewing = False
            _log.debug("reserving weight in the shared state failed: {e}",
                       e=failure.getErrorMessage())
            self._recheck(egress, pool)

        self.shared.reserve(egress, pool, size, budget, start).addCallbacks(answered, failed)

    def _recheck(self, egress: str, pool: str) -> None:
        self._clock.callLater(RENEW_WAIT, self.wake, egress, pool)

    def wait_for(self, egress: str, pool: str, now: float) -> float:
        """Seconds until weight may be free on (egress, pool): a renewal's
        time while the store may still give some, else the window's end."""
        lease = self._leases.get((egress, pool))
        end = (window_of(now) + 1) * WEIGHT_WINDOW - now
        budget = self._budget_hint.get(pool)
        full = budget is not None and lease is not None and lease.reported >= budget
        if lease is None or lease.window != window_of(now) or not (lease.exhausted or full):
            return min(end, RENEW_WAIT)
        return end

    def used(self, egress: str, pool: str, now: float) -> int:
        window = window_of(now)
        key = (egress, pool)
        if now - self._refreshed.get(key, -REFRESH) >= REFRESH:
            self._refreshed[key] = now

            def seen(value: int) -> None:
                w, u = self._fleet_used.get(key, (window, 0))
                self._fleet_used[key] = (window, max(int(value), u if w == window else 0))

            self.shared.used(egress, pool, window * int(WEIGHT_WINDOW)).addCallbacks(
                seen, lambda f: None)
        w, fleet = self._fleet_used.get(key, (window, 0))
        return max(self.local.used(egress, pool, now), fleet if w == window else 0)

    def reconcile(self, egress: str, pool: str, used: int, now: float) -> None:
        self.local.reconcile(egress, pool, used, now)
        window = window_of(now)
        w, fleet = self._fleet_used.get((egress, pool), (window, 0))
        self._fleet_used[(egress, pool)] = (window, max(used, fleet if w == window else 0))
        lease = self._leases.get((egress, pool))
        if lease is not None and lease.window == window:
            lease.reported = max(lease.reported, used)
            budget = self._budget_hint.get(pool)
            if budget is not None and used + lease.held - lease.spent > budget:
                lease.held = lease.spent + max(0, budget - used)
        # to the store at most every RECONCILE_EVERY per (egress, pool): the
        # highest figure seen, not one call per answer
        key = (egress, pool)
        pending = self._reconciling.get(key)
        if pending is not None and pending[0] == window:
            pending[1] = max(pending[1], used)
            return
        self._reconciling[key] = [window, used]
        self._clock.callLater(RECONCILE_EVERY, self._send_reconcile, key)

    def _send_reconcile(self, key: tuple[str, str]) -> None:
        window, used = self._reconciling.pop(key)
        self.shared.reconcile(key[0], key[1], window * int(WEIGHT_WINDOW), used).addErrback(
            lambda f: None)

    def budgets(self, budgets: Mapping[str, int | None]) -> None:
        """The pools' budgets, for shrinking a slice on reconciliation."""
        self._budget_hint = budgets

    # -- bans -----------------------------------------------------------------------
    def _spread(self, ban: Ban) -> None:
        self.shared.set_ban(ban.egress, ban.scope, ban.until, ban.status,
                            f"strikes={ban.strikes}").addErrback(lambda f: None)

    def ban(self, ban: Ban) -> Ban:
        recorded = self.store.start(ban, save=False)  # in force here at once
        self._spread(recorded)  # the fleet first (sent when this turn ends),
        self._clock.callLater(0, self.store.save)  # then the state file (an fsync)
        return recorded

    def _heard(self, egress: str, scope: str, until: float, status: int, cause: str) -> None:
        now = self._clock.seconds()
        if isinstance(until, bool) or not isinstance(until, int | float) \
                or not math.isfinite(until) or until > now + LONGEST_BAN_HEARD \
                or status not in BAN_STATUSES:
            _log.warn("ignoring a ban heard from the fleet that cannot be Binance's: "
                      "{scope} ({egress}) until {until!r}, status {status!r}",
                      scope=scope, egress=egress, until=until, status=status)
            return
        known = self.store.in_force(egress, (scope,), now)
        if known is not None and known.until >= until:
            return
        strikes = 1
        if cause.startswith("strikes="):
            try:
                strikes = min(MAX_STRIKES, max(1, int(cause[len("strikes="):])))
            except ValueError:
                pass
        ban = self.store.start(Ban(egress, scope, float(until), int(status), strikes))
        _log.warn("Binance ban on {scope} ({egress}) heard from the fleet: {seconds:.0f} s "
                  "left", scope=scope, egress=egress, seconds=until - now)
        self.heard(ban)

    def bans(self) -> list[Ban]:
        return self.local.bans()

    def ban_in_force(self, egress: str, scopes: tuple[str, ...], now: float) -> Ban | None:
        return self.local.ban_in_force(egress, scopes, now)

    def strikes(self, egress: str, scope: str, status: int, now: float) -> int:
        return self.local.strikes(egress, scope, status, now)

    # -- ledger ---------------------------------------------------------------------
    def ledger_add(self, client: str, now: float, weight: int = 0, requests: int = 0,
                   rejected: int = 0, order_counts: Mapping[str, str] | None = None) -> None:
        self.local.ledger_add(client, now, weight, requests, rejected, order_counts)
        if weight or requests or rejected:
            self.shared.add(client, weight, requests, rejected)

    def ledger_window(self, client: str, now: float) -> int:
        return self.local.ledger_window(client, now)

    def ledger(self) -> dict[str, dict]:
        mine = self.local.ledger()
        now = self._clock.seconds()
        if now - self._ledger_refreshed >= REFRESH:
            self._ledger_refreshed = now

            def fleet(table: dict) -> None:
                self._fleet_ledger = table

            def away(failure: Any) -> None:
                self._fleet_ledger = None

            self.shared.clients().addCallbacks(fleet, away)
        if self.shared.status != "ok" or self._fleet_ledger is None:
            return mine
        out = {c: {**row, "order_counts": {}} for c, row in self._fleet_ledger.items()}
        for client, row in mine.items():
            out.setdefault(client, {"weight": 0, "requests": 0, "rejected": 0,
                                    "order_counts": {}})["order_counts"] = row["order_counts"]
        return out
