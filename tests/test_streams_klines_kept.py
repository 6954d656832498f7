"""Kline series kept across a restart (issue 18, steady state): a proxy that
stops keeps each series' closed candles in its ``klines_file``; the next
start takes them up and subscribes their streams at once, so the bots' next
klines requests are answered from the series instead of seeding each one
again from a full page. Candles that closed while no proxy ran are topped up
by one page of exactly those candles. The fake exchange is the oracle: a
restarted proxy's answers are byte for byte the exchange's. Virtual time."""

import json

import pytest
from streamhelpers import VirtualRig
from twisted.logger import globalLogPublisher

SPOT = "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=100"
USDM = "/fapi/v1/klines?symbol=ETHUSDT&interval=1m&limit=499"


@pytest.fixture
def kept(tmp_path):
    return str(tmp_path / "bnproxy-klines.json")


def klines_requests(rig):
    """The klines requests the exchange had from the proxy (not the test's own)."""
    return sum(n for (p, _, _), n in rig.exchange.counters.requests.items()
               if p.endswith("/klines")) - getattr(rig, "oracle_calls", 0)


def same_as_exchange(rig, target):
    """The proxy's answer is the exchange's, served from the series: the
    closed candles byte for byte, the open one the same candle (its state as
    of the stream's last push, a second or two behind the exchange's)."""
    market = "usdm" if target.startswith("/fapi") else "spot"
    answer = rig.ask(target)
    assert (answer.status, answer.source) == (200, "stream")
    exchange = rig.rest(market, target)
    rig.oracle_calls = getattr(rig, "oracle_calls", 0) + 1
    assert split(answer.body) == split(exchange)
    return answer


def split(body):
    """(the closed candles' bytes, how many candles, the open candle's open time)."""
    rows = json.loads(body)
    return body.rpartition(b",[")[0], len(rows), rows[-1][0]


def seeded(rig):
    for target in (SPOT, USDM):
        assert rig.ask(target).status == 200  # forwarded: each seeds its series
    rig.sleep(20)
    for target in (SPOT, USDM):
        same_as_exchange(rig, target)


def test_a_quick_restart_keeps_the_series_and_costs_no_klines_request(kept):
    rig = VirtualRig(chain=(("streams", {"klines_file": kept}),))
    try:
        seeded(rig)
        before = klines_requests(rig)
        rig.stop_proxy()
        saved = json.loads(open(kept).read())
        assert {(s["market"], s["symbol"]) for s in saved["series"]} == {
            ("spot", "BTCUSDT"), ("usdm", "ETHUSDT")}
        rig.start_proxy((("streams", {"klines_file": kept}),))
        assert {k[:2] for k in rig.streams.klines.series} == {("spot", "BTCUSDT"),
                                                               ("usdm", "ETHUSDT")}
        rig.sleep(5)
        for target in (SPOT, USDM):
            same_as_exchange(rig, target)
        rig.sleep(90)  # the next candles: closed and opened while the stream runs
        for target in (SPOT, USDM, SPOT.replace("100", "20")):
            same_as_exchange(rig, target)
        assert klines_requests(rig) == before  # not one klines request since the restart
    finally:
        rig.stop()


def test_candles_closed_while_down_are_topped_up_by_one_small_page(kept):
    rig = VirtualRig(chain=(("streams", {"klines_file": kept}),))
    try:
        seeded(rig)
        before = klines_requests(rig)
        rig.stop_proxy()
        rig.sleep(150)  # two or three candles close with no proxy running
        rig.start_proxy((("streams", {"klines_file": kept}),))
        rig.sleep(5)
        for target in (SPOT, USDM):
            same_as_exchange(rig, target)
        assert klines_requests(rig) == before + 2  # one page per series
        own = rig.streams.refetch
        # exactly the missed candles: a limit under 100 costs 1 on USD-M, not 5 or 10
        assert (own.requests[("usdm", "backfill")], own.total[("usdm", "backfill")]) == (1, 1)
        assert own.requests[("spot", "backfill")] == 1
    finally:
        rig.stop()


def test_a_request_during_the_top_up_waits_for_it(kept):
    rig = VirtualRig(chain=(("streams", {"klines_file": kept}),))
    try:
        seeded(rig)
        before = klines_requests(rig)
        rig.stop_proxy()
        rig.sleep(150)
        rig.exchange.faults.latency = 1.0  # REST answers take a second
        rig.start_proxy((("streams", {"klines_file": kept}),))
        rig.until(lambda: rig.streams.refetch.busy(("klines", "usdm", "ETHUSDT", "1m")))
        answer = rig.ask(USDM)  # the series is being repaired: it waits, not forwarded
        assert (answer.status, answer.source) == (200, "stream")
        rig.exchange.faults.latency = 0.0
        rig.sleep(5)
        same_as_exchange(rig, USDM)
        assert klines_requests(rig) == before + 2  # the two top-ups only
    finally:
        rig.stop()


def test_a_kept_file_too_old_or_from_another_upstream_is_not_used(kept):
    rig = VirtualRig(chain=(("streams", {"klines_file": kept, "klines_max_age": 120}),))
    try:
        seeded(rig)
        rig.stop_proxy()
        rig.sleep(121)
        rig.start_proxy((("streams", {"klines_file": kept, "klines_max_age": 120}),))
        assert rig.streams.klines.series == {}  # older than the bound
        rig.stop_proxy()

        saved = json.loads(open(kept).read())  # written again at this stop: none held
        assert saved["series"] == []
        rig.start_proxy((("streams", {"klines_file": kept}),))
        seeded(rig)
        rig.stop_proxy()
        saved = json.loads(open(kept).read())
        for s in saved["series"]:
            s["upstream"] = "http://elsewhere.invalid"
        with open(kept, "w") as f:
            json.dump(saved, f)
        rig.start_proxy((("streams", {"klines_file": kept}),))
        assert rig.streams.klines.series == {}  # another exchange's candles
        assert rig.ask(SPOT).source == "upstream"  # seeded again, as without a file
    finally:
        rig.stop()


def test_a_corrupt_kept_file_is_ignored_with_a_log_line(kept):
    with open(kept, "w") as f:
        f.write('{"version":1,"saved":')
    lines = []

    def observe(event):
        if event.get("log_namespace") == "bnproxy.streams":
            lines.append(event.get("log_format", "").format(**event))
    globalLogPublisher.addObserver(observe)
    try:
        rig = VirtualRig(chain=(("streams", {"klines_file": kept}),))
    finally:
        globalLogPublisher.removeObserver(observe)
    try:
        assert rig.streams.klines.series == {}
        assert any("kline series in" in line and "not used" in line for line in lines)
        assert rig.ask(SPOT).status == 200  # the proxy works as without a file
        rig.sleep(10)
        same_as_exchange(rig, SPOT)
    finally:
        rig.stop()


def test_the_kept_file_is_bounded_in_what_is_written_and_read(kept, monkeypatch):
    from bnproxy.middleware.streams import klines_kept

    rig = VirtualRig(chain=(("streams", {"klines_file": kept}),))
    try:
        seeded(rig)  # spot: 100 candles (about 20 KB); USD-M: 499 (about 100 KB)
        monkeypatch.setattr(klines_kept, "MAX_FILE", 60_000)
        rig.stop_proxy()
        saved = json.loads(open(kept).read())
        assert [s["market"] for s in saved["series"]] == ["spot"]  # the other left out
        rig.start_proxy((("streams", {"klines_file": kept}),))
        assert list(rig.streams.klines.series) == [("spot", "BTCUSDT", "1m")]
        rig.stop_proxy()
        monkeypatch.setattr(klines_kept, "MAX_FILE", 1024)
        rig.start_proxy((("streams", {"klines_file": kept}),))  # a file over the bound is not read
        assert rig.streams.klines.series == {}
    finally:
        rig.stop()


def test_rows_not_as_binance_encodes_them_are_not_used():
    from bnproxy.middleware.streams.klines_kept import usable

    row = [60_000, "1.0", "2.0", "0.5", "1.5", "10", 119_999, "15", 7, "5", "7.5", "0"]
    now = 200_000
    assert usable([row], "1m", now, 1000)
    assert not usable([[*row[:1], 1.0, *row[2:]]], "1m", now, 1000)  # a float: other bytes
    assert not usable([row[:11]], "1m", now, 1000)
    assert not usable([row, [180_000, *row[1:6], 239_999, *row[7:]]], "1m", now, 1000)  # a gap
    assert not usable([row], "1m", 110_000, 1000)  # not closed yet
    assert not usable([row], "1m", 60_000 * 2000, 1000)  # more missing than one page


def test_the_state_dir_holds_the_kept_series_unless_told_otherwise(tmp_path):
    """--state-dir sets klines_file; ``none`` keeps nothing; the offline demo
    (a new fake exchange at each start) keeps nothing."""
    import os

    from bnproxy.middleware.streams.settings import OPTIONS, read_settings
    from bnproxy.tap import Options

    def streams(args):
        options = Options()
        options.parseOptions(list(args))
        given = dict(options.config({}).middleware)["streams"]
        return read_settings("streams", {**{o.name: o.default for o in OPTIONS}, **given})

    kept = streams(["--state-dir", str(tmp_path)]).klines_file
    assert kept == os.path.join(str(tmp_path), "bnproxy-klines.json")
    assert streams(["--state-dir", str(tmp_path), "--middleware",
                    "streams:klines_file=none"]).klines_file is None
    assert streams(["--simulated-exchange"]).klines_file is None


def test_a_kept_series_vouches_for_its_symbol_after_a_restart(kept):
    """Its symbol was answered for within the kept file's age: the restarted
    proxy's book and ticker for it need no exchangeInfo (spot weight 20),
    as before the restart, when the bots' klines answers vouched for it."""
    settings = {"klines_file": kept, "symbols_file": "none"}
    rig = VirtualRig(chain=(("streams", settings),))

    def info_requests():
        return sum(n for (p, _, _), n in rig.exchange.counters.requests.items()
                   if p.endswith("/exchangeInfo"))
    try:
        seeded(rig)
        rig.stop_proxy()
        rig.start_proxy((("streams", settings),))
        rig.sleep(5)
        for target in ("/api/v3/ticker/24hr?symbol=BTCUSDT", "/api/v3/depth?symbol=BTCUSDT"
                       "&limit=5", "/fapi/v1/depth?symbol=ETHUSDT&limit=5"):
            assert rig.ask(target).status == 200
        rig.sleep(10)
        assert rig.ask("/api/v3/ticker/24hr?symbol=BTCUSDT").source == "stream"
        assert info_requests() == 0
    finally:
        rig.stop()
