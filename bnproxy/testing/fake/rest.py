"""The fake exchange's REST handlers: parameters checked as Binance checks
them, answers built by ``formats`` from the ``state``.

:class:`RestApi` gets what it uses (the market state, the accounts, the
order keeper, the API keys and the weight limits), not the exchange.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import orjson

from bnproxy.binance.markets import PRODUCTION
from bnproxy.testing.fake import formats
from bnproxy.testing.fake.auth import AuthError, check_timestamp, verify_signature
from bnproxy.testing.fake.formats import book_ticker_row, depth_body, kline_row, units
from bnproxy.testing.fake.intervals import (
    DAY,
    FUTURES_INTERVALS,
    INTERVALS,
    fixed_ms,
    next_open,
    open_time,
    prev_open,
)
from bnproxy.testing.fake.state import Account, Accounts, Market, SymbolState

if TYPE_CHECKING:
    from bnproxy.testing.fake.orders import OrderBookKeeper

_SYMBOLS_RANGE = ("legal range is "
                  "'^\\[(\"[A-Z0-9-_.]{1,20}\"(,\"[A-Z0-9-_.]{1,20}\"){0,}){0,1}\\]$'.")


class ApiError(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


@attrs.frozen
class Call:
    market: str
    method: str
    path: str
    params: dict[str, str]
    query: bytes
    body: bytes
    api_key: str | None
    ip: str
    now: int  # server time, ms


def bad_param(name: str) -> ApiError:
    return ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, "
                                "or malformed.")


def int_param(call: Call, name: str, default: int | None = None) -> int | None:
    raw = call.params.get(name)
    if raw is None:
        return default
    if raw == "":
        raise ApiError(400, -1105, f"Parameter '{name}' was empty.")
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; "
                                   "legal range is '^[0-9]{1,20}$'.") from None


def ms_param(call: Call, name: str) -> int | None:
    value = int_param(call, name)
    if value is not None and value > 10 ** 14:
        value //= 1000  # microseconds accepted
    return value


class RestApi:
    """Handlers by (market, method, path)."""

    def __init__(self, markets: Market, accounts: Accounts, orders: OrderBookKeeper,
                 keys: Mapping[str, str], weight_limits: Mapping[str, int]) -> None:
        self.markets = markets
        self.accounts = accounts
        self.orders = orders
        self.keys = keys
        self.weight_limits = weight_limits
        self._kline_bytes: dict[tuple[str, str, int, int], bytes] = {}
        r: dict[tuple[str, str, str], tuple[Callable[[Call], Any], str]] = {}
        for prefix in ("/api/v3",):
            for path, fn in [("ping", self.ping), ("time", self.time),
                             ("exchangeInfo", self.exchange_info), ("klines", self.klines),
                             ("uiKlines", self.klines), ("depth", self.depth),
                             ("trades", self.trades), ("historicalTrades", self.trades),
                             ("aggTrades", self.agg_trades), ("ticker/24hr", self.ticker24),
                             ("ticker/price", self.ticker_price),
                             ("ticker/bookTicker", self.book_ticker), ("avgPrice", self.avg_price)]:
                r[("spot", "GET", f"{prefix}/{path}")] = (fn, "NONE")
            r[("spot", "GET", f"{prefix}/account")] = (self.spot_account, "SIGNED")
            r[("spot", "POST", f"{prefix}/order")] = (self.new_order, "SIGNED")
            r[("spot", "POST", f"{prefix}/order/test")] = (self.test_order, "SIGNED")
            r[("spot", "GET", f"{prefix}/order")] = (self.get_order, "SIGNED")
            r[("spot", "DELETE", f"{prefix}/order")] = (self.cancel_order, "SIGNED")
            r[("spot", "GET", f"{prefix}/openOrders")] = (self.open_orders, "SIGNED")
            r[("spot", "GET", f"{prefix}/myTrades")] = (self.my_trades, "SIGNED")
        r[("spot", "GET", "/sapi/v1/margin/allPairs")] = (self.margin_pairs, "KEY")
        r[("spot", "GET", "/sapi/v1/margin/isolated/allPairs")] = (self.margin_pairs, "SIGNED")
        r[("spot", "GET", "/sapi/v1/capital/config/getall")] = (self.coins, "SIGNED")
        for market, p in (("usdm", "/fapi"), ("coinm", "/dapi")):
            v1 = f"{p}/v1"
            for path, fn in [("ping", self.ping), ("time", self.time),
                             ("exchangeInfo", self.exchange_info), ("klines", self.klines),
                             ("continuousKlines", self.klines), ("markPriceKlines", self.klines),
                             ("indexPriceKlines", self.klines),
                             ("premiumIndexKlines", self.klines), ("depth", self.depth),
                             ("trades", self.trades), ("aggTrades", self.agg_trades),
                             ("ticker/24hr", self.ticker24), ("ticker/price", self.ticker_price),
                             ("ticker/bookTicker", self.book_ticker),
                             ("premiumIndex", self.premium_index),
                             ("fundingRate", self.funding_rate)]:
                r[(market, "GET", f"{v1}/{path}")] = (fn, "NONE")
            if market == "usdm":
                r[(market, "GET", "/fapi/v2/ticker/price")] = (self.ticker_price, "NONE")
            for path in ("v1/balance", "v2/balance", "v3/balance"):
                r[(market, "GET", f"{p}/{path}")] = (self.futures_balance, "SIGNED")
            for path in ("v1/account", "v2/account", "v3/account"):
                r[(market, "GET", f"{p}/{path}")] = (self.futures_account, "SIGNED")
            for path in ("v1/positionRisk", "v2/positionRisk", "v3/positionRisk"):
                r[(market, "GET", f"{p}/{path}")] = (self.position_risk, "SIGNED")
            r[(market, "POST", f"{v1}/order")] = (self.new_order, "SIGNED")
            if market == "usdm":
                r[(market, "POST", f"{v1}/order/test")] = (self.test_order, "SIGNED")
            r[(market, "GET", f"{v1}/order")] = (self.get_order, "SIGNED")
            r[(market, "DELETE", f"{v1}/order")] = (self.cancel_order, "SIGNED")
            r[(market, "GET", f"{v1}/openOrders")] = (self.open_orders, "SIGNED")
            r[(market, "GET", f"{v1}/userTrades")] = (self.my_trades, "SIGNED")
            r[(market, "POST", f"{v1}/leverage")] = (self.set_leverage, "SIGNED")
            r[(market, "POST", f"{v1}/marginType")] = (self.set_margin_type, "SIGNED")
            r[(market, "GET", f"{v1}/leverageBracket")] = (self.leverage_bracket, "SIGNED")
            if market == "usdm":
                r[(market, "GET", "/fapi/v2/leverageBracket")] = (self.leverage_bracket, "SIGNED")
            r[(market, "GET", f"{v1}/positionSide/dual")] = (self.get_dual, "SIGNED")
            r[(market, "POST", f"{v1}/positionSide/dual")] = (self.set_dual, "SIGNED")
        self.routes = r

    # -- dispatch ---------------------------------------------------------------
    def handle(self, call: Call) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        route = self.routes.get((call.market, call.method, call.path))
        if route is None:
            raise ApiError(404, -1000, "fake exchange: no such endpoint")
        fn, security = route
        if security == "SIGNED":
            self.authenticate(call)
        elif security == "KEY" and call.api_key not in self.keys:
            raise ApiError(401, -2015 if call.api_key else -2014,
                           "Invalid API-key, IP, or permissions for action." if call.api_key
                           else "API-key format invalid.")
        return fn(call)

    def authenticate(self, call: Call) -> Account:
        if not call.api_key:
            raise ApiError(401, -2014, "API-key format invalid.")
        secret = self.keys.get(call.api_key)
        if secret is None:
            raise ApiError(401, -2015, "Invalid API-key, IP, or permissions for action.")
        try:
            check_timestamp(call.params, call.now)
            verify_signature(secret, call.query, call.body)
        except AuthError as e:
            raise ApiError(e.status, e.code, e.msg) from None
        return self.accounts.account(call.market, call.api_key)

    def symbol(self, call: Call, required: bool = True) -> SymbolState | None:
        name = call.params.get("symbol")
        if name is None:
            if required:
                raise bad_param("symbol")
            return None
        st = self.markets.symbols[call.market].get(name)
        if st is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return st

    def symbol_list(self, call: Call) -> list[SymbolState] | None:
        """Symbols from ``symbol``/``symbols``, or None for all."""
        if "symbol" in call.params and "symbols" in call.params:
            raise ApiError(400, -1128, "Combination of optional parameters invalid.")
        if "symbol" in call.params:
            return [self.symbol(call)]  # type: ignore[list-item]
        raw = call.params.get("symbols")
        if raw is None:
            return None
        try:
            names = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'; "
                                       + _SYMBOLS_RANGE) from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ApiError(400, -1100, "Illegal characters found in parameter 'symbols'.")
        if len(set(names)) != len(names):
            raise ApiError(400, -1151, "Symbol is present multiple times in the list.")
        out = []
        for n in names:
            st = self.markets.symbols[call.market].get(n)
            if st is None:
                raise ApiError(400, -1121, "Invalid symbol.")
            out.append(st)
        return out

    @staticmethod
    def ok(body: Any) -> tuple[int, bytes, list]:
        return 200, body if isinstance(body, bytes) else orjson.dumps(body), []

    # -- general ----------------------------------------------------------------
    def ping(self, call: Call):
        return self.ok(b"{}")

    def time(self, call: Call):
        return self.ok({"serverTime": call.now})

    def exchange_info(self, call: Call):
        states = self.symbol_list(call)
        if states is None:
            states = list(self.markets.symbols[call.market].values())
        return self.ok(formats.exchange_info(call.market, states, call.now,
                                             self.weight_limits[call.market]))

    # -- klines -----------------------------------------------------------------
    def klines(self, call: Call):
        spot = call.market == "spot"
        if call.path.endswith(("continuousKlines", "indexPriceKlines")):
            pair = call.params.get("pair")
            if pair is None:
                raise bad_param("pair")
            st = next((s for s in self.markets.symbols[call.market].values()
                       if s.inst.pair == pair), None)
            if st is None:
                raise ApiError(400, -1121, "Invalid symbol.")
            if call.path.endswith("continuousKlines") and call.params.get("contractType") not in (
                    "PERPETUAL",):
                raise ApiError(400, -1102, "Mandatory parameter 'contractType' was not sent, "
                                           "was empty/null, or malformed.")
        else:
            st = self.symbol(call)
            assert st is not None
        interval = call.params.get("interval")
        if interval is None:
            raise bad_param("interval")
        if interval not in (INTERVALS if spot else FUTURES_INTERVALS):
            raise ApiError(400, -1120, "Invalid interval.")
        if spot and call.params.get("timeZone") not in (None, "0", "+00:00", "00:00", "+0"):
            raise ApiError(400, -1130, "fake exchange: only timeZone=0 is supported")
        limit = int_param(call, "limit", 500)
        assert limit is not None
        if limit < 1:
            raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        limit = min(limit, PRODUCTION[call.market].kline_max)
        start, end = ms_param(call, "startTime"), ms_param(call, "endTime")
        if start is not None and end is not None and start > end:
            raise ApiError(400, -1023, "Start time is greater than end time.")
        opens = select_opens(st, interval, start, end, limit)
        kind = call.path.rsplit("/", 1)[1]
        if not opens:
            return self.ok(b"[]")
        current = st.current[interval]
        closed = opens[:-1] if opens[-1] == current.open_time else opens
        parts = [self._closed_rows(st, kind, interval, closed)] if closed else []
        if len(closed) < len(opens):
            parts.append(kline_row(st, current, kind))
        return self.ok(b"[" + b",".join(parts) + b"]")

    def _closed_rows(self, st: SymbolState, kind: str, interval: str, opens: list[int]) -> bytes:
        """The encoded rows of closed klines, joined; cached per range (closed
        klines never change)."""
        key = (st.inst.market + ":" + st.inst.symbol + ":" + kind, interval, opens[0],
               len(opens))
        cached = self._kline_bytes.get(key)
        if cached is None:
            if len(self._kline_bytes) > 20_000:
                self._kline_bytes.clear()
            cached = self._kline_bytes[key] = b",".join(
                kline_row(st, st.candle(interval, t), kind) for t in opens)
        return cached

    # -- order book -------------------------------------------------------------
    def depth(self, call: Call):
        st = self.symbol(call)
        assert st is not None
        spot = call.market == "spot"
        limit = int_param(call, "limit", 100 if spot else 500)
        assert limit is not None
        allowed = PRODUCTION[call.market].depth_limits
        if allowed is None:
            if limit < 1:
                raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
            limit = min(limit, PRODUCTION[call.market].depth_max)
        elif limit not in allowed:
            raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
        return self.ok(depth_body(st, limit, call.market))

    # -- trades -----------------------------------------------------------------
    def trades(self, call: Call):
        st = self.symbol(call)
        assert st is not None
        limit = min(int_param(call, "limit", 500) or 500, 1000)
        from_id = int_param(call, "fromId")
        rows = list(st.trades)
        if from_id is not None:
            rows = [t for t in rows if t.id >= from_id][:limit]
        else:
            rows = rows[-limit:]
        inst = st.inst
        if call.market == "spot":
            out = [{"id": t.id, "price": inst.price(t.price), "qty": inst.qty(t.qty),
                    "quoteQty": inst.quote_amount(t.price * t.qty), "time": t.time,
                    "isBuyerMaker": t.buyer_maker, "isBestMatch": True} for t in rows]
        else:
            out = [{"id": t.id, "price": inst.price(t.price), "qty": inst.qty(t.qty),
                    "quoteQty": inst.quote_amount(t.price * t.qty), "time": t.time,
                    "isBuyerMaker": t.buyer_maker} for t in rows]
        return self.ok(out)

    def agg_trades(self, call: Call):
        st = self.symbol(call)
        assert st is not None
        limit = min(int_param(call, "limit", 500) or 500, 1000)
        from_id = int_param(call, "fromId")
        start, end = ms_param(call, "startTime"), ms_param(call, "endTime")
        rows = list(st.trades)
        if from_id is not None:
            rows = [t for t in rows if t.id >= from_id]
        if start is not None:
            rows = [t for t in rows if t.time >= start]
        if end is not None:
            rows = [t for t in rows if t.time <= end]
        rows = rows[:limit] if (from_id is not None or start is not None) else rows[-limit:]
        inst = st.inst
        out = []
        for t in rows:
            row = {"a": t.id, "p": inst.price(t.price), "q": inst.qty(t.qty), "f": t.id,
                   "l": t.id, "T": t.time, "m": t.buyer_maker}
            if call.market == "spot":
                row["M"] = True
            out.append(row)
        return self.ok(out)

    # -- tickers ----------------------------------------------------------------
    def ticker24(self, call: Call):
        states = self.symbol_list(call)
        if call.params.get("type", "FULL") not in ("FULL", "MINI"):
            raise ApiError(400, -1139, "Invalid ticker type.")
        mini = call.params.get("type") == "MINI"
        if states is None:
            states = list(self.markets.symbols[call.market].values())
        elif "symbol" in call.params:
            st = states[0]
            return self.ok(formats.ticker_rest(self.markets.ticker(st), st.inst, mini))
        return self.ok(b"[" + b",".join(formats.ticker_rest(self.markets.ticker(s), s.inst, mini)
                                        for s in states) + b"]")

    def ticker_price(self, call: Call):
        states = self.symbol_list(call)
        single = "symbol" in call.params
        if states is None:
            states = list(self.markets.symbols[call.market].values())
        rows = []
        for st in states:
            row: dict[str, Any] = {"symbol": st.inst.symbol}
            if call.market == "coinm":
                row["ps"] = st.inst.pair
            row["price"] = st.inst.price(st.last_price)
            if call.market != "spot":
                row["time"] = st.trades[-1].time if st.trades else call.now
            rows.append(row)
        return self.ok(rows[0] if single else rows)

    def book_ticker(self, call: Call):
        states = self.symbol_list(call)
        single = "symbol" in call.params
        if states is None:
            states = list(self.markets.symbols[call.market].values())
        rows = [book_ticker_row(st, call.market) for st in states]
        return self.ok(rows[0] if single else rows)

    def avg_price(self, call: Call):
        st = self.symbol(call)
        assert st is not None
        w = st.window(call.now, 5 * 60_000, "1m")
        avg = w.q // w.v if w.v else st.last_price
        return self.ok({"mins": 5, "price": st.inst.price(avg),
                        "closeTime": st.trades[-1].time if st.trades else call.now})

    def premium_index(self, call: Call):
        states = self.symbol_list(call) if call.market == "usdm" else None
        single = "symbol" in call.params
        if states is None:
            states = list(self.markets.symbols[call.market].values())
        rows = [formats.premium_row(st, call.now) for st in states]
        return self.ok(rows[0] if single and call.market == "usdm" else rows)

    def funding_rate(self, call: Call):
        st = self.symbol(call, required=False)
        limit = min(int_param(call, "limit", 100) or 100, 1000)
        states = [st] if st else list(self.markets.symbols[call.market].values())
        rows = []
        eight_h = 8 * 3600_000
        last = call.now // eight_h * eight_h
        for s in states:
            for k in range(limit, 0, -1):
                t = last - (k - 1) * eight_h
                row = {"symbol": s.inst.symbol, "fundingTime": t,
                       "fundingRate": "0.00010000",
                       "markPrice": s.inst.price(s.history_price(t))}
                rows.append(row)
        return self.ok(rows[-limit:])

    # -- signed -----------------------------------------------------------------
    def spot_account(self, call: Call):
        acct = self.accounts.account("spot", call.api_key)
        balances = [{"asset": a, "free": units(v), "locked": "0.00000000"}
                    for a, v in sorted(acct.balances.items())]
        return self.ok({
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {"maker": "0.00100000", "taker": "0.00100000",
                                "buyer": "0.00000000", "seller": "0.00000000"},
            "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
            "requireSelfTradePrevention": False, "preventSor": False,
            "updateTime": call.now, "accountType": "SPOT", "balances": balances,
            "permissions": ["SPOT"], "uid": 354937868})

    def futures_balance(self, call: Call):
        acct = self.accounts.account(call.market, call.api_key)
        asset = "USDT" if call.market == "usdm" else "BTC"
        bal = units(acct.balances.get(asset, 0))
        return self.ok([{"accountAlias": "SgsR", "asset": asset, "balance": bal,
                         "crossWalletBalance": bal, "crossUnPnl": "0.00000000",
                         "availableBalance": bal, "maxWithdrawAmount": bal,
                         "marginAvailable": True, "updateTime": call.now}])

    def futures_account(self, call: Call):
        acct = self.accounts.account(call.market, call.api_key)
        asset = "USDT" if call.market == "usdm" else "BTC"
        bal = units(acct.balances.get(asset, 0))
        return self.ok({
            "totalInitialMargin": "0.00000000", "totalMaintMargin": "0.00000000",
            "totalWalletBalance": bal, "totalUnrealizedProfit": "0.00000000",
            "totalMarginBalance": bal, "totalPositionInitialMargin": "0.00000000",
            "totalOpenOrderInitialMargin": "0.00000000", "totalCrossWalletBalance": bal,
            "totalCrossUnPnl": "0.00000000", "availableBalance": bal, "maxWithdrawAmount": bal,
            "assets": [{"asset": asset, "walletBalance": bal, "unrealizedProfit": "0.00000000",
                        "marginBalance": bal, "maintMargin": "0.00000000",
                        "initialMargin": "0.00000000", "positionInitialMargin": "0.00000000",
                        "openOrderInitialMargin": "0.00000000", "crossWalletBalance": bal,
                        "crossUnPnl": "0.00000000", "availableBalance": bal,
                        "maxWithdrawAmount": bal, "updateTime": call.now}],
            "positions": self._positions(call, acct)})

    def _positions(self, call: Call, acct: Account) -> list[dict[str, Any]]:
        out = []
        for name, st in self.markets.symbols[call.market].items():
            amt = acct.positions.get(name, 0)
            if call.path.endswith("/account") and not amt:
                continue
            inst = st.inst
            entry = acct.entry.get(name, 0)
            pnl = (st.last_price - entry) * amt if amt else 0
            out.append({
                "symbol": name, "positionSide": "BOTH",
                "positionAmt": inst.qty(amt) if amt >= 0 else "-" + inst.qty(-amt),
                "entryPrice": inst.price(entry), "breakEvenPrice": inst.price(entry),
                "markPrice": inst.price(st.last_price),
                "unRealizedProfit": inst.quote_amount(pnl) if pnl >= 0
                else "-" + inst.quote_amount(-pnl),
                "liquidationPrice": "0", "isolatedMargin": "0.00000000",
                "notional": inst.quote_amount(abs(amt) * st.last_price),
                "marginAsset": inst.quote if call.market == "usdm" else inst.base,
                "isolatedWallet": "0", "initialMargin": "0", "maintMargin": "0",
                "positionInitialMargin": "0", "openOrderInitialMargin": "0", "adl": 0,
                "bidNotional": "0", "askNotional": "0",
                "leverage": str(acct.leverage.get(name, 20)),
                "marginType": acct.margin_type.get(name, "cross"),
                "isolated": acct.margin_type.get(name, "cross") == "isolated",
                "maxNotionalValue": "1000000", "updateTime": call.now})
        return out

    def position_risk(self, call: Call):
        acct = self.accounts.account(call.market, call.api_key)
        st = self.symbol(call, required=False)
        rows = self._positions(call, acct)
        if st is not None:
            rows = [r for r in rows if r["symbol"] == st.inst.symbol]
        return self.ok(rows)

    def set_leverage(self, call: Call):
        acct = self.accounts.account(call.market, call.api_key)
        st = self.symbol(call)
        assert st is not None
        lev = int_param(call, "leverage")
        if lev is None or not 1 <= lev <= 125:
            raise ApiError(400, -4028, "Leverage is not valid")
        acct.leverage[st.inst.symbol] = lev
        return self.ok({"leverage": lev, "maxNotionalValue": "1000000",
                        "symbol": st.inst.symbol})

    def set_margin_type(self, call: Call):
        acct = self.accounts.account(call.market, call.api_key)
        st = self.symbol(call)
        assert st is not None
        mt = call.params.get("marginType", "").upper()
        if mt not in ("ISOLATED", "CROSSED"):
            raise ApiError(400, -1102, "Mandatory parameter 'marginType' was not sent, "
                                       "was empty/null, or malformed.")
        new = "isolated" if mt == "ISOLATED" else "cross"
        if acct.margin_type.get(st.inst.symbol, "cross") == new:
            raise ApiError(400, -4046, "No need to change margin type.")
        acct.margin_type[st.inst.symbol] = new
        return self.ok({"code": 200, "msg": "success"})

    def leverage_bracket(self, call: Call):
        st = self.symbol(call, required=False)
        states = [st] if st else list(self.markets.symbols[call.market].values())
        rows = [{"symbol": s.inst.symbol, "brackets": [
            {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0,
             "maintMarginRatio": 0.004, "cum": 0.0},
            {"bracket": 2, "initialLeverage": 100, "notionalCap": 600000,
             "notionalFloor": 50000, "maintMarginRatio": 0.005, "cum": 50.0}]}
            for s in states]
        return self.ok(rows[0] if st and call.market == "usdm" else rows)

    def get_dual(self, call: Call):
        acct = self.accounts.account(call.market, call.api_key)
        return self.ok({"dualSidePosition": acct.dual_side})

    def set_dual(self, call: Call):
        acct = self.accounts.account(call.market, call.api_key)
        value = call.params.get("dualSidePosition", "").lower()
        if value not in ("true", "false"):
            raise bad_param("dualSidePosition")
        if (value == "true") == acct.dual_side:
            raise ApiError(400, -4059, "No need to change position side.")
        acct.dual_side = value == "true"
        return self.ok({"code": 200, "msg": "success"})

    def margin_pairs(self, call: Call):
        rows = []
        for n, st in enumerate(self.markets.symbols["spot"].values()):
            i = st.inst
            row = {"base": i.base, "id": 351637150141315861 + n, "isBuyAllowed": True,
                   "isMarginTrade": True, "isSellAllowed": True, "quote": i.quote,
                   "symbol": i.symbol}
            if call.path.endswith("isolated/allPairs"):
                row = {"symbol": i.symbol, "base": i.base, "quote": i.quote,
                       "isMarginTrade": True, "isBuyAllowed": True, "isSellAllowed": True}
            rows.append(row)
        return self.ok(rows)

    def coins(self, call: Call):
        assets = sorted({a for st in self.markets.symbols["spot"].values()
                         for a in (st.inst.base, st.inst.quote)})
        acct = self.accounts.account("spot", call.api_key)
        rows = []
        for a in assets:
            rows.append({
                "coin": a, "depositAllEnable": True, "withdrawAllEnable": True, "name": a,
                "free": units(acct.balances.get(a, 0)), "locked": "0", "freeze": "0",
                "withdrawing": "0", "ipoing": "0", "ipoable": "0", "storage": "0",
                "isLegalMoney": False, "trading": True,
                "networkList": [{
                    "network": a, "coin": a, "withdrawIntegerMultiple": "0.00000001",
                    "isDefault": True, "depositEnable": True, "withdrawEnable": True,
                    "depositDesc": "", "withdrawDesc": "", "specialTips": "", "name": a,
                    "resetAddressStatus": False, "addressRegex": "", "memoRegex": "",
                    "withdrawFee": "0.0005", "withdrawMin": "0.001", "withdrawMax": "9999999",
                    "minConfirm": 1, "unLockConfirm": 2, "sameAddress": False,
                    "estimatedArrivalTime": 25, "busy": False, "contractAddressUrl": "",
                    "contractAddress": ""}]})
        return self.ok(rows)

    def new_order(self, call: Call):
        return self.orders.new_order(call)

    def test_order(self, call: Call):
        return self.orders.test_order(call)

    def get_order(self, call: Call):
        return self.orders.get_order(call)

    def cancel_order(self, call: Call):
        return self.orders.cancel_order(call)

    def open_orders(self, call: Call):
        return self.orders.open_orders(call)

    def my_trades(self, call: Call):
        return self.orders.my_trades(call)


def select_opens(st: SymbolState, interval: str, start: int | None, end: int | None,
                 limit: int) -> list[int]:
    """Open times of the klines Binance returns for these parameters."""
    current = st.current[interval].open_time
    size = fixed_ms(interval)
    if size is not None:  # fixed-size interval: arithmetic, no walking
        if start is not None:
            first = -(-start // size) * size
            last = current if end is None else min(current, end // size * size)
            n = max(0, min(limit, (last - first) // size + 1)) if last >= first else 0
            return list(range(first, first + n * size, size))
        last = current if end is None else min(current, end // size * size)
        return list(range(last - (limit - 1) * size, last + 1, size))
    if start is not None:
        t = open_time(interval, start)
        if t < start:
            t = next_open(interval, t)
        last = current if end is None else min(current, open_time(interval, end))
        out = []
        while t <= last and len(out) < limit:
            out.append(t)
            t = next_open(interval, t)
        return out
    last = current if end is None else min(current, open_time(interval, end))
    out = []
    t = last
    floor = current - 10 * 365 * DAY
    while len(out) < limit and t > floor:
        out.append(t)
        t = prev_open(interval, t)
    out.reverse()
    return out
