"""The fake exchange's kline boundaries agree with the calendar (weeks open on
Monday 00:00 UTC, months on the 1st), independently of the proxy's own
arithmetic, which the last test holds against them."""

import calendar
import random
from datetime import UTC, datetime, timedelta

import pytest

from bnproxy.binance import intervals as proxy
from bnproxy.testing.fake import intervals as fake

YEARS = range(2017, 2031)


def ms(d: datetime) -> int:
    return int(d.timestamp() * 1000)


def test_weeks_open_on_monday_midnight_for_every_day_of_several_years():
    day = datetime(YEARS[0], 1, 1, tzinfo=UTC)
    end = datetime(YEARS[-1] + 1, 1, 1, tzinfo=UTC)
    while day < end:
        for offset in (timedelta(0), timedelta(hours=13, minutes=7), timedelta(days=1, milliseconds=-1)):
            t = ms(day + offset)
            opened = datetime.fromtimestamp(fake.open_time("1w", t) / 1000, tz=UTC)
            assert opened.weekday() == calendar.MONDAY
            assert (opened.hour, opened.minute, opened.second) == (0, 0, 0)
            assert timedelta(0) <= day + offset - opened < timedelta(days=7)
        day += timedelta(days=1)


def test_months_open_on_the_first_for_every_month_of_several_years():
    for year in YEARS:
        for month in range(1, 13):
            first = datetime(year, month, 1, tzinfo=UTC)
            days = calendar.monthrange(year, month)[1]
            last_ms = ms(first + timedelta(days=days)) - 1
            for t in (ms(first), ms(first) + 1, ms(first + timedelta(days=14, hours=5)), last_ms):
                assert fake.open_time("1M", t) == ms(first)
            assert fake.next_open("1M", ms(first)) == last_ms + 1
            assert fake.prev_open("1M", last_ms + 1) == ms(first)


def test_a_kline_ends_where_the_next_opens():
    t = ms(datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC))
    for interval in fake.INTERVALS:
        opened = fake.open_time(interval, t)
        assert opened <= t < fake.next_open(interval, opened)
        assert fake.open_time(interval, fake.next_open(interval, opened)) == \
            fake.next_open(interval, opened)


@pytest.mark.parametrize("interval", fake.INTERVALS)
def test_the_proxy_draws_the_same_boundaries_as_the_fake(interval):
    rng = random.Random(interval)
    lo, hi = ms(datetime(YEARS[0], 1, 1, tzinfo=UTC)), ms(datetime(YEARS[-1], 12, 31, tzinfo=UTC))
    for _ in range(500):
        t = rng.randrange(lo, hi)
        opened = fake.open_time(interval, t)
        assert proxy.open_time(interval, t) == opened
        assert proxy.next_open(interval, opened) == fake.next_open(interval, opened)
