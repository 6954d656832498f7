"""``ratelimit``: one weight budget per (egress address, weight pool) for
the whole fleet, and no ban ever escalates.

Each request's weight is predicted from the endpoint table and reserved before
it is sent; Binance's used-weight headers (``X-MBX-USED-WEIGHT-1M``, and for
``/sapi`` ``X-SAPI-USED-IP-WEIGHT-1M`` / ``X-SAPI-USED-UID-WEIGHT-1M``)
reconcile the count. A request that would cross the budget waits, first come
first served, until the next one-minute window, up to ``max_wait``; past that
it is answered locally with 429, ``Retry-After`` and ``-1003``.

An upstream 429 silences the pool it came from, a 418 the whole host (``/api``
and ``/sapi`` alike), from that egress address: until the ban ends every such
request is answered locally and none reaches Binance. A missing or malformed
``Retry-After`` falls back to the body's "banned until", else to a safe
default. Bans survive restarts (``bans.py``).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import orjson
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from bnproxy.binance.errors import TOO_MANY_ORDERS, TOO_MANY_REQUESTS
from bnproxy.binance.limits import (
    IP_BANNED,
    ORDER_COUNT_PREFIX,
    RATE_LIMITED,
    SAPI_IP_LIMIT,
    SAPI_IP_WEIGHT_HEADER,
    SAPI_MARKET,
    SAPI_UID_LIMIT,
    SAPI_UID_WEIGHT_HEADER,
    USED_WEIGHT_HEADER,
)
from bnproxy.binance.markets import MARKET_NAMES, PRODUCTION
from bnproxy.chain.compose import then
from bnproxy.chain.context import MiddlewareContext
from bnproxy.chain.interfaces import (
    IHealthReporter,
    IMetricsSource,
    IMiddleware,
    IReadinessCheck,
    IWeightGovernor,
)
from bnproxy.chain.labels import CLIENT_HEADER, BoundedLabels
from bnproxy.chain.messages import ProxyRequest, ProxyResponse, local_error
from bnproxy.chain.options import Option
from bnproxy.middleware.ratelimit.bans import HOST, Ban, BanStore
from bnproxy.middleware.ratelimit.governor import GRANTED, SAPI, Decision, Governor, Pool
from bnproxy.middleware.ratelimit.ledger import client_of
from bnproxy.middleware.ratelimit.shared import SharedState
from bnproxy.middleware.ratelimit.state import DEFAULT_EGRESS, LocalState

_log = Logger(namespace="bnproxy.ratelimit")


@implementer(IMiddleware, IWeightGovernor, IHealthReporter, IMetricsSource, IReadinessCheck)
class RateLimit:
    """The ratelimit middleware. See the module docstring."""

    plain_next = True

    def __init__(self, name: str, clock, governor: Governor, client_header: bytes | None,
                 client_share: float | None) -> None:
        self.name = name
        self._clock = clock
        self.governor = governor
        self.state = governor.state
        self._client_header = client_header
        self._client_share = client_share
        self._shares: dict[str, float | None] = {}
        self.bans_seen: dict[str, int] = defaultdict(int)  # bans started, per scope
        self._clients = BoundedLabels(LEDGER_CLIENTS)
        if isinstance(self.state, SharedState):
            self.state.wake = governor.wake
            self.state.heard = governor.drop_for  # a ban from the fleet answers its waiters
            self.state.budgets({name: p.budget for name, p in governor.pools.items()})

    # -- IWeightGovernor ------------------------------------------------------------
    def pool_of(self, request: ProxyRequest) -> str:
        return self.governor.pool_of(request)

    def reserve(self, pool: str, weight: int, egress: str | None = None) -> bool:
        return self.governor.reserve(pool, weight, egress)

    def usage(self) -> dict[str, dict]:
        return self.governor.usage()

    def banned_for(self, pool: str, egress: str | None = None) -> float:
        return self.governor.banned_for(pool, egress)

    def set_client_share(self, client: str, share: float | None) -> None:
        if share is not None and not 0 < share <= 1:
            raise ValueError(f"a client's share is in (0, 1], got {share!r}")
        self._shares[client] = share

    # -- the middleware -------------------------------------------------------------
    def client_of(self, request: ProxyRequest) -> str:
        """The ledger's name for the bot: at most LEDGER_CLIENTS distinct
        names are kept (bots may send anything), the rest count as ``other``."""
        return self._clients(client_of(request, self._client_header))

    def handle(self, request: ProxyRequest, next: Callable) -> Any:
        """One path: the route and the ban on it (checked once), the
        client's share, the governor's decision (now or after a wait), then
        one ledger entry and the answer: sent, or local."""
        now = self._clock.seconds()
        pool = self.governor.pool(request)
        egress, ban = self.governor.route(pool, now)
        if egress != DEFAULT_EGRESS:  # the upstream sends it from that address
            request = attrs.evolve(request, egress=egress)
        client = self._clients(client_of(request, self._client_header))  # self.client_of
        if ban is not None:
            return self._decided(ban, request, next, pool, client)
        weight = request.weight
        share = self._shares.get(client, self._client_share)
        if (share is not None and pool.budget is not None and weight
                and self.state.ledger_window(client, now) + weight > pool.budget * share):
            self.state.ledger_add(client, now, requests=1, rejected=1)
            return self._too_many(pool, now, "this client's share of the budget")
        decision = self.governor.admit(pool, egress, weight, now)
        if type(decision) is str:  # decided now (GRANTED or REFUSED), at ``now``
            return self._decided(decision, request, next, pool, client, now)
        if isinstance(decision, Deferred):  # waits for weight: decided later
            return decision.addCallback(self._decided, request, next, pool, client)
        return self._decided(decision, request, next, pool, client)

    def _decided(self, decision: Decision, request: ProxyRequest, next: Callable, pool: Pool,
                 client: str, now: float | None = None) -> Any:
        if now is None:
            now = self._clock.seconds()
        if decision == GRANTED:
            self.state.ledger_add(client, now, request.weight, 1)
            return then(next(request), self._observe, pool, request.egress or DEFAULT_EGRESS,
                        client)
        self.state.ledger_add(client, now, requests=1, rejected=1)
        if isinstance(decision, Ban):
            return self._banned(decision, pool, now)
        return self._too_many(pool, now, "the fleet's weight budget")

    def _observe(self, response: ProxyResponse, pool: Pool, egress: str,
                 client: str) -> ProxyResponse:
        if response.source != "upstream":
            return response
        now = self._clock.seconds()
        used = None
        if pool.name.startswith(SAPI):
            used = response.header(SAPI_IP_WEIGHT_HEADER)
            uid = response.header(SAPI_UID_WEIGHT_HEADER)
            if used is None and uid is not None:
                self.governor.uid_limited(pool)
                used = uid
            counts: dict[str, str] | None = self._order_counts(response)
        else:  # one pass for the used weight and the order counts
            counts = None
            for k, v in response.headers:
                if k == USED_WEIGHT_HEADER:
                    if used is None:
                        used = v
                elif k.startswith(ORDER_COUNT_PREFIX):
                    if counts is None:
                        counts = {}
                    counts[k[_ORDER_COUNT_AT:].decode("latin-1").upper()] = v.decode("latin-1")
        if used is not None and used.isdigit():
            self.state.reconcile(egress, pool.name, int(used), now)
        if counts:
            self.state.ledger_add(client, now, order_counts=counts)
        if response.status == IP_BANNED or (response.status == RATE_LIMITED
                                             and not _order_count_limit(response)):
            self._start_ban(pool, egress, response, now)
        return response

    @staticmethod
    def _order_counts(response: ProxyResponse) -> dict[str, str]:
        """The ``X-MBX-ORDER-COUNT-*`` headers, by interval (``10S``, ``1D``)."""
        return {k[_ORDER_COUNT_AT:].decode("latin-1").upper(): v.decode("latin-1")
                for k, v in response.headers if k.startswith(ORDER_COUNT_PREFIX)}

    def _start_ban(self, pool: Pool, egress: str, response: ProxyResponse, now: float) -> None:
        status = response.status
        self.bans_seen[pool.name if status == RATE_LIMITED else HOST + pool.host] += 1
        # /sapi does not escalate to 418 (FACTS.md §1.7); if one comes, it is
        # still an IP ban of the whole host.
        ban = self.governor.start_ban(pool, egress, status, response.header(b"retry-after"),
                                      response.body, self._wall(now))
        _log.warn("Binance answered {status} for {pool} ({egress}): nothing is sent to "
                  "{scope} for {seconds:.0f} s", status=status, pool=pool.name, egress=egress,
                  scope=self._scope_label(ban), seconds=ban.until - now)

    def _markets_of(self, ban: Ban) -> list[str]:
        """The markets a ban silences: every market on the host for a 418."""
        if ban.host_wide:
            return self.governor.markets_of(ban.scope.removeprefix(HOST))
        return [SAPI_MARKET] if ban.scope.startswith(SAPI) else [ban.scope]

    def _wall(self, now: float) -> float:
        return now  # the reactor's clock is wall time in production

    # -- local answers ------------------------------------------------------------------
    def _scope_label(self, ban: Ban) -> str:
        if ban.host_wide:
            host = ban.scope[len(HOST):]
            markets = "+".join(self.governor.markets_of(host)) or host
            return f"{markets} (every path of host {host})"
        return ban.scope

    def _banned(self, ban: Ban, pool: Pool, now: float) -> ProxyResponse:
        retry = max(1, math.ceil(ban.until - now))
        until_ms = int(ban.until * 1000)
        what = "banned this IP" if ban.status == IP_BANNED else "rate-limited this IP"
        return local_error(
            ban.status, TOO_MANY_REQUESTS,
            f"bnproxy: Binance {what} for {self._scope_label(ban)} until {until_ms}; "
            f"the request ({pool.name}) was not sent.",
            headers=((b"retry-after", str(retry).encode()),), detail="banned")

    def _too_many(self, pool: Pool, now: float, what: str) -> ProxyResponse:
        retry = max(1, math.ceil(self.governor.window_end(now) - now))
        return local_error(
            RATE_LIMITED, TOO_MANY_REQUESTS,
            f"bnproxy: {what} for {pool.name} is spent ({pool.budget} of {pool.limit} "
            f"request weight per 1 MINUTE); retry in {retry} s.",
            headers=((b"retry-after", str(retry).encode()),), detail="budget")

    # -- reporting ----------------------------------------------------------------------
    def readiness_problems(self) -> list[str]:
        now = self._clock.seconds()
        bans = [b for b in self.state.bans() if b.until > now]
        egresses = self.governor.egresses
        if len(egresses) > 1:  # not ready only while every address is silenced
            banned: dict[str, set[str]] = {}
            for b in bans:
                banned.setdefault(b.scope, set()).add(b.egress)
            bans = [b for b in bans if banned[b.scope] >= set(egresses)]
        return [f"Binance ban in force for {self._scope_label(b)} ({b.status}, "
                f"{b.until - now:.0f} s left"
                + ("" if b.egress == DEFAULT_EGRESS else f", egress {b.egress}") + ")"
                for b in sorted(bans, key=lambda b: b.scope)]

    def health(self) -> dict:
        now = self._clock.seconds()
        usage = self.usage()
        pools = {name: {k: u[k] for k in ("used", "budget", "limit", "queued", "banned_for",
                                          "egress")}
                 for name, u in usage.items()}
        bans = [{"scope": b.scope, "egress": b.egress, "status": b.status,
                 "seconds_left": round(b.until - now, 3), "strikes": b.strikes,
                 "markets": self._markets_of(b)}
                for b in self.state.bans() if b.until > now]
        out = {"pools": pools, "bans": bans, "clients": self.state.ledger()}
        if isinstance(self.state, SharedState):
            out["shared_state"] = self.state.shared.status
        return out

    def collect_metrics(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        usage = self.usage()
        several = len(self.governor.egresses) > 1  # then each figure names its address
        labels = ["pool", "egress"] if several else ["pool"]
        used = GaugeMetricFamily("bnproxy_weight_used", "Request weight used this minute.",
                                 labels=labels)
        limit = GaugeMetricFamily("bnproxy_weight_limit", "Binance's weight limit per minute.",
                                  labels=labels)
        budget = GaugeMetricFamily("bnproxy_weight_budget", "The limit less the margin.",
                                   labels=labels)
        ban = GaugeMetricFamily("bnproxy_ban_remaining_seconds",
                                "Seconds until a Binance ban ends (0: none).", labels=labels)
        bans = CounterMetricFamily("bnproxy_bans", "Bans and 429s received from Binance.",
                                   labels=["pool"])
        counts = self.bans_seen
        for name, u in usage.items():
            key = [name.split("@")[0], u["egress"]] if several else [name]
            used.add_metric(key, u["used"])
            if u["limit"] is not None:
                limit.add_metric(key, u["limit"])
                budget.add_metric(key, u["budget"] or 0)
            ban.add_metric(key, max(0.0, u["banned_for"]))
        for scope, n in counts.items():
            bans.add_metric([scope], n)
        weight = CounterMetricFamily("bnproxy_client_weight", "Weight spent per client.",
                                     labels=["client"])
        requests = CounterMetricFamily("bnproxy_client_requests", "Requests per client.",
                                       labels=["client"])
        rejected = CounterMetricFamily("bnproxy_client_rejected",
                                       "Requests answered locally (budget, ban) per client.",
                                       labels=["client"])
        for client, st in self.state.ledger().items():
            weight.add_metric([client], st["weight"])
            requests.add_metric([client], st["requests"])
            rejected.add_metric([client], st["rejected"])
        yield from (used, limit, budget, ban, bans, weight, requests, rejected)


OPTIONS = (
    Option("limit", "table", {}, "Request weight per minute per pool, overriding Binance's "
           "documented limits ("
           + ", ".join(f"{m.name} {m.weight_limit}" for m in PRODUCTION.values()
                       if m.weight_limit is not None)
           + f"; sapi {SAPI_IP_LIMIT} for each IP-limited /sapi endpoint, sapi_uid "
           f"{SAPI_UID_LIMIT} for each UID-limited one).",
           minimum=1, item="int", keys=(*MARKET_NAMES, "sapi", "sapi_uid")),
    Option("margin", "float", 0.10, "Keep this share of every budget unused.", minimum=0,
           maximum=0.9),
    Option("max_wait", "float", 5.0, "Longest a request waits for the next minute window "
           "before a local 429, seconds.", minimum=0, maximum=60),
    Option("state_file", "str", None, "The ban state file; default STATE_DIR/bnproxy-bans.json; "
           "\"none\": bans are not kept across restarts."),
    Option("discard_ban_state", "bool", False, "Start without the ban state file's bans (the "
           "way out when it is unreadable; --discard-ban-state)."),
    Option("client_header", "str", CLIENT_HEADER, "Account per bot by this header (as the "
           "access log names bots); a bot that does not send it is accounted by address; "
           "\"none\": by address only."),
    Option("client_share", "float", 0.0, "Cap each client at this share of a budget (0: no "
           "cap).", minimum=0, maximum=1),
)


_ORDER_COUNT_AT = len(ORDER_COUNT_PREFIX)
LEDGER_CLIENTS = 1024  # names kept in the ledger; /metrics and /health show fewer


def _order_count_limit(response: ProxyResponse) -> bool:
    """A 429 for the account's unfilled-order count (-1015): one account's
    limit, not the IP's weight; it bans nothing (the bot is told, others go on)."""
    try:
        return orjson.loads(response.body).get("code") == TOO_MANY_ORDERS
    except (orjson.JSONDecodeError, AttributeError):
        return False


def build_ratelimit(name: str, settings: dict[str, Any],
                    context: MiddlewareContext) -> RateLimit:
    limits: dict[str, int | None] = {m: market.weight_limit
                                     for m, market in context.markets.items()}
    limits.update(settings["limit"])
    margin, max_wait = settings["margin"], settings["max_wait"]
    state_file = settings["state_file"] or os.path.join(context.state_dir, "bnproxy-bans.json")
    discard = settings["discard_ban_state"]
    header = settings["client_header"]
    header = None if header in (None, "", "none") else header
    share = settings["client_share"] or None
    store = BanStore(context.reactor, state_file if state_file not in ("", "none") else None)
    store.check_writable()
    hosts = {m: market for m, market in context.markets.items()}
    egresses = tuple(getattr(context, "egresses", ()) or ()) or (DEFAULT_EGRESS,)
    state = LocalState(store)
    shared = getattr(context, "shared_state", None)
    governor = Governor(context.reactor, state, hosts, limits, margin, max_wait, egresses)

    def upgrade(pool: str, status: int) -> str:
        # Version-1 files kept a 418 under the market's pool: it was an IP ban.
        known = governor.pools.get(pool)
        return HOST + known.host if status == IP_BANNED and known is not None else pool
    store.load(discard, upgrade)
    if shared is not None:  # budgets, bans and the ledger shared with the fleet
        governor.state = SharedState(context.reactor, shared, state)
    return RateLimit(name, context.reactor, governor,
                     header.lower().encode() if header else None, share)
