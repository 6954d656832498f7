"""Which requests the cache may answer, and under which key."""

from __future__ import annotations

import orjson

from bnproxy.binance.privacy import is_private
from bnproxy.chain.messages import ProxyRequest

# Request headers that change Binance's answer.
VARYING_HEADERS = (b"x-mbx-time-unit", b"x-mbx-sbe", b"accept")


def cache_key(request: ProxyRequest) -> tuple | None:
    """The key of a cacheable request, or None when it must bypass the cache:
    not a GET, not a public endpoint with a cache class, any private marker,
    or an ambiguous query (a parameter given twice, a malformed ``symbols``).

    Parameter order does not matter, and the two encodings of a ``symbols``
    JSON array are one key.
    """
    endpoint = request.endpoint
    if (request.method != "GET" or endpoint is None or endpoint.cache_class is None
            or request.body or is_private(request)):
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
