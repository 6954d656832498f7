"""The admin resources: ``/health``, ``/metrics`` (behind their own address
allowlist, ``AdminGuard``; default loopback), ``/live`` and ``/ready`` (open
to every address: orchestrators probe them). The dashboard's resources are in
``bnproxy.dashboard.resource``, behind the same guard.

``/health`` says what the proxy is, how long it has run, where it sends what,
and each ``IHealthReporter``'s section; its ``status`` is the proxy's one
verdict (``bnproxy.verdict``), the one ``/ready`` reads. A
middleware's per-client table (a ``clients`` mapping in its section) is pruned
as ``/metrics`` prunes its ``client`` label: the first N clients by name, the
rest summed under ``other``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from twisted.logger import Logger
from twisted.web.resource import IResource, Resource

from bnproxy import __version__
from bnproxy.binance.errors import error_body
from bnproxy.binance.markets import Market
from bnproxy.chain.labels import BoundedLabels
from bnproxy.server.clientaddr import ClientResolver, Network, in_networks
from bnproxy.verdict import OK, Verdict

_log = Logger(namespace="bnproxy.server.admin")



class _Denied(Resource):
    isLeaf = True

    def render(self, request):
        request.setResponseCode(403)
        request.setHeader(b"content-type", b"application/json;charset=UTF-8")
        return error_body(-1002, "bnproxy: admin resources are not open to your address")


class AdminGuard(Resource):
    """Wraps an admin resource: admitted addresses reach it, others get 403."""

    def __init__(self, inner: IResource, allow: Sequence[Network],
                 resolve_client: ClientResolver) -> None:
        super().__init__()
        self._inner = inner
        self._allow = allow
        self._resolve = resolve_client

    def _admitted(self, request) -> bool:
        peer = getattr(request.getClientAddress(), "host", None) or "unix"
        if peer == "unix":
            return True  # a unix socket is guarded by file permissions
        headers = [(k.lower(), v) for k, vs in request.requestHeaders.getAllRawHeaders()
                   for v in vs]
        client = self._resolve(peer, headers)
        if in_networks(client, self._allow):
            return True
        _log.warn("admin request for {path} denied to {client}",
                  path=request.path, client=client)
        return False

    def getChildWithDefault(self, path, request):
        if not self._admitted(request):
            return _Denied()
        return self._inner.getChildWithDefault(path, request)

    def render(self, request):
        if not self._admitted(request):
            return _Denied().render(request)
        return self._inner.render(request)


class HealthResource(Resource):
    """``/health``: the verdict (``status``, ``problems`` as sentences,
    ``issues`` with name, severity and since-when), version, uptime, markets,
    chain, and each ``IHealthReporter``'s section under ``middleware``.
    Other keys may be added (``extra``: a callable returning a mapping merged
    in)."""

    isLeaf = True

    def __init__(self, clock, markets: Mapping[str, Market], reporters: Sequence[Any],
                 verdict: Callable[[], Verdict], chain: Sequence[str],
                 clients: BoundedLabels | None = None,
                 extra: Callable[[], Mapping[str, Any]] = dict) -> None:
        super().__init__()
        self._clients = clients if clients is not None else BoundedLabels()
        self._clock = clock
        self._started = clock.seconds()
        self._markets = markets
        self._reporters = reporters
        self._verdict = verdict
        self._chain = chain
        self._extra = extra

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            **self._verdict().document(),
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
        doc.update(self._extra())
        return doc

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return orjson.dumps(self.document())


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render_GET(self, request):
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
        request.setHeader(b"cache-control", b"no-store")
        return generate_latest(self._registry)


class LiveResource(Resource):
    """``/live``: the process answers."""

    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return b'{"status":"live"}'


class ReadyResource(Resource):
    """``/ready``: 200 while the proxy can answer bots (``"ready"``, or
    ``"degraded"`` or ``"banned"`` with the reasons: a banned proxy still
    answers every bot correctly, so load balancers keep it in rotation), 503
    ``"not ready"`` with the reasons when it cannot answer at all."""

    isLeaf = True

    def __init__(self, verdict: Callable[[], Verdict]) -> None:
        super().__init__()
        self._verdict = verdict

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        verdict = self._verdict()
        if verdict.status == OK:
            return b'{"status":"ready"}'
        if not verdict.ready:
            request.setResponseCode(503)
        return orjson.dumps({"status": verdict.status, "problems": verdict.texts()})
