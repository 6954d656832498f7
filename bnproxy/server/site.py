"""The bots' side of the proxy: a hardened ``twisted.web`` Site whose
requests skip the parsing the proxy never uses and which writes no access
log of its own."""

from __future__ import annotations

from typing import Any

from twisted.web import http, server

from bnproxy.config.model import ServerLimits
from bnproxy.server.channel import HardenedRequest, HardenedSiteMixin
from bnproxy.server.fastpath import FastChannel


class UnparsedRequest(server.Request):
    """twisted.web's request, less the parsing the proxy never uses."""

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """As ``http.Request.requestReceived``, without parsing the query and
        any form body into ``args``: the proxy forwards the bytes as received
        (signatures cover them) and its own resources take no arguments.
        That parse was a tenth of the cost of a cache hit."""
        self.content.seek(0, 0)  # type: ignore[union-attr]  # set before this is called
        self.args = {}
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]
        self.process()


class ProxyRequestFactory(HardenedRequest, UnparsedRequest):
    pass


class ProxySite(HardenedSiteMixin, server.Site):
    """The bots' side: hardened (``bnproxy.server.channel``), and writing no access
    log of its own (twisted.web's logs the full URI, signatures included); the
    ``logger`` middleware logs instead."""

    requestFactory = ProxyRequestFactory

    def __init__(self, resource: Any, limits: ServerLimits = ServerLimits(),
                 **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.harden(limits)
        # the fast path for safe GET/HEAD heads in front of the hardened channel
        self.protocol = type(  # type: ignore[method-assign]  # a class, as Factory wants
            "FastChannel", (FastChannel, self.protocol), {})  # type: ignore[arg-type]

    def log(self, request: http.Request) -> None:
        pass
