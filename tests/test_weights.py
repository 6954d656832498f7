"""Every weight rule, from Binance's documentation (bnproxy/binance/WEIGHTS.md):
the proxy's table and the fake exchange's own table, row by row and at each
boundary."""

from __future__ import annotations

import ast
import csv
import io
import re
from importlib import resources
from pathlib import Path

import orjson
import pytest
from twisted.internet import task

import bnproxy.testing.fake
from bnproxy.binance.endpoints import _HOST_MARKET, load_endpoints, weight_rule
from bnproxy.testing.fake import weights as fake
from bnproxy.testing.fake.exchange import FakeExchange

ROWS = list(csv.DictReader(io.StringIO(
    resources.files("bnproxy.binance").joinpath("endpoints.csv").read_text("utf-8"))))
TABLE = load_endpoints()

# The documentation states the weight with a condition: a parameter sent or
# not, limit bands, a count of symbols, a flag.
CONDITION = re.compile(r"for a single|omitted|\bwith(out)? (symbol|pair|orderId|compute)|"
                       r"for multiple|for each|by limit|when coin|if asset|\bsymbols?:|"
                       r"querying by")

# Every such row, by hand from the pages (WEIGHTS.md).
CONDITIONAL = {
    ("spot", "GET", p) for p in (
        "/api/v3/depth", "/api/v3/executionRules", "/api/v3/myPreventedMatches",
        "/api/v3/myTrades", "/api/v3/openOrders", "/api/v3/ticker", "/api/v3/ticker/24hr",
        "/api/v3/ticker/bookTicker", "/api/v3/ticker/price", "/api/v3/ticker/tradingDay",
        "/sapi/v1/margin/crossMarginData", "/sapi/v1/margin/isolatedMarginData",
        "/sapi/v1/portfolio/asset-index-price")
} | {("spot", "POST", "/api/v3/order/test"), ("spot", "POST", "/api/v3/sor/order/test")} | {
    ("usdm", "GET", f"/fapi/v1/{p}") for p in (
        "apiTradingStatus", "assetIndex", "depth", "rpiDepth", "forceOrders", "openAlgoOrders",
        "openOrders", "premiumIndex", "ticker/24hr", "ticker/bookTicker", "ticker/price",
        "klines", "continuousKlines", "indexPriceKlines", "markPriceKlines",
        "premiumIndexKlines")
} | {("usdm", "GET", "/fapi/v2/ticker/price")} | {
    ("coinm", "GET", f"/dapi/v1/{p}") for p in (
        "allOrders", "userTrades", "forceOrders", "openOrders", "depth", "ticker/24hr",
        "ticker/bookTicker", "ticker/price", "klines", "continuousKlines", "indexPriceKlines",
        "markPriceKlines", "premiumIndexKlines")
} | {("coinm", "GET", "/dapi/v2/leverageBracket")} | {
    ("options", "GET", f"/eapi/v1/{p}") for p in ("depth", "openOrders", "ticker")
} | {
    ("pm", "GET", f"/papi/v1/{p}") for p in (
        "um/openOrders", "cm/openOrders", "um/conditional/openOrders",
        "cm/conditional/openOrders", "um/conditional/allOrders", "cm/conditional/allOrders",
        "um/algo/openAlgoOrders", "um/forceOrders", "cm/forceOrders", "cm/allOrders",
        "cm/userTrades", "um/apiTradingStatus")
}


def key(row: dict[str, str]) -> tuple[str, str, str]:
    return _HOST_MARKET[row["host"]], row["method"], row["path"]


def first_number(text: str) -> int | None:
    m = re.search(r"\d+", text)
    return int(m.group()) if m else None


def symbols(n: int) -> dict[str, str]:
    return {"symbols": orjson.dumps([f"S{i}USDT" for i in range(n)]).decode()}


PROBES = [{}, {"symbol": "BTCUSDT"}, {"pair": "BTCUSD"}, {"orderId": "1"},
          {"preventedMatchId": "1"}, {"computeCommissionRates": "true"}, {"coin": "BNB"},
          {"asset": "BNB"}, *({"limit": str(n)} for n in (5, 100, 500, 1000, 1500)),
          symbols(30), symbols(120)]


def test_the_conditional_rows_are_the_ones_whose_docs_state_a_condition():
    stated = {key(r) for r in ROWS if CONDITION.search(r["weight_doc"])}
    assert stated == CONDITIONAL
    assert len(CONDITIONAL) > 60


@pytest.mark.parametrize("row", [r for r in ROWS if key(r) in CONDITIONAL],
                         ids=lambda r: f"{r['method']} {r['path']}")
def test_each_conditional_row_has_its_own_rule_not_the_first_number(row):
    market, method, path = key(row)
    assert weight_rule(market, method, path) is not None
    endpoint = TABLE.lookup(market, method, path)
    assert endpoint is not None
    predicted = {endpoint.weight(p) for p in PROBES}
    assert predicted != {first_number(row["weight_doc"])}


@pytest.mark.parametrize("row", [r for r in ROWS if "on IP rate limit" in r["weight_doc"]],
                         ids=lambda r: f"{r['method']} {r['path']}")
def test_an_order_with_several_limits_costs_its_ip_weight(row):
    ip = int(re.search(r"(\d+) on IP rate limit", row["weight_doc"]).group(1))
    assert TABLE.lookup(*key(row)).weight({}) == ip


def test_a_weight_on_the_uid_limit_is_not_charged_to_the_ip_pool():
    assert TABLE.lookup("spot", "GET", "/sapi/v1/capital/withdraw/history").weight({}) == 1
    assert TABLE.lookup("spot", "POST", "/sapi/v1/margin/order").weight({}) == 1
    assert TABLE.lookup("spot", "GET", "/sapi/v1/accountSnapshot").weight({}) == 2400


S = {"symbol": "BTCUSDT"}


def lim(n: int) -> dict[str, str]:
    return {"limit": str(n)}


def symbol_rule(market: str, method: str, path: str, with_: int, without: int) -> list:
    return [(market, method, path, S, with_), (market, method, path, {}, without),
            (market, method, path, {"symbol": ""}, without)]


def bands(market: str, path: str, default: int, cases: dict[int, int]) -> list:
    return [(market, "GET", path, {}, default)] + [
        (market, "GET", path, lim(n), w) for n, w in cases.items()]


SPOT_DEPTH = {1: 5, 100: 5, 101: 25, 500: 25, 501: 50, 1000: 50, 1001: 250, 5000: 250}
FUT_DEPTH = {5: 2, 10: 2, 20: 2, 50: 2, 100: 5, 500: 10, 1000: 20}
FUT_KLINES = {1: 1, 99: 1, 100: 2, 499: 2, 500: 5, 1000: 5, 1001: 10, 1500: 10}
OPT_DEPTH = {10: 1, 20: 1, 50: 1, 100: 5, 500: 10, 1000: 20}

CASES = [
    *bands("spot", "/api/v3/depth", 5, SPOT_DEPTH),
    *bands("usdm", "/fapi/v1/depth", 10, FUT_DEPTH),
    *bands("coinm", "/dapi/v1/depth", 10, FUT_DEPTH),
    *bands("options", "/eapi/v1/depth", 5, OPT_DEPTH),
    *(c for m, p in (("usdm", "/fapi/v1"), ("coinm", "/dapi/v1"))
      for k in ("klines", "continuousKlines", "indexPriceKlines", "markPriceKlines",
                "premiumIndexKlines")
      for c in bands(m, f"{p}/{k}", 5, FUT_KLINES)),
    ("usdm", "GET", "/fapi/v1/rpiDepth", lim(1000), 20),
    # spot 24 h ticker: symbol, symbols bands, neither
    ("spot", "GET", "/api/v3/ticker/24hr", S, 2),
    ("spot", "GET", "/api/v3/ticker/24hr", {}, 80),
    *(("spot", "GET", "/api/v3/ticker/24hr", symbols(n), w)
      for n, w in ((1, 2), (20, 2), (21, 40), (100, 40), (101, 80))),
    # per symbol, capped at 200 above 50 symbols
    *(("spot", "GET", p, q, w) for p in ("/api/v3/ticker", "/api/v3/ticker/tradingDay")
      for q, w in ((S, 4), (symbols(1), 4), (symbols(49), 196), (symbols(50), 200),
                   (symbols(51), 200), (symbols(100), 200))),
    *(c for p in ("/api/v3/ticker/price", "/api/v3/ticker/bookTicker")
      for c in [*symbol_rule("spot", "GET", p, 2, 4), ("spot", "GET", p, symbols(3), 4)]),
    ("spot", "GET", "/api/v3/executionRules", S, 2),
    ("spot", "GET", "/api/v3/executionRules", symbols(1), 2),
    ("spot", "GET", "/api/v3/executionRules", symbols(20), 40),
    ("spot", "GET", "/api/v3/executionRules", symbols(21), 40),
    ("spot", "GET", "/api/v3/executionRules", {"symbolStatus": "TRADING"}, 40),
    ("spot", "GET", "/api/v3/executionRules", {}, 40),
    *symbol_rule("spot", "GET", "/api/v3/openOrders", 6, 80),
    ("spot", "GET", "/api/v3/myTrades", S, 20),
    ("spot", "GET", "/api/v3/myTrades", {**S, "orderId": "7"}, 5),
    ("spot", "GET", "/api/v3/myPreventedMatches", {**S, "preventedMatchId": "1"}, 2),
    ("spot", "GET", "/api/v3/myPreventedMatches", {**S, "orderId": "1"}, 20),
    *(("spot", "POST", p, q, w) for p in ("/api/v3/order/test", "/api/v3/sor/order/test")
      for q, w in (({}, 1), ({"computeCommissionRates": "false"}, 1),
                   ({"computeCommissionRates": "true"}, 20),
                   ({"computeCommissionRates": "TRUE"}, 20))),
    *(c for m, p in (("usdm", "/fapi/v1"), ("coinm", "/dapi/v1"))
      for path, w, wo in (("ticker/24hr", 1, 40), ("ticker/price", 1, 2),
                          ("ticker/bookTicker", 2, 5), ("openOrders", 1, 40),
                          ("forceOrders", 20, 50))
      for c in symbol_rule(m, "GET", f"{p}/{path}", w, wo)),
    *symbol_rule("usdm", "GET", "/fapi/v2/ticker/price", 1, 2),
    *symbol_rule("usdm", "GET", "/fapi/v1/openAlgoOrders", 1, 40),
    *symbol_rule("usdm", "GET", "/fapi/v1/apiTradingStatus", 1, 10),
    *symbol_rule("usdm", "GET", "/fapi/v1/premiumIndex", 1, 10),
    *symbol_rule("usdm", "GET", "/fapi/v1/assetIndex", 1, 10),
    ("usdm", "POST", "/fapi/v1/order", S, 0),
    ("usdm", "PUT", "/fapi/v1/order", S, 0),
    ("coinm", "POST", "/dapi/v1/order", S, 0),
    *(c for p in ("allOrders", "userTrades")
      for c in [("coinm", "GET", f"/dapi/v1/{p}", S, 20),
                ("coinm", "GET", f"/dapi/v1/{p}", {"pair": "BTCUSD"}, 40)]),
    *symbol_rule("coinm", "GET", "/dapi/v2/leverageBracket", 1, 2),
    *symbol_rule("options", "GET", "/eapi/v1/ticker", 1, 40),
    *symbol_rule("options", "GET", "/eapi/v1/openOrders", 1, 40),
    *(c for p in ("um/openOrders", "cm/openOrders", "um/conditional/openOrders",
                  "cm/conditional/openOrders", "um/conditional/allOrders",
                  "cm/conditional/allOrders", "um/algo/openAlgoOrders")
      for c in symbol_rule("pm", "GET", f"/papi/v1/{p}", 1, 40)),
    *symbol_rule("pm", "GET", "/papi/v1/um/forceOrders", 20, 50),
    *symbol_rule("pm", "GET", "/papi/v1/cm/forceOrders", 20, 50),
    *symbol_rule("pm", "GET", "/papi/v1/um/apiTradingStatus", 1, 10),
    ("pm", "GET", "/papi/v1/cm/allOrders", {"pair": "BTCUSD"}, 40),
    ("pm", "GET", "/papi/v1/cm/userTrades", S, 20),
]
# The proxy's alone: /sapi (each endpoint its own pool, not the fake's), and a
# symbols list Binance refuses as JSON, counted by its names.
PROXY_ONLY = [
    ("spot", "GET", "/api/v3/ticker/24hr", {"symbols": "[BTCUSDT,ETHUSDT]"}, 2),
    ("spot", "GET", "/api/v3/ticker/24hr", {"symbols": "[" + ",".join(["A"] * 21) + "]"}, 40),
    ("spot", "GET", "/sapi/v1/margin/crossMarginData", {"coin": "BNB"}, 1),
    ("spot", "GET", "/sapi/v1/margin/crossMarginData", {}, 5),
    *symbol_rule("spot", "GET", "/sapi/v1/margin/isolatedMarginData", 1, 10),
    ("spot", "GET", "/sapi/v1/portfolio/asset-index-price", {"asset": "BNB"}, 1),
    ("spot", "GET", "/sapi/v1/portfolio/asset-index-price", {}, 50),
]


def case_id(case) -> str:
    market, method, path, params, _ = case
    return f"{method} {path} {params}"[:90]


@pytest.mark.parametrize("case", CASES + PROXY_ONLY, ids=case_id)
def test_the_proxy_predicts_each_rule_at_its_boundaries(case):
    market, method, path, params, expected = case
    assert TABLE.lookup(market, method, path).weight(params) == expected


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_fake_charges_each_rule_at_its_boundaries(case):
    market, method, path, params, expected = case
    assert fake.weight(market, method, path, params) == expected


def test_the_boundary_table_covers_every_conditional_row():
    covered = {(m, meth, p) for m, meth, p, _, _ in CASES + PROXY_ONLY}
    assert covered >= CONDITIONAL


def test_the_fake_has_a_weight_for_every_route_it_serves():
    served = set(FakeExchange(task.Clock()).rest.routes)
    assert served - set(fake.WEIGHTS) == set()


def test_the_fake_and_the_proxy_agree_on_every_route_the_fake_serves():
    """Two tables written apart from the same pages: where they differ, one
    of them is wrong."""
    served = FakeExchange(task.Clock()).rest.routes
    differ = {}
    for market, method, path in served:
        endpoint = TABLE.lookup(market, method, path)
        for params in PROBES:
            proxy = endpoint.weight(params) if endpoint is not None else 1
            if proxy != fake.weight(market, method, path, params):
                differ[(market, method, path, str(params))] = (
                    proxy, fake.weight(market, method, path, params))
    assert differ == {}


def test_the_fake_does_not_read_the_proxys_endpoint_table():
    folder = Path(bnproxy.testing.fake.__file__).parent
    readers = []
    for source in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "bnproxy.binance.endpoints" \
                    or isinstance(node, ast.Import) and any(
                        a.name == "bnproxy.binance.endpoints" for a in node.names):
                readers.append(source.name)
    assert readers == []


def test_a_sapi_call_costs_the_fakes_api_pool_nothing():
    assert fake.weight("spot", "GET", "/sapi/v1/capital/config/getall", {}) == 10
    assert fake.charged("spot", "GET", "/sapi/v1/capital/config/getall", {}) == 0
    assert fake.charged("spot", "GET", "/api/v3/openOrders", {}) == 80


@pytest.mark.parametrize(("query", "body", "weight"), [
    (b"", b"symbol=BTCUSDT&computeCommissionRates=true", 20),
    (b"computeCommissionRates=true", b"", 20),
    (b"", b"symbol=BTCUSDT", 1),
    (b"computeCommissionRates=false", b"computeCommissionRates=true", 1),  # the query wins
])
def test_a_parameter_in_a_form_body_counts_as_binance_reads_it(query, body, weight):
    from bnproxy.chain.messages import ProxyRequest

    endpoint = TABLE.lookup("spot", "POST", "/api/v3/order/test")
    request = ProxyRequest("POST", "spot", "/api/v3/order/test", query, (), body,
                           "127.0.0.1", 0.0, endpoint)
    assert request.weight == weight
