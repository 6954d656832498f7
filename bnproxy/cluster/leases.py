"""Leases of the weight budget in Redis: one counter per (egress, pool,
minute window), reserved and reconciled by the window scripts
(``bnproxy.cluster.scripts``), and the local fallback that decides while
Redis is away or slow (see ``bnproxy.cluster.redis_state`` for the
guarantee and its worst case)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from bnproxy.cluster import validate
from bnproxy.cluster.connection import Connection
from bnproxy.cluster.errors import SharedStateTimeoutError, SharedStateUnavailableError
from bnproxy.cluster.keys import Keys


class Fallback:
    """Local budgets while Redis is away or slow (the rule and its worst case:
    ``bnproxy.cluster.redis_state``'s docstring).

    Per (egress, pool): ``[window, base, mine, reported, unsent]``: the
    fleet's use when the entry began, what this instance granted locally
    since, Binance's reported use, and the part of ``mine`` Redis has not
    counted (granted without a connection, or refused by Redis when its
    late answer came): written back at resynchronisation.
    """

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], tuple[int, int]] = {}  # -> (window, fleet use)
        self.own: dict[tuple[str, str], tuple[int, int]] = {}  # -> (window, this one's use)
        self.local: dict[tuple[str, str], list[int]] = {}
        # -> (window, epoch, granted count, reported): the last view of the
        # window's counter in Redis (see ``bnproxy.cluster.scripts``)
        self.views: dict[tuple[str, str], tuple[int, str, int, int]] = {}

    def view(self, egress: str, pool: str, window: int) -> tuple[str, int, int]:
        """(epoch, granted, reported) last seen of the window: what re-seeds
        a counter Redis lost."""
        v = self.views.get((egress, pool))
        if v is None or v[0] != window:
            return "", 0, 0
        return v[1], v[2], v[3]

    def learn(self, egress: str, pool: str, window: int, reply: Any) -> int:
        """A window script's ``[granted, reported, epoch]`` (the tail of its
        reply); returns the fleet's use, ``max(granted, reported)``."""
        try:
            granted, reported, epoch = reply[-3], reply[-2], reply[-1]
        except (TypeError, IndexError, KeyError):
            return self._seen(egress, pool, window)
        granted = validate.count(granted) or 0
        reported = validate.count(reported) or 0
        epoch = epoch if isinstance(epoch, str) else ""
        w, e, g, r = self.views.get((egress, pool), (None, "", 0, 0))
        if w == window and e == epoch:
            granted, reported = max(g, granted), max(r, reported)
        elif w == window:
            reported = max(r, reported)
        self.views[(egress, pool)] = (window, epoch, granted, reported)
        used = max(granted, reported)
        self.saw(egress, pool, window, used)
        return used

    def mine(self, egress: str, pool: str, window: int) -> int:
        """What this instance was granted of the window (through Redis or
        locally): with the others', a floor of the fleet's use."""
        w, u = self.own.get((egress, pool), (None, 0))
        return u if w == window else 0

    def granted(self, egress: str, pool: str, window: int, weight: int) -> None:
        """This instance spent ``weight`` in the window (Redis said yes)."""
        w, u = self.own.get((egress, pool), (None, 0))
        self.own[(egress, pool)] = (window, (u if w == window else 0) + weight)

    def saw(self, egress: str, pool: str, window: int, used: int) -> None:
        w, u = self.seen.get((egress, pool), (None, 0))
        self.seen[(egress, pool)] = (window, max(u, used) if w == window else used)

    def _seen(self, egress: str, pool: str, window: int) -> int:
        w, u = self.seen.get((egress, pool), (None, 0))
        return u if w == window else 0

    def _entry(self, egress: str, pool: str, window: int) -> list[int]:
        e = self.local.get((egress, pool))
        if e is None or e[0] != window:
            e = self.local[(egress, pool)] = [window, self._seen(egress, pool, window), 0, 0, 0]
        return e

    def reserve(self, egress: str, pool: str, weight: int, budget: int, window: int,
                live: int, sent: bool = False) -> bool:
        """``sent``: the reservation also went to Redis, which will count it
        if it fits (a late answer)."""
        e = self._entry(egress, pool, window)
        live = max(1, live)
        w, own = self.own.get((egress, pool), (None, 0))
        own = own if w == window else 0
        # a share of what the fleet had left, and never more than a fair share
        # of the window in all: with every instance doing the same, the fleet
        # stays within the budget however stale each one's view of the counter
        left = (budget - e[1]) // live - e[2]
        fair = budget // live - own
        fleet = max(e[3], e[1] + e[2], self._seen(egress, pool, window))
        if weight > min(left, fair) or fleet + weight > budget:
            return False
        e[2] += weight
        self.granted(egress, pool, window, weight)
        if not sent:
            e[4] += weight
        return True

    def uncounted(self, egress: str, pool: str, window: int, weight: int) -> None:
        """Redis refused (late) a reservation granted locally: write it back."""
        e = self._entry(egress, pool, window)
        e[4] += weight

    def reconcile(self, egress: str, pool: str, window: int, used: int) -> None:
        e = self._entry(egress, pool, window)
        e[3] = max(e[3], used)

    def used(self, egress: str, pool: str, window: int) -> int:
        e = self._entry(egress, pool, window)
        return max(e[3], e[1] + e[2], self._seen(egress, pool, window))


class Budget:
    """The budget's calls of ``ISharedState`` (``reserve``, ``reconcile``,
    ``used``) on a ``Connection``, with the ``Fallback``; ``write_back``
    is the budget's part of a resynchronisation."""

    def __init__(self, conn: Connection, keys: Keys, instance_id: str, window_ttl_ms: int,
                 live: Callable[[], int]) -> None:
        self._conn = conn
        self.keys = keys
        self.instance_id = instance_id
        self._window_ttl_ms = window_ttl_ms
        self._live = live
        self.fallback = Fallback()
        self._epochs = itertools.count(1)

    def _window_args(self, egress: str, pool: str, window: int,
                     reported: int = 0) -> list:
        """The caller's view of a window and a new epoch, for the window
        scripts (``bnproxy.cluster.scripts``)."""
        epoch, granted, seen = self.fallback.view(egress, pool, window)
        return [epoch, granted, max(seen, int(reported)),
                f"{self.instance_id}:{next(self._epochs)}"]

    def _own_args(self, egress: str, pool: str, window: int, sending: int = 0) -> list:
        """This instance's id and its own use of the window, for the window
        scripts (a lost counter's floor and its fair shares); ``sending``: a
        weight granted here that the call itself adds, not counted twice."""
        return [self.instance_id, max(0, self.fallback.mine(egress, pool, window) - sending)]

    def reserve(self, egress: str, pool: str, weight: int, budget: int,
                window_start: int) -> Deferred:
        window = int(window_start)
        proto = self._conn.proto
        if proto is None:  # no connection: decided here, written back later
            return succeed(self.fallback.reserve(egress, pool, weight, budget, window,
                                                 self._live()))
        if self._conn.status != "ok":  # slow or resynchronising: decided here, at
            # once; a grant also goes to Redis, which counts it when it runs (or it is
            # written back at the resynchronisation): nothing refused is counted
            granted = self.fallback.reserve(egress, pool, weight, budget, window,
                                            self._live(), sent=True)
            if granted:
                self._send_reserve(proto, egress, pool, weight, budget, window,
                                   [True]).addErrback(lambda f: None)
            return succeed(granted)
        # Redis decides unless it misses the deadline; then the decision is
        # local, and a late answer still updates what this instance knows.
        decided: list[bool | None] = [None]  # None: Redis's answer decides
        raw = self._send_reserve(proto, egress, pool, weight, budget, window, decided)

        def failed(f: Failure) -> bool:
            f.trap(SharedStateUnavailableError)
            sent = f.check(SharedStateTimeoutError) is not None and not raw.called
            granted = self.fallback.reserve(egress, pool, weight, budget, window,
                                            self._live(), sent=sent)
            decided[0] = granted
            return granted

        def answered(result) -> bool:
            if result[0] == 1:
                self.fallback.granted(egress, pool, window, weight)
                return True
            return False

        return self._conn.race(raw, self._conn.deadline).addCallbacks(answered, failed)

    def _send_reserve(self, proto, egress: str, pool: str, weight: int, budget: int,
                      window: int, decided: list) -> Deferred:
        """The reserve script; its answer (whenever it comes) updates the view
        of the window, and squares a local decision taken meanwhile
        (``decided[0]``: True granted, False refused, None not yet): a grant
        Redis did not count is written back later, a weight Redis counted for
        a refused request is released."""
        key = self.keys.window(egress, pool, window)
        raw = defer.maybeDeferred(self._conn.evalsha, proto, "reserve", [key],
                                  [int(weight), int(budget), self._window_ttl_ms,
                                   *self._window_args(egress, pool, window),
                                   *self._own_args(egress, pool, window,
                                                   weight if decided[0] else 0),
                                   max(1, int(self._live()))])

        def learn(result):
            taken = isinstance(result, list) and bool(result) and result[0] == 1
            self.fallback.learn(egress, pool, window, result)
            if decided[0] is True and not taken:
                self.fallback.uncounted(egress, pool, window, weight)
            elif decided[0] is False and taken:
                self._release(key, weight, result[-1])
            return result

        def lost(f: Failure):
            if decided[0] is True:  # perhaps never ran: count it again (errs safe)
                self.fallback.uncounted(egress, pool, window, weight)
            return f

        return raw.addCallbacks(learn, lost)

    def _release(self, key: str, weight: int, epoch: object) -> None:
        if not isinstance(epoch, str) or self._conn.proto is None:
            return
        self._conn.script("release", [key], [int(weight), epoch, self.instance_id],
                          self._conn.background_deadline).addErrback(lambda f: None)

    def reconcile(self, egress: str, pool: str, window_start: int, used: int) -> Deferred:
        window = int(window_start)
        self.fallback.saw(egress, pool, window, int(used))
        if not self._conn.ok():
            self.fallback.reconcile(egress, pool, window, int(used))
            return succeed(None)

        def failed(f: Failure) -> None:
            f.trap(SharedStateUnavailableError)
            self.fallback.reconcile(egress, pool, window, int(used))

        return self._conn.script("reconcile", [self.keys.window(egress, pool, window)],
                                 [self._window_ttl_ms,
                                  *self._window_args(egress, pool, window, int(used)),
                                  *self._own_args(egress, pool, window), 0],
                                 self._conn.deadline).addCallbacks(
            lambda reply: (self.fallback.learn(egress, pool, window, reply), None)[1],
            failed)

    def used(self, egress: str, pool: str, window_start: int) -> Deferred:
        window = int(window_start)
        if not self._conn.ok():
            return succeed(self.fallback.used(egress, pool, window))

        def done(reply) -> int:
            return self.fallback.learn(egress, pool, window, reply)

        def failed(f: Failure) -> int:
            f.trap(SharedStateUnavailableError)
            return self.fallback.used(egress, pool, window)

        return self._conn.script("read_window", [self.keys.window(egress, pool, window)],
                                 [], self._conn.deadline).addCallbacks(done, failed)

    async def write_back(self) -> None:
        """What was granted or reported while Redis was away, added to its
        counters (each grant once; Binance's report a floor). Raises
        ``SharedStateUnavailableError``; what is not written yet stays, and
        grants made meanwhile are written next time."""
        local = self.fallback.local
        for key in list(local):
            entry = local.get(key)
            if entry is None:
                continue
            (egress, pool), (window, _base, _mine, reported, unsent) = key, entry
            reply = await self._conn.script(
                "reconcile", [self.keys.window(egress, pool, window)],
                [self._window_ttl_ms,
                 *self._window_args(egress, pool, window, reported),
                 *self._own_args(egress, pool, window), unsent],
                self._conn.background_deadline)
            self.fallback.learn(egress, pool, window, reply)
            entry[4] -= unsent
            if local.get(key) is entry and entry[4] <= 0:
                del local[key]  # the next outage starts from what Redis says
