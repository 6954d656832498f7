"""Admin resources sit behind their own address allowlist (default: loopback)."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.logger import Logger
from twisted.web.resource import IResource, Resource

from bnproxy.binance.errors import error_body
from bnproxy.server.clientaddr import ClientResolver, Network, in_networks

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
