"""The one table of Binance REST endpoints: security type, weight, cache class.

Built from ``endpoints.csv`` (every documented REST operation, see
``shared/binance/endpoints.csv``; its ``weight_doc`` column is the page's
weight text, whose first IP weight is a plain row's weight) plus a
hand-written rule for every operation whose documented weight depends on
the request (symbol sent or not, ``limit`` bands, ``symbols`` counts,
``orderId``, ``computeCommissionRates``, ...): ``WEIGHTS.md`` names the page
of each. Unknown paths are not in the table: callers treat them as private.
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
    """Number of symbols in a ``symbols`` JSON array parameter, or None.

    A list Binance would refuse as JSON but that still names symbols
    (``[BTCUSDT,ETHUSDT]``) is counted by its commas: a weight is never
    predicted below what the names in it would cost."""
    raw = p.get("symbols")
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        inner = raw.strip().removeprefix("[").removesuffix("]").strip()
        return len(inner.split(",")) if inner else None
    return len(value) if isinstance(value, list) else None


def _given(p: Params, name: str) -> bool:
    return bool(p.get(name))


def _with(name: str, with_: int, without: int) -> WeightFn:
    """``with_`` when the parameter ``name`` is sent (not empty), else ``without``."""
    return lambda p: with_ if _given(p, name) else without


def _with_symbol(with_: int, without: int) -> WeightFn:
    return _with("symbol", with_, without)


def _flag(name: str, on: int, off: int) -> WeightFn:
    """``on`` when the boolean parameter ``name`` is sent and not ``false``."""
    return lambda p: on if name in p and p[name].strip().lower() != "false" else off


def _limit_bands(default: int, bands: tuple[tuple[int, int], ...], above: int) -> WeightFn:
    """By ``limit`` (``default`` when absent): the weight of the first band
    whose upper bound (inclusive) holds it, ``above`` past the last."""
    def fn(p: Params) -> int:
        limit = _int(p, "limit", default)
        return next((w for upper, w in bands if limit <= upper), above)
    return fn


# Spot /api/v3/depth: 1-100 → 5, 101-500 → 25, 501-1000 → 50, 1001-5000 → 250.
_spot_depth = _limit_bands(100, ((100, 5), (500, 25), (1000, 50)), 250)
# USD-M and COIN-M depth: 5/10/20/50 → 2, 100 → 5, 500 → 10, 1000 → 20 (default 500).
_futures_depth = _limit_bands(500, ((50, 2), (100, 5), (500, 10)), 20)
# Options depth: 10/20/50 → 1, 100 → 5, 500 → 10, 1000 → 20 (default 100).
_options_depth = _limit_bands(100, ((50, 1), (100, 5), (500, 10)), 20)
# Futures klines family: [1,100) → 1, [100,500) → 2, [500,1000] → 5, above → 10.
_futures_klines = _limit_bands(500, ((99, 1), (499, 2), (1000, 5)), 10)


def _spot_ticker24(p: Params) -> int:
    if _given(p, "symbol"):
        return 2
    n = symbols_count(p)
    if n is None:
        return 80
    return 2 if n <= 20 else 40 if n <= 100 else 80


def _per_symbol(each: int, cap: int, above: int) -> WeightFn:
    """``each`` per symbol asked (``symbol`` or ``symbols``), ``cap`` once
    more than ``above`` are asked; an unreadable ``symbols`` costs ``cap``."""
    def fn(p: Params) -> int:
        if _given(p, "symbol"):
            return each
        n = symbols_count(p)
        if n is None:
            return cap if "symbols" in p else each
        return cap if n > above else each * max(1, n)
    return fn


def _execution_rules(p: Params) -> int:
    if _given(p, "symbol"):
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
    ("options", "/eapi/v1/depth"): (_options_depth, "public"),
    ("options", "/eapi/v1/ticker"): (_with_symbol(1, 40), "public"),
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
        "historicalTrades": (_const(200), None),
        "aggTrades": (_const(20), "public"),
        "premiumIndex": (_const(10) if coinm else _with_symbol(1, 10), "price"),
        "fundingRate": (_const(1) if coinm else _const(0), "public"),
        # COIN-M's page gives no weight: 1, as its fundingRate (WEIGHTS.md).
        "fundingInfo": (_const(1) if coinm else _const(0), "exchangeInfo"),
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

# Signed and other non-market-data operations whose weight is not one plain
# number in Binance's docs (WEIGHTS.md names the page of each), by
# (market, method, path).
_RULES: dict[tuple[str, str, str], WeightFn] = {
    ("spot", "GET", "/api/v3/openOrders"): _with_symbol(6, 80),
    ("spot", "GET", "/api/v3/myTrades"): _with("orderId", 5, 20),
    ("spot", "GET", "/api/v3/myPreventedMatches"): _with("preventedMatchId", 2, 20),
    ("spot", "POST", "/api/v3/order/test"): _flag("computeCommissionRates", 20, 1),
    ("spot", "POST", "/api/v3/sor/order/test"): _flag("computeCommissionRates", 20, 1),
    # Futures orders cost order-count, not IP weight; the test order's page
    # gives no weight: 1.
    ("usdm", "POST", "/fapi/v1/order"): _const(0),
    ("usdm", "PUT", "/fapi/v1/order"): _const(0),
    ("usdm", "POST", "/fapi/v1/algoOrder"): _const(0),
    ("usdm", "POST", "/fapi/v1/order/test"): _const(1),
    ("coinm", "POST", "/dapi/v1/order"): _const(0),
    ("usdm", "GET", "/fapi/v1/openOrders"): _with_symbol(1, 40),
    ("usdm", "GET", "/fapi/v1/openAlgoOrders"): _with_symbol(1, 40),
    ("usdm", "GET", "/fapi/v1/forceOrders"): _with_symbol(20, 50),
    ("usdm", "GET", "/fapi/v1/apiTradingStatus"): _with_symbol(1, 10),
    ("coinm", "GET", "/dapi/v1/openOrders"): _with_symbol(1, 40),
    # COIN-M's pages give the weight before and after the "CM migration":
    # the larger of the two (WEIGHTS.md).
    ("coinm", "GET", "/dapi/v1/allOrders"): _with_symbol(20, 40),
    ("coinm", "GET", "/dapi/v1/userTrades"): _with_symbol(20, 40),
    ("coinm", "GET", "/dapi/v1/forceOrders"): _with_symbol(20, 50),
    ("coinm", "GET", "/dapi/v2/leverageBracket"): _with_symbol(1, 2),
    ("options", "GET", "/eapi/v1/openOrders"): _with_symbol(1, 40),
    ("pm", "GET", "/papi/v1/um/openOrders"): _with_symbol(1, 40),
    ("pm", "GET", "/papi/v1/cm/openOrders"): _with_symbol(1, 40),
    ("pm", "GET", "/papi/v1/um/conditional/openOrders"): _with_symbol(1, 40),
    ("pm", "GET", "/papi/v1/cm/conditional/openOrders"): _with_symbol(1, 40),
    ("pm", "GET", "/papi/v1/um/conditional/allOrders"): _with_symbol(1, 40),
    ("pm", "GET", "/papi/v1/cm/conditional/allOrders"): _with_symbol(1, 40),
    ("pm", "GET", "/papi/v1/um/algo/openAlgoOrders"): _with_symbol(1, 40),
    ("pm", "GET", "/papi/v1/um/forceOrders"): _with_symbol(20, 50),
    ("pm", "GET", "/papi/v1/cm/forceOrders"): _with_symbol(20, 50),
    ("pm", "GET", "/papi/v1/cm/allOrders"): _with_symbol(20, 40),
    ("pm", "GET", "/papi/v1/cm/userTrades"): _with_symbol(20, 40),
    ("pm", "GET", "/papi/v1/um/apiTradingStatus"): _with_symbol(1, 10),
    ("spot", "GET", "/sapi/v1/margin/crossMarginData"): _with("coin", 1, 5),
    ("spot", "GET", "/sapi/v1/margin/isolatedMarginData"): _with_symbol(1, 10),
    ("spot", "GET", "/sapi/v1/portfolio/asset-index-price"): _with("asset", 1, 50),
}


def weight_rule(market: str, method: str, path: str) -> WeightFn | None:
    """The hand-written weight rule of an operation, or None when its
    documented weight is one plain number (read from ``endpoints.csv``)."""
    if method == "GET" and (market, path) in _MARKET_DATA:
        return _MARKET_DATA[(market, path)][0]
    return _RULES.get((market, method, path))


# The IP weight of a plain ``weight_doc``: "Weight: 20", "Weight(IP): 10",
# "Weight: 50(IP)"; a UID weight ("Weight(UID): 3000", "6(UID)") is another
# pool (FACTS.md §1.7), so such a row costs the IP pool what an undocumented
# one does, 1.
_WEIGHT_RE = re.compile(r"Weight(?:\(IP\))?:\s*\**(\d+)(?!\d|\**\s*\(UID\))")


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
        cache_class = rule[1] if rule is not None else (
            "public" if security == NONE and method == "GET" else None)
        weight_fn = weight_rule(market, method, path) or _const(_doc_weight(row["weight_doc"]))
        if rule is None and path.startswith("/futures/data/"):
            weight_fn = _const(1 if market == "coinm" else 0)
        if security != NONE:
            cache_class = None
        endpoints.append(Endpoint(market, method, path, security, row["title"],
                                  weight_fn, cache_class))
    return EndpointTable(endpoints)
