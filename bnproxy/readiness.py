"""The proxy's verdict (``bnproxy.verdict``): can it serve right now, and how well?

Not ready while draining, while an upstream the proxy uses is unreachable
(each market used in the last five minutes, and spot, is pinged through the
whole chain every 15 s: weight 1), or while a component providing
``IReadinessCheck`` (a stream manager down) has a reason. Banned while
Binance bans every egress address of a pool (the proxy still answers every
bot: a ban is not unreadiness). Degraded while the shared state is away or
an ``IProblemReporter`` says so (stale streams, the access log failing).
``/ready``, ``/health``, the dashboard, ``status`` and ``bnproxy_status``
all read ``Readiness.verdict()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet import task
from zope.interface import implementer

from bnproxy.binance.markets import PING_PATHS, Market
from bnproxy.chain.compose import as_deferred
from bnproxy.chain.interfaces import (
    IMetricsSource,
    IProblemReporter,
    IReadinessCheck,
    IWeightGovernor,
)
from bnproxy.chain.messages import INTERNAL, ProxyRequest
from bnproxy.verdict import BANNED, DEGRADED, NOT_READY, STATUSES, Since, Verdict

PROBE_EVERY = 15.0
RECENT = 300.0  # a market used within this many seconds is checked
DOWN_AFTER = 2  # failed exchanges in a row that make a market unreachable


@implementer(IMetricsSource)
class Readiness:
    """Collects the reasons the proxy cannot serve; probes upstreams."""

    def __init__(self, clock: Any, markets: Mapping[str, Market], upstream: Any,
                 handler: Callable[[ProxyRequest], Any], endpoints: Any,
                 checks: Callable[[], Iterable[Any]], shared_state: Any = None) -> None:
        self._clock = clock
        self._shared = shared_state
        self._markets = markets
        self._upstream = upstream
        self._handler = handler
        self._endpoints = endpoints
        self._checks = checks
        self.draining = False
        self._since = Since()
        self.last: Verdict | None = None  # the newest verdict computed
        self._probe = task.LoopingCall(self.probe)
        self._probe.clock = clock

    def start(self) -> None:
        self._probe.start(PROBE_EVERY, now=True)

    def stop(self) -> None:
        self.draining = True
        if self._probe.running:
            self._probe.stop()

    def checked_markets(self) -> list[str]:
        now = self._clock.seconds()
        used = [m for m, s in self._upstream.reachability.items()
                if max(s["ok"] or 0, s["error"] or 0) > now - RECENT]
        return sorted(set(used) | {"spot"}) if self._markets["spot"].rest_base else used

    def probe(self) -> None:
        """Ping each checked market through the chain (marked internal)."""
        for market in self.checked_markets():
            path = PING_PATHS[market]
            request = ProxyRequest("GET", market, path, b"", ((INTERNAL, b"ready"),), b"",
                                   "bnproxy", self._clock.seconds(),
                                   self._endpoints.lookup(market, "GET", path))
            as_deferred(self._handler(request)).addErrback(lambda f: None)

    def upstream_down(self, market: str) -> bool:
        """The market's upstream failed ``DOWN_AFTER`` exchanges in a row (a
        request or a probe; as a load balancer's health check does): one
        failure alone, a connection the upstream was closing say, never
        takes a healthy proxy out."""
        state = self._upstream.reachability.get(market)
        return state is not None and state.get("failures", 0) >= DOWN_AFTER

    def verdict(self) -> Verdict:
        """The one verdict (``bnproxy.verdict``), from every source here:
        draining, the upstream probes, the shared state's status, each
        ``IProblemReporter``'s problems, each ``IWeightGovernor``'s bans
        (read from ``usage()``) and each other ``IReadinessCheck``'s reasons
        (``not ready``)."""
        now = self._clock.seconds()
        found: list[tuple[str, str, str]] = []
        if self.draining:
            found.append(("draining", NOT_READY, "draining: stopping, not taking new work"))
        for market in self.checked_markets():
            state = self._upstream.reachability.get(market) or {"ok": None, "error": None}
            if self.upstream_down(market):
                found.append((f"upstream:{market}", NOT_READY,
                              f"upstream {market} unreachable: {state['reason']}"))
            elif state["ok"] is None and not self._banned(market):
                found.append((f"upstream:{market}", NOT_READY,
                              f"upstream {market} not reached yet"))
        shared = self._shared
        if shared is not None and shared.status != "ok":
            reason = (shared.health() or {}).get("last_error") or "not answering"
            found.append(("shared-state", DEGRADED,
                          f"shared state degraded ({reason}): local budgets of budget / "
                          f"{shared.live_instances()} instance(s), every known ban kept"))
        for component in self._checks():
            if IProblemReporter.providedBy(component):
                found += [(str(k), str(sev), str(text))
                          for k, sev, text in component.health_problems()]
            elif IWeightGovernor.providedBy(component):
                found += ban_problems(component.usage(), now)
            elif IReadinessCheck.providedBy(component):
                name = getattr(component, "name", type(component).__name__)
                found += [(f"ready:{name}:{i}", NOT_READY, text)
                          for i, text in enumerate(component.readiness_problems())]
        verdict = self._since.verdict(now, found)
        self.last = verdict
        return verdict

    def _banned(self, market: str) -> bool:
        """A ban in force on ``market``: it cannot be reached, and need not be
        (bots are answered locally until the ban ends)."""
        return any(IWeightGovernor.providedBy(c) and c.banned_for(market) > 0
                   for c in self._checks())

    def problems(self) -> list[str]:
        """Every reason the proxy cannot serve now (empty: ready)."""
        return [p.text for p in self.verdict().problems if p.severity == NOT_READY]

    def collect_metrics(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        status = GaugeMetricFamily(
            "bnproxy_status", "The proxy's verdict: 1 for the current one (ok, degraded, "
            "banned, not ready), 0 for the others.", labels=["status"])
        verdict = self.verdict()
        for name in STATUSES:
            status.add_metric([name], 1.0 if verdict.status == name else 0.0)
        yield status
        since = GaugeMetricFamily(
            "bnproxy_problem_since_seconds", "Unix time each current problem was first "
            "seen, by severity and name.", labels=["severity", "problem"])
        for p in verdict.problems:
            since.add_metric([p.severity, p.key], p.since)
        yield since
        gauge = GaugeMetricFamily("bnproxy_upstream_reachable",
                                  "1 if the last exchange with the upstream succeeded.",
                                  labels=["market"])
        for market in self._upstream.reachability:
            gauge.add_metric([market], 0.0 if self.upstream_down(market) else 1.0)
        yield gauge


def ban_problems(usage: Mapping[str, Mapping[str, Any]], now: float
                 ) -> list[tuple[str, str, str]]:
    """The bans in an ``IWeightGovernor.usage()``, one problem per pool
    family (``spot``; every ``sapi:…`` pool as one ``sapi``): ``banned`` when
    every egress address of a banned pool is silenced, ``degraded`` when
    others still send."""
    egresses: dict[str, set[str]] = {}
    banned: dict[str, dict[str, float]] = {}  # pool -> egress -> seconds left
    for name, u in usage.items():
        pool, egress = name.split("@", 1)[0], str(u.get("egress") or "default")
        egresses.setdefault(pool, set()).add(egress)
        left = float(u.get("banned_for") or 0.0)
        if left > 0:
            banned.setdefault(pool, {})[egress] = left
    families: dict[str, list[tuple[str, str, float, set[str]]]] = {}
    for pool, by_egress in banned.items():
        every = set(by_egress) >= egresses[pool]
        family = pool.split(":", 1)[0]
        families.setdefault(family, []).append(
            (pool, BANNED if every else DEGRADED, max(by_egress.values()), set(by_egress)))
    out = []
    for family, rows in sorted(families.items()):
        severity = BANNED if any(r[1] == BANNED for r in rows) else DEGRADED
        left = max(r[2] for r in rows)
        what = rows[0][0] if len(rows) == 1 else f"{len(rows)} {family} pools"
        where = sorted(set().union(*(r[3] for r in rows)) - {"default"})
        until = time.strftime("%H:%M:%S", time.gmtime(now + left))
        text = (f"Binance ban in force for {what} ({left:.0f} s left, until {until} UTC"
                + (f", egress {', '.join(where)}" if where else "") + ")")
        if severity == DEGRADED:
            text += "; other egress addresses still send"
        out.append((f"ban:{family}", severity, text))
    return out
