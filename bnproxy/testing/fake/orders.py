"""Orders on the fake exchange: market orders fill against the simulated book,
limit orders rest (or fill at once when marketable) and can be queried and
cancelled."""

from __future__ import annotations

import orjson

from bnproxy.testing.fake.formats import order_body
from bnproxy.testing.fake.instruments import (
    LOT_MAX_QUOTE,
    max_steps,
    min_notional,
    min_notional_units,
)
from bnproxy.testing.fake.rest import ApiError, Call, bad_param, int_param
from bnproxy.testing.fake.state import Account, Accounts, Market, Order


class OrderBookKeeper:
    """Orders of every account: placed, filled against the simulated book,
    queried, cancelled. Gets the market state and the accounts."""

    def __init__(self, markets: Market, accounts: Accounts) -> None:
        self.markets = markets
        self.accounts = accounts
        self.next_id = 4_000_000
        self.next_trade = 90_000_000
        # (market, API key, symbol state, order) after each order placed (user-data streams)
        self.on_order: list = []

    def _symbol(self, call: Call):
        name = call.params.get("symbol")
        if not name:
            raise bad_param("symbol")
        st = self.markets.symbols[call.market].get(name)
        if st is None:
            raise ApiError(400, -1121, "Invalid symbol.")
        return st

    def _find(self, call: Call, acct: Account) -> Order:
        order_id = int_param(call, "orderId")
        client_id = call.params.get("origClientOrderId")
        if order_id is None and client_id is None:
            raise ApiError(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, "
                                       "but both were empty/null!")
        for o in acct.orders.values():
            if o.symbol == call.params.get("symbol") and (
                    o.order_id == order_id or (client_id is not None and o.client_id == client_id)):
                return o
        raise ApiError(400, -2013, "Order does not exist.")

    def test_order(self, call: Call):
        """``/api/v3/order/test`` and ``/fapi/v1/order/test``: validated like
        a new order, placed nowhere; Binance answers ``{}``."""
        return self.new_order(call, test=True)

    def new_order(self, call: Call, test: bool = False):
        acct = self.accounts.account(call.market, call.api_key)
        st = self._symbol(call)
        inst = st.inst
        side = call.params.get("side", "")
        otype = call.params.get("type", "")
        if side not in ("BUY", "SELL"):
            raise bad_param("side")
        if otype not in ("LIMIT", "MARKET"):
            raise ApiError(400, -1116, "Invalid orderType.")
        try:
            qty = inst.parse_qty(call.params["quantity"]) if "quantity" in call.params else None
            price = inst.parse_price(call.params["price"]) if otype == "LIMIT" else 0
        except KeyError:
            raise bad_param("price") from None
        except ValueError:
            raise ApiError(400, -1111, "Precision is over the maximum defined for this asset.") \
                from None
        if qty is None or qty <= 0:
            raise bad_param("quantity")
        tif = call.params.get("timeInForce", "GTC" if otype == "LIMIT" else "")
        if otype == "LIMIT" and "timeInForce" not in call.params and call.market == "spot":
            raise bad_param("timeInForce")
        self._check_filters(call, st, otype, price, qty)
        if test:
            return 200, b"{}", []
        self.next_id += 1
        order = Order(self.next_id, call.params.get("newClientOrderId") or f"fake{self.next_id}",
                      inst.symbol, side, otype, tif, price, qty, "NEW", call.now,
                      reduce_only=call.params.get("reduceOnly", "false") == "true",
                      position_side=call.params.get("positionSide", "BOTH"))
        levels = st.top("asks" if side == "BUY" else "bids", 200)
        marketable = otype == "MARKET" or (
            levels and ((side == "BUY" and price >= levels[0][0]) or
                        (side == "SELL" and price <= levels[0][0])))
        if marketable:
            remaining = qty
            for p, q in levels:
                if otype == "LIMIT" and ((side == "BUY" and p > price) or
                                         (side == "SELL" and p < price)):
                    break
                take = min(q, remaining)
                self.next_trade += 1
                order.fills.append((p, take, self.next_trade))
                order.executed += take
                order.quote += p * take
                remaining -= take
                if not remaining:
                    break
            order.status = "FILLED" if not remaining else (
                "PARTIALLY_FILLED" if otype == "LIMIT" else "EXPIRED")
            self._settle(call.market, acct, st, order)
        acct.orders[order.order_id] = order
        for listener in self.on_order:
            listener(call.market, call.api_key, st, order)
        headers = self.order_count_headers(call)
        return 200, orjson.dumps(order_body(call.market, st, order, full=True)), headers

    @staticmethod
    def _check_filters(call: Call, st, otype: str, price: int, qty: int) -> None:
        """LOT_SIZE and (MIN_)NOTIONAL as exchangeInfo lists them."""
        inst = st.inst
        spot = call.market == "spot"
        if qty > max_steps(inst, LOT_MAX_QUOTE):
            if spot:
                raise ApiError(400, -1013, "Filter failure: LOT_SIZE")
            raise ApiError(400, -4005, "Quantity greater than max quantity.")
        if call.market == "coinm" or call.params.get("reduceOnly") == "true":
            return
        notional = (price if otype == "LIMIT" else st.last_price) * qty
        if notional < min_notional_units(inst):
            if spot:
                raise ApiError(400, -1013, "Filter failure: NOTIONAL")
            raise ApiError(400, -4164, "Order's notional must be no smaller than "
                                       f"{min_notional(inst.quote, 0)} (unless you choose "
                                       "reduce only).")

    def order_count_headers(self, call: Call) -> list[tuple[bytes, bytes]]:
        acct = self.accounts.account(call.market, call.api_key)
        n = str(len(acct.orders) + 1).encode()
        if call.market == "spot":
            return [(b"x-mbx-order-count-10s", n), (b"x-mbx-order-count-1d", n)]
        return [(b"x-mbx-order-count-10s", n), (b"x-mbx-order-count-1m", n)]

    def _settle(self, market: str, acct: Account, st, order: Order) -> None:
        inst = st.inst
        for p, q, tid in order.fills:
            acct.trades.append((order, p, q, tid, order.time))
        sign = 1 if order.side == "BUY" else -1
        if market == "spot":
            scale_q = 10 ** (8 - inst.qty_dp)
            quote_units = order.quote // 10 ** (inst.price_dp + inst.qty_dp - 8) \
                if inst.price_dp + inst.qty_dp >= 8 else order.quote * 10 ** (
                    8 - inst.price_dp - inst.qty_dp)
            base = acct.balances.get(inst.base, 0)
            acct.balances[inst.base] = base + sign * order.executed * scale_q
            acct.balances[inst.quote] = acct.balances.get(inst.quote, 0) - sign * quote_units
        else:
            pos = acct.positions.get(inst.symbol, 0)
            new = pos + sign * order.executed
            if order.executed:
                acct.entry[inst.symbol] = order.quote // order.executed
            acct.positions[inst.symbol] = new

    def get_order(self, call: Call):
        acct = self.accounts.account(call.market, call.api_key)
        st = self._symbol(call)
        return 200, orjson.dumps(order_body(call.market, st, self._find(call, acct))), []

    def cancel_order(self, call: Call):
        acct = self.accounts.account(call.market, call.api_key)
        st = self._symbol(call)
        order = self._find(call, acct)
        if order.status not in ("NEW", "PARTIALLY_FILLED"):
            raise ApiError(400, -2011, "Unknown order sent.")
        order.status = "CANCELED"
        body = order_body(call.market, st, order)
        if call.market == "spot":
            body = {"symbol": body["symbol"], "origClientOrderId": order.client_id,
                    **{k: v for k, v in body.items() if k != "symbol"}}
        return 200, orjson.dumps(body), []

    def open_orders(self, call: Call):
        acct = self.accounts.account(call.market, call.api_key)
        name = call.params.get("symbol")
        rows = []
        for o in acct.orders.values():
            if o.status in ("NEW", "PARTIALLY_FILLED") and (name is None or o.symbol == name):
                rows.append(order_body(call.market, self.markets.symbols[call.market][o.symbol], o))
        return 200, orjson.dumps(rows), []

    def my_trades(self, call: Call):
        acct = self.accounts.account(call.market, call.api_key)
        st = self._symbol(call)
        inst = st.inst
        rows = []
        for o, p, q, tid, t in acct.trades:
            if o.symbol != inst.symbol:
                continue
            if call.market == "spot":
                rows.append({"symbol": o.symbol, "id": tid, "orderId": o.order_id,
                             "orderListId": -1, "price": inst.price(p), "qty": inst.qty(q),
                             "quoteQty": inst.quote_amount(p * q), "commission": "0.00000000",
                             "commissionAsset": inst.quote, "time": t,
                             "isBuyer": o.side == "BUY", "isMaker": False, "isBestMatch": True})
            else:
                rows.append({"buyer": o.side == "BUY", "commission": "0", "commissionAsset":
                             inst.quote, "id": tid, "maker": False, "orderId": o.order_id,
                             "price": inst.price(p), "qty": inst.qty(q),
                             "quoteQty": inst.quote_amount(p * q), "realizedPnl": "0",
                             "side": o.side, "positionSide": o.position_side,
                             "symbol": o.symbol, "time": t})
        return 200, orjson.dumps(rows), []
