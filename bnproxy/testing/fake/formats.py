"""Binance's JSON bodies, built from the fake's state: kline rows, depth,
tickers, exchangeInfo, orders, stream events and error bodies.

Every function takes plain state (a ``SymbolState``, a statistics snapshot,
the time) and returns bytes or a dict; nothing here reads a request.
The shapes are checked against Binance's documented examples
(``tests/data/binance``).
"""

from __future__ import annotations

from typing import Any

import orjson

from bnproxy.binance.errors import error_body
from bnproxy.testing.fake.instruments import (
    LOT_MAX_QUOTE,
    MARKET_LOT_MAX_QUOTE,
    Instrument,
    max_steps,
    min_notional,
)
from bnproxy.testing.fake.state import Candle, DepthEvent, Order, SymbolState, Trade

__all__ = ["book_ticker_event", "book_ticker_row", "combined", "depth_body", "depth_event",
           "error_body", "exchange_info", "kline_event", "kline_row", "mark_price_event",
           "order_body", "order_trade_update", "partial_depth_event", "premium_row",
           "server_shutdown_event", "ticker_event", "ticker_rest", "too_much_weight",
           "trade_event", "units", "way_too_much_weight"]


# -- errors -----------------------------------------------------------------------

def too_much_weight(limit: int, market: str) -> bytes:
    """The 429 body (-1003) of a weight limit hit."""
    period = "1 MINUTE" if market == "spot" else "1 minute"
    return error_body(-1003, f"Too much request weight used; current limit is {limit} request "
                             f"weight per {period}. Please use WebSocket Streams for live "
                             "updates to avoid polling the API.")


def way_too_much_weight(banned_until_ms: int) -> bytes:
    """The 418 body (-1003) of an IP ban."""
    return error_body(-1003, f"Way too much request weight used; IP banned until "
                             f"{banned_until_ms}. Please use WebSocket Streams for live "
                             "updates to avoid bans.")


# -- streams: envelopes -------------------------------------------------------------

def combined(stream: str, payload: bytes) -> bytes:
    """A payload wrapped for a combined-stream connection."""
    return b'{"stream":"' + stream.encode() + b'","data":' + payload + b"}"


def server_shutdown_event(now: int) -> bytes:
    return orjson.dumps({"e": "serverShutdown", "E": now})


# -- REST and stream bodies ---------------------------------------------------------

def ticker_rest(t: dict[str, Any], inst: Instrument, mini: bool = False) -> bytes:
    """``/ticker/24hr`` for one symbol from its statistics snapshot ``t``
    (``Market.ticker``)."""
    market = inst.market
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
            body["pair"] = inst.pair
        body.update({"priceChange": t["p"], "priceChangePercent": t["P"],
                     "weightedAvgPrice": t["w"], "lastPrice": t["c"], "lastQty": t["Q"],
                     "openPrice": t["o"], "highPrice": t["h"], "lowPrice": t["l"],
                     "volume": t["v"], "quoteVolume": t["q"], "openTime": t["O"],
                     "closeTime": t["C"], "firstId": t["F"], "lastId": t["L"],
                     "count": t["n"]})
    return orjson.dumps(body)


def ticker_event(t: dict[str, Any], inst: Instrument, mini: bool = False) -> bytes:
    """The ``@ticker`` (or ``@miniTicker``) stream event from ``t``."""
    if mini:
        body = {"e": "24hrMiniTicker", "E": t["E"], "s": t["s"], "c": t["c"], "o": t["o"],
                "h": t["h"], "l": t["l"], "v": t["v"], "q": t["q"]}
    elif inst.market == "spot":
        body = {"e": "24hrTicker", "E": t["E"], **{k: t[k] for k in (
            "s", "p", "P", "w", "x", "c", "Q", "b", "B", "a", "A", "o", "h", "l", "v", "q",
            "O", "C", "F", "L", "n")}}
    else:
        body = {"e": "24hrTicker", "E": t["E"], **{k: t[k] for k in (
            "s", "p", "P", "w", "c", "Q", "o", "h", "l", "v", "q", "O", "C", "F", "L", "n")}}
    return orjson.dumps(body)


def premium_row(st: SymbolState, now: int) -> dict[str, Any]:
    """One ``/premiumIndex`` row."""
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


def exchange_info(market: str, states: list[SymbolState], now: int, weight_limit: int) -> dict:
    """``/exchangeInfo`` for ``states`` (every symbol, or those asked for)."""
    limit = weight_limit
    rate_limits = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                    "intervalNum": 1, "limit": limit}]
    if market == "spot":
        rate_limits += [
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 50},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 160000},
            {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5,
             "limit": 300000}]
        return {"timezone": "UTC", "serverTime": now, "rateLimits": rate_limits,
                "exchangeFilters": [], "symbols": [_spot_symbol(s) for s in states]}
    rate_limits.append({"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1,
                        "limit": 1200})
    body: dict[str, Any] = {"timezone": "UTC", "serverTime": now}
    if market == "usdm":
        body["futuresType"] = "U_MARGINED"
    body.update({"rateLimits": rate_limits, "exchangeFilters": [],
                 "symbols": [_futures_symbol(s) for s in states]})
    if market == "usdm":
        body["assets"] = [{"asset": "USDT", "marginAvailable": True,
                           "autoAssetExchange": "-10000"}]
    return body


def _spot_symbol(st: SymbolState) -> dict[str, Any]:
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


def _futures_symbol(st: SymbolState) -> dict[str, Any]:
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


def kline_row(st: SymbolState, k: Candle, kind: str = "klines") -> bytes:
    """One kline row (``kind``: klines, uiKlines, continuousKlines, markPriceKlines,
    indexPriceKlines, premiumIndexKlines)."""
    inst = st.inst
    p = inst.price
    if kind in ("klines", "uiKlines", "continuousKlines"):
        if inst.market == "coinm":
            # COIN-M: volume in contracts, "quote" volume in base asset.
            base_vol = inst.quote_amount(k.v * inst.contract_size * 10 ** (inst.price_dp * 2)
                                         // max(1, (k.o + k.c) // 2))
            return orjson.dumps([k.open_time, p(k.o), p(k.h), p(k.lo), p(k.c), str(k.v),
                                 k.close_time, base_vol, k.n, str(k.tv), base_vol, "0"])
        return orjson.dumps([k.open_time, p(k.o), p(k.h), p(k.lo), p(k.c), inst.qty(k.v),
                             k.close_time, inst.quote_amount(k.q), k.n, inst.qty(k.tv),
                             inst.quote_amount(k.tq), "0"])
    if kind == "premiumIndexKlines":
        z = "0.00000000"
        return orjson.dumps([k.open_time, z, z, z, z, "0", k.close_time, "0", k.n, "0", "0",
                             "0"])
    offset = inst.start_price // 20000 if kind == "indexPriceKlines" else 0
    return orjson.dumps([k.open_time, p(k.o - offset), p(k.h - offset), p(k.lo - offset),
                         p(k.c - offset), "0", k.close_time, "0", k.n, "0", "0", "0"])


def depth_body(st: SymbolState, limit: int, market: str) -> bytes:
    """``/depth``: the top ``limit`` levels of each side."""
    inst = st.inst
    bids = [[inst.price(p), inst.qty(q)] for p, q in st.top("bids", limit)]
    asks = [[inst.price(p), inst.qty(q)] for p, q in st.top("asks", limit)]
    if market == "spot":
        return orjson.dumps({"lastUpdateId": st.update_id, "bids": bids, "asks": asks})
    body: dict[str, Any] = {"lastUpdateId": st.update_id, "E": st.book_time, "T": st.book_time}
    if market == "coinm":
        body["symbol"] = inst.symbol
        body["pair"] = inst.pair
    body["bids"] = bids
    body["asks"] = asks
    return orjson.dumps(body)


def book_ticker_row(st: SymbolState, market: str) -> dict[str, Any]:
    """One ``/ticker/bookTicker`` row."""
    inst = st.inst
    (bp, bq), (ap, aq) = st.top("bids", 1)[0], st.top("asks", 1)[0]
    row: dict[str, Any] = {"symbol": inst.symbol}
    if market == "coinm":
        row["pair"] = inst.pair
    row.update({"bidPrice": inst.price(bp), "bidQty": inst.qty(bq),
                "askPrice": inst.price(ap), "askQty": inst.qty(aq)})
    if market != "spot":
        row["time"] = st.book_time
    return row


def units(v: int) -> str:
    """A balance in 1e-8 units, as Binance prints it."""
    whole, frac = divmod(v, 10 ** 8)
    return f"{whole}.{frac:08d}"


def kline_event(st: SymbolState, interval: str, k: Candle, final: bool, now: int) -> bytes:
    """The ``@kline_<interval>`` stream event."""
    inst = st.inst
    p, q = inst.price, inst.qty
    body: dict[str, Any] = {"e": "kline", "E": now, "s": inst.symbol}
    first, last = (k.first_id, k.last_id) if k.n and k.first_id >= 0 else (-1, -1)
    if inst.market == "coinm":
        row = orjson.loads(kline_row(st, k))
        vol, qv, tv, tq = row[5], row[7], row[9], row[10]
    else:
        vol, qv, tv, tq = q(k.v), inst.quote_amount(k.q), q(k.tv), inst.quote_amount(k.tq)
    body["k"] = {"t": k.open_time, "T": k.close_time, "s": inst.symbol, "i": interval,
                 "f": first, "L": last, "o": p(k.o), "c": p(k.c), "h": p(k.h),
                 "l": p(k.lo), "v": vol, "n": k.n, "x": final, "q": qv, "V": tv,
                 "Q": tq, "B": "0"}
    return orjson.dumps(body)


def depth_event(st: SymbolState, events: list[DepthEvent]) -> bytes:
    """The diff-depth stream event merging ``events`` (``[U, u]`` over all)."""
    futures = st.inst.market != "spot"
    inst = st.inst
    bids: dict[int, int] = {}
    asks: dict[int, int] = {}
    for ev in events:
        bids.update(ev.bids)
        asks.update(ev.asks)
    last = events[-1]
    body: dict[str, Any] = {"e": "depthUpdate", "E": last.time}
    if futures:
        body["T"] = last.time
    body["s"] = inst.symbol
    if inst.market == "coinm":
        body["ps"] = inst.pair
    body["U"] = events[0].first
    body["u"] = last.last
    if futures:
        body["pu"] = events[0].prev
    body["b"] = [[inst.price(px), inst.qty(qty)]
                 for px, qty in sorted(bids.items(), reverse=True)]
    body["a"] = [[inst.price(px), inst.qty(qty)] for px, qty in sorted(asks.items())]
    return orjson.dumps(body)


def partial_depth_event(st: SymbolState, level: int, now: int) -> bytes:
    """The ``@depth<level>`` stream event (spot: a snapshot; futures: an update)."""
    inst = st.inst
    bids = [[inst.price(px), inst.qty(qty)] for px, qty in st.top("bids", level)]
    asks = [[inst.price(px), inst.qty(qty)] for px, qty in st.top("asks", level)]
    if st.inst.market == "spot":
        return orjson.dumps({"lastUpdateId": st.update_id, "bids": bids, "asks": asks})
    prev = st.events[-1].prev if st.events else st.update_id
    return orjson.dumps({"e": "depthUpdate", "E": now, "T": st.book_time, "s": inst.symbol,
                         "U": st.events[-1].first if st.events else st.update_id,
                         "u": st.update_id, "pu": prev, "b": bids, "a": asks})


def book_ticker_event(st: SymbolState, now: int) -> bytes:
    """The ``@bookTicker`` stream event."""
    inst = st.inst
    (bp, bq), (ap, aq) = st.top("bids", 1)[0], st.top("asks", 1)[0]
    if inst.market != "spot":
        return orjson.dumps({"e": "bookTicker", "u": st.update_id, "E": now,
                             "T": st.book_time, "s": inst.symbol, "b": inst.price(bp),
                             "B": inst.qty(bq), "a": inst.price(ap), "A": inst.qty(aq)})
    return orjson.dumps({"u": st.update_id, "s": inst.symbol, "b": inst.price(bp),
                         "B": inst.qty(bq), "a": inst.price(ap), "A": inst.qty(aq)})


def trade_event(st: SymbolState, t: Trade, kind: str) -> bytes:
    """The ``@trade`` or ``@aggTrade`` stream event of ``t``."""
    inst = st.inst
    now = t.time
    if kind == "aggTrade":
        body: dict[str, Any] = {"e": "aggTrade", "E": now, "s": inst.symbol, "a": t.id,
                                "p": inst.price(t.price), "q": inst.qty(t.qty), "f": t.id,
                                "l": t.id, "T": t.time, "m": t.buyer_maker}
        if inst.market != "spot":
            body["nq"] = inst.qty(t.qty)
        else:
            body["M"] = True
        return orjson.dumps(body)
    return orjson.dumps({"e": "trade", "E": now, "s": inst.symbol, "t": t.id,
                         "p": inst.price(t.price), "q": inst.qty(t.qty), "T": t.time,
                         "m": t.buyer_maker, "M": True})


def mark_price_event(st: SymbolState, now: int) -> bytes:
    """The ``@markPrice`` stream event."""
    row = premium_row(st, now)
    return orjson.dumps({"e": "markPriceUpdate", "E": now, "s": st.inst.symbol,
                         "p": row["markPrice"], "i": row["indexPrice"],
                         "P": row["estimatedSettlePrice"], "r": row["lastFundingRate"],
                         "T": row["nextFundingTime"]})


def order_body(market: str, st: SymbolState, o: Order, full: bool = False) -> dict[str, Any]:
    """An order as ``/order`` answers (``full``: the new-order answer with fills)."""
    inst = st.inst
    if market == "spot":
        body: dict[str, Any] = {
            "symbol": o.symbol, "orderId": o.order_id, "orderListId": -1,
            "clientOrderId": o.client_id}
        if full:
            body["transactTime"] = o.time
        body.update({
            "price": inst.price(o.price), "origQty": inst.qty(o.qty),
            "executedQty": inst.qty(o.executed),
            "origQuoteOrderQty": "0.00000000",
            "cummulativeQuoteQty": inst.quote_amount(o.quote),
            "status": o.status, "timeInForce": o.tif or "GTC", "type": o.type,
            "side": o.side})
        if not full:
            body.update({"stopPrice": "0.00000000", "icebergQty": "0.00000000",
                         "time": o.time, "updateTime": o.time, "isWorking": True})
        body["workingTime"] = o.time
        if full:
            body["fills"] = [{"price": inst.price(p), "qty": inst.qty(q),
                              "commission": "0.00000000", "commissionAsset": inst.quote,
                              "tradeId": t} for p, q, t in o.fills]
        body["selfTradePreventionMode"] = "EXPIRE_MAKER"
        return body
    avg = o.quote // o.executed if o.executed else 0
    return {
        "orderId": o.order_id, "symbol": o.symbol, "status": o.status,
        "clientOrderId": o.client_id, "price": inst.price(o.price),
        "avgPrice": inst.price(avg), "origQty": inst.qty(o.qty),
        "executedQty": inst.qty(o.executed), "cumQty": inst.qty(o.executed),
        "cumQuote": inst.quote_amount(o.quote), "timeInForce": o.tif or "GTC",
        "type": o.type, "reduceOnly": o.reduce_only, "closePosition": False,
        "side": o.side, "positionSide": o.position_side, "stopPrice": "0",
        "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": o.type,
        "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": 0, "time": o.time, "updateTime": o.time}


def order_trade_update(st: SymbolState, o: Order, now: int,
                       fill: tuple[int, int, int] | None) -> bytes:
    """A futures ``ORDER_TRADE_UPDATE`` user-data event (FUTDOC's example's
    fields): the order as placed (``fill`` None: ``x`` ``NEW``) or one of its
    fills (``x`` ``TRADE``, with the last filled price, quantity and trade id)."""
    inst = st.inst
    avg = o.quote // o.executed if o.executed else 0
    price, qty, trade = fill if fill is not None else (0, 0, 0)
    done = sum(q for p, q, t in o.fills[:o.fills.index(fill) + 1]) if fill is not None else 0
    status = "NEW" if fill is None else ("FILLED" if done == o.qty else "PARTIALLY_FILLED")
    return orjson.dumps({
        "e": "ORDER_TRADE_UPDATE", "E": now, "T": now, "o": {
            "s": o.symbol, "c": o.client_id, "S": o.side, "o": o.type, "f": o.tif or "GTC",
            "q": inst.qty(o.qty), "p": inst.price(o.price), "ap": inst.price(avg if fill else 0),
            "sp": "0", "x": "NEW" if fill is None else "TRADE", "X": status, "i": o.order_id,
            "l": inst.qty(qty), "z": inst.qty(done), "L": inst.price(price), "N": inst.quote,
            "n": "0", "T": now, "t": trade, "b": "0", "a": "0", "m": False,
            "R": o.reduce_only, "wt": "CONTRACT_PRICE", "ot": o.type, "ps": o.position_side,
            "cp": False, "rp": "0", "pP": False, "si": 0, "ss": 0, "V": "EXPIRE_MAKER",
            "pm": "NONE", "gtd": 0}})
