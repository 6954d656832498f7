"""Prometheus metrics, ``/live`` and ``/ready``.

Answers are counted per (market, endpoint, status, source) in a plain dict
and exported at scrape time (requests no market serves as
``market="none",endpoint="unrouted"``), with the weight each answered bot
request would have cost sent direct (``bnproxy_weight_asked_total``, by the
endpoint table, whatever answered it; a request refused here or failed with a
5xx counts in ``bnproxy_weight_refused_total`` instead: never as saved)
beside the weight the upstream actually charged
(``bnproxy_weight_spent_total``, read from the upstream client), so that the
saving is one PromQL expression::

    1 - sum by (market) (rate(bnproxy_weight_spent_total[5m]))
      / sum by (market) (rate(bnproxy_weight_asked_total[5m]))

The upstream latency histogram and the in-flight gauge are
``prometheus_client`` metrics in the proxy's own registry, with the process
and platform collectors and ``bnproxy_build_info``; everything else (weight,
bans, cache, streams, clients) is read from the middlewares at scrape time:
a middleware providing ``IMetricsSource`` is collected too, so third-party
plugins can export theirs. A ``client`` label is bounded wherever it comes
from: the first ``max_clients`` clients keep their name, the rest are summed
as ``other`` (``bnproxy.chain.labels.BoundedLabels``, shared with ``/health``).

Exposition runs in the reactor thread (``generate_latest``): the library's
own Twisted resource serves from a thread pool, which would read the
middlewares' state while the reactor thread changes it.
"""

from __future__ import annotations

import platform
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.copyright import version as twisted_version

from bnproxy import __version__
from bnproxy.chain.labels import DEFAULT_LIMIT, BoundedLabels
from bnproxy.chain.messages import ProxyRequest, ProxyResponse

UNROUTED = ("none", "unrouted")


class Metrics:
    def __init__(self, max_clients: int = DEFAULT_LIMIT) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.clients = BoundedLabels(max_clients)
        self.upstream_latency = Histogram(
            "bnproxy_upstream_latency_seconds", "Time to a complete upstream answer.",
            ["market"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.inflight = Gauge("bnproxy_inflight_requests", "Requests being answered.",
                              registry=self.registry)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Gauge("bnproxy_build_info", "The running bnproxy: always 1, the versions as labels.",
              ["version", "python", "twisted"], registry=self.registry).labels(
                  __version__, platform.python_version(), twisted_version).set(1)
        # Answers are counted in a plain dict (the reactor thread is the only
        # writer) and exported as a counter family when scraped: a labelled
        # prometheus_client Counter takes a lock and three calls per answer.
        self.answers: dict[tuple[str, str, int, str], int] = defaultdict(int)
        self.asked: dict[str, int] = defaultdict(int)  # answered requests
        self.refused: dict[str, int] = defaultdict(int)  # refused here or failed
        self.upstream: Any = None  # set by watch_upstream
        # (endpoint, raw query) -> predicted weight: a repeated
        # request (a cache hit) is not parsed again
        self.registry.register(_AnswerCollector(self.answers, self.asked, self.refused))

    def answered(self, request: ProxyRequest | None, response: ProxyResponse) -> None:
        """Count one answer to a bot; ``request`` None: no market serves its path."""
        if request is None:
            self.answers[(*UNROUTED, response.status, response.source)] += 1
            return
        endpoint = request.endpoint
        market = request.market
        status = response.status
        source = response.source
        self.answers[(market, "other" if endpoint is None else endpoint.path, status,
                      source)] += 1
        if status < 400 or (status < 500 and source != "local"):
            self.asked[market] += request.weight
        else:  # refused here, or failed
            self.refused[market] += request.weight

    def watch(self, sources: Callable[[], Sequence[Any]]) -> None:
        """Collect ``collect_metrics()`` of every ``IMetricsSource`` that
        ``sources()`` returns, at scrape time, with ``client`` labels bounded."""
        self.registry.register(_StateCollector(sources, self.clients))

    def watch_upstream(self, upstream: Any) -> None:
        """Export what the upstream client counts: ``weight_spent`` and
        ``connect_failures`` (per market dicts)."""
        self.upstream = upstream
        self.registry.register(_UpstreamCollector(upstream))

    def track_inflight(self, count: Callable[[], int]) -> None:
        """The in-flight gauge reads ``count()`` at scrape time."""
        self.inflight.set_function(count)


class _AnswerCollector(Collector):
    def __init__(self, answers: dict[tuple[str, str, int, str], int],
                 asked: dict[str, int], refused: dict[str, int]) -> None:
        self._answers = answers
        self._asked = asked
        self._refused = refused

    def collect(self) -> Iterable:
        family = CounterMetricFamily("bnproxy_requests", "Answers to bots.",
                                     labels=["market", "endpoint", "status", "source"])
        for (market, endpoint, status, source), n in sorted(self._answers.items()):
            family.add_metric([market, endpoint, str(status), source], n)
        yield family
        asked = CounterMetricFamily(
            "bnproxy_weight_asked",
            "Request weight the bots' answered requests would have cost sent direct "
            "(the endpoint table's prediction, whatever answered them; refused and "
            "failed requests are not in it).", labels=["market"])
        for market, n in sorted(self._asked.items()):
            asked.add_metric([market], n)
        yield asked
        refused = CounterMetricFamily(
            "bnproxy_weight_refused",
            "Request weight of the bots' requests refused here (budget, ban, allowlist, "
            "bad request) or failed (5xx): never counted as saved.", labels=["market"])
        for market, n in sorted(self._refused.items()):
            refused.add_metric([market], n)
        yield refused


class _UpstreamCollector(Collector):
    def __init__(self, upstream: Any) -> None:
        self._upstream = upstream

    def collect(self) -> Iterable:
        spent = CounterMetricFamily(
            "bnproxy_weight_spent",
            "Request weight of the requests Binance answered (bots' and the proxy's own).",
            labels=["market"])
        for market, n in sorted(getattr(self._upstream, "weight_spent", {}).items()):
            spent.add_metric([market], n)
        yield spent
        failures = CounterMetricFamily(
            "bnproxy_upstream_connect_failures",
            "Connections to an upstream host that could not be made (refused, "
            "unresolved, timed out).", labels=["market"])
        for market, n in sorted(getattr(self._upstream, "connect_failures", {}).items()):
            failures.add_metric([market], n)
        yield failures


class _StateCollector(Collector):
    def __init__(self, sources: Callable[[], Sequence[Any]], clients: BoundedLabels) -> None:
        self._sources = sources
        self._clients = clients

    def collect(self) -> Iterable:
        for source in self._sources():
            for family in source.collect_metrics():
                yield self._bounded(family)

    def _bounded(self, family: Metric) -> Metric:
        """The family with its ``client`` label values bounded (counters,
        gauges and untyped: samples folded into ``other`` are summed)."""
        if family.type not in ("counter", "gauge", "unknown") or not any(
                "client" in s.labels for s in family.samples):
            return family
        by_name: dict[str, list] = defaultdict(list)
        for sample in family.samples:
            by_name[sample.name].append((sample.labels, sample.value))
        folded = Metric(family.name, family.documentation, family.type, family.unit)
        for name, pairs in by_name.items():
            for labels, value in self._clients.fold_samples(pairs):
                folded.add_sample(name, labels, value)
        return folded
