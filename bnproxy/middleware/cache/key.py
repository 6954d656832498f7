"""Which requests the cache may answer, and under which key."""

from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

import orjson

from bnproxy.binance.marketdata import VARYING_HEADERS
from bnproxy.binance.privacy import is_private
from bnproxy.chain.messages import ProxyRequest

_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def exact_query(query: bytes) -> bool:
    """True when the raw query decodes to one text only: every ``%`` starts a
    valid escape and the decoded bytes are UTF-8. Otherwise two different
    queries (``X%FF``, ``X%FE``) would decode to the same replacement
    characters and share a key."""
    if b"%" not in query and query.isascii():
        return True
    if _BAD_ESCAPE.search(query):
        return False
    try:
        unquote_to_bytes(query.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def cache_key(request: ProxyRequest) -> tuple | None:
    """The key of a cacheable request, or None when it must bypass the cache:
    not a GET, not a public endpoint with a cache class, any private marker,
    or an ambiguous query (a parameter given twice, a malformed ``symbols``,
    invalid percent-encoding or bytes that are not UTF-8).

    Parameter order does not matter, and the two encodings of a ``symbols``
    JSON array are one key.
    """
    endpoint = request.endpoint
    if (request.method != "GET" or endpoint is None or endpoint.cache_class is None
            or request.body or is_private(request) or not exact_query(request.query)):
        return None
    pairs = request.param_list
    names = [k for k, _ in pairs]
    if len(set(names)) != len(names):
        return None
    params = []
    for k, v in pairs:
        if k == "symbols":
            try:
                value = orjson.loads(v)
            except orjson.JSONDecodeError:
                return None
            v = orjson.dumps(value).decode()
        params.append((k, v))
    params.sort()
    headers = []
    for name in VARYING_HEADERS:
        value = request.header(name)
        if value is not None:
            if name == b"accept" and b"sbe" not in value.lower():
                continue
            headers.append((name, value.strip().lower()))
    return (request.market, request.path, tuple(params), tuple(headers))
