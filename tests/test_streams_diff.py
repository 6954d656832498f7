"""Differential: what the streams middleware serves equals, byte for byte,
what the fake exchange's REST returns for the same query at the same moment.

The proxy and the fake exchange run on one virtual-time reactor with
in-memory connections (streamhelpers.VirtualRig); the last test is a
real-socket smoke test of the same comparison."""

import random

import pytest
import pytest_twisted
from streamhelpers import VirtualRig, ask, rest, sleep, start_proxy, stop, until

from bnproxy.testing.fake.instruments import default_instruments

FUT = {"spot": "/api/v3", "usdm": "/fapi/v1"}
# A paused market is a silent one: keep the comparison window clear of the
# staleness rule (tested on its own below).
PATIENT = (("streams", {"stale_depth": "30", "stale_ticker": "30", "stale_kline": "30"}),
           ("cache", {}))
STEP = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}


def kline_queries(rng, symbol, interval, now_ms, step_ms):
    current = now_ms // step_ms * step_ms
    return [
        f"symbol={symbol}&interval={interval}",
        f"symbol={symbol}&interval={interval}&limit=1000",
        f"symbol={symbol}&interval={interval}&limit=499",  # Freqtrade's refresh
        f"symbol={symbol}&interval={interval}&limit={rng.randint(1, 900)}",
        f"symbol={symbol}&interval={interval}&startTime={current - 400 * step_ms}&limit=1000",
        f"symbol={symbol}&interval={interval}&startTime={current - 300 * step_ms + 17}",
        f"symbol={symbol}&interval={interval}&endTime={current - 20 * step_ms + 5}&limit=50",
        f"symbol={symbol}&interval={interval}&startTime={current - 90 * step_ms}"
        f"&endTime={current - 10 * step_ms}&limit=30",
    ]


def warm_targets(market, symbol, interval):
    base = FUT[market]
    targets = [f"{base}/klines?symbol={symbol}&interval={interval}&limit=1000",
               f"{base}/depth?symbol={symbol}&limit=500",
               f"{base}/ticker/24hr?symbol={symbol}",
               f"{base}/ticker/bookTicker?symbol={symbol}"]
    if market == "spot":
        targets.append(f"{base}/ticker/price?symbol={symbol}")
    return targets


def is_warm(streams, market, symbol, interval):
    kinds = ["ticker", "bookTicker"] + (["aggTrade"] if market == "spot" else [])
    return (streams.series[(market, symbol, interval)].ready
            and streams.books[(market, symbol)].state == "live"
            and all(streams.values[(market, f"{symbol.lower()}@{k}")].body is not None
                    for k in kinds))


def compare_targets(rng, market, symbol, interval, now):
    base = FUT[market]
    targets = [f"{base}/klines?{q}"
               for q in kline_queries(rng, symbol, interval, now, STEP[interval])]
    limits = [5, 10, 20, 50, 100, 500] if market == "usdm" else [1, 5, 37, 100, 500]
    targets += [f"{base}/depth?symbol={symbol}&limit={n}" for n in limits]
    targets += [f"{base}/ticker/24hr?symbol={symbol}", f"{base}/ticker/bookTicker?symbol={symbol}"]
    if market == "spot":
        targets.append(f"{base}/ticker/price?symbol={symbol}")
    return targets


def warm(rig, market, symbol, interval):
    for target in warm_targets(market, symbol, interval):
        rig.ask(target)
    rig.until(lambda: is_warm(rig.streams, market, symbol, interval), timeout=30)


def compare(rig, market, symbol, interval, rng):
    """Pause the market, let the flushed stream messages arrive, compare."""
    rig.exchange.pause()
    rig.sleep(0.2)
    sources = {}
    for target in compare_targets(rng, market, symbol, interval, rig.exchange.market_ms()):
        answer = rig.ask(target)
        expected = rig.rest(market, target)
        assert answer.status == 200, (target, answer.body)
        assert answer.body == expected, (target, answer.source, answer.body[:300],
                                         expected[:300])
        sources[target] = answer.source
    rig.exchange.resume()
    return sources


@pytest.fixture
def rigs():
    made = []

    def make(**kwargs):
        made.append(VirtualRig(**kwargs))
        return made[-1]
    yield make
    for rig in made:
        rig.stop()


@pytest.mark.parametrize("market,symbol,interval", [("spot", "BTCUSDT", "1m"),
                                                    ("spot", "SOLUSDT", "5m"),
                                                    ("usdm", "ETHUSDT", "1m"),
                                                    ("usdm", "BTCUSDT", "1h")])
def test_stream_answers_equal_rest(rigs, market, symbol, interval):
    rng = random.Random(f"{market}{symbol}{interval}")
    rig = rigs(chain=PATIENT)
    warm(rig, market, symbol, interval)
    rig.sleep(5)  # klines close, books move, tickers roll
    sources = compare(rig, market, symbol, interval, rng)
    assert set(sources.values()) == {"stream"}, {t: s for t, s in sources.items()
                                                 if s != "stream"}


def test_answers_stay_equal_across_kline_closes(rigs):
    rng = random.Random(5)
    rig = rigs(chain=PATIENT, instruments=[i for i in default_instruments()
                                           if i.market == "spot" and i.symbol == "ETHUSDT"])
    warm(rig, "spot", "ETHUSDT", "1m")
    for _ in range(2):
        rig.sleep(61)  # at least one 1m kline closes between comparisons
        assert set(compare(rig, "spot", "ETHUSDT", "1m", rng).values()) == {"stream"}


def test_after_a_forced_reconnect_the_answers_still_equal_rest(rigs):
    rng = random.Random(3)
    rig = rigs(chain=PATIENT)
    warm(rig, "spot", "ETHUSDT", "1m")
    manager = rig.streams.managers["spot"]
    rig.exchange.hubs["spot"].drop()
    rig.until(lambda: manager.reconnects >= 1, timeout=30)
    rig.until(lambda: manager.connections[0].acked, timeout=30)
    rig.until(lambda: rig.streams.books[("spot", "ETHUSDT")].state == "live", timeout=30)
    rig.sleep(2.5)
    assert set(compare(rig, "spot", "ETHUSDT", "1m", rng).values()) == {"stream"}


def test_a_silenced_stream_is_never_served_as_fresh(rigs):
    rig = rigs(chain=(("streams", {"stale_depth": "1", "stale_depth_quiet": "5"}),))
    warm(rig, "usdm", "BTCUSDT", "1m")
    target = "/fapi/v1/depth?symbol=BTCUSDT&limit=20"
    assert rig.ask(target).source == "stream"
    hub = rig.exchange.hubs["usdm"]
    # A stream dropped from a live connection (its book ticker still talks):
    # quiet counts as unchanged up to stale_depth_quiet, not longer.
    hub.silenced.add("btcusdt@depth@100ms")
    rig.sleep(5.5)
    assert rig.ask(target).detail == "fallback"  # from REST (a stale book's fallback)
    hub.silenced.clear()
    rig.until(lambda: rig.streams.books[("usdm", "BTCUSDT")].state == "live", timeout=30)
    rig.sleep(0.3)
    assert rig.ask(target).source == "stream"
    # A silenced connection (no message, no ping): stale after stale_depth.
    hub.silence_all = True
    rig.sleep(1.5)
    assert rig.ask(target).detail == "fallback"
    hub.silence_all = False
    rig.until(lambda: rig.streams.books[("usdm", "BTCUSDT")].state == "live", timeout=30)
    rig.sleep(0.3)
    assert rig.ask(target).source == "stream"


def test_after_warm_up_a_freqtrade_workload_makes_no_market_data_requests(rigs):
    rig = rigs()
    pairs = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "XRPUSDT"]
    for pair in pairs:
        rig.ask(f"/api/v3/klines?symbol={pair}&interval=1m&limit=1000")
        rig.ask(f"/api/v3/depth?symbol={pair}&limit=5")
        rig.ask(f"/api/v3/ticker/24hr?symbol={pair}")
    rig.until(lambda: all(rig.streams.books[("spot", p)].state == "live" for p in pairs)
              and all(rig.streams.series[("spot", p, "1m")].ready for p in pairs), 30)
    rig.sleep(2.5)
    counters = rig.exchange.counters
    before = counters.rest_total()
    sources = []
    for _ in range(20):
        now = rig.exchange.market_ms()
        for pair in pairs:
            since = now // 60_000 * 60_000 - 5 * 60_000
            for target in (f"/api/v3/klines?symbol={pair}&interval=1m&limit=499",
                           f"/api/v3/klines?symbol={pair}&interval=1m&startTime={since}",
                           f"/api/v3/depth?symbol={pair}&limit=5",
                           f"/api/v3/ticker/24hr?symbol={pair}"):
                answer = rig.ask(target)
                assert answer.status == 200
                sources.append(answer.source)
        rig.sleep(0.25)
    assert set(sources) == {"stream"}
    assert counters.rest_total() == before  # not one REST request reached the exchange


def test_a_failing_snapshot_is_retried_with_backoff_not_at_the_stream_rate(rigs):
    rig = rigs(chain=(("streams", {}),))
    faults = rig.exchange.faults
    faults.error_status, faults.error_rate, faults.path_prefix = 503, 1.0, "/api/v3/depth"
    rig.ask("/api/v3/depth?symbol=BTCUSDT&limit=5")  # 503, and subscribes
    rig.sleep(3.5)  # ~35 depth events arrive meanwhile

    def tries():
        return sum(n for (path, _, _), n in rig.exchange.counters.requests.items()
                   if path == "/api/v3/depth")
    assert 2 <= tries() <= 5  # the bot's own, then snapshots at 1 s, 2 s (not 35)
    rig.sleep(60)
    assert tries() <= 9  # backing off: 1, 2, 4, 8, 16, 32 s
    faults.error_rate = 0.0
    rig.until(lambda: rig.streams.books[("spot", "BTCUSDT")].state == "live", 90)


def test_a_series_whose_first_answer_cannot_seed_it_seeds_itself(rigs):
    rig = rigs(chain=(("streams", {}),))
    # An endTime page in the past cannot seed a live series: the middleware
    # fetches a page of its own instead of waiting for another bot request.
    now = rig.exchange.market_ms()
    answer = rig.ask("/api/v3/klines?symbol=ADAUSDT&interval=1m"
                     f"&endTime={now - 3_600_000}&limit=10")
    assert answer.source == "upstream"
    series = rig.streams.series[("spot", "ADAUSDT", "1m")]
    rig.until(lambda: series.ready, 30)
    assert len(series) == 1000
    rig.until(lambda: rig.streams.managers["spot"].fresh("adausdt@kline_1m", 6), 30)
    assert rig.ask("/api/v3/klines?symbol=ADAUSDT&interval=1m&limit=1000").source == "stream"


# -- real sockets: one smoke test of the same comparison ---------------------------------

@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_over_real_sockets_stream_answers_equal_rest(fake_exchange):
    market, symbol, interval = "spot", "BTCUSDT", "1m"
    rng = random.Random(1)
    service = start_proxy(fake_exchange, chain=PATIENT)
    try:
        for target in warm_targets(market, symbol, interval):
            await ask(service, target)
        await until(lambda: is_warm(service.middlewares[0], market, symbol, interval),
                    timeout=30)
        fake_exchange.exchange.pause()
        await sleep(0.4)  # the flushed stream messages arrive
        for target in compare_targets(rng, market, symbol, interval,
                                      fake_exchange.exchange.market_ms()):
            answer = await ask(service, target)
            assert answer.body == await rest(fake_exchange, market, target), target
            assert answer.source == "stream", target
        fake_exchange.exchange.resume()
    finally:
        await stop(service)
