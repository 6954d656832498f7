"""What makes a request private: it then is never cached, coalesced,
retried, logged in full, or shown to another client."""

from __future__ import annotations

import hashlib
import os
import re
from collections import OrderedDict
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, quote

import attrs

if TYPE_CHECKING:
    from bnproxy.chain.messages import ProxyRequest

API_KEY_HEADER = b"x-mbx-apikey"
PRIVATE_HEADERS = (API_KEY_HEADER, b"authorization", b"cookie")
PRIVATE_PARAMS = frozenset({"signature", "timestamp", "recvwindow", "listenkey", "apikey"})
SECRET_PARAMS = frozenset({"signature", "listenkey", "apikey"})


_PRIVATE_BYTES = tuple(name.encode() for name in PRIVATE_PARAMS)
# One search for every name, case-insensitive (ASCII, as bytes.lower()):
# ``name in raw`` per name would cost a formatted TypeError each in CPython.
_PRIVATE_NAME = re.compile(b"|".join(re.escape(n) for n in _PRIVATE_BYTES), re.IGNORECASE)


def _has_private_param(raw: bytes) -> bool:
    if not raw:
        return False
    # No name encoded: a private one would show as it is.
    if raw.find(b"%") == -1 and _PRIVATE_NAME.search(raw) is None:
        return False
    return any(k.lower() in PRIVATE_PARAMS
               for k, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True))


def is_private(request: ProxyRequest) -> bool:
    """True if the request carries any private marker: an API key,
    Authorization or Cookie header, or a ``signature``, ``timestamp``,
    ``recvWindow``, ``listenKey`` or ``apiKey`` parameter (query or body),
    or is for an endpoint that is not public."""
    if request.endpoint is None or not request.endpoint.public:
        return True
    if any(k in PRIVATE_HEADERS for k, _ in request.headers):
        return True
    return _has_private_param(request.query) or _has_private_param(request.body)


# -- keyed public requests ------------------------------------------------------------------
# python-binance's ``Client(key, secret)`` and binance-connector's ``Spot(api_key=…)`` send
# X-MBX-APIKEY on every call, public ones included. Binance ignores the key on endpoints
# whose security type is NONE (FACTS.md §2.1), so once Binance accepted a key such a request
# is answered like an anonymous one; a key not yet accepted goes to Binance with the key, so
# whatever Binance says about it reaches the bot unchanged.

_OTHER_PRIVATE_HEADERS = frozenset(PRIVATE_HEADERS) - {API_KEY_HEADER}


def key_only(request: ProxyRequest) -> bytes | None:
    """The API key of a request whose only private marker is one
    X-MBX-APIKEY header, on an endpoint whose security type is NONE (no
    signature, timestamp or other private parameter, no Authorization or
    Cookie); None for any other request."""
    endpoint = request.endpoint
    if endpoint is None or not endpoint.public:
        return None
    key = None
    for k, v in request.headers:
        if k == API_KEY_HEADER:
            if key is not None:
                return None  # two keys: ambiguous
            key = v
        elif k in _OTHER_PRIVATE_HEADERS:
            return None
    if not key or _has_private_param(request.query) or _has_private_param(request.body):
        return None
    return key


def without_key(request: ProxyRequest) -> ProxyRequest:
    """``request`` without its X-MBX-APIKEY header: what an anonymous bot sends."""
    return attrs.evolve(request, headers=tuple(
        (k, v) for k, v in request.headers if k != API_KEY_HEADER))


class AcceptedKeys:
    """API keys Binance answered with a 2xx, remembered as salted hashes
    (the salt is random per process; nothing is written anywhere), the
    ``limit`` most recent only. Shared by the cache and the streams
    (``MiddlewareContext.accepted_keys``)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._salt = os.urandom(16)
        self._seen: OrderedDict[bytes, None] = OrderedDict()

    def _digest(self, key: bytes) -> bytes:
        return hashlib.blake2b(key, key=self._salt, digest_size=16).digest()

    def accepted(self, key: bytes) -> bool:
        """True if Binance answered a request with ``key`` with a 2xx."""
        return self._digest(key) in self._seen

    def accept(self, key: bytes) -> None:
        digest = self._digest(key)
        self._seen[digest] = None
        self._seen.move_to_end(digest)
        while len(self._seen) > self.limit:
            self._seen.popitem(last=False)

    def observe(self, key: bytes, status: int, source: str) -> None:
        """Learn from an answer to a request that carried ``key``: a 2xx from
        Binance accepts it."""
        if 200 <= status < 300 and source == "upstream":
            self.accept(key)

    def public_view(self, request: ProxyRequest) -> ProxyRequest | None:
        """``request`` as an anonymous one when its only private marker is an
        accepted API key (``key_only``), else None."""
        key = key_only(request)
        if key is None or not self.accepted(key):
            return None
        return without_key(request)

    def __len__(self) -> int:
        return len(self._seen)


# -- redaction, for anything shown to people (the access log, the dashboard) -----------------

REDACTED = "[redacted]"
_SECRET_NAME = re.compile(b"|".join(re.escape(n.encode()) for n in SECRET_PARAMS), re.IGNORECASE)
_plain_queries: dict[bytes, str] = {}  # raw query -> itself as text, when it hides no secret
_REMEMBERED = 1024


def redact_query(request: ProxyRequest) -> str:
    """The query as sent, unless it names a secret parameter (``signature``,
    ``listenKey``, ``apiKey``): then rebuilt with those values replaced by
    ``[redacted]``."""
    raw = request.query
    if not raw:
        return ""
    text = _plain_queries.get(raw)
    if text is not None:  # a query seen before (a cache hit's) is not searched again
        return text
    if raw.find(b"%") == -1 and _SECRET_NAME.search(raw) is None:  # no secret can hide in it
        if len(_plain_queries) >= _REMEMBERED:
            _plain_queries.clear()
        text = _plain_queries[raw] = raw.decode("latin-1")
        return text
    pairs = request.param_list
    if not any(k.lower() in SECRET_PARAMS for k, _ in pairs):
        return request.query.decode("latin-1")
    return "&".join(f"{quote(k, safe='')}="
                    f"{REDACTED if k.lower() in SECRET_PARAMS else quote(v, safe=',[]')}"
                    for k, v in pairs)


_SECRET_IN_TEXT = re.compile(
    r"(?i)\b(" + "|".join(sorted(SECRET_PARAMS)) + r")(\s*[=:]\s*\"?)[^\s&\"',;]+")
# The shortest token taken for a key (API keys and futures listenKeys are 64
# alphanumerics, signatures 64 hex): redacted in text, relayed as a listenKey.
KEY_LIKE_LENGTH = 32
_LONG_TOKEN = re.compile(rf"\b[A-Za-z0-9]{{{KEY_LIKE_LENGTH},}}\b")


def redact_text(text: str, limit: int = 300) -> str:
    """Free text from outside (an upstream's error message) as it may be
    shown to people: the values of secret parameters and any long
    key-like token replaced by ``[redacted]``, at most ``limit`` characters."""
    text = _LONG_TOKEN.sub(REDACTED, _SECRET_IN_TEXT.sub(r"\1\2" + REDACTED, text[:4 * limit]))
    return text if len(text) <= limit else text[:limit] + "…"


def shown_path(request: ProxyRequest) -> str:
    """The request's path as it may be shown to people: a documented
    endpoint's path as it is; any other path with each key-like segment (a
    listenKey in ``/ws/<listenKey>``, say) replaced by ``[redacted]``."""
    if request.endpoint is not None:
        return request.path
    return "/".join(REDACTED if _LONG_TOKEN.fullmatch(part) else part
                    for part in request.path.split("/"))
