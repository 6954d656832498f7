"""``ratelimit``: one weight budget per Binance weight pool for the whole
fleet, and no ban ever escalates.

Each request's weight is predicted from the endpoint table and reserved before
it is sent; Binance's ``X-MBX-USED-WEIGHT-1M`` reconciles the count. A request
that would cross the budget waits, first come first served, until the next
one-minute window, up to ``max_wait``; past that it is answered locally with
429, ``Retry-After`` and ``-1003``. An upstream 429 or 418 starts a ban: until
it ends, every request for that pool is answered locally and none reaches
Binance. Bans survive restarts (a small JSON state file).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections import defaultdict, deque
from collections.abc import Callable

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from zope.interface import implementer

from bnproxy.binance.errors import TOO_MANY_REQUESTS
from bnproxy.chain.interfaces import IHealthReporter, IMetricsSource, IMiddleware, IReadinessCheck
from bnproxy.chain.messages import ProxyRequest, ProxyResponse, local_error
from bnproxy.config.reader import SettingsReader

_log = Logger(namespace="bnproxy.ratelimit")

WINDOW = 60.0
BANNED_UNTIL = re.compile(rb"banned until (\d+)")


def pool_of(request: ProxyRequest) -> str:
    """The weight pool: the market, with /sapi apart from spot's /api."""
    if request.market == "spot" and request.path.startswith("/sapi/"):
        return "sapi"
    return request.market


@attrs.define
class Pool:
    name: str
    budget: int | None  # None: no documented limit; only bans apply
    limit: int | None
    window: int = -1
    used: int = 0
    ban_until: float = 0.0
    ban_status: int = 0
    bans: int = 0
    queue: deque = attrs.field(factory=deque)
    timer: object = None

    def roll(self, now: float) -> None:
        window = int(now // WINDOW)
        if window != self.window:
            self.window = window
            self.used = 0

    def window_end(self) -> float:
        return (self.window + 1) * WINDOW


@attrs.define
class ClientStats:
    weight: int = 0
    requests: int = 0
    rejected: int = 0
    window: int = -1
    window_weight: int = 0
    order_counts: dict = attrs.field(factory=dict)


@attrs.define
class _Waiter:
    request: ProxyRequest
    weight: int
    client: str
    deferred: Deferred
    deadline: object
    next: Callable


@implementer(IHealthReporter, IMetricsSource, IMiddleware, IReadinessCheck)
class RateLimit:
    """The weight governor. See the module docstring."""

    def __init__(self, name: str, clock, limits: dict[str, int | None], margin: float,
                 max_wait: float, state_path: str | None, client_header: bytes | None,
                 client_share: float | None) -> None:
        self.name = name
        self._clock = clock
        self.max_wait = max_wait
        self._state_path = state_path
        self._client_header = client_header
        self._client_share = client_share
        self.pools: dict[str, Pool] = {}
        for pool, limit in limits.items():
            budget = None if limit is None else int(limit * (1 - margin))
            self.pools[pool] = Pool(pool, budget, limit)
        self.clients: dict[str, ClientStats] = defaultdict(ClientStats)
        self._load_bans()

    # -- accounting -----------------------------------------------------------------
    def client_of(self, request: ProxyRequest) -> str:
        if self._client_header is not None:
            label = request.header(self._client_header)
            if label:
                return label.decode("latin-1")[:64]
        return request.client

    def _pool(self, request: ProxyRequest) -> Pool:
        name = pool_of(request)
        pool = self.pools.get(name)
        if pool is None:
            pool = self.pools[name] = Pool(name, None, None)
        return pool

    # -- the middleware -------------------------------------------------------------
    def handle(self, request: ProxyRequest, next: Callable) -> Deferred:
        now = self._clock.seconds()
        pool = self._pool(request)
        pool.roll(now)
        client = self.client_of(request)
        stats = self.clients[client]
        stats.requests += 1
        if pool.ban_until > now:
            stats.rejected += 1
            return succeed(self._banned(pool, now))
        weight = request.endpoint.weight(request.params) if request.endpoint else 1
        if self._client_share is not None and pool.budget is not None and weight:
            if stats.window != pool.window:
                stats.window, stats.window_weight = pool.window, 0
            if stats.window_weight + weight > pool.budget * self._client_share:
                stats.rejected += 1
                return succeed(self._too_many(pool, now, "this client's share of the budget"))
        if pool.budget is None or weight == 0 or (
                not pool.queue and pool.used + weight <= pool.budget):
            return self._send(pool, request, weight, client, next)
        wait = pool.window_end() - now
        if wait > self.max_wait or weight > pool.budget:
            stats.rejected += 1
            return succeed(self._too_many(pool, now, "the fleet's weight budget"))
        return self._enqueue(pool, request, weight, client, next, now)

    def _send(self, pool: Pool, request: ProxyRequest, weight: int, client: str,
              next: Callable) -> Deferred:
        pool.used += weight
        stats = self.clients[client]
        stats.weight += weight
        stats.window_weight += weight
        return next(request).addCallback(self._observe, pool, client)

    def _enqueue(self, pool: Pool, request: ProxyRequest, weight: int, client: str,
                 next: Callable, now: float) -> Deferred:
        def cancel(d: Deferred) -> None:  # the bot went away: leave the queue
            for w in list(pool.queue):
                if w.deferred is d:
                    pool.queue.remove(w)
                    if w.deadline.active():
                        w.deadline.cancel()

        d: Deferred = Deferred(cancel)
        waiter = _Waiter(request, weight, client, d, None, next)

        def expire() -> None:
            if waiter in pool.queue:
                pool.queue.remove(waiter)
                self.clients[client].rejected += 1
                d.callback(self._too_many(pool, self._clock.seconds(),
                                          "the fleet's weight budget"))

        waiter.deadline = self._clock.callLater(self.max_wait, expire)
        pool.queue.append(waiter)
        if pool.timer is None or not pool.timer.active():
            pool.timer = self._clock.callLater(max(0.0, pool.window_end() - now), self._drain,
                                               pool)
        return d

    def _drain(self, pool: Pool) -> None:
        now = self._clock.seconds()
        pool.roll(now)
        while pool.queue:
            w = pool.queue[0]
            if pool.ban_until > now:
                pool.queue.popleft()
                w.deadline.cancel()
                w.deferred.callback(self._banned(pool, now))
                continue
            if pool.used + w.weight > pool.budget:
                break
            pool.queue.popleft()
            w.deadline.cancel()
            self._send(pool, w.request, w.weight, w.client, w.next).chainDeferred(w.deferred)
        if pool.queue:
            pool.timer = self._clock.callLater(max(0.0, pool.window_end() - now), self._drain,
                                               pool)

    def _observe(self, response: ProxyResponse, pool: Pool, client: str) -> ProxyResponse:
        if response.source != "upstream":
            return response
        used = response.header(b"x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            pool.roll(self._clock.seconds())
            pool.used = max(pool.used, int(used))
        stats = self.clients[client]
        for k, v in response.headers:
            if k.startswith(b"x-mbx-order-count-"):
                stats.order_counts[k[len(b"x-mbx-order-count-"):].decode().upper()] = \
                    v.decode("latin-1")
        if response.status in (418, 429):
            self._start_ban(pool, response)
        return response

    # -- bans -------------------------------------------------------------------------
    def _start_ban(self, pool: Pool, response: ProxyResponse) -> None:
        now = self._clock.seconds()
        until = None
        retry = response.header(b"retry-after")
        if retry is not None:
            try:
                until = now + max(0.0, float(retry))
            except ValueError:
                until = None
        if until is None:
            m = BANNED_UNTIL.search(response.body)
            if m:
                until = now + max(0.0, int(m.group(1)) / 1000 - self._wall(now))
        if until is None:
            until = pool.window_end() if response.status == 429 else now + 120
        pool.bans += 1
        if until > pool.ban_until:
            pool.ban_until = until
            pool.ban_status = response.status
            _log.warn("Binance answered {status} for pool {pool}: nothing is sent there for "
                      "{seconds:.0f} s", status=response.status, pool=pool.name,
                      seconds=until - now)
            self._save_bans()
        for w in list(pool.queue):
            pool.queue.remove(w)
            w.deadline.cancel()
            w.deferred.callback(self._banned(pool, now))

    def _wall(self, now: float) -> float:
        return now  # the reactor's clock is wall time in production

    def _banned(self, pool: Pool, now: float) -> ProxyResponse:
        retry = max(1, math.ceil(pool.ban_until - now))
        status = pool.ban_status or 418
        until_ms = int(pool.ban_until * 1000)
        return local_error(
            status, TOO_MANY_REQUESTS,
            f"bnproxy: Binance {'banned' if status == 418 else 'rate-limited'} this IP for "
            f"{pool.name} until {until_ms}; the request was not sent.",
            headers=((b"retry-after", str(retry).encode()),), detail="banned")

    def _too_many(self, pool: Pool, now: float, what: str) -> ProxyResponse:
        retry = max(1, math.ceil(pool.window_end() - now))
        return local_error(
            429, TOO_MANY_REQUESTS,
            f"bnproxy: {what} for {pool.name} is spent ({pool.budget} of {pool.limit} "
            f"request weight per 1 MINUTE); retry in {retry} s.",
            headers=((b"retry-after", str(retry).encode()),), detail="budget")

    def _save_bans(self) -> None:
        if self._state_path is None:
            return
        state = {p.name: {"until": p.ban_until, "status": p.ban_status}
                 for p in self.pools.values() if p.ban_until > self._clock.seconds()}
        directory = os.path.dirname(os.path.abspath(self._state_path))
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".bans-")
            with os.fdopen(fd, "w") as f:
                json.dump(state, f)
            os.replace(tmp, self._state_path)
        except OSError as e:
            _log.error("cannot write ban state {path}: {e}", path=self._state_path, e=e)

    def _load_bans(self) -> None:
        if self._state_path is None or not os.path.exists(self._state_path):
            return
        try:
            with open(self._state_path) as f:
                state = json.load(f)
        except (OSError, ValueError) as e:
            _log.error("ignoring unreadable ban state {path}: {e}", path=self._state_path, e=e)
            return
        now = self._clock.seconds()
        for name, ban in state.items():
            until = float(ban.get("until", 0))
            if until > now:
                pool = self.pools.setdefault(name, Pool(name, None, None))
                pool.ban_until, pool.ban_status = until, int(ban.get("status", 418))
                _log.warn("ban on {pool} restored from {path}: {seconds:.0f} s left",
                          pool=name, path=self._state_path, seconds=until - now)

    # -- reporting ----------------------------------------------------------------------
    def health(self) -> dict:
        now = self._clock.seconds()
        pools = {}
        for p in self.pools.values():
            p.roll(now)
            pools[p.name] = {"used": p.used, "budget": p.budget, "limit": p.limit,
                             "queued": len(p.queue),
                             "banned_for": max(0.0, round(p.ban_until - now, 3))}
        clients = {c: attrs.asdict(s, filter=lambda a, v: a.name not in ("window",
                                                                            "window_weight"))
                   for c, s in self.clients.items()}
        return {"pools": pools, "clients": clients}

    def readiness_problems(self) -> list[str]:
        return [f"Binance ban in force for {pool} ({s:.0f} s left)"
                for pool, s in self.bans_in_force().items()]

    def bans_in_force(self) -> dict[str, float]:
        """Pool -> seconds left, for each pool under a Binance ban."""
        now = self._clock.seconds()
        return {p.name: p.ban_until - now for p in self.pools.values() if p.ban_until > now}

    def collect_metrics(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        now = self._clock.seconds()
        used = GaugeMetricFamily("bnproxy_weight_used", "Request weight used this minute.",
                                 labels=["pool"])
        limit = GaugeMetricFamily("bnproxy_weight_limit", "Binance's weight limit per minute.",
                                  labels=["pool"])
        budget = GaugeMetricFamily("bnproxy_weight_budget", "The limit less the margin.",
                                   labels=["pool"])
        ban = GaugeMetricFamily("bnproxy_ban_remaining_seconds",
                                "Seconds until a Binance ban ends (0: none).", labels=["pool"])
        bans = CounterMetricFamily("bnproxy_bans", "Bans and 429s received from Binance.",
                                   labels=["pool"])
        for p in self.pools.values():
            p.roll(now)
            used.add_metric([p.name], p.used)
            if p.limit is not None:
                limit.add_metric([p.name], p.limit)
                budget.add_metric([p.name], p.budget or 0)
            ban.add_metric([p.name], max(0.0, p.ban_until - now))
            bans.add_metric([p.name], p.bans)
        weight = CounterMetricFamily("bnproxy_client_weight", "Weight spent per client.",
                                     labels=["client"])
        requests = CounterMetricFamily("bnproxy_client_requests", "Requests per client.",
                                       labels=["client"])
        rejected = CounterMetricFamily("bnproxy_client_rejected",
                                       "Requests answered locally (budget, ban) per client.",
                                       labels=["client"])
        for client, st in self.clients.items():
            weight.add_metric([client], st.weight)
            requests.add_metric([client], st.requests)
            rejected.add_metric([client], st.rejected)
        yield from (used, limit, budget, ban, bans, weight, requests, rejected)


def build_ratelimit(name: str, settings, context) -> RateLimit:
    reader = SettingsReader(f"middleware.{name}", settings)
    limits: dict[str, int | None] = {m: market.weight_limit
                                     for m, market in context.markets.items()}
    limits["sapi"] = None
    for pool, value in reader.mapping("limit").items():
        sub = SettingsReader(f"middleware.{name}.limit", {pool: value})
        limits[pool] = sub.int(pool, 0, minimum=1)
    margin = reader.float("margin", 0.10, minimum=0, maximum=0.9)
    max_wait = reader.float("max_wait", 5.0, minimum=0, maximum=60)
    default_state = os.path.join(context.state_dir, "bnproxy-bans.json")
    state = reader.str("state_file", default_state)
    header = reader.str("client_header", None)
    share = reader.float("client_share", 0.0, minimum=0, maximum=1) or None
    reader.done()
    return RateLimit(name, context.reactor, limits, margin, max_wait,
                     state if state not in ("", "none") else None,
                     header.lower().encode() if header else None, share)
