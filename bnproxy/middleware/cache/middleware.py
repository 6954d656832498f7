"""``cache``: public market data from a bounded store, with request
coalescing and stale-if-error.

Stores only 200s of endpoints whose security type is NONE; never stores,
coalesces or serves a stored answer to a request with any private marker,
except an API key Binance already accepted on a request to such an endpoint:
that request is answered (and, on a miss, forwarded) as an anonymous one
(``binance.privacy.AcceptedKeys``). The key never enters a cache key.
"""

from __future__ import annotations

import gzip
from collections import defaultdict
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from bnproxy.binance.limits import BAN_STATUSES
from bnproxy.binance.marketdata import VARYING_HEADERS
from bnproxy.binance.privacy import API_KEY_HEADER, PRIVATE_HEADERS, AcceptedKeys
from bnproxy.chain.compose import Answer, as_deferred, then
from bnproxy.chain.context import MiddlewareContext
from bnproxy.chain.interfaces import (
    IDashboardSection,
    IFastPathSafe,
    IHealthReporter,
    IMetricsSource,
    IMiddleware,
)
from bnproxy.chain.messages import ProxyRequest, ProxyResponse
from bnproxy.chain.options import Option
from bnproxy.middleware.cache.admin import CacheAdmin
from bnproxy.middleware.cache.key import cache_key
from bnproxy.middleware.cache.store import Entry, Store, storable, stored_copy

_log = Logger(namespace="bnproxy.cache")

KEY_HEADERS = frozenset((*PRIVATE_HEADERS, *VARYING_HEADERS))

DEFAULT_TTL = {"depth": 1.0, "bookTicker": 1.0, "price": 1.0, "ticker24hr": 2.0,
               "klines": 2.0, "exchangeInfo": 60.0, "public": 1.0}
GZIP_MIN = 256
ACCEPT_ENCODING = b"accept-encoding"
_DETAIL = {b"HIT": "HIT", b"STALE": "STALE"}


@lru_cache(maxsize=256)  # bots send a handful of distinct values
def _gzip_acceptable(value: bytes) -> bool:
    for item in value.lower().split(b","):
        name, _, params = item.strip().partition(b";")
        if name.strip() in (b"gzip", b"*"):
            q = params.strip()
            if not q.startswith(b"q="):
                return True
            try:
                return float(q[2:] or b"0") != 0
            except ValueError:  # a q-value that is not a number: take it as not accepted
                return False
    return False


class _Stats:
    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.per_endpoint: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def count(self, what: str, endpoint: str) -> None:
        self.counts[what] += 1
        self.per_endpoint[endpoint][what] += 1


@implementer(IHealthReporter, IMetricsSource, IMiddleware, IDashboardSection, IFastPathSafe)
class Cache:
    """The response cache. See the module docstring."""

    plain_next = True

    def __init__(self, name: str, clock, ttl: dict[str, float], max_bytes: int,
                 stale_if_error: float, accepted_keys: AcceptedKeys | None = None) -> None:
        self.name = name
        self.accepted_keys = AcceptedKeys() if accepted_keys is None else accepted_keys
        self._clock = clock
        self._ttl = ttl
        self._stale = stale_if_error
        self._store = Store(max_bytes)
        self._inflight: dict[tuple, list[Deferred]] = {}
        self._keys: dict[tuple, tuple | None] = {}
        self.stats = _Stats()

    # -- the middleware -------------------------------------------------------------
    def _keyed(self, request: ProxyRequest) -> tuple[tuple | None, bytes | None]:
        """(``cache_key``, memoised on everything it reads: the raw request
        line parts and the headers that matter (privacy or variation); the
        first Accept-Encoding value): one pass over the headers. An endpoint
        with no cache class is never cached, whatever else it carries: no key
        at once, nothing read or remembered."""
        endpoint = request.endpoint
        if endpoint is None or endpoint.cache_class is None:
            return None, None
        accept = None
        marked = []
        for k, v in request.headers:
            if k in KEY_HEADERS:
                marked.append((k, v if k in VARYING_HEADERS else b""))
            elif k == ACCEPT_ENCODING and accept is None:
                accept = v
        memo = (request.market, request.path, request.query, *marked)
        key = self._keys.get(memo)
        if key is None:
            key = cache_key(request)
            if key is not None:  # only public requests are remembered: no secrets kept
                if len(self._keys) > 100_000:
                    self._keys.clear()
                self._keys[memo] = key
        return key, accept

    def handle(self, request: ProxyRequest, next: Callable) -> Answer:
        if request.method != "GET" or request.body:
            return next(request)  # never the cache's (an order, say): unmarked, uncounted
        key, accept = self._keyed(request)
        # counted per documented endpoint: bots may invent any number of paths
        endpoint = request.endpoint.path if request.endpoint is not None else "other"
        if key is None:
            api_key = request.header(API_KEY_HEADER)
            if api_key is not None:
                view = self.accepted_keys.public_view(request)
                if view is None:  # private, or a key Binance has not accepted yet
                    self.stats.count("bypassed", endpoint)
                    return then(next(request), self._bypassed_with_key, api_key)
                request = view
                key, accept = self._keyed(view)
        if key is None:
            self.stats.count("bypassed", endpoint)
            answer = next(request)
            if type(answer) is Deferred:  # compose.then, inline: a forward's case
                return answer.addCallback(self._mark, b"BYPASS")
            return then(answer, self._mark, b"BYPASS")
        hit = self._hit(key, accept, endpoint)
        if hit is not None:
            return hit
        waiters = self._inflight.get(key)
        if waiters is not None:
            self.stats.count("coalesced", endpoint)
            d: Deferred = Deferred(lambda d: waiters.remove(d) if d in waiters else None)
            waiters.append(d)
            return d
        self.stats.count("misses", endpoint)
        followers: list[Deferred] = []
        self._inflight[key] = followers
        fetch = as_deferred(next(request))
        own: Deferred = Deferred()  # the first bot may go away; the fetch goes on
        fetch.addBoth(self._filled, key, request, followers, own)
        return own

    def _hit(self, key: tuple, accept: bytes | None, endpoint: str) -> ProxyResponse | None:
        """The answer from a fresh entry, counted as a hit; None (nothing
        counted) when there is none."""
        now = self._clock.seconds()
        entry = self._store.get(key)
        if entry is None or now - entry.stored >= entry.ttl:
            return None
        self._store.move_to_end(key)
        self.stats.counts["hits"] += 1  # stats.count, inline
        self.stats.per_endpoint[endpoint]["hits"] += 1
        return self._served(entry, accept, b"HIT", now)

    def fast_handle(self, request: ProxyRequest, next: Callable) -> ProxyResponse | None:
        """``IFastPathSafe``: a hit as ``handle`` gives it (the same lookup);
        None for everything else (a miss, a bypass, a key Binance has not
        accepted): the chain's."""
        if request.method != "GET" or request.body:
            return next(request)  # never the cache's, as in ``handle``
        key, accept = self._keyed(request)
        if key is None:
            if request.header(API_KEY_HEADER) is None:
                return None
            view = self.accepted_keys.public_view(request)
            if view is None:
                return None
            key, accept = self._keyed(view)
            if key is None:
                return None
        return self._hit(key, accept,
                         request.endpoint.path if request.endpoint is not None else "other")

    def _served(self, entry: Entry, accept: bytes | None, status: bytes,
                now: float) -> ProxyResponse:
        """The answer from ``entry``; ``accept``: the request's Accept-Encoding."""
        response = entry.response
        age = int(now - entry.stored) if now > entry.stored else 0  # floor
        body = response.body
        gzipped = len(body) >= GZIP_MIN and bool(accept) and _gzip_acceptable(accept)
        served_as = (status, gzipped, age)
        if entry.served_as == served_as:  # the same answer as the last hit's
            return entry.served  # type: ignore[return-value]
        # (%d of an int: of a float, bytes formatting raises and clears a TypeError first)
        age_header = (b"age", b"%d" % age)
        if gzipped:
            if entry.gzipped is None:
                entry.gzipped = gzip.compress(body, 6)
            body = entry.gzipped
            headers = (*entry.gzip_headers, age_header, (b"x-cache", status))
        else:
            headers = (*entry.plain_headers, age_header, (b"x-cache", status))
        served = ProxyResponse(response.status, headers, body, "cache", _DETAIL[status])
        entry.served_as, entry.served = served_as, served
        return served

    def _bypassed_with_key(self, response: ProxyResponse, api_key: bytes) -> ProxyResponse:
        self.accepted_keys.observe(api_key, response.status, response.source)
        return self._mark(response, b"BYPASS")

    @staticmethod
    def _mark(response: ProxyResponse, status: bytes) -> ProxyResponse:
        """``response`` with ``X-Cache: status`` added (built directly: an
        ``attrs.evolve`` costs as much as the rest of a bypass)."""
        return ProxyResponse(response.status, (*response.headers, (b"x-cache", status)),
                             response.body, response.source, response.detail,
                             response.weight)

    def _filled(self, result: Any, key: tuple, request: ProxyRequest,
                followers: list[Deferred], own: Deferred) -> None:
        del self._inflight[key]
        now = self._clock.seconds()
        if isinstance(result, Failure):  # the chain only fails on CancelledError
            for d in [own, *followers]:
                if not d.called:
                    d.errback(result)
            return None
        response = result
        stale = self._store.get(key)
        if (response.status >= 500 or response.status in BAN_STATUSES) and \
                stale is not None and now - stale.stored <= self._stale:
            self.stats.count("stale", request.endpoint.path if request.endpoint else "other")
            for d in [own, *followers]:
                if not d.called:
                    d.callback(self._served(stale, request.header(ACCEPT_ENCODING), b"STALE", now))
            return None
        # cache_key() only admits requests whose endpoint has a cache class
        cache_class = request.endpoint.cache_class if request.endpoint else None
        if storable(response) and cache_class is not None:
            self._store.put(key, Entry(stored_copy(response), now,
                                 self._ttl[cache_class],
                                 len(response.body) + 512, request.path))
        first = self._mark(response, b"MISS")
        if not own.called:
            own.callback(first)
        if followers:
            shared = stored_copy(response) if response.status == 200 else response
            follower = attrs.evolve(shared, detail="coalesced", headers=(
                *shared.headers, (b"age", b"0"), (b"x-cache", b"HIT")))
            for d in followers:
                if not d.called:
                    d.callback(follower)
        return None

    def clear(self) -> int:
        n = len(self._store)
        self._store.clear()
        return n

    def snapshot(self) -> dict:
        c = self.stats.counts
        looked = c["hits"] + c["misses"] + c["coalesced"]
        per = {}
        for endpoint, counts in sorted(self.stats.per_endpoint.items()):
            total = counts["hits"] + counts["misses"] + counts["coalesced"]
            per[endpoint] = {**counts, "hit_ratio": round(
                (counts["hits"] + counts["coalesced"]) / total, 4) if total else 0.0}
        return {"hits": c["hits"], "misses": c["misses"], "coalesced": c["coalesced"],
                "stale": c["stale"], "bypassed": c["bypassed"], "entries": len(self._store),
                "bytes": self._store.bytes, "max_bytes": self._store.max_bytes,
                "hit_ratio": round((c["hits"] + c["coalesced"]) / looked, 4) if looked else 0.0,
                "endpoints": per}

    def collect_metrics(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        c = self.stats.counts
        for what in ("hits", "misses", "coalesced", "stale", "bypassed"):
            yield CounterMetricFamily(f"bnproxy_cache_{what}", f"Cache {what}.", value=c[what])
        yield GaugeMetricFamily("bnproxy_cache_bytes", "Bytes held.", value=self._store.bytes)
        yield GaugeMetricFamily("bnproxy_cache_entries", "Entries held.", value=len(self._store))

    def health(self) -> dict:
        snap = self.snapshot()
        return {k: snap[k] for k in ("entries", "bytes", "hit_ratio")}

    def dashboard_section(self) -> tuple[str, dict]:
        """What the cache holds (its hits are the answers counter's)."""
        return "cache", {"entries": len(self._store), "bytes": self._store.bytes}


OPTIONS = (
    Option("ttl", "table", DEFAULT_TTL, "Seconds an answer is served from memory, per endpoint "
           "class.", minimum=0, item="float", keys=tuple(DEFAULT_TTL)),
    Option("max_bytes", "int", 256 * 1024 * 1024, "Memory bound, bytes (LRU by bytes).",
           minimum=1024),
    Option("stale_if_error", "float", 30.0, "Serve a stored answer up to this old (seconds) "
           "when Binance fails or bans.", minimum=0),
)


def build_cache(name: str, settings: dict[str, Any], context: MiddlewareContext) -> Cache:
    cache = Cache(name, context.reactor, settings["ttl"], settings["max_bytes"],
                  settings["stale_if_error"], getattr(context, "accepted_keys", None))
    context.add_admin("cache", CacheAdmin(cache))
    return cache
