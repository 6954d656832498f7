"""``/cache/stats`` and ``/cache/clear``, behind the admin allowlist."""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from twisted.web.resource import Resource

from bnproxy.binance.errors import UNKNOWN, error_body

if TYPE_CHECKING:
    from bnproxy.middleware.cache.middleware import Cache


class CacheAdmin(Resource):
    """``GET /cache/stats`` and ``POST /cache/clear``."""

    def __init__(self, cache: Cache) -> None:
        super().__init__()
        self._cache = cache

    def getChild(self, path, request):
        return self

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        if request.prepath[-1:] != [b"stats"]:
            request.setResponseCode(404)
            return error_body(UNKNOWN, "try /cache/stats")
        return orjson.dumps(self._cache.snapshot())

    def render_POST(self, request):
        request.setHeader(b"content-type", b"application/json")
        if request.prepath[-1:] != [b"clear"]:
            request.setResponseCode(404)
            return error_body(UNKNOWN, "try POST /cache/clear")
        return orjson.dumps({"cleared": self._cache.clear()})
