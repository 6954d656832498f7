"""``KlineSeries``: one (symbol, interval) kept current by its kline stream,
answering ``klines`` requests in the exact REST bytes or saying "not covered".

Rows are held as their encoded REST bytes (one ``bytes`` per candle) with the
open times in an ``array``: about 200 bytes a candle. A response is joined
once per update and reused until the next.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from typing import Any

import orjson

from bnproxy.binance.intervals import next_open


def held(encoded: bytes) -> bytes:
    """An exact-size copy: orjson's result keeps a 4 KiB allocation behind a
    short row, which would make a held candle cost 4 KiB instead of ~210 B."""
    return bytes(memoryview(encoded))


class KlineSeries:
    """Contiguous klines from ``opens[0]`` to the current (open) candle."""

    def __init__(self, interval: str, max_rows: int) -> None:
        self.interval = interval
        self.max_rows = max_rows
        self.opens = array("q")
        self.rows: list[bytes] = []
        self.last_final = False  # the newest row is a closed candle's final state
        self.backfill_from: int | None = None  # rows from here on need a REST repair
        self._tail: tuple[int, bytes, bool] | None = None  # newest stream row during a gap
        self._responses: dict[tuple[int, int], bytes] = {}
        self.updated_ms = 0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ready(self) -> bool:
        return bool(self.rows) and self.backfill_from is None

    # -- feeding --------------------------------------------------------------
    def seed(self, rows: list[list[Any]], now_ms: int) -> bool:
        """Take a REST ``klines`` answer whose newest row is the current candle.
        Returns False (and keeps nothing) for a historical page."""
        if not rows or rows[-1][6] < now_ms - 1:
            return False
        opens = [r[0] for r in rows]
        if any(next_open(self.interval, a) != b for a, b in zip(opens, opens[1:])):
            return False
        self.opens = array("q", opens[-self.max_rows:])
        self.rows = [held(orjson.dumps(r)) for r in rows[-self.max_rows:]]
        self.last_final = False
        self.backfill_from = None
        self._changed(now_ms)
        return True

    def restore(self, rows: list[list[Any]]) -> None:
        """Take closed candles kept across a restart (``klines_kept``): the
        stream's next message continues them, or opens a gap to repair."""
        self.opens = array("q", [r[0] for r in rows[-self.max_rows:]])
        self.rows = [held(orjson.dumps(r)) for r in rows[-self.max_rows:]]
        self.last_final = True
        self.backfill_from = None
        self._tail = None
        self._changed(self.updated_ms)

    def closed_rows(self) -> list[bytes]:
        """The rows of closed candles in their final state (what a restart
        may keep): all but an open newest one."""
        if not self.ready:
            return []
        return self.rows if self.last_final else self.rows[:-1]

    def backfill_range(self) -> tuple[int, int] | None:
        """(startTime, endTime) of the REST page that repairs a gap: from the
        newest row held to just before the newest stream row."""
        if self.backfill_from is None or self._tail is None:
            return None
        return self.backfill_from, self._tail[0] - 1

    def repair(self, rows: list[list[Any]]) -> bool:
        """Merge a backfill page: the closed candles it holds replace ours,
        then the newest stream row follows."""
        if not rows or not self.rows:
            return False
        first = rows[0][0]
        if first < self.opens[0] or first > next_open(self.interval, self.opens[-1]):
            return False
        cut = bisect_left(self.opens, first)
        del self.opens[cut:]
        del self.rows[cut:]
        for r in rows:
            self.opens.append(r[0])
            self.rows.append(held(orjson.dumps(r)))
        self.last_final = self._tail is not None  # a page ending before the tail is closed
        self.backfill_from = None
        if self._tail is not None:
            t, row, final = self._tail
            self._tail = None
            self._place(t, row, final)
        self._trim()
        self._changed(self.updated_ms)
        return True

    def prepend(self, rows: list[list[Any]]) -> bool:
        """Older candles that end just before the oldest one held (a growth
        page): kept, as far as ``max_rows`` allows. False if they do not join."""
        if not rows or not self.rows:
            return False
        opens = [r[0] for r in rows]
        if (next_open(self.interval, opens[-1]) != self.opens[0]
                or any(next_open(self.interval, a) != b for a, b in zip(opens, opens[1:]))):
            return False
        room = self.max_rows - len(self.rows)
        if room <= 0:
            return False
        self.opens = array("q", opens[-room:]) + self.opens
        self.rows = [held(orjson.dumps(r)) for r in rows[-room:]] + self.rows
        self._changed(self.updated_ms)
        return True

    def missing(self, start: int | None, end: int | None, limit: int) -> tuple[int, int] | None:
        """(rows, endTime) of the one page of older candles that would let the
        series answer these parameters, or None if no such page fits (a
        historical range, or more than ``max_rows`` in all)."""
        if not self.ready or (end is not None and end < self.opens[0]):
            return None
        first = self.opens[0]
        if start is None:
            j = len(self.opens) if end is None else bisect_right(self.opens, end)
            need = limit - j
        else:
            if start >= first:
                return None
            size = next_open(self.interval, first) - first
            if self.interval == "1M":
                return None  # months differ in length; rare enough to forward
            need = -(-(first - start) // size)
            if need >= limit:
                return None  # the answer would be all older candles: a historical page
        if need <= 0 or need + len(self.rows) > self.max_rows:
            return None
        return need, first - 1

    def apply(self, k: Mapping[str, Any], event_ms: int) -> None:
        """One ``kline`` stream payload's ``k``."""
        t = k["t"]
        row = held(orjson.dumps([t, k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"],
                                 k["n"], k["V"], k["Q"], "0"]))
        if self.backfill_from is not None:
            self._tail = (t, row, bool(k["x"]))
            return
        self._place(t, row, bool(k["x"]))
        self._changed(event_ms)

    def _place(self, t: int, row: bytes, final: bool) -> None:
        if not self.rows:
            return
        last = self.opens[-1]
        if t == last:
            self.rows[-1] = row
            self.last_final = final
        elif t == next_open(self.interval, last):
            if not self.last_final:
                # the previous candle closed without us seeing its final state
                self.backfill_from = last
                self._tail = (t, row, final)
                return
            self.opens.append(t)
            self.rows.append(row)
            self.last_final = final
            self._trim()
        elif t > last:
            self.backfill_from = last  # candles were missed: repair from the last we hold
            self._tail = (t, row, final)
        # t < last: an old update (a duplicate after a rotation); ignore

    def _trim(self) -> None:
        extra = len(self.rows) - self.max_rows
        if extra > 0:
            del self.opens[:extra]
            del self.rows[:extra]

    def _changed(self, now_ms: int) -> None:
        self._responses.clear()
        self.updated_ms = now_ms

    # -- answering ---------------------------------------------------------------
    def covers(self, start: int | None, end: int | None, limit: int) -> tuple[int, int] | None:
        """The row slice Binance would return for these parameters, or None
        when the series does not hold it exactly."""
        if not self.ready:
            return None
        opens = self.opens
        if start is not None:
            if start < opens[0]:
                return None  # older rows exist that we do not hold
            i = bisect_left(opens, start)
            j = len(opens) if end is None else bisect_right(opens, end)
            j = min(j, i + limit)
            return (i, j) if j >= i else (i, i)
        j = len(opens) if end is None else bisect_right(opens, end)
        if end is not None and end < opens[0]:
            return None
        i = j - limit
        if i < 0:
            return None  # not enough history held
        return (i, j)

    def response(self, span: tuple[int, int]) -> bytes:
        body = self._responses.get(span)
        if body is None:
            i, j = span
            body = self._responses[span] = b"[" + b",".join(self.rows[i:j]) + b"]"
        return body
