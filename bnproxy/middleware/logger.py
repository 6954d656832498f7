"""``logger``: the access log, with secrets redacted.

One line per answer through ``twisted.logger``: time, client, method, path,
query with ``signature``/``listenKey``/``apiKey`` values redacted, status,
bytes, duration, source, cache status and weight charged. The API key appears
only as a short salted hash (to tell bots apart); bodies are never logged.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from urllib.parse import parse_qsl, quote

import orjson
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from bnproxy.interfaces import IMiddleware
from bnproxy.messages import ProxyRequest, ProxyResponse
from bnproxy.privacy import SECRET_PARAMS
from bnproxy.settings import SettingsReader

REDACTED = "[redacted]"


def redact_query(raw: bytes) -> str:
    """The query with secret values replaced; other values re-quoted."""
    if not raw:
        return ""
    pairs = parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
    return "&".join(f"{quote(k, safe='')}="
                    f"{REDACTED if k.lower() in SECRET_PARAMS else quote(v, safe=',[]')}"
                    for k, v in pairs)


@implementer(IMiddleware)
class AccessLogger:
    def __init__(self, name: str, clock, fmt: str, salt: bytes, log: Logger | None = None,
                 output=None) -> None:
        self.name = name
        self._clock = clock
        self._json = fmt == "json"
        self._salt = salt
        self._log = log or Logger(namespace="bnproxy.access")
        self._output = output  # a file for lines of its own; None: twisted.logger

    def key_id(self, request: ProxyRequest) -> str | None:
        key = request.header(b"x-mbx-apikey")
        if not key:
            return None
        return hashlib.sha256(self._salt + key).hexdigest()[:10]

    def handle(self, request: ProxyRequest, next: Callable) -> Deferred:
        return next(request).addCallback(self._log_one, request)

    def _log_one(self, response: ProxyResponse, request: ProxyRequest) -> ProxyResponse:
        duration = (self._clock.seconds() - request.arrival) * 1000
        record = {
            "time": round(self._clock.seconds(), 3), "client": request.client,
            "method": request.method, "market": request.market, "path": request.path,
            "query": redact_query(request.query), "status": response.status,
            "bytes": len(response.body), "ms": round(duration, 2), "source": response.source,
            "cache": (response.header(b"x-cache") or b"-").decode("latin-1"),
            "weight": response.weight, "key": self.key_id(request) or "-",
            "detail": response.detail,
        }
        if self._json:
            line = orjson.dumps(record).decode()
        else:
            q = f"?{record['query']}" if record["query"] else ""
            line = (f"{record['client']} \"{request.method} /{request.market}{request.path}{q}\" "
                    f"{response.status} {record['bytes']} {record['ms']}ms "
                    f"source={response.source} cache={record['cache']} "
                    f"weight={response.weight} key={record['key']}")
        if self._output is not None:
            self._output.write(line + "\n")
            self._output.flush()
        else:
            self._log.info("{access_line}", access_line=line, access=record)
        return response


def build_logger(name: str, settings, context) -> AccessLogger:
    reader = SettingsReader(f"middleware.{name}", settings)
    fmt = reader.str("format", getattr(context, "log_format", "text")) or "text"
    if fmt not in ("text", "json"):
        raise reader._fail("format", f"expected text or json, got {fmt!r}")
    path = reader.str("file", None)
    salt = (reader.str("key_salt", None) or "").encode() or os.urandom(16)
    reader.done()
    output = None
    if path:
        try:
            output = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives with the process)
        except OSError as e:
            raise reader._fail("file", f"cannot open {path}: {e.strerror}") from None
    return AccessLogger(name, context.reactor, fmt, salt, output=output)
