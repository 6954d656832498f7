"""The one table of Binance REST endpoints: security type, weight, cache class.

Built from ``endpoints.csv`` (every documented REST operation, see
``shared/binance/endpoints.csv``) plus hand-written weight rules for the
market-data endpoints whose weight depends on parameters (FACTS.md §1).
Unknown paths are not in the table: callers treat them as private.
"""

from __future__ import annotations

import csv
import functools
import re
from collections.abc import Callable, Mapping
from importlib import resources

import attrs
import orjson

NONE = "NONE"
MARKET_DATA = "MARKET_DATA"  # API key only, no signature
USER_STREAM = "USER_STREAM"  # API key only, listenKey management
SIGNED = "SIGNED"

_HOST_MARKET = {
    "api.binance.com": "spot",
    "fapi.binance.com": "usdm",
    "dapi.binance.com": "coinm",
    "eapi.binance.com": "options",
    "papi.binance.com": "pm",
}

Params = Mapping[str, str]
WeightFn = Callable[[Params], int]


@attrs.frozen
class Endpoint:
    """One REST operation.

    ``weight(params)`` predicts the request weight Binance will charge for a
    request with these (first-occurrence) query parameters. ``cache_class``
    names the TTL group the cache uses (``depth``, ``klines``, ...), or is
    ``None`` for endpoints that are never cached.
    """

    market: str
    method: str
    path: str
    security: str
    title: str
    weight_fn: WeightFn = attrs.field(repr=False, eq=False)
    cache_class: str | None = None

    @property
    def public(self) -> bool:
        return self.security == NONE

    def weight(self, params: Params) -> int:
        try:
            return max(0, int(self.weight_fn(params)))
        except (TypeError, ValueError):
            return max(0, int(self.weight_fn({})))


def _const(n: int) -> WeightFn:
    return lambda p: n


def _int(p: Params, name: str, default: int) -> int:
    try:
        return int(p.get(name, default))
    except (TypeError, ValueError):
        return default


def symbols_count(p: Params) -> int | None:
    """Number of symbols in a ``symbols`` JSON array parameter, or None."""
    raw = p.get("symbols")
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return len(value) if isinstance(value, list) else None


def _spot_depth(p: Params) -> int:
    limit = _int(p, "limit", 100)
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


def _futures_depth(p: Params) -> int:
    limit = _int(p, "limit", 500)
    if limit <= 50:
        return 2
    if limit <= 100:
        return 5
    if limit <= 500:
        return 10
    return 20


def _futures_klines(p: Params) -> int:
    limit = _int(p, "limit", 500)
    if limit < 100:
        return 1
    if limit < 500:
        return 2
    if limit <= 1000:
        return 5
    return 10


def _spot_ticker24(p: Params) -> int:
    if "symbol" in p:
        return 2
    n = symbols_count(p)
    if n is None:
        return 80
    return 2 if n <= 20 else 40 if n <= 100 else 80


def _per_symbol(each: int, cap: int, above: int) -> WeightFn:
    def fn(p: Params) -> int:
        n = 1 if "symbol" in p else (symbols_count(p) or 1)
        return cap if n > above else each * n
    return fn


def _with_symbol(with_: int, without: int) -> WeightFn:
    return lambda p: with_ if "symbol" in p else without


def _execution_rules(p: Params) -> int:
    if "symbol" in p:
        return 2
    n = symbols_count(p)
    if n is not None:
        return min(40, 2 * n)
    return 40


_KLINE_PATHS = ("klines", "continuousKlines", "indexPriceKlines", "markPriceKlines",
                "premiumIndexKlines")

# (market, path) -> (weight function, cache class); GET only.
_MARKET_DATA: dict[tuple[str, str], tuple[WeightFn, str | None]] = {
    ("spot", "/api/v3/ping"): (_const(1), "public"),
    ("spot", "/api/v3/time"): (_const(1), None),
    ("spot", "/api/v3/exchangeInfo"): (_const(20), "exchangeInfo"),
    ("spot", "/api/v3/executionRules"): (_execution_rules, "exchangeInfo"),
    ("spot", "/api/v3/depth"): (_spot_depth, "depth"),
    ("spot", "/api/v3/trades"): (_const(25), "public"),
    ("spot", "/api/v3/historicalTrades"): (_const(25), "public"),
    ("spot", "/api/v3/historicalBlockTrades"): (_const(25), None),
    ("spot", "/api/v3/aggTrades"): (_const(4), "public"),
    ("spot", "/api/v3/klines"): (_const(2), "klines"),
    ("spot", "/api/v3/uiKlines"): (_const(2), "klines"),
    ("spot", "/api/v3/avgPrice"): (_const(2), "price"),
    ("spot", "/api/v3/ticker/24hr"): (_spot_ticker24, "ticker24hr"),
    ("spot", "/api/v3/ticker/tradingDay"): (_per_symbol(4, 200, 50), "ticker24hr"),
    ("spot", "/api/v3/ticker/price"): (_with_symbol(2, 4), "price"),
    ("spot", "/api/v3/ticker/bookTicker"): (_with_symbol(2, 4), "bookTicker"),
    ("spot", "/api/v3/ticker"): (_per_symbol(4, 200, 50), "ticker24hr"),
    ("spot", "/api/v3/referencePrice"): (_const(2), "price"),
    ("spot", "/api/v3/referencePrice/calculation"): (_const(2), "price"),
}


def _futures_table(market: str, prefix: str) -> None:
    coinm = market == "coinm"
    rows: dict[str, tuple[WeightFn, str | None]] = {
        "ping": (_const(1), "public"),
        "time": (_const(1), None),
        "exchangeInfo": (_const(1), "exchangeInfo"),
        "depth": (_futures_depth, "depth"),
        "rpiDepth": (_const(20), "depth"),
        "trades": (_const(5), "public"),
        "historicalTrades": (_const(20), None),
        "aggTrades": (_const(20), "public"),
        "premiumIndex": (_const(10) if coinm else _with_symbol(1, 10), "price"),
        "fundingRate": (_const(1) if coinm else _const(0), "public"),
        "fundingInfo": (_const(0), "exchangeInfo"),
        "ticker/24hr": (_with_symbol(1, 40), "ticker24hr"),
        "ticker/price": (_with_symbol(1, 2), "price"),
        "ticker/bookTicker": (_with_symbol(2, 5), "bookTicker"),
        "openInterest": (_const(1), "public"),
        "indexInfo": (_const(1), "public"),
        "assetIndex": (_with_symbol(1, 10), "public"),
        "constituents": (_const(2 if not coinm else 1), "public"),
        "insuranceBalance": (_const(1), "public"),
        "symbolAdlRisk": (_const(1), "public"),
        "tradingSchedule": (_const(5), "exchangeInfo"),
    }
    for k in _KLINE_PATHS:
        rows[k] = (_futures_klines, "klines")
    for path, value in rows.items():
        _MARKET_DATA[(market, f"{prefix}/{path}")] = value
    if not coinm:
        _MARKET_DATA[(market, "/fapi/v2/ticker/price")] = (_with_symbol(1, 2), "price")


_futures_table("usdm", "/fapi/v1")
_futures_table("coinm", "/dapi/v1")

_WEIGHT_RE = re.compile(r"Weight[^0-9]{0,40}?(\d+)")


def _doc_weight(text: str) -> int:
    m = _WEIGHT_RE.search(text)
    return int(m.group(1)) if m else 1


def _security(path: str, raw: str, signed: bool) -> str:
    if path.startswith("/sapi/"):
        # FACTS.md: treat every /sapi path as private.
        return SIGNED if signed or raw in ("USER_DATA", "TRADE", "SIGNED") else MARKET_DATA
    if raw == NONE:
        return NONE
    if raw in (MARKET_DATA, "API_KEY"):
        return MARKET_DATA
    if raw == USER_STREAM:
        return USER_STREAM
    return SIGNED


class EndpointTable:
    """Lookup of :class:`Endpoint` by market, method and path."""

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self._by_key = {(e.market, e.method, e.path): e for e in endpoints}

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self):
        return iter(self._by_key.values())

    def lookup(self, market: str, method: str, path: str) -> Endpoint | None:
        """The endpoint, or None for a path Binance does not document."""
        return self._by_key.get((market, method, path))


@functools.cache
def load_endpoints() -> EndpointTable:
    """The packaged ``endpoints.csv`` as an :class:`EndpointTable` (read once
    per process: the table is never changed)."""
    text = resources.files("bnproxy.binance").joinpath("endpoints.csv").read_text("utf-8")
    endpoints = []
    for row in csv.DictReader(text.splitlines()):
        market = _HOST_MARKET[row["host"]]
        path = row["path"]
        method = row["method"]
        security = _security(path, row["security"], row["signature_required"] == "yes")
        rule = _MARKET_DATA.get((market, path)) if method == "GET" else None
        if rule is not None:
            weight_fn, cache_class = rule
        else:
            weight_fn = _const(_doc_weight(row["weight_doc"]))
            if path.startswith("/futures/data/"):
                weight_fn = _const(1 if market == "coinm" else 0)
            cache_class = "public" if security == NONE and method == "GET" else None
        if security != NONE:
            cache_class = None
        endpoints.append(Endpoint(market, method, path, security, row["title"],
                                  weight_fn, cache_class))
    return EndpointTable(endpoints)
