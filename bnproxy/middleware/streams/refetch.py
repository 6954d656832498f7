"""``Refetcher``: every REST request the streams middleware makes for itself
(snapshots, seeds, backfills, growth, exchangeInfo refreshes), kept in
proportion to what bots asked.

- One request per job at a time (a job is a key such as ``("depth", market,
  symbol)``); a caller that finds its job in flight may ``join`` it.
- A failed job is retried no sooner than its backoff (1 s doubling to 60 s).
- Per weight pool and minute, own weight stays under ``share`` of the pool's
  budget (the ``IWeightGovernor``'s, else the market's documented limit).
- Own jobs never outnumber the distinct bot requests that caused them: each
  new job spends a credit that a distinct bot request (per market, per
  minute) earned; a retry of a failed job does not spend another.
- Own weight is counted by market and purpose (``snapshot``, ``backfill``,
  ``refresh``, ``ping``, ``fallback``: the one request a stale book's bot
  requests share, ``responders/depth.py``) and by pool, for ``/metrics`` and ``/health``; the
  part of it whose answer also answered at least one waiting bot request (a
  new book's snapshot its first requests waited on, a seed, a growth page:
  the caller says so with ``answered_bots`` while the answer is handed out)
  is counted apart as well, ``answering_bots`` in ``/health``: that weight is
  bot requests coalesced, not the proxy's own spending.

Requests go through the whole chain (cache, rate limiter) with the
``INTERNAL`` header.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from bnproxy.binance.endpoints import EndpointTable
from bnproxy.binance.markets import Market
from bnproxy.chain.compose import as_deferred
from bnproxy.chain.interfaces import IWeightGovernor
from bnproxy.chain.messages import INTERNAL, ProxyRequest, ProxyResponse

_log = Logger(namespace="bnproxy.streams")

PURPOSES = ("snapshot", "backfill", "refresh", "ping", "fallback")
WINDOW = 60.0
MAX_CREDITS = 10_000  # credits banked from distinct bot requests, per market
MAX_UNCLAIMED = 4096  # answers remembered for a late ``answered_bots``


class Refetcher:
    def __init__(self, clock, chain: Callable[[ProxyRequest], Any], endpoints: EndpointTable,
                 markets: Mapping[str, Market], governor: Callable[[], Any] = lambda: None,
                 share: float = 0.25, max_backoff: float = 60.0) -> None:
        self._clock = clock
        self._chain = chain
        self._endpoints = endpoints
        self._markets = markets
        self._governor = governor
        self.share = share
        self.max_backoff = max_backoff
        self._in_flight: dict[Hashable, list[Deferred]] = {}
        self._not_before: dict[Hashable, tuple[float, int]] = {}
        self._owed: set[Hashable] = set()  # failed jobs: their retry spends no new credit
        self.credits: dict[str, int] = defaultdict(int)
        self._seen: set[tuple[str, str, bytes]] = set()
        self._seen_minute = -1
        self._minute: dict[str, int] = {}  # pool -> window index
        self.used_this_minute: dict[str, int] = defaultdict(int)  # pool -> own weight
        self.total: dict[tuple[str, str], int] = defaultdict(int)  # (market, purpose)
        self.pool_total: dict[str, int] = defaultdict(int)
        self.requests: dict[tuple[str, str], int] = defaultdict(int)
        # the part of ``total`` that answered waiting bot requests too
        self.for_bots: dict[tuple[str, str], int] = defaultdict(int)
        self.for_bots_requests: dict[tuple[str, str], int] = defaultdict(int)
        self._settling: set[Hashable] = set()  # jobs whose answer is being handed out
        self._answering: set[Hashable] = set()  # ... and that answered bots
        # the last answer of each job not (yet) said to have answered bots: a
        # caller that attaches its callback after an answer that came at once
        # says so after the count
        self._unclaimed: dict[Hashable, tuple[str, str, int]] = {}
        self.refused: dict[str, int] = defaultdict(int)  # reason -> count
        self._pool_market: dict[str, str] = {}

    # -- what bots asked ------------------------------------------------------------
    def credit(self, market: str, path: str, query: bytes) -> None:
        """A bot request that streams state serves or will serve: one credit
        per distinct (path, query) per market and minute."""
        minute = int(self._clock.seconds() // WINDOW)
        if minute != self._seen_minute:
            self._seen.clear()
            self._seen_minute = minute
        key = (market, path, query)
        if key in self._seen:
            return
        self._seen.add(key)
        if self.credits[market] < MAX_CREDITS:
            self.credits[market] += 1

    # -- own requests ---------------------------------------------------------------
    def busy(self, job: Hashable) -> bool:
        return job in self._in_flight

    def join(self, job: Hashable) -> Deferred | None:
        """A Deferred firing with the in-flight job's response (or None), or
        None when the job is not in flight."""
        waiters = self._in_flight.get(job)
        if waiters is None:
            return None
        d: Deferred = Deferred()
        waiters.append(d)
        return d

    def may_try(self, job: Hashable) -> bool:
        entry = self._not_before.get(job)
        return job not in self._in_flight and (entry is None
                                               or self._clock.seconds() >= entry[0])

    def fetch(self, job: Hashable, market: str, path: str, query: bytes, purpose: str,
              *, retry: bool = False, credited: bool = True,
              of_share: float = 1.0) -> Deferred | None:
        """Send one own request for ``job``, or return None when it may not go
        now (in flight, backing off, no credit, over the pool's share). The
        Deferred fires with the ``ProxyResponse``, or None if it failed.
        ``retry``: a repeat the procedure demands (no new credit);
        ``credited`` False: a bounded one-off (a market's symbol list, a
        stale book's fallback a bot request waits on) that spends no
        credit, only share; ``of_share``: it goes only while the pool's own
        weight this minute stays within that part of the share (the rest is
        left for the others: a stale book's fallbacks never hold back the
        snapshots that make the books live again)."""
        if not self.may_try(job):
            return None
        endpoint = self._endpoints.lookup(market, "GET", path)
        request = ProxyRequest("GET", market, path, query, ((INTERNAL, b"streams"),), b"",
                               "bnproxy", self._clock.seconds(), endpoint)
        params = request.params if endpoint is not None else {}
        weight = endpoint.weight(params) if endpoint is not None else 1
        pool = self.pool_of(request)
        self._pool_market[pool] = market
        self._roll(pool)
        cap = self.cap(pool, market)
        if cap is not None and self.used_this_minute[pool] + weight > cap * of_share:
            self.refused["share"] += 1
            return None
        spends = credited and not retry and job not in self._owed
        if spends:
            if self.credits[market] < 1:
                self.refused["credit"] += 1
                return None
            self.credits[market] -= 1
        self.used_this_minute[pool] += weight  # reserved now; settled on the answer
        waiters: list[Deferred] = []
        self._in_flight[job] = waiters
        self._unclaimed.pop(job, None)
        result: Deferred = Deferred()

        def settle(response: ProxyResponse | None) -> None:
            del self._in_flight[job]
            spent = 0 if response is None else _spent(response, weight)
            if spent != weight:
                self._roll(pool)
                self.used_this_minute[pool] = max(0, self.used_this_minute[pool]
                                                  - weight + spent)
            if response is not None and response.status == 200:
                self.succeeded(job)
            else:
                self.failed(job)
            self._settling.add(job)
            try:
                result.callback(response)
                for w in waiters:
                    w.callback(response)
            finally:
                self._settling.discard(job)
            for_bots = job in self._answering
            self._answering.discard(job)
            self._count(market, pool, purpose, spent, for_bots)
            if not for_bots:
                if len(self._unclaimed) >= MAX_UNCLAIMED:
                    self._unclaimed.clear()
                self._unclaimed[job] = (market, purpose, spent)

        def failed(f) -> None:
            _log.warn("own request {path} failed: {f}", path=path, f=f.getErrorMessage())
            settle(None)

        try:
            answer = as_deferred(self._chain(request))
        except Exception as e:  # a chain that raises is a failed fetch, not a crash
            answer = Deferred()
            answer.errback(e)
        answer.addCallbacks(settle, failed)
        return result

    def observe(self, request: ProxyRequest, response: ProxyResponse, purpose: str) -> None:
        """Count an own request made elsewhere (a readiness ping)."""
        weight = request.weight
        pool = self.pool_of(request)
        self._pool_market[pool] = request.market
        spent = _spent(response, weight)
        self._roll(pool)
        self.used_this_minute[pool] += spent
        self._count(request.market, pool, purpose, spent)

    def answered_bots(self, job: Hashable) -> None:
        """Called from a callback of ``job``'s Deferred: its answer also
        answered a waiting bot request (bot requests coalesced)."""
        if job in self._settling:
            self._answering.add(job)
            return
        late = self._unclaimed.pop(job, None)  # the answer had come before the callback
        if late is not None:
            market, purpose, spent = late
            self.for_bots[(market, purpose)] += spent
            self.for_bots_requests[(market, purpose)] += 1

    def _count(self, market: str, pool: str, purpose: str, spent: int,
               for_bots: bool = False) -> None:
        self.total[(market, purpose)] += spent
        self.pool_total[pool] += spent
        self.requests[(market, purpose)] += 1
        if for_bots:
            self.for_bots[(market, purpose)] += spent
            self.for_bots_requests[(market, purpose)] += 1

    def succeeded(self, job: Hashable) -> None:
        self._not_before.pop(job, None)
        self._owed.discard(job)

    def failed(self, job: Hashable) -> None:
        """Back off exponentially (1 s doubling to ``max_backoff``): a failing
        job is not retried at the stream's message rate."""
        fails = self._not_before.get(job, (0.0, 0))[1] + 1
        self._not_before[job] = (self._clock.seconds()
                                 + min(self.max_backoff, 2.0 ** (fails - 1)), fails)
        self._owed.add(job)

    def forget(self, job: Hashable) -> None:
        """The state the job served is gone: its backoff and debt go too."""
        self._not_before.pop(job, None)
        self._owed.discard(job)
        self._unclaimed.pop(job, None)

    # -- pools and budgets ---------------------------------------------------------
    def pool_of(self, request: ProxyRequest) -> str:
        governor = self._governor()
        if governor is not None and IWeightGovernor.providedBy(governor):
            return governor.pool_of(request)
        return request.market

    def cap(self, pool: str, market: str) -> int | None:
        """Own weight allowed per minute in ``pool`` (None: unlimited)."""
        budget = None
        governor = self._governor()
        if governor is not None and IWeightGovernor.providedBy(governor):
            usage = governor.usage().get(pool) or {}
            budget = usage.get("budget") or usage.get("limit")
        if budget is None:
            m = self._markets.get(market)
            budget = m.weight_limit if m is not None else None
        return None if budget is None else int(budget * self.share)

    def _roll(self, pool: str) -> None:
        minute = int(self._clock.seconds() // WINDOW)
        if self._minute.get(pool) != minute:
            self._minute[pool] = minute
            self.used_this_minute[pool] = 0

    # -- reporting -----------------------------------------------------------------
    def health(self) -> dict:
        pools: dict[str, dict] = {}
        for pool in set(self.used_this_minute) | set(self.pool_total):
            self._roll(pool)
            pools[pool] = {"this_minute": self.used_this_minute[pool],
                           "cap_per_minute": self.cap(pool, self._pool_market.get(pool, pool)),
                           "total": self.pool_total[pool]}
        by_purpose: dict[str, dict[str, int]] = defaultdict(dict)
        for (market, purpose), w in self.total.items():
            by_purpose[market][purpose] = w
        answering: dict[str, dict[str, int]] = defaultdict(dict)
        for (market, purpose), w in self.for_bots.items():
            answering[market][purpose] = w
        return {"share": self.share, "pools": pools, "by_purpose": dict(by_purpose),
                "answering_bots": dict(answering),
                "requests": sum(self.requests.values()),
                "requests_answering_bots": sum(self.for_bots_requests.values()),
                "refused": dict(self.refused), "credits": dict(self.credits)}


def _spent(response: ProxyResponse, predicted: int) -> int:
    """The weight an answer cost upstream: its own figure, else the
    prediction if it came from upstream (a cache hit or a local refusal: 0)."""
    return response.weight or (predicted if response.source == "upstream" else 0)
