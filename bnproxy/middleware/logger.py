"""``logger``: the access log, with secrets redacted.

One line per answer: time, client, method, path, query with
``signature``/``listenKey``/``apiKey`` values redacted, status, bytes,
duration, source, cache status and weight charged. The API key appears only
as a short salted hash (to tell bots apart); bodies are never logged.

Lines go to ``twisted.logger`` (so to twistd's log), or with ``file=PATH`` to a
file of their own, written in blocks and flushed every second (as nginx's
``access_log … buffer= flush=``) and at shutdown.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from urllib.parse import quote

import orjson
from twisted.application.service import Service
from twisted.internet import task
from twisted.logger import Logger
from zope.interface import implementer

from bnproxy.binance.privacy import SECRET_PARAMS
from bnproxy.chain.compose import Answer, then
from bnproxy.chain.interfaces import IMiddleware
from bnproxy.chain.messages import ProxyRequest, ProxyResponse
from bnproxy.config.reader import SettingsReader

REDACTED = "[redacted]"
_SECRET_BYTES = tuple(name.encode() for name in SECRET_PARAMS)


def redact_query(request: ProxyRequest) -> str:
    """The query as sent, unless it names a secret parameter: then rebuilt
    with those values replaced."""
    raw = request.query
    if not raw:
        return ""
    if b"%" not in raw and not any(name in raw.lower() for name in _SECRET_BYTES):
        return raw.decode("latin-1")  # no secret can hide in it
    pairs = request.param_list
    if not any(k.lower() in SECRET_PARAMS for k, _ in pairs):
        return request.query.decode("latin-1")
    return "&".join(f"{quote(k, safe='')}="
                    f"{REDACTED if k.lower() in SECRET_PARAMS else quote(v, safe=',[]')}"
                    for k, v in pairs)


@implementer(IMiddleware)
class AccessLogger(Service):
    plain_next = True

    def __init__(self, name: str, clock, fmt: str, salt: bytes, output=None) -> None:
        self.name = name
        self._clock = clock
        self._json = fmt == "json"
        self._salt = salt
        self._log = Logger(namespace="bnproxy.access")
        self._output = output  # a file of its own; None: twisted.logger
        self._flusher = task.LoopingCall(self.flush)
        self._flusher.clock = clock
        self._second = -1
        self._stamp = ""

    def startService(self) -> None:  # noqa: N802
        super().startService()
        if self._output is not None:
            self._flusher.start(1.0, now=False)

    def stopService(self) -> None:  # noqa: N802
        if self._flusher.running:
            self._flusher.stop()
        self.flush()
        return super().stopService()

    def flush(self) -> None:
        if self._output is not None:
            self._output.flush()

    def key_id(self, request: ProxyRequest) -> str | None:
        key = request.header(b"x-mbx-apikey")
        if not key:
            return None
        return hashlib.sha256(self._salt + key).hexdigest()[:10]  # no key is kept

    def handle(self, request: ProxyRequest, next: Callable) -> Answer:
        return then(next(request), self._log_one, request)

    def _log_one(self, response: ProxyResponse, request: ProxyRequest) -> ProxyResponse:
        now = self._clock.seconds()
        ms = round((now - request.arrival) * 1000, 2)
        query = redact_query(request)
        cache = (response.header(b"x-cache") or b"-").decode("latin-1")
        key = self.key_id(request) or "-"
        if self._json:
            line = orjson.dumps({
                "time": round(now, 3), "client": request.client, "method": request.method,
                "market": request.market, "path": request.path, "query": query,
                "status": response.status, "bytes": len(response.body), "ms": ms,
                "source": response.source, "cache": cache, "weight": response.weight,
                "key": key, "detail": response.detail}).decode()
        else:
            second = int(now)
            if second != self._second:  # formatted once a second
                self._second = second
                self._stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
            stamp = self._stamp
            q = f"?{query}" if query else ""
            line = (f"{stamp} {request.client} \"{request.method} /{request.market}"
                    f"{request.path}{q}\" {response.status} {len(response.body)} {ms}ms "
                    f"source={response.source} cache={cache} weight={response.weight} "
                    f"key={key}")
        if self._output is not None:
            self._output.write(line + "\n")
        else:
            self._log.info("{line}", line=line)
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
            output = open(path, "a", encoding="utf-8", buffering=65536)  # noqa: SIM115
        except OSError as e:
            raise reader._fail("file", f"cannot open {path}: {e.strerror}") from None
    return AccessLogger(name, context.reactor, fmt, salt, output=output)
