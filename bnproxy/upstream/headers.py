"""Which headers cross the proxy, in each direction (allowlists).

Hop-by-hop headers never cross: Connection, every header Connection names,
Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade and Proxy-*. Host is
never passed on: the upstream client writes its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bnproxy.binance import headers as binance_headers

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"te", b"trailer", b"trailers",
    b"transfer-encoding", b"upgrade", b"proxy-connection", b"proxy-authenticate",
    b"proxy-authorization", b"host", b"content-length",
})

# To Binance: the key, content type, and the headers that change its answer.
REQUEST_ALLOWED = frozenset({
    b"content-type", b"accept-language", b"user-agent", *binance_headers.REQUEST_HEADERS,
})
REQUEST_ALLOWED_PREFIXES = binance_headers.REQUEST_PREFIXES

# To the bot: content headers, Binance's X-MBX-*/X-SAPI-*, Retry-After,
# caching metadata, the redirect target of a relayed 3xx.
RESPONSE_ALLOWED = frozenset({
    b"content-type", b"content-encoding", b"content-language", b"retry-after",
    b"location", b"cache-control", b"expires", b"last-modified", b"etag", b"vary",
    b"set-cookie",
})
RESPONSE_ALLOWED_PREFIXES = binance_headers.RESPONSE_PREFIXES


def _connection_named(pairs: list[tuple[bytes, bytes]]) -> set[bytes]:
    named: set[bytes] = set()
    for k, v in pairs:
        if k == b"connection":
            named.update(t.strip().lower() for t in v.split(b",") if t.strip())
    return named


def filter_headers(pairs: Iterable[tuple[bytes, bytes]], allowed: frozenset[bytes],
                   prefixes: tuple[bytes, ...]) -> tuple[tuple[bytes, bytes], ...]:
    """Keep allowlisted headers (lower-cased names), dropping hop-by-hop ones
    and any header the ``Connection`` header names."""
    lowered = [(k.lower(), v) for k, v in pairs]
    drop = HOP_BY_HOP
    for k, _ in lowered:
        if k == b"connection":  # rare: the set of named headers only then
            drop = HOP_BY_HOP | _connection_named(lowered)
            break
    return tuple(
        (k, v) for k, v in lowered
        if k not in drop and (k in allowed or k.startswith(prefixes))
        and (v.strip() or k != b"content-encoding")  # Twisted's decoder can leave it empty
    )


_NAMES_REMEMBERED = 1024


def _filter_known(pairs: Sequence[tuple[bytes, bytes]], memo: dict[bytes, bytes | None],
                  allowed: frozenset[bytes], prefixes: tuple[bytes, ...],
                  ) -> tuple[tuple[bytes, bytes], ...]:
    """``filter_headers`` with the verdict on each name (its lower-case
    spelling, or None: dropped) remembered in ``memo``: one dict lookup per
    header on the path every request takes. Only names are remembered,
    never values. A message with a ``Connection`` header takes
    ``filter_headers`` (the headers it names are dropped too)."""
    out = []
    for k, v in pairs:
        name = memo.get(k, k)
        if name is k:  # not seen before (a remembered name is another object)
            lower = k.lower()
            if lower == b"connection":
                return filter_headers(pairs, allowed, prefixes)
            name = lower if lower not in HOP_BY_HOP and (
                lower in allowed or lower.startswith(prefixes)) else None
            if len(memo) >= _NAMES_REMEMBERED:
                memo.clear()
            memo[bytes(k)] = name
            if name is None:
                continue
        elif name is None:
            continue
        if name == _CONTENT_ENCODING and not v.strip():
            continue  # Twisted's decoder can leave it empty
        out.append((name, v))
    return tuple(out)


_CONTENT_ENCODING = b"content-encoding"
_REQUEST_NAMES: dict[bytes, bytes | None] = {}
_RESPONSE_NAMES: dict[bytes, bytes | None] = {}


def request_headers(pairs: Sequence[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    return _filter_known(pairs, _REQUEST_NAMES, REQUEST_ALLOWED, REQUEST_ALLOWED_PREFIXES)


def response_headers(pairs: Sequence[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    return _filter_known(pairs, _RESPONSE_NAMES, RESPONSE_ALLOWED, RESPONSE_ALLOWED_PREFIXES)
