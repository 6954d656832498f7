"""Kline interval arithmetic, as Binance draws the boundaries (UTC)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

MINUTE = 60_000
INTERVAL_MS = {
    "1s": 1000, "1m": MINUTE, "3m": 3 * MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE,
    "30m": 30 * MINUTE, "1h": 60 * MINUTE, "2h": 120 * MINUTE, "4h": 240 * MINUTE,
    "6h": 360 * MINUTE, "8h": 480 * MINUTE, "12h": 720 * MINUTE, "1d": 1440 * MINUTE,
    "3d": 3 * 1440 * MINUTE, "1w": 7 * 1440 * MINUTE,
}
WEEK_OFFSET = 4 * 1440 * MINUTE  # 1970-01-01 was a Thursday; weeks open on Monday


def open_time(interval: str, t_ms: int) -> int:
    """The open time of the ``interval`` kline containing ``t_ms``."""
    if interval == "1M":
        d = datetime.fromtimestamp(t_ms / 1000, tz=UTC)
        return calendar.timegm((d.year, d.month, 1, 0, 0, 0)) * 1000
    size = INTERVAL_MS[interval]
    if interval == "1w":
        return (t_ms - WEEK_OFFSET) // size * size + WEEK_OFFSET
    return t_ms // size * size


def next_open(interval: str, open_ms: int) -> int:
    if interval == "1M":
        d = datetime.fromtimestamp(open_ms / 1000, tz=UTC)
        y, m = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
        return calendar.timegm((y, m, 1, 0, 0, 0)) * 1000
    return open_ms + INTERVAL_MS[interval]


def interval_seconds(interval: str) -> float:
    return (INTERVAL_MS.get(interval) or 31 * 1440 * MINUTE) / 1000
