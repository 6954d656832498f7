"""The fake Binance exchange: REST and websocket streams on one port.

Use it in-process (``FakeExchange(reactor).listen(...)``), as
``twistd -n bnproxy-exchange``, or behind ``twistd -n bnproxy
--simulated-exchange``. It takes a reactor (``task.Clock`` works) and is
deterministic from its seed.
"""

from __future__ import annotations

import time as _time
from collections import Counter
from typing import Any
from urllib.parse import parse_qsl

import attrs
import orjson
from autobahn.twisted.resource import WebSocketResource
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import server
from twisted.web.resource import Resource

from bnproxy.binance.endpoints import load_endpoints
from bnproxy.binance.errors import error_body
from bnproxy.testing.fake.accounts import DEFAULT_KEYS, Account
from bnproxy.testing.fake.instruments import (
    LOT_MAX_QUOTE,
    MARKET_LOT_MAX_QUOTE,
    Instrument,
    default_instruments,
    max_steps,
    min_notional,
)
from bnproxy.testing.fake.limits import WeightLimiter
from bnproxy.testing.fake.market import DAY, SymbolState
from bnproxy.testing.fake.orders import OrderBookKeeper
from bnproxy.testing.fake.rest import ApiError, Call, RestApi
from bnproxy.testing.fake.ws import StreamHub

_log = Logger(namespace="bnproxy.testing.fake.exchange")

MARKETS = ("spot", "usdm", "coinm")
DEFAULT_WEIGHT_LIMITS = {"spot": 6000, "usdm": 2400, "coinm": 2400}
ZERO_WEIGHT_ON_SUCCESS = {("spot", "POST", "/api/v3/order"), ("spot", "DELETE", "/api/v3/order"),
                          ("spot", "DELETE", "/api/v3/openOrders")}


@attrs.define
class Faults:
    """Faults on demand. ``path_prefix`` limits REST faults to matching paths."""

    latency: float = 0.0  # seconds added before answering
    error_status: int = 0  # answer this status ...
    error_rate: float = 0.0  # ... for this share of requests
    stall_headers: bool = False  # never answer
    stall_body: bool = False  # send headers and half a body, then nothing
    path_prefix: str = ""
    refuse: bool = False  # stop listening (connections refused)


@attrs.define
class Counters:
    """What tests read: REST requests by (path, method, client IP), and
    websocket connections, subscriptions and messages."""

    requests: Counter = attrs.field(factory=Counter)
    statuses: Counter = attrs.field(factory=Counter)
    ws_connections: int = 0
    ws_connections_total: int = 0
    ws_subscriptions: int = 0
    ws_messages: int = 0
    ws_control_messages: int = 0
    ws_rate_disconnects: int = 0

    def rest_total(self, path_prefix: str = "") -> int:
        return sum(n for (path, _, _), n in self.requests.items() if path.startswith(path_prefix))


class FakeExchange:
    """State and behaviour of the fake exchange."""

    def __init__(self, reactor, seed: int = 1, start_ms: int | None = None,
                 trade_rate: float = 0.5, tick: float = 0.1,
                 weight_limits: dict[str, int] | None = None, ban_scale: float = 1.0,
                 keys: dict[str, str] | None = None, ws_time_scale: float = 1.0,
                 instruments: list[Instrument] | None = None) -> None:
        self.clock = reactor
        self._t0 = reactor.seconds()
        self._start_ms = start_ms if start_ms is not None else int(_time.time() * 1000)
        self.skew_ms = 0
        self.trade_rate = trade_rate
        self.tick_seconds = tick
        self.keys = dict(keys or DEFAULT_KEYS)
        self.endpoints = load_endpoints()
        now = self.market_ms()
        self.symbols: dict[str, dict[str, SymbolState]] = {m: {} for m in MARKETS}
        for inst in instruments or default_instruments():
            self.symbols[inst.market][inst.symbol] = SymbolState(inst, seed, now,
                                                                 inst.market != "spot")
        self.stream_symbols = {m: {st.inst.stream_name: st for st in syms.values()}
                               for m, syms in self.symbols.items()}
        limits = {**DEFAULT_WEIGHT_LIMITS, **(weight_limits or {})}
        self.limiters = {m: WeightLimiter(limits[m], ban_scale) for m in MARKETS}
        self.faults = Faults()
        self.counters = Counters()
        self.accounts: dict[tuple[str, str], Account] = {}
        self.rest = RestApi(self)
        self.orders = OrderBookKeeper(self)
        self.hubs = {m: StreamHub(self, m, ws_time_scale) for m in MARKETS}
        self._tickers: dict[tuple[str, str], dict[str, Any]] = {}
        self._ticker_second = -1
        self.paused = False
        self._rng_errors = 0
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = reactor
        self.port: Any = None
        self._listen_args: tuple | None = None

    # -- time -------------------------------------------------------------------
    def market_ms(self) -> int:
        return self._start_ms + int(round((self.clock.seconds() - self._t0) * 1000))

    def server_ms(self) -> int:
        """Server time as REST reports it (with any skew fault)."""
        return self.market_ms() + self.skew_ms

    # -- running ----------------------------------------------------------------
    def start(self) -> FakeExchange:
        if not self._loop.running:
            self._loop.start(self.tick_seconds, now=False)
        return self

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def tick(self) -> None:
        if self.paused:
            return
        now = self.market_ms()
        for market, syms in self.symbols.items():
            hub = self.hubs[market]
            for st in syms.values():
                st.roll(now, lambda i, k, st=st, hub=hub: hub.on_kline_closed(st, i, k))
                events_before = len(st.events)
                last_before = st.events[-1] if st.events else None
                trades = st.step(now, self.trade_rate)
                if trades:
                    hub.on_trades(st, trades)
                if st.events and (st.events[-1] is not last_before or
                                  len(st.events) != events_before):
                    hub.on_depth(st, st.events[-1])
        second = now // 1000
        if second != self._ticker_second:
            self._ticker_second = second
            self._tickers.clear()
        for hub in self.hubs.values():
            hub.tick(now)

    def pause(self) -> None:
        """Freeze the market and flush every stream, so REST and the streams
        describe the same moment."""
        now = self.market_ms()
        self._tickers.clear()
        for hub in self.hubs.values():
            hub.tick(now, flush=True)
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    # -- derived state ------------------------------------------------------------
    def ticker(self, st: SymbolState) -> dict[str, Any]:
        """The 24 h statistics, computed once per second (REST and the
        ``@ticker`` stream both read this)."""
        key = (st.inst.market, st.inst.symbol)
        snap = self._tickers.get(key)
        if snap is None:
            snap = self._tickers[key] = self._compute_ticker(st)
        return snap

    def _compute_ticker(self, st: SymbolState) -> dict[str, Any]:
        now = self.market_ms()
        inst = st.inst
        w = st.window(now, DAY)
        change = st.last_price - w.o
        pct = f"{change * 100 / w.o:.3f}" if w.o else "0.000"
        wavg = w.q // w.v if w.v else st.last_price
        last_id = st.trade_id
        (bp, bq), (ap, aq) = st.top("bids", 1)[0], st.top("asks", 1)[0]
        signed_change = ("-" + inst.price(-change)) if change < 0 else inst.price(change)
        return {"s": inst.symbol, "p": signed_change, "P": pct, "w": inst.price(wavg),
                "x": inst.price(w.o), "c": inst.price(st.last_price),
                "Q": inst.qty(st.last_qty), "b": inst.price(bp), "B": inst.qty(bq),
                "a": inst.price(ap), "A": inst.qty(aq), "o": inst.price(w.o),
                "h": inst.price(max(w.h, st.last_price)), "l": inst.price(min(w.lo, st.last_price)),
                "v": inst.qty(w.v), "q": inst.quote_amount(w.q), "O": now - DAY, "C": now,
                "F": last_id - w.n + 1, "L": last_id, "n": w.n, "E": now}

    def ticker_bytes(self, st: SymbolState, mini: bool = False) -> bytes:
        t = self.ticker(st)
        market = st.inst.market
        if mini:
            body = {"symbol": t["s"], "openPrice": t["o"], "highPrice": t["h"],
                    "lowPrice": t["l"], "lastPrice": t["c"], "volume": t["v"],
                    "quoteVolume": t["q"], "openTime": t["O"], "closeTime": t["C"],
                    "firstId": t["F"], "lastId": t["L"], "count": t["n"]}
        elif market == "spot":
            body = {"symbol": t["s"], "priceChange": t["p"], "priceChangePercent": t["P"],
                    "weightedAvgPrice": t["w"], "prevClosePrice": t["x"], "lastPrice": t["c"],
                    "lastQty": t["Q"], "bidPrice": t["b"], "bidQty": t["B"], "askPrice": t["a"],
                    "askQty": t["A"], "openPrice": t["o"], "highPrice": t["h"],
                    "lowPrice": t["l"], "volume": t["v"], "quoteVolume": t["q"],
                    "openTime": t["O"], "closeTime": t["C"], "firstId": t["F"],
                    "lastId": t["L"], "count": t["n"]}
        else:
            body = {"symbol": t["s"]}
            if market == "coinm":
                body["pair"] = st.inst.pair
            body.update({"priceChange": t["p"], "priceChangePercent": t["P"],
                         "weightedAvgPrice": t["w"], "lastPrice": t["c"], "lastQty": t["Q"],
                         "openPrice": t["o"], "highPrice": t["h"], "lowPrice": t["l"],
                         "volume": t["v"], "quoteVolume": t["q"], "openTime": t["O"],
                         "closeTime": t["C"], "firstId": t["F"], "lastId": t["L"],
                         "count": t["n"]})
        return orjson.dumps(body)

    def ticker_ws(self, st: SymbolState, mini: bool = False) -> bytes:
        t = self.ticker(st)
        if mini:
            body = {"e": "24hrMiniTicker", "E": t["E"], "s": t["s"], "c": t["c"], "o": t["o"],
                    "h": t["h"], "l": t["l"], "v": t["v"], "q": t["q"]}
        elif st.inst.market == "spot":
            body = {"e": "24hrTicker", "E": t["E"], **{k: t[k] for k in (
                "s", "p", "P", "w", "x", "c", "Q", "b", "B", "a", "A", "o", "h", "l", "v", "q",
                "O", "C", "F", "L", "n")}}
        else:
            body = {"e": "24hrTicker", "E": t["E"], **{k: t[k] for k in (
                "s", "p", "P", "w", "c", "Q", "o", "h", "l", "v", "q", "O", "C", "F", "L", "n")}}
        return orjson.dumps(body)

    def premium_row(self, st: SymbolState, now: int) -> dict[str, Any]:
        inst = st.inst
        eight_h = 8 * 3600_000
        row: dict[str, Any] = {"symbol": inst.symbol}
        if inst.market == "coinm":
            row["pair"] = inst.pair
        row.update({"markPrice": inst.price(st.mark_price(now)),
                    "indexPrice": inst.price(st.index_price(now)),
                    "estimatedSettlePrice": inst.price(st.index_price(now)),
                    "lastFundingRate": "0.00010000", "interestRate": "0.00010000",
                    "nextFundingTime": (now // eight_h + 1) * eight_h, "time": now})
        return row

    def exchange_info(self, market: str, only: list[SymbolState] | None, now: int) -> dict:
        states = only if only is not None else list(self.symbols[market].values())
        limit = self.limiters[market].limit
        rate_limits = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                        "intervalNum": 1, "limit": limit}]
        if market == "spot":
            rate_limits += [
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50},
                {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5,
                 "limit": 300000}]
            return {"timezone": "UTC", "serverTime": now, "rateLimits": rate_limits,
                    "exchangeFilters": [], "symbols": [self._spot_symbol(s) for s in states]}
        rate_limits.append({"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                            "limit": 1200})
        body: dict[str, Any] = {"timezone": "UTC", "serverTime": now}
        if market == "usdm":
            body["futuresType"] = "U_MARGINED"
        body.update({"rateLimits": rate_limits, "exchangeFilters": [],
                     "symbols": [self._futures_symbol(s) for s in states]})
        if market == "usdm":
            body["assets"] = [{"asset": "USDT", "marginAvailable": True,
                               "autoAssetExchange": "-10000"}]
        return body

    def _spot_symbol(self, st: SymbolState) -> dict[str, Any]:
        i = st.inst
        return {
            "symbol": i.symbol, "status": "TRADING", "baseAsset": i.base, "baseAssetPrecision": 8,
            "quoteAsset": i.quote, "quotePrecision": 8, "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
            "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT",
                           "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
            "icebergAllowed": True, "ocoAllowed": True, "otoAllowed": True,
            "quoteOrderQtyMarketAllowed": True, "allowTrailingStop": True,
            "cancelReplaceAllowed": True, "amendAllowed": True, "pegInstructionsAllowed": True,
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": True,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": i.price(1),
                 "maxPrice": i.price(10 ** (6 + i.price_dp)), "tickSize": i.price(1)},
                {"filterType": "LOT_SIZE", "minQty": i.qty(1),
                 "maxQty": i.qty(max_steps(i, LOT_MAX_QUOTE)), "stepSize": i.qty(1)},
                {"filterType": "ICEBERG_PARTS", "limit": 10},
                {"filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000",
                 "maxQty": i.qty(max_steps(i, MARKET_LOT_MAX_QUOTE)), "stepSize": "0.00000000"},
                {"filterType": "TRAILING_DELTA", "minTrailingAboveDelta": 10,
                 "maxTrailingAboveDelta": 2000, "minTrailingBelowDelta": 10,
                 "maxTrailingBelowDelta": 2000},
                {"filterType": "PERCENT_PRICE_BY_SIDE", "bidMultiplierUp": "5",
                 "bidMultiplierDown": "0.2", "askMultiplierUp": "5", "askMultiplierDown": "0.2",
                 "avgPriceMins": 5},
                {"filterType": "NOTIONAL", "minNotional": min_notional(i.quote, 8),
                 "applyMinToMarket": True, "maxNotional": "9000000.00000000",
                 "applyMaxToMarket": False,
                 "avgPriceMins": 5},
                {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5}],
            "permissions": [], "permissionSets": [["SPOT", "MARGIN"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH",
                                                "DECREMENT"]}

    def _futures_symbol(self, st: SymbolState) -> dict[str, Any]:
        i = st.inst
        coinm = i.market == "coinm"
        body: dict[str, Any] = {"symbol": i.symbol, "pair": i.pair, "contractType": "PERPETUAL",
                                "deliveryDate": 4133404800000, "onboardDate": 1569398400000}
        body["contractStatus" if coinm else "status"] = "TRADING"
        if coinm:
            body["contractSize"] = i.contract_size
        body.update({
            "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
            "baseAsset": i.base, "quoteAsset": i.quote,
            "marginAsset": i.base if coinm else i.quote, "pricePrecision": i.price_dp,
            "quantityPrecision": i.qty_dp, "baseAssetPrecision": 8, "quotePrecision": 8,
            "underlyingType": "COIN", "underlyingSubType": [], "triggerProtect": "0.0500",
            "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": 10000,
            "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": i.price(1),
                 "maxPrice": i.price(10 ** (7 + i.price_dp)), "tickSize": i.price(1)},
                {"filterType": "LOT_SIZE", "minQty": i.qty(1),
                 "maxQty": i.qty(max_steps(i, LOT_MAX_QUOTE)), "stepSize": i.qty(1)},
                {"filterType": "MARKET_LOT_SIZE", "minQty": i.qty(1),
                 "maxQty": i.qty(max_steps(i, MARKET_LOT_MAX_QUOTE)), "stepSize": i.qty(1)},
                {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": 10},
                {"filterType": "PERCENT_PRICE", "multiplierUp": "1.0500",
                 "multiplierDown": "0.9500", "multiplierDecimal": "4"}],
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                           "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
            "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"]})
        if not coinm:
            body["filters"].insert(5, {"filterType": "MIN_NOTIONAL",
                                       "notional": min_notional(i.quote, 0)})
        return body

    def account(self, market: str, key: str | None) -> Account:
        return self.accounts.setdefault((market, key or ""), Account.funded())

    def order_count_headers(self, call: Call) -> list[tuple[bytes, bytes]]:
        acct = self.account(call.market, call.api_key)
        n = str(len(acct.orders) + 1).encode()
        if call.market == "spot":
            return [(b"x-mbx-order-count-10s", n), (b"x-mbx-order-count-1d", n)]
        return [(b"x-mbx-order-count-10s", n), (b"x-mbx-order-count-1m", n)]

    # -- REST ---------------------------------------------------------------------
    def answer(self, market: str, method: str, path: str, query: bytes, body: bytes,
               headers: dict[bytes, bytes], ip: str) -> tuple[int, bytes, list]:
        """One REST request, limits included. Returns (status, body, headers)."""
        self.counters.requests[(path, method, ip)] += 1
        params: dict[str, str] = {}
        for k, v in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            params.setdefault(k, v)
        if body and b"=" in body:
            for k, v in parse_qsl(body.decode("latin-1"), keep_blank_values=True):
                params.setdefault(k, v)
        now = self.server_ms()
        market_now = self.market_ms()
        limiter = self.limiters[market]
        endpoint = self.endpoints.lookup(market, method, path)
        weight = endpoint.weight(params) if endpoint is not None else 1
        status, info = limiter.check(ip, market_now, weight)
        extra: list[tuple[bytes, bytes]] = []
        if status == 429:
            extra.append((b"retry-after", str(info).encode()))
            period = "1 MINUTE" if market == "spot" else "1 minute"
            msg = (f"Too much request weight used; current limit is {limiter.limit} request "
                   f"weight per {period}. Please use WebSocket Streams for live updates to "
                   "avoid polling the API.")
            result = (429, error_body(-1003, msg), extra)
        elif status == 418:
            retry = max(1, -(-(info - market_now) // 1000))
            extra.append((b"retry-after", str(retry).encode()))
            msg = (f"Way too much request weight used; IP banned until {info}. Please use "
                   "WebSocket Streams for live updates to avoid bans.")
            result = (418, error_body(-1003, msg), extra)
        else:
            call = Call(market, method, path, params, query, body,
                        headers.get(b"x-mbx-apikey", b"").decode("latin-1") or None, ip, now)
            try:
                result = self.rest.handle(call)
                if (market, method, path) in ZERO_WEIGHT_ON_SUCCESS:
                    limiter.state(ip, market_now).used -= weight
            except ApiError as e:
                result = (e.status, error_body(e.code, e.msg), [])
        used = str(limiter.used(ip, market_now)).encode()
        result[2].append((b"x-mbx-used-weight-1m", used))
        if market == "spot":
            result[2].append((b"x-mbx-used-weight", used))
        self.counters.statuses[result[0]] += 1
        return result

    def ban(self, ip: str, seconds: float, market: str | None = None) -> None:
        for m in [market] if market else MARKETS:
            self.limiters[m].ban(ip, self.market_ms(), seconds)

    def reset(self) -> None:
        self.faults = Faults()
        self.counters = Counters()
        for m in MARKETS:
            self.limiters[m].ips.clear()
            self.hubs[m].silenced.clear()
            self.hubs[m].silence_all = False
        self.skew_ms = 0

    def resource(self) -> Resource:
        return ExchangeRoot(self)

    def listen(self, endpoint, tls=None) -> Deferred:
        """Listen on a server endpoint (behind TLS with ``tls``, a
        :class:`bnproxy.testing.fake.tls.TlsFiles`); remembered so
        ``refuse`` can close and reopen it."""
        from bnproxy.testing.fake.tls import wrap

        site: Any = server.Site(self.resource(), reactor=self.clock)
        site.log = lambda request: None
        if tls is not None:
            site = wrap(site, tls)
        self._listen_args = (endpoint, site)

        def listening(port):
            self.port = port
            return port
        return endpoint.listen(site).addCallback(listening)

    def set_refuse(self, refuse: bool) -> Deferred | None:
        self.faults.refuse = refuse
        if refuse and self.port is not None:
            d = self.port.stopListening()
            self.port = None
            return d
        if not refuse and self.port is None and self._listen_args is not None:
            endpoint, site = self._listen_args
            return endpoint.listen(site).addCallback(lambda p: setattr(self, "port", p))
        return None


def _implicit(path: str) -> str | None:
    for prefix, market in (("/api/", "spot"), ("/sapi/", "spot"), ("/fapi/", "usdm"),
                           ("/futures/data/", "usdm"), ("/dapi/", "coinm")):
        if path.startswith(prefix):
            return market
    return None


class RestLeaf(Resource):
    isLeaf = True

    def __init__(self, exchange: FakeExchange, market: str | None) -> None:
        super().__init__()
        self.x = exchange
        self.market = market

    def render(self, request):
        x = self.x
        uri = request.uri
        path_b, _, query = uri.partition(b"?")
        path = path_b.decode("latin-1")
        if self.market is not None:
            path = path.split("/", 2)[2] if path.count("/") >= 2 else ""
            path = "/" + path
        market = self.market or _implicit(path)
        request.setHeader(b"content-type", b"application/json;charset=UTF-8")
        if market is None:
            request.setResponseCode(404)
            return error_body(-1000, "fake exchange: unknown path")
        f = x.faults
        faulty = path.startswith(f.path_prefix)
        if faulty and f.stall_headers:
            return server.NOT_DONE_YET
        request.content.seek(0)
        body = request.content.read()
        headers = {k.lower(): v[0] for k, v in request.requestHeaders.getAllRawHeaders()}
        ip = request.getClientAddress().host
        if faulty and f.error_status and f.error_rate > 0:
            x._rng_errors += 1
            if (x._rng_errors * f.error_rate) % 1 < f.error_rate:
                x.counters.requests[(path, request.method.decode(), ip)] += 1
                request.setResponseCode(f.error_status)
                return error_body(-1000, "fake exchange: injected error")
        status, payload, extra = x.answer(market, request.method.decode(), path, query, body,
                                          headers, ip)
        request.setResponseCode(status)
        for k, v in extra:
            request.setHeader(k, v)
        if faulty and f.stall_body:
            request.setHeader(b"content-length", str(len(payload)).encode())
            request.write(payload[: len(payload) // 2])
            return server.NOT_DONE_YET
        if faulty and f.latency > 0:
            def later():
                if not request.finished and not getattr(request, "_disconnected", False):
                    request.write(payload)
                    request.finish()
            x.clock.callLater(f.latency, later)
            return server.NOT_DONE_YET
        return payload


class AdminResource(Resource):
    """``/_fake/...``: counters, faults, pause/resume, bans, websocket faults."""

    isLeaf = True

    def __init__(self, exchange: FakeExchange) -> None:
        super().__init__()
        self.x = exchange

    def render_GET(self, request):  # noqa: N802
        request.setHeader(b"content-type", b"application/json")
        c = self.x.counters
        return orjson.dumps({
            "requests": [{"path": p, "method": m, "ip": ip, "count": n}
                         for (p, m, ip), n in c.requests.items()],
            "rest_total": c.rest_total(),
            "statuses": {str(k): v for k, v in c.statuses.items()},
            "weight": {m: {ip: st.used for ip, st in lim.ips.items()}
                       for m, lim in self.x.limiters.items()},
            "ws": {"connections": c.ws_connections, "connections_total": c.ws_connections_total,
                   "subscriptions": c.ws_subscriptions, "messages": c.ws_messages},
            "faults": attrs.asdict(self.x.faults), "server_time": self.x.server_ms(),
            "paused": self.x.paused})

    def render_POST(self, request):  # noqa: N802
        x = self.x
        action = request.postpath[-1].decode() if request.postpath else ""
        request.content.seek(0)
        raw = request.content.read()
        args = orjson.loads(raw) if raw.strip() else {}
        request.setHeader(b"content-type", b"application/json")
        if action == "faults":
            refuse = args.pop("refuse", None)
            for k, v in args.items():
                if not hasattr(x.faults, k):
                    request.setResponseCode(400)
                    return orjson.dumps({"error": f"unknown fault {k}"})
                setattr(x.faults, k, v)
            if refuse is not None:
                x.set_refuse(bool(refuse))
        elif action == "skew":
            x.skew_ms = int(args.get("ms", 0))
        elif action == "reset":
            x.reset()
        elif action == "pause":
            x.pause()
        elif action == "resume":
            x.resume()
        elif action == "ban":
            x.ban(args["ip"], float(args.get("seconds", 120)), args.get("market"))
        elif action in ("ws-drop", "ws-silence", "ws-unsilence", "ws-shutdown"):
            hubs = [x.hubs[args["market"]]] if args.get("market") else list(x.hubs.values())
            stream = args.get("stream")
            for hub in hubs:
                if action == "ws-drop":
                    hub.drop(stream)
                elif action == "ws-silence":
                    if stream:
                        hub.silenced.add(stream)
                    else:
                        hub.silence_all = True
                elif action == "ws-unsilence":
                    hub.silenced.clear()
                    hub.silence_all = False
                else:
                    hub.shutdown()
        else:
            request.setResponseCode(404)
            return orjson.dumps({"error": f"unknown action {action}"})
        return b'{"ok":true}'


class MarketMount(Resource):
    def __init__(self, exchange: FakeExchange, market: str) -> None:
        super().__init__()
        self._rest = RestLeaf(exchange, market)
        ws = WebSocketResource(exchange.hubs[market].factory)
        for name in (b"ws", b"stream", b"public", b"market"):
            self.putChild(name, ws)

    def getChild(self, path, request):  # noqa: N802
        return self._rest

    def render(self, request):
        return self._rest.render(request)


class ExchangeRoot(Resource):
    def __init__(self, exchange: FakeExchange) -> None:
        super().__init__()
        self._rest = RestLeaf(exchange, None)
        for m in MARKETS:
            self.putChild(m.encode(), MarketMount(exchange, m))
        self.putChild(b"_fake", AdminResource(exchange))
        spot_ws = WebSocketResource(exchange.hubs["spot"].factory)
        usdm_ws = WebSocketResource(exchange.hubs["usdm"].factory)
        self.putChild(b"ws", spot_ws)
        self.putChild(b"stream", spot_ws)
        self.putChild(b"public", usdm_ws)
        self.putChild(b"market", usdm_ws)

    def getChild(self, path, request):  # noqa: N802
        return self._rest

    def render(self, request):
        return self._rest.render(request)

