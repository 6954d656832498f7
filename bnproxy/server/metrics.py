"""Prometheus metrics, ``/live`` and ``/ready``.

Answers are counted per (market, endpoint, status, source) in a plain dict
and exported at scrape time; the upstream latency histogram and the in-flight
gauge are ``prometheus_client`` metrics in the proxy's own registry;
everything else (weight, bans, cache, streams, clients)
is read from the middlewares at scrape time: a middleware with a
``collect_metrics()`` method yielding metric families is collected too, so
third-party plugins can export theirs.

Exposition runs in the reactor thread (``generate_latest``): the library's
own Twisted resource serves from a thread pool, which would read the
middlewares' state while the reactor thread changes it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from twisted.web.resource import Resource

from bnproxy.chain.messages import ProxyRequest, ProxyResponse


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.upstream_latency = Histogram(
            "bnproxy_upstream_latency_seconds", "Time to a complete upstream answer.",
            ["market"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.inflight = Gauge("bnproxy_inflight_requests", "Requests being answered.",
                              registry=self.registry)
        # Answers are counted in a plain dict (the reactor thread is the only
        # writer) and exported as a counter family when scraped: a labelled
        # prometheus_client Counter takes a lock and three calls per answer.
        self.answers: dict[tuple[str, str, int, str], int] = defaultdict(int)
        self.registry.register(_AnswerCollector(self.answers))

    def answered(self, request: ProxyRequest, response: ProxyResponse) -> None:
        endpoint = request.endpoint
        self.answers[(request.market, endpoint.path if endpoint is not None else "other",
                      response.status, response.source)] += 1

    def watch(self, sources: Callable[[], Sequence[Any]]) -> None:
        """Collect ``collect_metrics()`` of every ``IMetricsSource`` that
        ``sources()`` returns, at scrape time."""
        self.registry.register(_StateCollector(sources))

    def track_inflight(self, count: Callable[[], int]) -> None:
        """The in-flight gauge reads ``count()`` at scrape time."""
        self.inflight.set_function(count)


class _AnswerCollector(Collector):
    def __init__(self, answers: dict[tuple[str, str, int, str], int]) -> None:
        self._answers = answers

    def collect(self) -> Iterable:
        family = CounterMetricFamily("bnproxy_requests", "Answers to bots.",
                                     labels=["market", "endpoint", "status", "source"])
        for (market, endpoint, status, source), n in sorted(self._answers.items()):
            family.add_metric([market, endpoint, str(status), source], n)
        yield family


class _StateCollector(Collector):
    def __init__(self, sources: Callable[[], Sequence[Any]]) -> None:
        self._sources = sources

    def collect(self) -> Iterable:
        for source in self._sources():
            yield from source.collect_metrics()


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request):  # noqa: N802
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self._registry)


class LiveResource(Resource):
    """``/live``: the process answers."""

    isLeaf = True

    def render_GET(self, request):  # noqa: N802
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return b'{"status":"live"}'


class ReadyResource(Resource):
    """``/ready``: 200 when ready to serve, 503 with the reasons otherwise."""

    isLeaf = True

    def __init__(self, check: Callable[[], list[str]]) -> None:
        super().__init__()
        self._check = check

    def render_GET(self, request):  # noqa: N802
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        problems = self._check()
        if problems:
            request.setResponseCode(503)
            return orjson.dumps({"status": "not ready", "problems": problems})
        return b'{"status":"ready"}'
