"""``logger``: the access log, with secrets redacted.

One line per answer: time, client address, the bot's name, method, path,
query with ``signature``/``listenKey``/``apiKey`` values redacted, status,
bytes, duration, source, cache status, weight charged, the key's salted hash
and the User-Agent's product. The API key appears only as a short salted
hash (to tell bots apart); bodies are never logged.

The bot is named by its ``X-Bnproxy-Client`` header when it sends one, else
by its key's hash, else by its address. Every answer is also counted in the
per-bot ledger (``BotLedger``, ``IBotLedger``: the dashboard's Bots table and
``bnproxy_bot_*`` on ``/metrics``), with or without an access log: the
logger is first in the chain, so it sees every request, however answered.
Lines are formatted here and handed to the proxy's access log writer
(``context.access_log``, an ``IAccessLog``: standard output by default, a
file, or none with ``--access-log``), which writes them in blocks. No writer:
no line is even formatted.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson
from twisted.internet.defer import Deferred
from zope.interface import implementer

from bnproxy.binance.privacy import (
    API_KEY_HEADER,
    REDACTED,
    is_private,
    redact_query,
    shown_path,
)
from bnproxy.chain.compose import Answer
from bnproxy.chain.context import MiddlewareContext
from bnproxy.chain.interfaces import (
    IAccessLog,
    IBotLedger,
    IFastPathSafe,
    IMetricsSource,
    IMiddleware,
)
from bnproxy.chain.labels import CLIENT_HEADER as _CLIENT_HEADER
from bnproxy.chain.messages import ProxyRequest, ProxyResponse
from bnproxy.chain.options import Option

__all__ = ["REDACTED", "AccessLogger", "build_logger", "redact_query", "safe_name"]

CLIENT_HEADER = _CLIENT_HEADER.lower().encode()
_APIKEY = API_KEY_HEADER
_USER_AGENT = b"user-agent"
_UNSAFE = re.compile(r"[^A-Za-z0-9._:@+=~-]")
_REMEMBERED = 1024  # bot names and products kept formatted
_TOOK: dict[int, bytes] = {}  # "0.123ms " by microseconds, below:
_TOOK_KEPT_BELOW = 2000
_REQUESTS_REMEMBERED = 4096  # distinct public requests (each bot's targets) kept formatted




def safe_name(raw: bytes, limit: int = 64) -> str:
    """A header value as one log token: at most ``limit`` characters, anything
    but letters, digits and ``._:@+=~-`` replaced by ``_``."""
    return _UNSAFE.sub("_", raw[:limit].decode("latin-1"))


def product_of(user_agent: bytes) -> str:
    """The User-Agent's first product, without its version: ``ccxt/4.3.1
    (+https://…) Python/3.11`` is ``ccxt``; ``python-requests/2.31`` is
    ``python-requests``."""
    first = user_agent.split(None, 1)[0] if user_agent.strip() else b"-"
    return safe_name(first.split(b"/", 1)[0], 32) or "-"


# -- the per-bot ledger -----------------------------------------------------------------

ANSWERS = ("stream", "cache", "upstream", "local")
REFUSALS = ("budget", "ban", "allowlist", "bad_request", "failed")
FIELDS = ("requests", "asked", "spent", *ANSWERS, *REFUSALS)
_N = len(FIELDS)
_AT = {name: i for i, name in enumerate(FIELDS)}
_LOCAL_REASONS = {"banned": _AT["ban"], "budget": _AT["budget"], "denied": _AT["allowlist"]}
_SOURCE_AT = {name: _AT[name] for name in ANSWERS}
_LOCAL_AT = _AT["local"]
_BUDGET_AT = _AT["budget"]  # the first refusal: a refused request asked no weight
BUCKET = 10  # seconds per bucket of the windows
WINDOW_15M = 90  # buckets
WINDOW_1M = 6
MAX_BOTS = 1000  # named bots; the rest are counted as "other"
OTHER = "other"


def answered_where(response: ProxyResponse) -> int:
    """The ledger's column for an answer: where it came from, or why it was
    refused. A refusal here (``local`` with 4xx) or a failure (5xx) is not
    an answer: its weight is never asked (the rule of ``/metrics``'s
    ``bnproxy_weight_asked_total``)."""
    status, source = response.status, response.source
    if status >= 500:
        return _AT["failed"]
    if source == "local" and status >= 400:
        return _LOCAL_REASONS.get(response.detail, _AT["bad_request"])
    return _AT.get(source, _AT["local"])


class BotLedger:
    """Counts every request of every bot: since start, and in 10-second
    buckets for the last minute and the last 15 minutes. Per request: a
    few additions to the bot's row of the newest bucket; the totals since
    start are the closed buckets' (added up as each closes) plus the newest."""

    def __init__(self, clock) -> None:
        self._clock = clock
        self._total: dict[str, list[int]] = {}  # every bot's, up to the newest bucket
        self._seen: dict[str, float] = {}
        self._buckets: deque[tuple[int, dict[str, list[int]]]] = deque(maxlen=WINDOW_15M)
        self._rows: dict[str, list[int]] = {}  # the newest bucket's
        self._bucket_end = float("-inf")

    def count(self, bot: str, request: ProxyRequest, response: ProxyResponse) -> None:
        """Count ``request``, answered by ``response``, for ``bot``."""
        where = answered_where(response)
        self.add(bot, where, request.weight if where < _BUDGET_AT else 0,
                 response.weight if response.source == "upstream" else 0,
                 self._clock.seconds())

    def add(self, bot: str, where: int, asked: int, spent: int, now: float) -> None:
        """Count one request for ``bot`` at ``now``: in column ``where``
        (``answered_where``), with the weight it asked and spent."""
        if now >= self._bucket_end:
            self._new_bucket(now)
        row = self._rows.get(bot)
        if row is None:  # the bot's first request in this bucket
            if bot not in self._total:
                if len(self._total) >= MAX_BOTS:
                    bot = OTHER
                self._total.setdefault(bot, [0] * _N)
            row = self._rows.get(bot)
            if row is None:
                row = self._rows[bot] = [0] * _N
        row[0] += 1
        row[where] += 1
        if asked:
            row[1] += asked
        if spent:  # (only an upstream answer's)
            row[2] += spent
        self._seen[bot] = now

    def _new_bucket(self, now: float) -> None:
        for bot, row in self._rows.items():  # the closing bucket, into the totals
            total = self._total[bot]
            for i, n in enumerate(row):
                total[i] += n
        bucket = int(now // BUCKET)
        self._rows = {}
        self._buckets.append((bucket, self._rows))
        self._bucket_end = (bucket + 1) * BUCKET

    def bots(self) -> list[dict[str, Any]]:
        now_bucket = int(self._clock.seconds() // BUCKET)
        minute: dict[str, list[int]] = {}
        quarter: dict[str, list[int]] = {}
        for bucket, rows in self._buckets:
            age = now_bucket - bucket
            if age >= WINDOW_15M:
                continue
            for bot, row in rows.items():
                _add(quarter, bot, row)
                if age < WINDOW_1M:
                    _add(minute, bot, row)
        zero = [0] * _N
        out = [{**_named(total), "last_minute": _named(minute.get(bot, zero)),
                "last_15m": _named(quarter.get(bot, zero)), "client": bot,
                "last_seen": round(self._seen[bot], 3)}
               for bot, total in self.totals().items()]
        out.sort(key=lambda r: (-r["last_15m"]["requests"], -r["requests"], r["client"]))
        return out

    def totals(self) -> dict[str, list[int]]:
        """Since start, per bot, in ``FIELDS`` order (for ``/metrics``)."""
        rows = self._rows
        return {bot: [a + b for a, b in zip(total, rows[bot], strict=True)] if bot in rows
                else list(total) for bot, total in self._total.items()}


def _add(table: dict[str, list[int]], bot: str, row: list[int]) -> None:
    into = table.get(bot)
    if into is None:
        table[bot] = list(row)
    else:
        for i, n in enumerate(row):
            into[i] += n


def _named(row: list[int]) -> dict[str, Any]:
    return {"requests": row[0], "asked": row[1], "spent": row[2],
            "answered": {name: row[_AT[name]] for name in ANSWERS},
            "refused": {name: row[_AT[name]] for name in REFUSALS}}


@implementer(IMiddleware, IBotLedger, IMetricsSource, IFastPathSafe)
class AccessLogger:
    """Formats one access line per answer and hands it to ``output``, an
    ``IAccessLog`` (None: no access log), and counts every answer in the
    per-bot ledger (``IBotLedger``, with or without an access log)."""

    plain_next = True

    def __init__(self, name: str, clock, fmt: str, salt: bytes,
                 output: IAccessLog | None = None,
                 client_header: bytes = CLIENT_HEADER) -> None:
        self.name = name
        self._clock = clock
        self._json = fmt == "json"
        self._salt = salt
        self.output: Any = output  # an IAccessLog, or None: nothing is formatted
        self._client_header = client_header
        self._second = -1
        self._stamp = b""
        self._bots: dict[bytes, str] = {}
        self._products: dict[bytes, str] = {}
        self._requests: dict[tuple, list] = {}  # see _asked
        self._last_response: ProxyResponse | None = None  # and what it says (_said)
        self._last_said: tuple = ()
        self.ledger = BotLedger(clock)

    def bots(self) -> list[dict[str, Any]]:
        return self.ledger.bots()

    def name_of(self, request: ProxyRequest) -> str:
        label = request.header(self._client_header)
        if label:
            return self._remembered(self._bots, label, safe_name)
        return self.key_id(request) or request.client

    def collect_metrics(self) -> Any:
        from prometheus_client.core import CounterMetricFamily

        answers = CounterMetricFamily(
            "bnproxy_bot_requests", "Requests per bot (named as in the access log), by where "
            "they were answered or why refused.", labels=["client", "answer"])
        asked = CounterMetricFamily("bnproxy_bot_weight_asked",
                                    "Weight of each bot's answered requests (predicted).",
                                    labels=["client"])
        spent = CounterMetricFamily("bnproxy_bot_weight_spent",
                                    "Weight spent upstream on each bot's behalf.",
                                    labels=["client"])
        for bot, row in self.ledger.totals().items():
            for name in (*ANSWERS, *REFUSALS):
                if row[_AT[name]]:
                    answers.add_metric([bot, name], row[_AT[name]])
            asked.add_metric([bot], row[1])
            spent.add_metric([bot], row[2])
        yield from (answers, asked, spent)

    def key_id(self, request: ProxyRequest) -> str | None:
        key = request.header(_APIKEY)
        if not key:
            return None
        return self._hash(key)

    def _hash(self, key: bytes) -> str:
        return hashlib.sha256(self._salt + key).hexdigest()[:10]  # no key is kept

    def handle(self, request: ProxyRequest, next: Callable) -> Answer:
        answer = next(request)
        # as compose.then, one call less per hit (a ProxyResponse tested first:
        # isinstance of Deferred, an ABC, is slow)
        if isinstance(answer, ProxyResponse) or not isinstance(answer, Deferred):
            return self._log_one(answer, request)
        return answer.addCallback(self._log_one, request)

    def fast_handle(self, request: ProxyRequest, next: Callable) -> ProxyResponse | None:
        """``IFastPathSafe``: the same access line and ledger entry as
        ``handle`` for an answer the fast path gives."""
        answer = next(request)
        if answer is None:
            return None
        return self._log_one(answer, request)

    def _remembered(self, table: dict[bytes, str], raw: bytes, make: Callable) -> str:
        name = table.get(raw)
        if name is None:
            if len(table) >= _REMEMBERED:
                table.clear()
            name = table[raw] = make(raw)
        return name

    def _log_one(self, response: ProxyResponse, request: ProxyRequest) -> ProxyResponse:
        # What a request says for its line (the bot, its weight, the line's
        # parts) is worked out once per distinct public request: a hit's
        # request repeats, with only its time new; what an answer says, once
        # per answer (a hit's answer is handed out again until its next update).
        memo = (request.headers, request.query, request.path, request.market,
                request.method, request.client)
        asked = self._requests.get(memo)
        if asked is None:
            asked = self._asked(request, memo)
        if response is self._last_response:
            said = self._last_said
        else:
            said = self._said(response)
        now = self._clock.seconds()
        where = said[0]
        self.ledger.add(asked[0], where, asked[1] if where < _BUDGET_AT else 0, said[1], now)
        output = self.output
        if output is None:
            return response
        request_parts = asked[2] or self._request_parts(request, asked)
        answer_parts = said[2] or self._answer_parts(response)
        second = int(now)
        if second != self._second:  # formatted once a second
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)).encode()
        us = int((now - request.arrival) * 1_000_000)
        if us < 0:  # (not max(): a builtin's call, ~2,000 instructions)
            us = 0
        if self._json:
            output.write(b'{"time":"%s.%03dZ","client":%s,"ms":%d.%03d,%s,%s}\n' % (
                self._stamp, int((now - second) * 1000), request_parts[0],
                us // 1000, us % 1000, request_parts[1], answer_parts[0]))
        else:
            took = _TOOK.get(us)  # (joined: %-formatting the line costs ~3,000 instructions)
            if took is None:
                took = b"%d.%03dms " % (us // 1000, us % 1000)
                if us < _TOOK_KEPT_BELOW:
                    _TOOK[us] = took
            output.write(b"".join((self._stamp, request_parts[0], answer_parts[0], took,
                                   answer_parts[1], request_parts[1])))
        return response

    def _asked(self, request: ProxyRequest, memo: tuple) -> list:
        """[the bot, the request's weight, its line parts (None until a line
        is written), its key's hash or None, its User-Agent or None],
        remembered when the request holds nothing private (no key is kept,
        even here)."""
        key_raw = label = agent = None
        wanted = self._client_header
        for k, v in request.headers:  # one pass for the three headers read
            if k == _APIKEY:
                key_raw = v
            elif k == wanted:
                label = v
            elif k == _USER_AGENT:
                agent = v
        key = self._hash(key_raw) if key_raw else None
        if label:
            bot = self._remembered(self._bots, label, safe_name)
        else:
            bot = key or request.client
        asked = [bot, request.weight, None, key, agent]
        if key_raw is None and not request.body and not is_private(request):
            if len(self._requests) >= _REQUESTS_REMEMBERED:
                self._requests.clear()
            self._requests[memo] = asked
        return asked

    def _request_parts(self, request: ProxyRequest, asked: list) -> tuple[bytes, bytes]:
        """The request's parts of its line: as text (``Z``, the address and
        the quoted request; the key, bot and product to the line's end), as
        JSON (the address; the request's members); kept in ``asked``."""
        bot, _, _, key, agent = asked
        key = key or "-"
        product = self._remembered(self._products, agent, product_of) if agent else "-"
        query = redact_query(request)
        if self._json:
            parts = (orjson.dumps(request.client), orjson.dumps({
                "bot": bot, "ua": product, "key": key, "method": request.method,
                "market": request.market, "path": shown_path(request),
                "query": query})[1:-1])
        else:
            head = (f"\"{request.method} /{request.market}{shown_path(request)}"
                    f"{'?' if query else ''}{query}\"")
            parts = (b"Z %s %s " % (request.client.encode(),
                                    head.encode("latin-1", "backslashreplace")),
                     f"key={key} bot={bot} ua={product}\n".encode("latin-1", "backslashreplace"))
        asked[2] = parts
        return parts

    def _said(self, response: ProxyResponse) -> tuple:
        """(the ledger's column, the weight spent, None: the line parts not
        made yet) of an answer; the last one's remembered."""
        if response.status < 400:  # the common case: answered
            where = _SOURCE_AT.get(response.source, _LOCAL_AT)
        else:
            where = answered_where(response)
        said = (where, response.weight if response.source == "upstream" else 0, None)
        self._last_response, self._last_said = response, said
        return said

    def _answer_parts(self, response: ProxyResponse) -> tuple[bytes, ...]:
        """The answer's parts of its line: as text (status and bytes;
        source, cache status and weight), as JSON (its members). Kept with
        the last answer."""
        cache = b"-"
        for k, v in response.headers:
            if k == b"x-cache":
                cache = v
                break
        cache_text = cache.decode("latin-1")
        parts: tuple[bytes, ...]
        if self._json:
            parts = (orjson.dumps({
                "status": response.status, "bytes": len(response.body),
                "source": response.source, "cache": cache_text,
                "weight": response.weight, "detail": response.detail})[1:-1],)
        else:
            parts = (b"%d %d " % (response.status, len(response.body)),
                     f"source={response.source} cache={cache_text} weight={response.weight} "
                     .encode("latin-1", "backslashreplace"))
        if response is self._last_response:
            self._last_said = (*self._last_said[:2], parts)
        return parts


OPTIONS = (
    Option("format", "str", None, "Access-line format, text or json; default --log-format.",
           choices=("text", "json")),
    Option("key_salt", "str", None, "A fixed salt for the API-key hash, so hashes survive "
           "restarts; default random per start."),
    Option("client_header", "str", CLIENT_HEADER.decode(), "The header that names a bot in "
           "the access line (else its key hash, else its address)."),
)


def build_logger(name: str, settings: dict[str, Any],
                 context: MiddlewareContext) -> AccessLogger:
    fmt = settings["format"] or getattr(context, "log_format", "text")
    salt = (settings["key_salt"] or "").encode() or os.urandom(16)
    header = settings["client_header"] or CLIENT_HEADER.decode()
    return AccessLogger(name, context.reactor, fmt, salt,
                        output=getattr(context, "access_log", None),
                        client_header=header.lower().encode("latin-1"))
