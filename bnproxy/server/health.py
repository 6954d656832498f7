"""``/health``: what the proxy is, how long it has run, where it sends what,
and each ``IHealthReporter``'s section; its status agrees with ``/ready``.

A middleware's per-client table (a ``clients`` mapping in its section) is
pruned as ``/metrics`` prunes its ``client`` label: the first N clients by
name, the rest summed under ``other``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from twisted.web.resource import Resource

from bnproxy import __version__
from bnproxy.binance.markets import Market
from bnproxy.chain.labels import BoundedLabels


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, clock, markets: Mapping[str, Market], reporters: Sequence[Any],
                 problems: Callable[[], list[str]], chain: Sequence[str],
                 clients: BoundedLabels | None = None,
                 degraded: Callable[[], list[str]] = lambda: []) -> None:
        super().__init__()
        self._degraded = degraded
        self._clients = clients if clients is not None else BoundedLabels()
        self._clock = clock
        self._started = clock.seconds()
        self._markets = markets
        self._reporters = reporters
        self._problems = problems
        self._chain = chain

    def document(self) -> dict[str, Any]:
        problems = self._problems()
        degraded = [] if problems else self._degraded()
        doc: dict[str, Any] = {
            # The same verdict as /ready: "ok", "degraded" (serving on local
            # budgets) or "not ready", with the reasons.
            "status": "not ready" if problems else "degraded" if degraded else "ok",
            "problems": problems or degraded,
            "version": __version__,
            "uptime_seconds": round(self._clock.seconds() - self._started, 3),
            "markets": {
                name: {"rest": m.rest_base, "stream": m.stream_base}
                for name, m in self._markets.items()
            },
            "chain": list(self._chain),
            "middleware": {},
        }
        for m in self._reporters:
            section = m.health()
            if isinstance(section, Mapping) and isinstance(section.get("clients"), Mapping):
                section = {**section, "clients": self._clients.fold(section["clients"])}
            doc["middleware"][m.name] = section
        return doc

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return orjson.dumps(self.document())
