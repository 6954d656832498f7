"""``OrderBook``: a local book kept by Binance's documented procedure
(spot ``U``/``u``; futures ``U``/``u``/``pu``), answering ``depth`` requests in
the exact REST bytes when it holds enough exact levels.

Levels are exact only inside the price range the snapshot covered: a level
beyond it that never changed is unknown. So a ``limit`` is served only when
that many levels lie inside the exact range.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

import orjson
from sortedcontainers import SortedDict

SYNCING, LIVE, RESYNC = "syncing", "live", "resync"


class OrderBook:
    def __init__(self, market: str, symbol: str, pair: str | None = None,
                 buffer_limit: int = 2000) -> None:
        self.market = market
        self.futures = market != "spot"
        self.symbol = symbol
        self.pair = pair
        self.state = SYNCING
        self.last_id = 0
        self.event_ms = 0  # E of the last applied event (futures REST "E")
        self.trade_ms = 0  # T of the last applied event (futures REST "T")
        self._bids: SortedDict = SortedDict()  # -price -> (price, qty)
        self._asks: SortedDict = SortedDict()  # price -> (price, qty)
        self._bid_floor = float("inf")  # bids at or above this are exact
        self._ask_ceiling = float("-inf")
        self._buffer: list[Mapping[str, Any]] = []
        self._buffer_limit = buffer_limit
        self._responses: dict[int, bytes] = {}
        self.resyncs = 0
        self.updated_ms = 0

    # -- feeding ----------------------------------------------------------------
    def on_event(self, ev: Mapping[str, Any], now_ms: int) -> None:
        """One ``depthUpdate`` payload."""
        if self.state != LIVE:
            self._buffer.append(ev)
            if len(self._buffer) > self._buffer_limit:
                del self._buffer[: len(self._buffer) - self._buffer_limit]
            return
        self._apply_live(ev, now_ms)

    def needs_snapshot(self) -> bool:
        return self.state in (SYNCING, RESYNC) and bool(self._buffer)

    def on_snapshot(self, snap: Mapping[str, Any], limit: int, now_ms: int) -> bool:
        """A REST depth snapshot of ``limit`` levels. True if the book is live."""
        last = snap["lastUpdateId"]
        buffered = self._buffer
        if buffered and last < buffered[0]["U"] - (0 if self.futures else 1) and not (
                self.futures and buffered[0].get("pu") == last):
            return False  # the snapshot is older than the stream we hold: fetch again
        self._load(snap, limit)
        self.last_id = last
        first = True
        prev_u = None
        for ev in buffered:
            if self.futures:
                if ev["u"] < last:
                    continue
                if first:
                    # Binance's rule (U <= lastUpdateId <= u), or the event
                    # right after the snapshot: its pu chains on the snapshot
                    # as on a previous event (an event ending at lastUpdateId
                    # went by before the buffer began).
                    if not (ev["U"] <= last <= ev["u"] or ev.get("pu") == last):
                        return self._restart()
                elif ev["pu"] != prev_u:
                    return self._restart()
            else:
                if ev["u"] <= last:
                    continue
                if first and not ev["U"] <= last + 1 <= ev["u"]:
                    return self._restart()
                if not first and ev["U"] != self.last_id + 1:
                    return self._restart()
            self._apply(ev)
            prev_u = ev["u"]
            first = False
        self._buffer = []
        self.state = LIVE
        self._changed(now_ms)
        return True

    def _restart(self) -> bool:
        self.state = RESYNC
        self.resyncs += 1
        self._bids.clear()
        self._asks.clear()
        return False

    def _apply_live(self, ev: Mapping[str, Any], now_ms: int) -> None:
        if self.futures:
            if ev["u"] <= self.last_id:
                return  # already applied (a duplicate from an overlapping connection)
            if ev["pu"] != self.last_id:
                self._restart()
                self._buffer = [ev]
                return
        else:
            if ev["u"] <= self.last_id:
                return
            if ev["U"] > self.last_id + 1:
                self._restart()
                self._buffer = [ev]
                return
        self._apply(ev)
        self._changed(now_ms)

    def _apply(self, ev: Mapping[str, Any]) -> None:
        bids, asks = self._bids, self._asks
        for price, qty in ev["b"]:
            key = -float(price)
            if float(qty) == 0:
                bids.pop(key, None)
            else:
                bids[key] = (price, qty)
        for price, qty in ev["a"]:
            key = float(price)
            if float(qty) == 0:
                asks.pop(key, None)
            else:
                asks[key] = (price, qty)
        self.last_id = ev["u"]
        if self.futures:
            self.event_ms = ev.get("E", 0)
            self.trade_ms = ev.get("T", 0)

    def _load(self, snap: Mapping[str, Any], limit: int) -> None:
        self._bids = SortedDict((-float(p), (p, q)) for p, q in snap["bids"])
        self._asks = SortedDict((float(p), (p, q)) for p, q in snap["asks"])
        full_b = len(snap["bids"]) < limit  # the whole side fitted in the snapshot
        full_a = len(snap["asks"]) < limit
        self._bid_floor = float("-inf") if full_b else float(snap["bids"][-1][0])
        self._ask_ceiling = float("inf") if full_a else float(snap["asks"][-1][0])
        if self.futures:
            self.event_ms = snap.get("E", 0)
            self.trade_ms = snap.get("T", 0)

    def _changed(self, now_ms: int) -> None:
        self._responses.clear()
        self.updated_ms = now_ms

    def mark_stale(self) -> None:
        """The stream went silent or was dropped: resync from a snapshot."""
        if self.state == LIVE:
            self._restart()
            self._buffer = []

    # -- answering ----------------------------------------------------------------
    def exact_levels(self) -> int:
        """Levels per side inside the snapshot's price range (the smaller side)."""
        if self.state != LIVE:
            return 0
        bids = self._bids.bisect_right(-self._bid_floor) if self._bid_floor != float(
            "-inf") else len(self._bids)
        asks = self._asks.bisect_right(self._ask_ceiling) if self._ask_ceiling != float(
            "inf") else len(self._asks)
        return min(bids, asks)

    def holds(self, limit: int) -> bool:
        """Whether each side holds ``limit`` levels, exact or not: a new
        snapshot would then answer ``limit`` (a side with fewer is thin,
        not out of range)."""
        return min(len(self._bids), len(self._asks)) >= limit

    def response(self, limit: int) -> bytes | None:
        """REST ``depth`` bytes for ``limit``, or None if not exactly known."""
        body = self._responses.get(limit)
        if body is not None:
            return body
        if self.exact_levels() < limit:
            return None
        bids = _levels(islice(self._bids.values(), limit))
        asks = _levels(islice(self._asks.values(), limit))
        if self.market == "spot":
            body = b'{"lastUpdateId":%d,"bids":%s,"asks":%s}' % (self.last_id, bids, asks)
        elif self.market == "coinm":
            body = (b'{"lastUpdateId":%d,"E":%d,"T":%d,"symbol":%s,"pair":%s,"bids":%s,'
                    b'"asks":%s}' % (self.last_id, self.event_ms, self.trade_ms,
                                     orjson.dumps(self.symbol), orjson.dumps(self.pair),
                                     bids, asks))
        else:
            body = b'{"lastUpdateId":%d,"E":%d,"T":%d,"bids":%s,"asks":%s}' % (
                self.last_id, self.event_ms, self.trade_ms, bids, asks)
        self._responses[limit] = body
        return body


def _levels(levels: Iterable[tuple[str, str]]) -> bytes:
    return orjson.dumps([[p, q] for p, q in levels])
