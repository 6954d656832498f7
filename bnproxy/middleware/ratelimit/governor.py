"""The weight governor: one budget per (egress address, weight pool),
reservations, and a first-come-first-served queue for the next minute.

Pools (FACTS.md §1.6-1.7): each market's ``/api``-style paths share one pool
per IP (``spot``, ``usdm``, ``coinm``, …); each ``/sapi`` endpoint is its own
pool (``sapi:/sapi/v1/…``; 12,000 per minute while IP-limited, 180,000 once
Binance reports it UID-limited). A pool belongs to a host: a 418 bans the
whole host (every pool of it) from that egress address, a 429 the pool.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import attrs
from twisted.internet.defer import Deferred

from bnproxy.binance.limits import (
    IP_BANNED,
    SAPI_IP_LIMIT,
    SAPI_MARKET,
    SAPI_PREFIX,
    SAPI_UID_LIMIT,
    WEIGHT_WINDOW,
)
from bnproxy.binance.markets import Market
from bnproxy.chain.messages import ProxyRequest
from bnproxy.middleware.ratelimit.bans import HOST, Ban, ban_until
from bnproxy.middleware.ratelimit.state import DEFAULT_EGRESS, State, window_of

SAPI = "sapi:"
SAPI_OTHER = SAPI + "other"  # /sapi paths the endpoint table does not list: one pool


@attrs.define
class Pool:
    """What the governor knows of one weight pool (shared by every egress)."""

    name: str
    host: str
    limit: int | None  # None: no documented limit; only bans apply
    budget: int | None
    uid_limited: bool = False
    # the ban scopes that silence it: the pool, and its whole host (a 418)
    scopes: tuple[str, str] = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.scopes = (self.name, HOST + self.host)


GRANTED = "granted"  # the weight is reserved: send the request
REFUSED = "refused"  # the wait would be too long (or was): answer locally
Decision = str | Ban  # GRANTED, REFUSED, or the ban that silenced the pool


@attrs.define
class _Waiter:
    weight: int
    deferred: Deferred  # fires with a Decision
    deadline: Any


class Governor:
    """Decides, per request, whether its weight may go now, later or not at all.

    ``limits`` maps a pool name (a market, ``sapi`` for each IP-limited /sapi
    endpoint, ``sapi_uid`` for each UID-limited one) to its limit per minute,
    None for none; ``margin`` is kept free of every limit.
    """

    def __init__(self, clock, state: State, markets: Mapping[str, Market],
                 limits: Mapping[str, int | None], margin: float, max_wait: float,
                 egresses: tuple[str, ...] = (DEFAULT_EGRESS,)) -> None:
        self._clock = clock
        self.state = state
        self._margin = margin
        self.max_wait = max_wait
        self.egresses = egresses
        self._limits = dict(limits)
        self._limits.setdefault("sapi", SAPI_IP_LIMIT)
        self._limits.setdefault("sapi_uid", SAPI_UID_LIMIT)
        self._hosts = {name: _host(m) for name, m in markets.items()}
        self.pools: dict[str, Pool] = {}
        for name in markets:
            self._pool(name, name)
        self._queues: dict[tuple[str, str], deque[_Waiter]] = {}
        self._timers: dict[tuple[str, str], Any] = {}
        self._draining: set[tuple[str, str]] = set()
        self._turn = 0

    # -- pools ----------------------------------------------------------------------
    def pool_of(self, request: ProxyRequest) -> str:
        if request.market == SAPI_MARKET and request.path.startswith(SAPI_PREFIX):
            return SAPI + request.path if request.endpoint is not None else SAPI_OTHER
        return request.market

    def pool(self, request: ProxyRequest) -> Pool:
        market = request.market
        if market != SAPI_MARKET:  # a market's own pool, known from the start
            pool = self.pools.get(market)
            if pool is not None:
                return pool
        return self._pool(self.pool_of(request), market)

    def _pool(self, name: str, market: str) -> Pool:
        pool = self.pools.get(name)
        if pool is None:
            limit = self._limits.get("sapi" if name.startswith(SAPI) else name)
            pool = self.pools[name] = Pool(name, self._hosts.get(market, market), limit,
                                           self._budget(limit))
        return pool

    def _budget(self, limit: int | None) -> int | None:
        return None if limit is None else int(limit * (1 - self._margin))

    def uid_limited(self, pool: Pool) -> None:
        """Binance reported ``pool`` (a /sapi endpoint) as UID-limited."""
        if pool.name.startswith(SAPI) and not pool.uid_limited:
            pool.uid_limited = True
            pool.limit = self._limits.get("sapi_uid")
            pool.budget = self._budget(pool.limit)

    def host_pools(self, host: str) -> list[Pool]:
        return [p for p in self.pools.values() if p.host == host]

    def markets_of(self, host: str) -> list[str]:
        """The markets served by ``host``, in the markets' own order."""
        return [m for m, h in self._hosts.items() if h == host]

    # -- bans -----------------------------------------------------------------------
    def ban_on(self, pool: Pool, egress: str, now: float) -> Ban | None:
        return self.state.ban_in_force(egress, pool.scopes, now)

    def banned_for(self, pool: str, egress: str | None = None) -> float:
        now = self._clock.seconds()
        p = self.pools.get(pool)
        if p is None:
            return 0.0
        lefts = [b.until - now for e in self._egresses(egress)
                 if (b := self.ban_on(p, e, now)) is not None]
        return max(lefts, default=0.0)

    def start_ban(self, pool: Pool, egress: str, status: int, retry_after: bytes | None,
                  body: bytes, wall: float) -> Ban:
        """Record the ban Binance's ``status`` (418: the host; 429: the pool)
        signals, ending as ``ban_until`` says from its ``Retry-After`` and
        ``body`` (``wall``: the wall time now). The requests waiting for what
        it silences are answered with it."""
        now = self._clock.seconds()
        scope = HOST + pool.host if status == IP_BANNED else pool.name
        strikes = self.state.strikes(egress, scope, status, now)
        until = ban_until(status, retry_after, body, now, wall, strikes)
        ban = self.state.ban(Ban(egress, scope, until, status, strikes))
        self.drop_for(ban)
        return ban

    # -- budget ---------------------------------------------------------------------
    def _egresses(self, egress: str | None) -> tuple[str, ...]:
        return self.egresses if egress is None else (egress,)

    def window_end(self, now: float) -> float:
        return (window_of(now) + 1) * WEIGHT_WINDOW

    def reserve(self, pool: str, weight: int, egress: str | None = None) -> bool:
        now = self._clock.seconds()
        p = self.pools.get(pool)
        if p is None:
            return False
        for e in self._egresses(egress):
            if self.ban_on(p, e, now) is None and not self._queues.get((e, p.name)) \
                    and self.state.reserve(e, p.name, weight, p.budget, now):
                return True
        return False

    def usage(self) -> dict[str, dict]:
        now = self._clock.seconds()
        out = {}
        for e in self.egresses:
            for p in self.pools.values():
                ban = self.ban_on(p, e, now)
                key = p.name if e == DEFAULT_EGRESS else f"{p.name}@{e}"
                out[key] = {"used": self.state.used(e, p.name, now), "budget": p.budget,
                            "limit": p.limit, "egress": e,
                            "banned_for": 0.0 if ban is None else round(ban.until - now, 3),
                            "queued": len(self._queues.get((e, p.name)) or ())}
        return out

    def admit(self, pool: Pool, egress: str, weight: int,
              now: float | None = None) -> Decision | Deferred:
        """GRANTED (the weight reserved: send now), REFUSED (the wait for
        the next minute would be too long), or a Deferred firing with the
        decision once taken: GRANTED, REFUSED after ``max_wait``, or the
        ``Ban`` that silenced the pool meanwhile. The caller checked the ban
        in force (``route``); ``now``: the clock's time, if just read."""
        if now is None:
            now = self._clock.seconds()
        key = (egress, pool.name)
        free = pool.budget is None or weight == 0  # nothing to wait for: never queued
        if (free or not self._queues.get(key)) and self.state.reserve(
                egress, pool.name, weight, pool.budget, now):
            return GRANTED
        wait = self.window_end(now) - now
        wait_for = getattr(self.state, "wait_for", None)  # a shared state's renewal
        if wait_for is not None:
            wait = min(wait, wait_for(egress, pool.name, now))
        if wait > self.max_wait or pool.budget is None or weight > pool.budget:
            return REFUSED
        return self._enqueue(pool, egress, weight, now)

    def _enqueue(self, pool: Pool, egress: str, weight: int, now: float) -> Deferred:
        key = (egress, pool.name)
        queue = self._queues.setdefault(key, deque())

        def cancel(d: Deferred) -> None:  # the bot went away: leave the queue
            for w in list(queue):
                if w.deferred is d:
                    queue.remove(w)
                    if w.deadline.active():
                        w.deadline.cancel()

        d: Deferred = Deferred(cancel)

        def expire() -> None:
            if waiter in queue:
                queue.remove(waiter)
                d.callback(REFUSED)

        waiter = _Waiter(weight, d, None)
        waiter.deadline = self._clock.callLater(self.max_wait, expire)
        queue.append(waiter)
        timer = self._timers.get(key)
        if timer is None or not timer.active():
            self._timers[key] = self._clock.callLater(
                max(0.0, self.window_end(now) - now), self._drain,
                pool, egress)
        return d

    def wake(self, egress: str, pool: str) -> None:
        """Weight may have become free on (egress, pool) before the window's
        end (a shared state's slice renewed): serve the queue now."""
        p = self.pools.get(pool)
        if p is not None and self._queues.get((egress, pool)):
            self._drain(p, egress)

    def drop_for(self, ban: Ban) -> None:
        """Answer the waiters ``ban`` silences with it (a ban received here
        or heard from another instance)."""
        if ban.host_wide:
            pools = self.host_pools(ban.scope[len(HOST):])
        else:
            pools = [p for p in self.pools.values() if p.name == ban.scope]
        for p in pools:
            queue = self._queues.get((ban.egress, p.name))
            while queue:
                waiter = queue.popleft()
                waiter.deadline.cancel()
                waiter.deferred.callback(ban)

    def route(self, pool: Pool, now: float) -> tuple[str, Ban | None]:
        """Where a request for ``pool`` goes, and the ban that silences it
        there, if any (the one ban check of a request): the egress address
        with the most headroom that no ban silences (ties in turn); when
        every one is banned, the one whose ban ends first."""
        egresses = self.egresses
        if len(egresses) == 1:
            return egresses[0], self.ban_on(pool, egresses[0], now)
        n = len(egresses)
        self._turn = start = (self._turn + 1) % n
        best, best_room = None, None
        soonest, soonest_end = egresses[0], None
        for i in range(n):
            e = egresses[(start + i) % n]
            ban = self.ban_on(pool, e, now)
            if ban is not None:
                if soonest_end is None or ban.until < soonest_end:
                    soonest, soonest_end = e, ban.until
                continue
            room = (float("inf") if pool.budget is None
                    else pool.budget - self.state.used(e, pool.name, now))
            if best_room is None or room > best_room:
                best, best_room = e, room
        if best is None:
            return soonest, self.ban_on(pool, soonest, now)
        return best, None

    def _drain(self, pool: Pool, egress: str) -> None:
        key = (egress, pool.name)
        if key in self._draining:  # re-entered (a send or the state woke it): the
            return                  # running drain goes on with the queue
        self._draining.add(key)
        try:
            self._drain_queue(pool, egress)
        finally:
            self._draining.discard(key)

    def _drain_queue(self, pool: Pool, egress: str) -> None:
        now = self._clock.seconds()
        key = (egress, pool.name)
        queue = self._queues.get(key)
        while queue:
            w = queue[0]
            if not self.state.reserve(egress, pool.name, w.weight, pool.budget, now):
                break
            if not queue or queue[0] is not w:  # answered meanwhile: the weight
                continue                         # stays counted (errs safe)
            queue.popleft()
            w.deadline.cancel()
            w.deferred.callback(GRANTED)
        if queue:
            self._timers[key] = self._clock.callLater(
                max(0.0, self.window_end(now) - now), self._drain, pool, egress)


def _host(market: Market) -> str:
    """The host a market's pools belong to (two markets may share one: the
    futures testnet)."""
    if market.rest_base:
        return urlsplit(market.rest_base).netloc or market.name
    return market.name
