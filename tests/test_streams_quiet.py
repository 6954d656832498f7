"""Quiet books (issue 18, steady state): Binance's diff depth and book
ticker streams push only when the data changed, so a book whose stream is
quiet while its connection is alive (other streams' frames, subscriptions
acknowledged) is unchanged and still served, up to ``stale_depth_quiet``;
after that, or as soon as the whole connection goes silent
(``stale_depth``), its requests go upstream. Virtual time."""

import pytest
from streamhelpers import VirtualRig

DEPTH = "btcusdt@depth@100ms"


@pytest.fixture
def rig():
    made = VirtualRig(chain=(("streams", {}),))  # stale_depth 3 s, stale_depth_quiet 30 s
    yield made
    made.stop()


def warm(rig, market, base):
    """A live BTCUSDT book and book ticker, served from the stream."""
    book = f"{base}/depth?symbol=BTCUSDT&limit=5"
    ticker = f"{base}/ticker/bookTicker?symbol=BTCUSDT"
    rig.ask(book)
    rig.ask(ticker)
    rig.until(lambda: rig.streams.books[(market, "BTCUSDT")].state == "live"
              and rig.streams.values[(market, "btcusdt@bookTicker")].body is not None, 30)
    rig.sleep(1)
    assert rig.ask(book).source == "stream"
    return book


def test_a_quiet_book_on_a_live_connection_is_served_from_the_stream(rig):
    book = warm(rig, "spot", "/api/v3")
    rig.ask("/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=100")  # more traffic on it
    rig.exchange.hubs["spot"].silenced.update({DEPTH, "btcusdt@bookTicker"})  # both quiet
    rig.sleep(10)
    before = rig.exchange.counters.rest_total()
    answer = rig.ask(book)
    assert answer.status == 200 and answer.source == "stream"
    assert rig.ask("/api/v3/ticker/bookTicker?symbol=BTCUSDT").source == "stream"
    assert rig.exchange.counters.rest_total() == before  # nothing reached the exchange
    assert DEPTH not in rig.streams.stale_streams("spot")  # not reported stale either


def test_a_book_quiet_longer_than_the_quiet_bound_is_not_served(rig):
    book = warm(rig, "spot", "/api/v3")
    rig.exchange.hubs["spot"].silenced.add(DEPTH)  # dropped by Binance, connection alive
    rig.sleep(31)
    answer = rig.ask(book)  # from Binance: forwarded, or a stale book's shared fallback
    assert (answer.source, answer.detail) == ("stream", "fallback")
    assert DEPTH in rig.streams.stale_streams("spot")


def test_a_silent_connection_stops_serving_its_books_after_stale_depth(rig):
    book = warm(rig, "usdm", "/fapi/v1")
    ticker = "/fapi/v1/ticker/bookTicker?symbol=BTCUSDT"
    assert rig.ask(ticker).source == "stream"
    rig.exchange.hubs["usdm"].silence_all = True  # open, no message (pings every 3 min)
    rig.sleep(3.5)
    conn = rig.streams.managers["usdm"].placed[DEPTH]
    assert rig.reactor.seconds() - conn.last_frame > 3  # no server ping meanwhile
    answer = rig.ask(book)  # from Binance: a stale book's shared fallback request
    assert (answer.source, answer.detail) == ("stream", "fallback")
    assert rig.ask(ticker).source == "upstream"
