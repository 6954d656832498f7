"""``/ready``: can the proxy serve right now?

Not ready while draining, while an upstream the proxy uses is unreachable
(each market used in the last five minutes, and spot, is pinged through the
whole chain every 15 s: weight 1), or while a component providing
``IReadinessCheck`` (a stream manager down) has a reason. ``/health``'s
status says the same.

A Binance ban is not unreadiness: a banned proxy still answers every bot
correctly (a local 418/429 with Retry-After, streams, the cache), so a load
balancer must keep it in rotation. The weight governor's reasons (its bans)
are therefore reported by ``degraded`` (``/ready`` 200, ``banned: …`` in the
body), and a market whose pool is banned is not "not reached yet".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from twisted.internet import task
from zope.interface import implementer

from bnproxy.binance.markets import PING_PATHS, Market
from bnproxy.chain.compose import as_deferred
from bnproxy.chain.interfaces import IMetricsSource, IReadinessCheck, IWeightGovernor
from bnproxy.chain.messages import INTERNAL, ProxyRequest

PROBE_EVERY = 15.0
RECENT = 300.0  # a market used within this many seconds is checked


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
        state = self._upstream.reachability.get(market)
        return state is not None and state["error"] is not None and (
            state["ok"] is None or state["error"] > state["ok"])

    def problems(self) -> list[str]:
        """Every reason not to serve now (empty: ready)."""
        problems = ["draining"] if self.draining else []
        for market in self.checked_markets():
            state = self._upstream.reachability.get(market) or {"ok": None, "error": None}
            if self.upstream_down(market):
                problems.append(f"upstream {market} unreachable: {state['reason']}")
            elif state["ok"] is None and not self._banned(market):
                problems.append(f"upstream {market} not reached yet")
        for component in self._checks():
            if IReadinessCheck.providedBy(component) and not IWeightGovernor.providedBy(
                    component):
                problems += component.readiness_problems()
        return problems

    def banned(self) -> list[str]:
        """The bans in force (each ``banned: …``): served locally, not unready."""
        return [f"banned: {p}" for c in self._checks()
                if IReadinessCheck.providedBy(c) and IWeightGovernor.providedBy(c)
                for p in c.readiness_problems()]

    def _banned(self, market: str) -> bool:
        return any(IWeightGovernor.providedBy(c) and c.banned_for(market) > 0
                   for c in self._checks())

    def degraded(self) -> list[str]:
        """Why the proxy serves, but not as well as it could (empty: it
        does): a Binance ban in force (answered locally), the shared state
        away (local budgets of budget / instances)."""
        banned = self.banned()
        shared = self._shared
        if shared is None or shared.status == "ok":
            return banned
        reason = (shared.health() or {}).get("last_error") or "not answering"
        return [*banned, f"shared state degraded ({reason}): local budgets of budget / "
                f"{shared.live_instances()} instance(s), every known ban kept"]

    def collect_metrics(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        gauge = GaugeMetricFamily("bnproxy_upstream_reachable",
                                  "1 if the last exchange with the upstream succeeded.",
                                  labels=["market"])
        for market in self._upstream.reachability:
            gauge.add_metric([market], 0.0 if self.upstream_down(market) else 1.0)
        yield gauge
