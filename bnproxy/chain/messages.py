"""The two values that travel through the middleware chain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload
from urllib.parse import parse_qsl

import attrs

from bnproxy.binance.endpoints import Endpoint
from bnproxy.binance.errors import error_body

# Headers are kept as a tuple of (lower-case name, value) byte pairs, in order.
HeaderPairs = tuple[tuple[bytes, bytes], ...]

# Marks a request the proxy makes itself (snapshots, backfills, refreshes).
# The HTTP side strips it from every bot request, so it cannot be forged.
INTERNAL = b"x-bnproxy-internal"


def header_value(headers: HeaderPairs, name: bytes) -> bytes | None:
    name = name.lower()
    for k, v in headers:
        if k == name:
            return v
    return None


def without_headers(headers: HeaderPairs, *names: bytes) -> HeaderPairs:
    drop = {n.lower() for n in names}
    return tuple((k, v) for k, v in headers if k not in drop)


def _first_header(self: ProxyRequest | ProxyResponse, name: bytes) -> bytes | None:
    """The first value of header ``name`` (any case), or None: the ``header``
    method of both messages (``header_value``, inline: one call less per use)."""
    name = name.lower()
    for k, v in self.headers:
        if k == name:
            return v
    return None


_T = TypeVar("_T")


class Once(Generic[_T]):
    """``functools.cached_property`` without the lock Python 3.11 takes on
    every first read (removed in 3.12): computed on the first read and
    stored in the instance's ``__dict__``, which later reads find first
    (a non-data descriptor). Values are pure functions of a frozen
    message, so two threads computing one at once would store the same."""

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> Once[_T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> _T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.func(instance)
        return value


# Weights by (id(endpoint), raw query), the endpoint kept to check identity.
_WEIGHTS: dict[tuple[int, bytes], tuple[Endpoint, int]] = {}
_WEIGHTS_REMEMBERED = 4096


# Not slotted: a cached property (``Once``) on a slotted attrs class gives the class a
# ``__getattr__``, which turns every attribute read on the hot path into a
# slow generic lookup (CPython's ``slot_tp_getattr_hook``, no specialisation).
@attrs.frozen(slots=False)
class ProxyRequest:
    """One bot request, as received.

    ``query`` holds the raw query bytes exactly as the bot sent them
    (signatures cover them: never re-encode); ``path`` is the Binance path
    after any explicit market mount (``/spot/api/v3/ping`` has path
    ``/api/v3/ping``); ``client`` is the socket peer, or the right-most
    untrusted forwarded hop when the peer is a trusted proxy;
    ``endpoint`` is ``None`` for a path Binance does not document (treated as
    private). ``params`` are the query parameters, first occurrence wins.
    """

    method: str
    market: str
    path: str
    query: bytes
    headers: HeaderPairs
    body: bytes
    client: str
    arrival: float
    endpoint: Endpoint | None = None
    egress: str | None = None  # the source address chosen by the governor (None: default)

    header = _first_header

    @Once
    def param_list(self) -> tuple[tuple[str, str], ...]:
        """All query parameters in order, percent-decoded."""
        return tuple(parse_qsl(self.query.decode("latin-1"), keep_blank_values=True))

    @Once
    def params(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in self.param_list:
            out.setdefault(k, v)
        return out

    @Once
    def weight(self) -> int:
        """The request weight Binance charges for it (the endpoint's rule on
        its parameters; 1 for a path Binance does not document), computed
        once per request, and for a public endpoint remembered per
        (endpoint, raw query) across requests (no query parsing for a query
        seen before). Binance reads a
        parameter from the query string or from a form body (the query's
        wins when both send it), so a ``computeCommissionRates`` or
        ``symbol`` in a POST body counts."""
        endpoint = self.endpoint
        if endpoint is None:
            return 1
        if self.body and self.method != "GET":
            params = dict(self.params)
            for k, v in parse_qsl(self.body.decode("latin-1"), keep_blank_values=True):
                params.setdefault(k, v)
            return endpoint.weight(params)
        if not endpoint.public:  # signed queries are each new, and hold secrets: not kept
            return endpoint.weight(self.params)
        key = (id(endpoint), self.query)
        known = _WEIGHTS.get(key)
        if known is not None and known[0] is endpoint:
            return known[1]
        if len(_WEIGHTS) >= _WEIGHTS_REMEMBERED:
            _WEIGHTS.clear()
        weight = endpoint.weight(self.params)
        _WEIGHTS[key] = (endpoint, weight)
        return weight

    @property
    def target(self) -> bytes:
        """Path plus raw query, as sent upstream."""
        p = self.path.encode("latin-1")
        return p + b"?" + self.query if self.query else p


@attrs.frozen
class ProxyResponse:
    """One answer to a bot.

    ``source`` says who produced it: ``upstream``, ``cache``, ``stream`` or
    ``local`` (the proxy itself); ``detail`` is a short word for logs
    (``HIT``, ``banned``, ...). ``weight`` is the request weight the answer
    cost upstream (0 unless it came from Binance).
    """

    status: int
    headers: HeaderPairs
    body: bytes
    source: str = "upstream"
    detail: str = ""
    weight: int = 0

    header = _first_header


JSON = (b"content-type", b"application/json;charset=UTF-8")


def local_error(status: int, code: int, msg: str, headers: HeaderPairs = (),
                detail: str = "") -> ProxyResponse:
    """An error the proxy makes, in Binance's ``{"code", "msg"}`` shape."""
    return ProxyResponse(status, (JSON, *headers), error_body(code, msg), "local",
                         detail or str(status))


def shareable(response: ProxyResponse) -> bool:
    """Whether an answer may be kept and given to other bots (the cache, a
    held exchangeInfo): a 200 with no cookie, not marked ``private`` or
    ``no-store``, not ``Vary: *``."""
    if response.status != 200 or response.header(b"set-cookie") is not None:
        return False
    cc = (response.header(b"cache-control") or b"").lower()
    if b"private" in cc or b"no-store" in cc:
        return False
    return (response.header(b"vary") or b"").strip() != b"*"
