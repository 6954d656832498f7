"""KlineSeries and OrderBook as plain data structures."""

import orjson

from bnproxy.middleware.streams.klines import KlineSeries
from bnproxy.middleware.streams.orderbook import LIVE, RESYNC, OrderBook

M = 60_000
T0 = 1_767_225_600_000


def row(t, c="1.0", final_n=1):
    return [t, "1.0", "2.0", "0.5", c, "10", t + M - 1, "10", final_n, "5", "5", "0"]


def k(t, c="1.0", x=False, n=1):
    return {"t": t, "T": t + M - 1, "o": "1.0", "h": "2.0", "l": "0.5", "c": c, "v": "10",
            "q": "10", "n": n, "V": "5", "Q": "5", "x": x}


def seeded(n=10):
    s = KlineSeries("1m", 1000)
    assert s.seed([row(T0 + i * M) for i in range(n)], T0 + (n - 1) * M + 5)
    return s


def test_a_historical_page_does_not_seed():
    s = KlineSeries("1m", 1000)
    assert not s.seed([row(T0), row(T0 + M)], T0 + 10 * M)
    assert not s.ready


def test_coverage_follows_binance_rules():
    s = seeded(10)
    assert s.covers(None, None, 3) == (7, 10)
    assert s.covers(None, None, 11) is None  # not enough history
    assert s.covers(T0 + 2 * M + 1, None, 500) == (3, 10)  # first open at or after start
    assert s.covers(T0 - 1, None, 5) is None  # older rows may exist
    assert s.covers(None, T0 + 4 * M + 7, 2) == (3, 5)
    assert s.covers(T0 + M, T0 + 5 * M, 3) == (1, 4)
    body = s.response((7, 10))
    assert orjson.loads(body) == [row(T0 + i * M) for i in (7, 8, 9)]


def test_stream_updates_replace_and_append():
    s = seeded(3)
    s.apply(k(T0 + 2 * M, c="1.5", x=True), 0)
    s.apply(k(T0 + 3 * M, c="1.7"), 0)
    assert s.ready and len(s) == 4
    assert orjson.loads(s.response((3, 4)))[0][4] == "1.7"


def test_a_candle_closed_unseen_needs_a_backfill_of_exactly_that_range():
    s = seeded(3)  # the newest row (T0+2M) was never seen final
    s.apply(k(T0 + 3 * M), 0)
    assert not s.ready and s.backfill_range() == (T0 + 2 * M, T0 + 3 * M - 1)
    assert s.covers(None, None, 1) is None  # nothing served while repairing
    assert s.repair([row(T0 + 2 * M, c="9.9")])
    assert s.ready and len(s) == 4
    assert [r[4] for r in orjson.loads(s.response((2, 4)))] == ["9.9", "1.0"]


def test_missed_candles_after_a_reconnect_are_backfilled():
    s = seeded(3)
    s.apply(k(T0 + 2 * M, x=True), 0)
    s.apply(k(T0 + 6 * M), 0)  # four candles missed
    assert s.backfill_range() == (T0 + 2 * M, T0 + 6 * M - 1)
    s.repair([row(T0 + i * M) for i in range(2, 6)])
    assert s.ready and list(s.opens)[-1] == T0 + 6 * M and len(s) == 7


def test_the_series_is_bounded():
    s = KlineSeries("1m", 5)
    s.seed([row(T0 + i * M) for i in range(8)], T0 + 7 * M + 1)
    assert len(s) == 5 and s.opens[0] == T0 + 3 * M


def ev(U, u, bids=(), asks=(), pu=None, E=0):
    e = {"e": "depthUpdate", "E": E, "T": E, "U": U, "u": u, "b": list(bids), "a": list(asks)}
    if pu is not None:
        e["pu"] = pu
    return e


def snap(last, nb=5, na=5, E=0):
    return {"lastUpdateId": last, "E": E, "T": E,
            "bids": [[f"{100 - i}.0", "1"] for i in range(nb)],
            "asks": [[f"{101 + i}.0", "1"] for i in range(na)]}


def test_spot_procedure_and_gap_detection():
    b = OrderBook("spot", "X")
    b.on_event(ev(9, 10, bids=[["100.0", "5"]]), 0)
    b.on_event(ev(11, 12, asks=[["101.0", "0"]]), 0)
    assert b.needs_snapshot()
    assert b.on_snapshot(snap(10, nb=5, na=5), 5, 0)
    assert b.state == LIVE and b.last_id == 12
    body = orjson.loads(b.response(3))
    assert body == {"lastUpdateId": 12, "bids": [["100.0", "1"], ["99.0", "1"], ["98.0", "1"]],
                    "asks": [["102.0", "1"], ["103.0", "1"], ["104.0", "1"]]}
    assert b.response(5) is None  # an ask was removed: only 4 exact asks remain
    b.on_event(ev(14, 15), 0)  # 13 missing
    assert b.state == RESYNC and b.response(1) is None


def test_a_snapshot_older_than_the_stream_is_refused():
    b = OrderBook("spot", "X")
    b.on_event(ev(50, 60), 0)
    assert not b.on_snapshot(snap(40), 5, 0)


def test_levels_beyond_the_snapshot_range_are_not_exact():
    b = OrderBook("spot", "X")
    b.on_event(ev(11, 11, bids=[["50.0", "3"]]), 0)  # far below the snapshot's range
    assert b.on_snapshot(snap(10, nb=5, na=5), 5, 0)
    assert b.exact_levels() == 5
    assert b.response(6) is None  # the 6th bid (50.0) is known, 95..51 are not


def test_a_thin_book_is_wholly_exact():
    b = OrderBook("spot", "X")
    b.on_event(ev(11, 11), 0)
    assert b.on_snapshot(snap(10, nb=2, na=2), 100, 0)
    assert b.response(2) is not None and b.exact_levels() == 2


def test_futures_pu_chain():
    b = OrderBook("usdm", "X")
    b.on_event(ev(5, 8, pu=4, E=1), 0)
    b.on_event(ev(9, 12, pu=8, bids=[["100.0", "7"]], E=2), 0)
    assert b.on_snapshot(snap(10, E=1), 5, 0)  # U<=10<=u of the second event
    body = orjson.loads(b.response(5))
    assert list(body) == ["lastUpdateId", "E", "T", "bids", "asks"]
    assert body["lastUpdateId"] == 12 and body["E"] == 2 and body["bids"][0] == ["100.0", "7"]
    b.on_event(ev(13, 15, pu=12, E=3), 0)
    assert b.last_id == 15
    b.on_event(ev(20, 22, pu=17), 0)  # pu does not chain: reinitialise
    assert b.state == RESYNC


def test_duplicates_from_an_overlapping_connection_are_ignored():
    b = OrderBook("usdm", "X")
    b.on_event(ev(9, 12, pu=8), 0)
    b.on_snapshot(snap(10), 5, 0)
    b.on_event(ev(9, 12, pu=8), 0)  # the same event from the new connection
    assert b.state == LIVE and b.last_id == 12


def test_futures_first_event_chaining_on_the_snapshot_is_taken():
    """A snapshot whose lastUpdateId is the final u of an event already gone
    (the book resynced while the stream ran on): the first buffered event
    starts after it and its pu is the snapshot's id. It chains (each event's
    pu is the previous final u, the snapshot standing for the previous event):
    no second snapshot."""
    b = OrderBook("usdm", "X")
    b.on_event(ev(11, 14, pu=10, bids=[["100.0", "3"]]), 0)
    assert b.on_snapshot(snap(10), 5, 0)
    assert b.state == LIVE and b.last_id == 14
    assert orjson.loads(b.response(5))["bids"][0] == ["100.0", "3"]
    gap = OrderBook("usdm", "X")
    gap.on_event(ev(12, 14, pu=11), 0)  # an event between the snapshot and it is missing
    assert not gap.on_snapshot(snap(10), 5, 0)
