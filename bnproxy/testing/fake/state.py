"""The fake exchange's state: a deterministic simulated market (trades as a
random walk, klines for every interval aggregated from them, dense order books
with monotonically increasing update ids, 24 h statistics, all derived from
one state per symbol) and the simulated accounts of API keys.

Nothing here knows a Binance format (see ``formats``) or a request (see
``rest`` and ``ws``).
"""

from __future__ import annotations

import hashlib
import math
import random
import time as _time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import attrs

from bnproxy.testing.fake.instruments import Instrument
from bnproxy.testing.fake.intervals import (
    DAY,
    FUTURES_INTERVALS,
    HOUR,
    INTERVALS,
    next_open,
    open_time,
    prev_open,
)

__all__ = ["DAY", "FUTURES_INTERVALS", "HOUR", "INTERVALS", "MARKETS", "Account", "Accounts",
           "Candle", "DepthEvent", "Market", "Order", "SymbolState", "Trade", "next_open",
           "open_time", "prev_open"]

MARKETS = ("spot", "usdm", "coinm")

BOOK_LEVELS = 5100  # per side, at every tick from the top


@attrs.define
class Candle:
    open_time: int
    close_time: int
    o: int
    h: int
    lo: int
    c: int
    v: int = 0  # qty steps
    q: int = 0  # price*qty units
    n: int = 0
    tv: int = 0  # taker buy qty
    tq: int = 0  # taker buy quote
    first_id: int = -1
    last_id: int = -1

    def add(self, price: int, qty: int, trade_id: int, taker_buy: bool) -> None:
        self.h = max(self.h, price)
        self.lo = min(self.lo, price)
        self.c = price
        self.v += qty
        self.q += price * qty
        self.n += 1
        if taker_buy:
            self.tv += qty
            self.tq += price * qty
        if self.first_id < 0:
            self.first_id = trade_id
        self.last_id = trade_id

    def merge(self, other: Candle) -> None:
        """Add the trades aggregated in ``other`` (as if added one by one)."""
        if self.h < other.h:
            self.h = other.h
        if self.lo > other.lo:
            self.lo = other.lo
        self.c = other.c
        self.v += other.v
        self.q += other.q
        self.n += other.n
        self.tv += other.tv
        self.tq += other.tq
        if self.first_id < 0:
            self.first_id = other.first_id
        self.last_id = other.last_id


@attrs.frozen
class Trade:
    id: int
    price: int
    qty: int
    time: int
    buyer_maker: bool


@attrs.define
class DepthEvent:
    """The changes of one market tick: update ids ``[U, u]``, previous ``pu``."""

    first: int
    last: int
    prev: int
    time: int
    bids: dict[int, int]
    asks: dict[int, int]


def _hash_unit(*parts: object) -> float:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2 ** 64


class SymbolState:
    """Everything about one instrument."""

    def __init__(self, inst: Instrument, seed: int, now_ms: int, futures: bool) -> None:
        self.inst = inst
        self.seed = seed
        self.futures = futures
        self.rng = random.Random(f"{seed}:{inst.market}:{inst.symbol}")
        self.start_ms = now_ms
        self._curve_base = inst.start_price / self._curve(now_ms)
        self.last_price = inst.start_price
        self.last_qty = 1
        self.trade_id = 1_000_000 + self.rng.randrange(1_000_000)
        self.trades: deque[Trade] = deque(maxlen=1000)
        self.update_id = 10_000_000 + self.rng.randrange(10_000_000)
        self.book_time = now_ms
        self.bids: dict[int, int] = {}
        self.asks: dict[int, int] = {}
        self.events: deque[DepthEvent] = deque(maxlen=600)
        self.top_bid = inst.start_price - 1
        self.top_ask = inst.start_price + 1
        self._level_span = 5 * 10 ** max(1, inst.qty_dp)
        for i in range(BOOK_LEVELS):
            self.bids[self.top_bid - i] = self._level_qty()
            self.asks[self.top_ask + i] = self._level_qty()
        self._synthetic_cache: dict[tuple[str, int], Candle] = {}
        self._current: dict[str, Candle] = {}
        # Trades since the open candles were last brought up to date: one
        # aggregate instead of an update of every interval's candle per trade.
        self._pending: Candle | None = None
        self.closed: dict[str, dict[int, Candle]] = {i: {} for i in INTERVALS}
        for interval in INTERVALS:
            self._current[interval] = self._opening_candle(interval, now_ms)
        self._next_close = min(c.close_time for c in self._current.values())
        self.funding_rate = 10_000  # 1e-8 units: 0.00010000

    # -- synthetic history (before the exchange started) ------------------
    def _curve(self, t_ms: int) -> float:
        t = t_ms / 1000
        return (1 + 0.03 * math.sin(2 * math.pi * t / (7 * 86400))
                + 0.01 * math.sin(2 * math.pi * t / (9 * 3600))
                + 0.002 * math.sin(2 * math.pi * t / 2220))

    def history_price(self, t_ms: int) -> int:
        return max(1, round(self._curve_base * self._curve(t_ms)))

    def synthetic(self, interval: str, open_ms: int) -> Candle:
        close_ms = next_open(interval, open_ms) - 1
        o = self.history_price(open_ms)
        c = self.history_price(close_ms + 1)
        samples = [self.history_price(open_ms + (close_ms - open_ms) * k // 5) for k in range(6)]
        spread = max(1, self.inst.start_price // 2000)
        h = max(samples + [o, c]) + int(_hash_unit(self.seed, self.inst.symbol, interval,
                                                    open_ms, "h") * spread)
        lo = max(1, min(samples + [o, c]) - int(_hash_unit(self.seed, self.inst.symbol,
                                                            interval, open_ms, "l") * spread))
        span = (close_ms + 1 - open_ms) // 1000
        n = 1 + int(_hash_unit(self.seed, self.inst.symbol, interval, open_ms, "n") * 3 * span)
        v = n * (1 + int(_hash_unit(self.seed, self.inst.symbol, open_ms, "v") * 50))
        tv = v * 48 // 100
        mid = (o + c) // 2
        return Candle(open_ms, close_ms, o, h, lo, c, v, v * mid, n, tv, tv * mid)

    def _opening_candle(self, interval: str, now_ms: int) -> Candle:
        open_ms = open_time(interval, now_ms)
        candle = self.synthetic(interval, open_ms)
        candle.c = self.last_price
        candle.h = max(candle.h, candle.c)
        candle.lo = min(candle.lo, candle.c)
        return candle

    @property
    def current(self) -> dict[str, Candle]:
        """The open candle of every interval, up to date."""
        if self._pending is not None:
            self._apply_pending()
        return self._current

    def _apply_pending(self) -> None:
        pending, self._pending = self._pending, None
        assert pending is not None
        for candle in self._current.values():
            candle.merge(pending)

    def candle(self, interval: str, open_ms: int) -> Candle:
        current = self.current[interval]
        if open_ms == current.open_time:
            return current
        found = self.closed[interval].get(open_ms)
        if found is not None:
            return found
        key = (interval, open_ms)
        cached = self._synthetic_cache.get(key)
        if cached is None:
            if len(self._synthetic_cache) > 20_000:
                self._synthetic_cache.clear()
            cached = self._synthetic_cache[key] = self.synthetic(interval, open_ms)
        return cached

    def _level_qty(self) -> int:
        return 1 + int(self.rng.random() * self._level_span)

    # -- live ---------------------------------------------------------------
    def roll(self, now_ms: int, on_close: Callable[[str, Candle], None] | None = None) -> None:
        """Close candles whose interval ended before ``now_ms``."""
        if now_ms <= self._next_close:
            return
        if self._pending is not None:
            self._apply_pending()
        for interval in INTERVALS:
            current = self._current[interval]
            while now_ms > current.close_time:
                closed = self.closed[interval]
                closed[current.open_time] = current
                if len(closed) > 1600:
                    del closed[next(iter(closed))]  # the oldest: closed in order
                if on_close is not None:
                    on_close(interval, current)
                nxt = next_open(interval, current.open_time)
                p = current.c
                current = Candle(nxt, next_open(interval, nxt) - 1, p, p, p, p)
                self._current[interval] = current
        self._next_close = min(c.close_time for c in self._current.values())

    def trade(self, now_ms: int, price: int, qty: int, buyer_maker: bool) -> Trade:
        self.trade_id += 1
        t = Trade(self.trade_id, price, qty, now_ms, buyer_maker)
        self.trades.append(t)
        self.last_price = price
        self.last_qty = qty
        pending = self._pending
        if pending is None:
            pending = self._pending = Candle(0, 0, price, price, price, price)
        pending.add(price, qty, t.id, not buyer_maker)
        return t

    def step(self, now_ms: int, rate: float) -> list[Trade]:
        """One market tick: some trades, then the book follows the price."""
        self.roll(now_ms)
        trades = []
        n = 0
        expected = rate
        while self.rng.random() < expected / (n + 1) and n < 20:
            n += 1
        for _ in range(n):
            move = self.rng.choice((-2, -1, -1, 0, 0, 0, 1, 1, 2))
            price = max(2, self.last_price + move)
            qty = 1 + self.rng.randrange(10 ** max(1, self.inst.qty_dp))
            trades.append(self.trade(now_ms, price, qty, move < 0))
        self._move_book(now_ms)
        return trades

    def _move_book(self, now_ms: int) -> None:
        """Keep each side dense over BOOK_LEVELS ticks from its top: levels the
        new price crosses are deleted, levels it uncovers are added, and the
        far end follows."""
        bids: dict[int, int] = {}
        asks: dict[int, int] = {}
        new_top_bid = self.last_price - 1
        new_top_ask = self.last_price + 1
        self._shift(self.bids, bids, self.top_bid - BOOK_LEVELS + 1, self.top_bid,
                    new_top_bid - BOOK_LEVELS + 1, new_top_bid)
        self._shift(self.asks, asks, self.top_ask, self.top_ask + BOOK_LEVELS - 1,
                    new_top_ask, new_top_ask + BOOK_LEVELS - 1)
        self.top_bid, self.top_ask = new_top_bid, new_top_ask
        for _ in range(self.rng.randrange(4)):
            side, book, top, sign = ((bids, self.bids, new_top_bid, -1)
                                     if self.rng.random() < 0.5 else
                                     (asks, self.asks, new_top_ask, 1))
            p = top + sign * self.rng.randrange(50)
            book[p] = self._level_qty()
            side[p] = book[p]
        n_changes = len(bids) + len(asks)
        if n_changes:
            prev = self.update_id
            self.update_id += n_changes
            self.book_time = now_ms
            self.events.append(DepthEvent(prev + 1, self.update_id, prev, now_ms, bids, asks))

    def _shift(self, book: dict[int, int], changes: dict[int, int], old_lo: int, old_hi: int,
               new_lo: int, new_hi: int) -> None:
        """Move a dense price range [old_lo, old_hi] to [new_lo, new_hi]."""
        if new_lo == old_lo:
            return
        for p in range(old_lo, old_hi + 1) if new_lo > old_hi or new_hi < old_lo else (
                range(old_lo, new_lo) if new_lo > old_lo else range(new_hi + 1, old_hi + 1)):
            if book.pop(p, None) is not None:
                changes[p] = 0
        for p in range(new_lo, new_hi + 1) if new_lo > old_hi or new_hi < old_lo else (
                range(old_hi + 1, new_hi + 1) if new_hi > old_hi else range(new_lo, old_lo)):
            book[p] = changes[p] = self._level_qty()

    def top(self, side: str, limit: int) -> list[tuple[int, int]]:
        book, start, step = ((self.bids, self.top_bid, -1) if side == "bids"
                             else (self.asks, self.top_ask, 1))
        out = []
        p = start
        while len(out) < limit and len(out) < len(book):
            q = book.get(p)
            if q:
                out.append((p, q))
            p += step
        return out

    # -- statistics ------------------------------------------------------------
    def window(self, now_ms: int, span_ms: int, grain: str = "1h") -> Candle:
        """Aggregate of the ``span_ms`` before ``now_ms`` from ``grain`` klines."""
        start = open_time(grain, now_ms - span_ms)
        t = start
        agg: Candle | None = None
        while t <= now_ms:
            k = self.candle(grain, t)
            if agg is None:
                agg = Candle(start, now_ms, k.o, k.h, k.lo, k.c, k.v, k.q, k.n, k.tv, k.tq)
            else:
                agg.h, agg.lo, agg.c = max(agg.h, k.h), min(agg.lo, k.lo), k.c
                agg.v += k.v
                agg.q += k.q
                agg.n += k.n
            t = next_open(grain, t)
        assert agg is not None
        agg.c = self.last_price
        return agg

    def mark_price(self, now_ms: int) -> int:
        return self.last_price

    def index_price(self, now_ms: int) -> int:
        return max(1, self.last_price - self.inst.start_price // 20000)


class MarketListener(Protocol):
    """What a market tick reports to (one per market: its stream hub)."""

    def on_kline_closed(self, st: SymbolState, interval: str, candle: Candle) -> None: ...

    def on_trades(self, st: SymbolState, trades: list[Trade]) -> None: ...

    def on_depth(self, st: SymbolState, event: DepthEvent) -> None: ...


class Market:
    """Every symbol of every market on one clock, advanced by :meth:`tick`;
    the 24 h statistics computed once per second (REST and streams read the
    same snapshot)."""

    def __init__(self, clock, instruments: Iterable[Instrument], seed: int = 1,
                 start_ms: int | None = None, trade_rate: float = 0.5) -> None:
        self.clock = clock
        self._t0 = clock.seconds()
        self._start_ms = start_ms if start_ms is not None else int(_time.time() * 1000)
        self.skew_ms = 0
        self.trade_rate = trade_rate
        now = self.now()
        self.symbols: dict[str, dict[str, SymbolState]] = {m: {} for m in MARKETS}
        for inst in instruments:
            self.symbols[inst.market][inst.symbol] = SymbolState(inst, seed, now,
                                                                 inst.market != "spot")
        self.stream_symbols = {m: {st.inst.stream_name: st for st in syms.values()}
                               for m, syms in self.symbols.items()}
        self._tickers: dict[tuple[str, str], dict[str, Any]] = {}
        self._ticker_second = -1

    def now(self) -> int:
        """Market time, ms."""
        return self._start_ms + int(round((self.clock.seconds() - self._t0) * 1000))

    def server_ms(self) -> int:
        """Server time as REST reports it (with any skew fault)."""
        return self.now() + self.skew_ms

    def tick(self, listeners: Mapping[str, MarketListener]) -> int:
        """One market step at the current time: klines roll, trades happen,
        books move; each market's listener hears of it. Returns the time."""
        now = self.now()
        for market, syms in self.symbols.items():
            listener = listeners[market]
            for st in syms.values():
                st.roll(now, lambda i, k, st=st, listener=listener:
                        listener.on_kline_closed(st, i, k))
                events_before = len(st.events)
                last_before = st.events[-1] if st.events else None
                trades = st.step(now, self.trade_rate)
                if trades:
                    listener.on_trades(st, trades)
                if st.events and (st.events[-1] is not last_before or
                                  len(st.events) != events_before):
                    listener.on_depth(st, st.events[-1])
        second = now // 1000
        if second != self._ticker_second:
            self._ticker_second = second
            self._tickers.clear()
        return now

    def forget_tickers(self) -> None:
        self._tickers.clear()

    def ticker(self, st: SymbolState) -> dict[str, Any]:
        """The 24 h statistics of ``st`` (stream field names), cached for the
        current second."""
        key = (st.inst.market, st.inst.symbol)
        snap = self._tickers.get(key)
        if snap is None:
            snap = self._tickers[key] = self._compute_ticker(st)
        return snap

    def _compute_ticker(self, st: SymbolState) -> dict[str, Any]:
        now = self.now()
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


# -- accounts -------------------------------------------------------------------

@attrs.define
class Order:
    order_id: int
    client_id: str
    symbol: str
    side: str
    type: str
    tif: str
    price: int  # ticks (0 for market)
    qty: int  # steps
    status: str
    time: int
    executed: int = 0
    quote: int = 0  # price*qty units
    fills: list[tuple[int, int, int]] = attrs.field(factory=list)  # (price, qty, trade id)
    reduce_only: bool = False
    position_side: str = "BOTH"


@attrs.define
class Account:
    """One API key's simulated account."""

    balances: dict[str, int] = attrs.field(factory=dict)  # asset -> 1e-8 units
    orders: dict[int, Order] = attrs.field(factory=dict)
    trades: list[tuple[Order, int, int, int, int]] = attrs.field(factory=list)
    positions: dict[str, int] = attrs.field(factory=dict)  # symbol -> signed qty steps
    entry: dict[str, int] = attrs.field(factory=dict)  # symbol -> entry price ticks
    leverage: dict[str, int] = attrs.field(factory=dict)
    margin_type: dict[str, str] = attrs.field(factory=dict)
    dual_side: bool = False

    @classmethod
    def funded(cls) -> Account:
        return cls(balances={"USDT": 100_000 * 10 ** 8, "BTC": 2 * 10 ** 8,
                             "ETH": 20 * 10 ** 8, "BNB": 50 * 10 ** 8})


class Accounts(dict[tuple[str, str], Account]):
    """Accounts by (market, API key), funded when first used."""

    def account(self, market: str, key: str | None) -> Account:
        return self.setdefault((market, key or ""), Account.funded())
