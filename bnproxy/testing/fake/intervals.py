"""The fake exchange's own kline boundaries, drawn with the calendar.

Only the interval *names* come from :mod:`bnproxy.binance` (the declared
facts); the arithmetic is written here independently of the proxy's
``bnproxy.binance.intervals``, so that a wrong boundary in the proxy
disagrees with the fake and the differential tests catch it.

Binance's rules (UTC): an interval of N seconds, minutes or hours opens where
the clock's seconds, minutes or hours are a multiple of N; days count from
1970-01-01 (so 3d klines open every third day since the epoch); weeks open on
Monday 00:00; months on the 1st at 00:00.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta

from bnproxy.binance.markets import PRODUCTION

SECOND = 1000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR

#: Every kline interval spot knows (futures: the same without ``1s``).
INTERVALS: tuple[str, ...] = PRODUCTION["spot"].kline_intervals
FUTURES_INTERVALS: tuple[str, ...] = PRODUCTION["usdm"].kline_intervals

_EPOCH_DAY = date(1970, 1, 1)
_UNIT_MS = {"s": SECOND, "m": MINUTE, "h": HOUR, "d": DAY}


def _parse(interval: str) -> tuple[int, str]:
    if interval not in INTERVALS:
        raise ValueError(f"unknown interval {interval!r}")
    return int(interval[:-1]), interval[-1]


def fixed_ms(interval: str) -> int | None:
    """The length of an interval whose klines all have one length and open
    at multiples of it since the epoch (``1s`` … ``3d``); None for ``1w``
    (weeks open on Mondays, the epoch was a Thursday) and ``1M``."""
    n, unit = _parse(interval)
    size = _UNIT_MS.get(unit)
    return None if size is None else n * size


def _ms(moment: datetime) -> int:
    return calendar.timegm(moment.utctimetuple()) * 1000


def open_time(interval: str, t_ms: int) -> int:
    """The open time of the ``interval`` kline containing ``t_ms``."""
    n, unit = _parse(interval)
    moment = datetime.fromtimestamp(t_ms // 1000, tz=UTC)
    if unit == "M":
        return _ms(moment.replace(day=1, hour=0, minute=0, second=0))
    if unit == "w":
        monday = moment.date() - timedelta(days=moment.weekday())
        return _ms(datetime.combine(monday, datetime.min.time(), tzinfo=UTC))
    if unit == "d":
        days = (moment.date() - _EPOCH_DAY).days
        first = _EPOCH_DAY + timedelta(days=days - days % n)
        return _ms(datetime.combine(first, datetime.min.time(), tzinfo=UTC))
    if unit == "h":
        return _ms(moment.replace(hour=moment.hour - moment.hour % n, minute=0, second=0))
    if unit == "m":
        return _ms(moment.replace(minute=moment.minute - moment.minute % n, second=0))
    return _ms(moment.replace(second=moment.second - moment.second % n))


def next_open(interval: str, open_ms: int) -> int:
    """The open time of the kline after the one opening at ``open_ms``."""
    n, unit = _parse(interval)
    if unit == "M":
        moment = datetime.fromtimestamp(open_ms // 1000, tz=UTC)
        year, month = divmod(moment.month - 1 + n, 12)
        return _ms(moment.replace(year=moment.year + year, month=month + 1, day=1))
    if unit == "w":
        return open_ms + 7 * n * DAY
    return open_ms + n * _UNIT_MS[unit]


def prev_open(interval: str, open_ms: int) -> int:
    """The open time of the kline before the one opening at ``open_ms``."""
    return open_time(interval, open_ms - 1)
