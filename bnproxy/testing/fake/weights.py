"""The request weight the fake exchange charges, its own table.

Written from Binance's documentation (the pages named in
``bnproxy/binance/WEIGHTS.md``), deliberately not from the proxy's endpoint
table (``bnproxy.binance.endpoints``): the fake is the oracle of the fleet
tests, and an oracle that shared the proxy's table could not catch a wrong
weight in it. The two are compared case by case in ``tests/test_weights.py``.

A rule is data: ``("n", w)`` a plain weight; ``("symbol", with, without)``
by whether ``symbol`` is sent; ``("param", name, with, without)`` likewise
for another parameter; ``("flag", name, on, off)`` for a boolean parameter
sent and not ``false``; ``("limit", default, bands, above)`` by ``limit``
(bands of (largest limit, weight)); ``("each", per_symbol, cap, more_than)``
per symbol of ``symbol``/``symbols``; ``("ticker24",)`` spot's 24 h ticker
bands; ``("rules",)`` spot's executionRules.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson

__all__ = ["WEIGHTS", "ZERO_ON_SUCCESS", "charged", "weight"]

Rule = tuple

_FUT_KLINES: Rule = ("limit", 500, ((99, 1), (499, 2), (1000, 5)), 10)
_FUT_DEPTH: Rule = ("limit", 500, ((50, 2), (100, 5), (500, 10)), 20)

WEIGHTS: dict[tuple[str, str, str], Rule] = {
    # Spot, binance-spot-api-docs rest-api.md.
    ("spot", "GET", "/api/v3/ping"): ("n", 1),
    ("spot", "GET", "/api/v3/time"): ("n", 1),
    ("spot", "GET", "/api/v3/exchangeInfo"): ("n", 20),
    ("spot", "GET", "/api/v3/executionRules"): ("rules",),
    ("spot", "GET", "/api/v3/depth"): ("limit", 100, ((100, 5), (500, 25), (1000, 50)), 250),
    ("spot", "GET", "/api/v3/trades"): ("n", 25),
    ("spot", "GET", "/api/v3/historicalTrades"): ("n", 25),
    ("spot", "GET", "/api/v3/aggTrades"): ("n", 4),
    ("spot", "GET", "/api/v3/klines"): ("n", 2),
    ("spot", "GET", "/api/v3/uiKlines"): ("n", 2),
    ("spot", "GET", "/api/v3/avgPrice"): ("n", 2),
    ("spot", "GET", "/api/v3/ticker/24hr"): ("ticker24",),
    ("spot", "GET", "/api/v3/ticker/price"): ("symbol", 2, 4),
    ("spot", "GET", "/api/v3/ticker/bookTicker"): ("symbol", 2, 4),
    ("spot", "GET", "/api/v3/ticker"): ("each", 4, 200, 50),
    ("spot", "GET", "/api/v3/ticker/tradingDay"): ("each", 4, 200, 50),
    ("spot", "GET", "/api/v3/account"): ("n", 20),
    ("spot", "POST", "/api/v3/order"): ("n", 1),
    ("spot", "POST", "/api/v3/order/test"): ("flag", "computeCommissionRates", 20, 1),
    ("spot", "POST", "/api/v3/sor/order/test"): ("flag", "computeCommissionRates", 20, 1),
    ("spot", "GET", "/api/v3/order"): ("n", 4),
    ("spot", "DELETE", "/api/v3/order"): ("n", 1),
    ("spot", "DELETE", "/api/v3/openOrders"): ("n", 1),
    ("spot", "GET", "/api/v3/openOrders"): ("symbol", 6, 80),
    ("spot", "GET", "/api/v3/myTrades"): ("param", "orderId", 5, 20),
    ("spot", "GET", "/api/v3/myPreventedMatches"): ("param", "preventedMatchId", 2, 20),
    # /sapi (each endpoint its own pool: see ``charged``).
    ("spot", "GET", "/sapi/v1/margin/allPairs"): ("n", 1),
    ("spot", "GET", "/sapi/v1/margin/isolated/allPairs"): ("n", 10),
    ("spot", "GET", "/sapi/v1/capital/config/getall"): ("n", 10),
    # USD-M: /fapi/v2/ticker/price; the rest below per market.
    ("usdm", "GET", "/fapi/v2/ticker/price"): ("symbol", 1, 2),
    ("usdm", "GET", "/fapi/v1/rpiDepth"): ("n", 20),  # one band: limit 1000
    ("usdm", "GET", "/fapi/v1/openAlgoOrders"): ("symbol", 1, 40),
    ("usdm", "GET", "/fapi/v1/forceOrders"): ("symbol", 20, 50),
    ("usdm", "GET", "/fapi/v1/apiTradingStatus"): ("symbol", 1, 10),
    ("usdm", "GET", "/fapi/v1/assetIndex"): ("symbol", 1, 10),
    ("usdm", "GET", "/fapi/v1/premiumIndex"): ("symbol", 1, 10),
    ("usdm", "GET", "/fapi/v1/fundingRate"): ("n", 0),
    ("usdm", "POST", "/fapi/v1/order/test"): ("n", 1),  # the page gives none
    ("usdm", "PUT", "/fapi/v1/order"): ("n", 0),
    ("usdm", "GET", "/fapi/v1/userTrades"): ("n", 5),
    ("usdm", "GET", "/fapi/v1/leverageBracket"): ("n", 1),
    ("usdm", "GET", "/fapi/v2/balance"): ("n", 5),
    ("usdm", "GET", "/fapi/v3/balance"): ("n", 5),
    ("usdm", "GET", "/fapi/v2/account"): ("n", 5),
    ("usdm", "GET", "/fapi/v3/account"): ("n", 5),
    ("usdm", "GET", "/fapi/v2/positionRisk"): ("n", 5),
    ("usdm", "GET", "/fapi/v3/positionRisk"): ("n", 5),
    ("usdm", "GET", "/fapi/v1/positionSide/dual"): ("n", 30),
    # COIN-M: before and after the "CM migration", the larger weight.
    ("coinm", "GET", "/dapi/v1/premiumIndex"): ("n", 10),
    ("coinm", "GET", "/dapi/v1/fundingRate"): ("n", 1),
    ("coinm", "GET", "/dapi/v1/allOrders"): ("symbol", 20, 40),
    ("coinm", "GET", "/dapi/v1/userTrades"): ("symbol", 20, 40),
    ("coinm", "GET", "/dapi/v1/forceOrders"): ("symbol", 20, 50),
    ("coinm", "GET", "/dapi/v2/leverageBracket"): ("symbol", 1, 2),
    ("coinm", "GET", "/dapi/v1/leverageBracket"): ("n", 1),
    ("coinm", "GET", "/dapi/v1/balance"): ("n", 1),
    ("coinm", "GET", "/dapi/v1/account"): ("n", 5),
    ("coinm", "GET", "/dapi/v1/positionRisk"): ("n", 1),
    ("coinm", "GET", "/dapi/v1/positionSide/dual"): ("n", 30),
    # Options and portfolio margin (not served by the fake; the oracle for
    # the proxy's table all the same).
    ("options", "GET", "/eapi/v1/depth"): ("limit", 100, ((50, 1), (100, 5), (500, 10)), 20),
    ("options", "GET", "/eapi/v1/ticker"): ("symbol", 1, 40),
    ("options", "GET", "/eapi/v1/openOrders"): ("symbol", 1, 40),
    ("pm", "GET", "/papi/v1/um/algo/openAlgoOrders"): ("symbol", 1, 40),
    ("pm", "GET", "/papi/v1/um/forceOrders"): ("symbol", 20, 50),
    ("pm", "GET", "/papi/v1/cm/forceOrders"): ("symbol", 20, 50),
    ("pm", "GET", "/papi/v1/cm/allOrders"): ("symbol", 20, 40),
    ("pm", "GET", "/papi/v1/cm/userTrades"): ("symbol", 20, 40),
    ("pm", "GET", "/papi/v1/um/apiTradingStatus"): ("symbol", 1, 10),
}

for _m, _v in (("usdm", "/fapi/v1"), ("coinm", "/dapi/v1")):
    for _path, _rule in {
        "ping": ("n", 1), "time": ("n", 1), "exchangeInfo": ("n", 1),
        "depth": _FUT_DEPTH, "trades": ("n", 5), "aggTrades": ("n", 20),
        "klines": _FUT_KLINES, "continuousKlines": _FUT_KLINES,
        "markPriceKlines": _FUT_KLINES, "indexPriceKlines": _FUT_KLINES,
        "premiumIndexKlines": _FUT_KLINES,
        "ticker/24hr": ("symbol", 1, 40), "ticker/price": ("symbol", 1, 2),
        "ticker/bookTicker": ("symbol", 2, 5),
        "openOrders": ("symbol", 1, 40),
        "order": ("n", 1),
        "leverage": ("n", 1), "marginType": ("n", 1),
    }.items():
        WEIGHTS.setdefault((_m, "GET" if _path not in ("leverage", "marginType") else "POST",
                            f"{_v}/{_path}"), _rule)
    WEIGHTS[(_m, "DELETE", f"{_v}/order")] = ("n", 1)
    WEIGHTS[(_m, "POST", f"{_v}/order")] = ("n", 0)  # order count only, 0 on IP weight
    WEIGHTS[(_m, "POST", f"{_v}/positionSide/dual")] = ("n", 1)
    for _method in ("POST", "PUT", "DELETE"):  # the user data stream's listenKey
        WEIGHTS[(_m, _method, f"{_v}/listenKey")] = ("n", 1)
# Paths the fake serves for older clients that Binance no longer documents:
# 1, what an unknown path costs.
for _m, _p in (("usdm", "/fapi/v1"), ("coinm", "/dapi/v2"), ("coinm", "/dapi/v3")):
    for _what in ("balance", "account", "positionRisk"):
        WEIGHTS[(_m, "GET", f"{_p}/{_what}")] = ("n", 1)
WEIGHTS[("usdm", "GET", "/fapi/v2/leverageBracket")] = ("n", 1)
for _pm in ("um", "cm"):
    for _what in ("openOrders", "conditional/openOrders", "conditional/allOrders"):
        WEIGHTS[("pm", "GET", f"/papi/v1/{_pm}/{_what}")] = ("symbol", 1, 40)

# Since 2026-04-02 these cost no weight when they succeed (spot CHANGELOG).
ZERO_ON_SUCCESS = frozenset({("spot", "POST", "/api/v3/order"),
                             ("spot", "DELETE", "/api/v3/order"),
                             ("spot", "DELETE", "/api/v3/openOrders")})


def _symbols(params: Mapping[str, str]) -> int | None:
    raw = params.get("symbols")
    if raw is None:
        return None
    try:
        names = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return len(names) if isinstance(names, list) else None


def _limit(params: Mapping[str, str], default: int) -> int:
    raw = params.get("limit", "")
    return int(raw) if raw.isdigit() else default


def weight(market: str, method: str, path: str, params: Mapping[str, str]) -> int:
    """What Binance documents for this request (1 for an operation the
    table does not know)."""
    rule = WEIGHTS.get((market, method, path), ("n", 1))
    kind = rule[0]
    if kind == "n":
        return rule[1]
    if kind == "symbol":
        return rule[1] if params.get("symbol") else rule[2]
    if kind == "param":
        return rule[2] if params.get(rule[1]) else rule[3]
    if kind == "flag":
        sent = rule[1] in params and params[rule[1]].lower() != "false"
        return rule[2] if sent else rule[3]
    if kind == "limit":
        limit = _limit(params, rule[1])
        for largest, w in rule[2]:
            if limit <= largest:
                return w
        return rule[3]
    count = 1 if params.get("symbol") else _symbols(params)
    if kind == "each":
        if count is None:
            return rule[2] if "symbols" in params else rule[1]
        return rule[2] if count > rule[3] else rule[1] * count
    if kind == "ticker24":
        if count is None:
            return 80
        return 2 if count <= 20 else 40 if count <= 100 else 80
    if kind == "rules":
        return 40 if count is None else min(40, 2 * count)
    raise ValueError(f"unknown weight rule {rule!r}")


def charged(market: str, method: str, path: str, params: Mapping[str, str]) -> int:
    """The weight charged to the market's per-IP pool: each ``/sapi``
    endpoint has a pool of its own (FACTS.md §1.7), which the fake does not
    keep, so a ``/sapi`` call costs the ``/api`` pool nothing."""
    if path.startswith("/sapi/"):
        return 0
    return weight(market, method, path, params)
