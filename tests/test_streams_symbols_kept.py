"""The symbol lists kept across restarts (issue 18, the proxy's own weight):
a proxy that learned which symbols a market lists keeps them in its
``symbols_file``; the next start uses a kept list no older than
``symbols_max_age`` instead of fetching exchangeInfo again (weight 20 on
spot). Virtual time."""

import json
import os

import pytest
from streamhelpers import VirtualRig

BOOK = "/api/v3/depth?symbol=ETHUSDT&limit=5"


@pytest.fixture
def kept(tmp_path):
    return str(tmp_path / "bnproxy-symbols.json")


def restart(rig, settings):
    """Stop the rig's proxy and start a new one (nothing held) on the same
    exchange and clock."""
    rig.stop_proxy()
    rig.start_proxy((("streams", settings),))


def info_requests(rig):
    return sum(n for (p, _, _), n in rig.exchange.counters.requests.items()
               if p == "/api/v3/exchangeInfo")


def test_a_restart_uses_the_kept_symbols_instead_of_fetching_them(kept):
    rig = VirtualRig(chain=(("streams", {"symbols_file": kept}),))
    try:
        assert rig.ask(BOOK).status == 200
        assert info_requests(rig) == 1  # the proxy's own: it had no list
        listed = json.loads(open(kept).read())["markets"]["spot"]["symbols"]
        assert "ETHUSDT" in listed and "BTCUSDT" in listed
        rig.sleep(60)
        restart(rig, {"symbols_file": kept})
        answer = rig.ask(BOOK)
        assert (answer.status, answer.source) == (200, "stream")  # waited on one snapshot
        assert info_requests(rig) == 1  # not fetched again
        assert rig.ask("/api/v3/depth?symbol=NOPEUSDT&limit=5").status == 400  # Binance's
        assert ("spot", "NOPEUSDT") not in rig.streams.books  # an unlisted one: no stream
    finally:
        rig.stop()


def test_a_kept_list_older_than_its_bound_is_fetched_again(kept):
    rig = VirtualRig(chain=(("streams", {"symbols_file": kept, "symbols_max_age": 600}),))
    try:
        assert rig.ask(BOOK).status == 200
        rig.sleep(601)
        restart(rig, {"symbols_file": kept, "symbols_max_age": 600})
        assert rig.ask(BOOK).status == 200
        assert info_requests(rig) == 2
    finally:
        rig.stop()


def test_an_unreadable_kept_file_is_ignored(kept):
    with open(kept, "w") as f:
        f.write("{not json")
    rig = VirtualRig(chain=(("streams", {"symbols_file": kept}),))
    try:
        assert rig.ask(BOOK).status == 200
        assert info_requests(rig) == 1
        assert "ETHUSDT" in json.loads(open(kept).read())["markets"]["spot"]["symbols"]
    finally:
        rig.stop()


def test_an_oversized_kept_file_is_not_read_and_writers_leave_nothing_else(kept, monkeypatch):
    from bnproxy.middleware.streams.responders import exchangeinfo

    monkeypatch.setattr(exchangeinfo, "MAX_SYMBOLS_FILE", 1024)
    from streamhelpers import START_MS

    now = START_MS / 1000  # fresh: it would be used, were it not too large
    with open(kept, "w") as f:  # a well-formed list, but over the bound
        json.dump({"markets": {"spot": {"learned": now, "symbols": ["X" * 40] * 100}}}, f)
    rig = VirtualRig(chain=(("streams", {"symbols_file": kept}),))
    try:
        assert rig.ask(BOOK).status == 200
        assert info_requests(rig) == 1  # fetched: the oversized file was not used
    finally:
        rig.stop()
    left = [n for n in os.listdir(os.path.dirname(kept)) if "symbols" in n]
    assert left == [os.path.basename(kept)]  # no temporary file left beside it


def test_a_bots_klines_answer_shows_the_symbol_listed_without_exchange_info():
    """python-binance and binance-connector bots never ask exchangeInfo: the
    200 Binance gave a bot's klines request shows the symbol is listed."""
    rig = VirtualRig(chain=(("streams", {}),))
    try:
        klines = "/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=100"
        assert rig.ask(klines).status == 200
        assert rig.ask(BOOK).status == 200
        rig.until(lambda: rig.streams.books[("spot", "ETHUSDT")].state == "live", 30)
        rig.sleep(3)
        assert rig.ask(klines).source == "stream"
        assert rig.ask(BOOK).source == "stream"
        assert info_requests(rig) == 0
        assert rig.ask("/api/v3/klines?symbol=NOPEUSDT&interval=1m").status == 400
        rig.until(lambda: ("spot", "NOPEUSDT", "1m") not in rig.streams.klines.series, 30)
        assert "nopeusdt@kline_1m" not in rig.streams.managers["spot"].placed
    finally:
        rig.stop()
