"""Differential: what the streams middleware serves equals, byte for byte,
what the fake exchange's REST returns for the same query at the same moment."""

import random

import pytest
import pytest_twisted
from streamhelpers import ask, rest, sleep, start_proxy, stop, until

pytestmark = pytest.mark.integration

FUT = {"spot": "/api/v3", "usdm": "/fapi/v1"}
# A paused market is a silent one: keep the comparison window clear of the
# staleness rule (tested on its own below), however slow the machine.
PATIENT = (("streams", {"stale_depth": "30", "stale_ticker": "30", "stale_kline": "30"}),
           ("cache", {}))


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


async def warm(service, market, symbol, interval):
    base = FUT[market]
    await ask(service, f"{base}/klines?symbol={symbol}&interval={interval}&limit=1000")
    await ask(service, f"{base}/depth?symbol={symbol}&limit=100")
    await ask(service, f"{base}/ticker/24hr?symbol={symbol}")
    await ask(service, f"{base}/ticker/bookTicker?symbol={symbol}")
    if market == "spot":
        await ask(service, f"{base}/ticker/price?symbol={symbol}")
    streams = service.middlewares[0]
    kinds = ["ticker", "bookTicker"] + (["aggTrade"] if market == "spot" else [])
    await until(lambda: streams.series[(market, symbol, interval)].ready
                and streams.books[(market, symbol)].state == "live"
                and all(streams.values[(market, f"{symbol.lower()}@{k}")].body is not None
                        for k in kinds), timeout=20)


async def compare(service, running, market, symbol, interval, rng):
    base = FUT[market]
    running.exchange.pause()
    await sleep(0.4)  # the flushed stream messages arrive
    now = running.exchange.market_ms()
    step = {"1m": 60_000, "5m": 300_000, "1h": 3_600_000}[interval]
    targets = [f"{base}/klines?{q}" for q in kline_queries(rng, symbol, interval, now, step)]
    limits = [5, 10, 20, 50, 100, 500] if market == "usdm" else [1, 5, 37, 100, 500]
    targets += [f"{base}/depth?symbol={symbol}&limit={n}" for n in limits]
    targets += [f"{base}/ticker/24hr?symbol={symbol}", f"{base}/ticker/bookTicker?symbol={symbol}"]
    if market == "spot":
        targets.append(f"{base}/ticker/price?symbol={symbol}")
    sources = {}
    for target in targets:
        answer = await ask(service, target)
        expected = await rest(running, market, target)
        assert answer.status == 200, (target, answer.body)
        assert answer.body == expected, (target, answer.source, answer.body[:300],
                                         expected[:300])
        sources[target] = answer.source
    running.exchange.resume()
    return sources


@pytest.mark.parametrize("market,symbol,interval", [("spot", "BTCUSDT", "1m"),
                                                    ("spot", "SOLUSDT", "5m"),
                                                    ("usdm", "ETHUSDT", "1m"),
                                                    ("usdm", "BTCUSDT", "1h")])
@pytest_twisted.ensureDeferred
async def test_stream_answers_equal_rest(fake_exchange, market, symbol, interval):
    rng = random.Random(f"{market}{symbol}{interval}")
    service = start_proxy(fake_exchange, chain=PATIENT)
    try:
        await warm(service, market, symbol, interval)
        sources = await compare(service, fake_exchange, market, symbol, interval, rng)
        from_streams = [t for t, s in sources.items() if s == "stream"]
        assert len(from_streams) == len(sources), {t: s for t, s in sources.items()
                                                   if s != "stream"}
    finally:
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_after_a_forced_reconnect_the_answers_still_equal_rest(fake_exchange):
    rng = random.Random(3)
    service = start_proxy(fake_exchange, chain=PATIENT)
    try:
        await warm(service, "spot", "ETHUSDT", "1m")
        manager = service.middlewares[0].managers["spot"]
        fake_exchange.exchange.hubs["spot"].drop()
        await until(lambda: manager.reconnects >= 1, timeout=10)
        await until(lambda: manager.connections[0].acked, timeout=15)
        await until(lambda: service.middlewares[0].books[("spot", "ETHUSDT")].state == "live",
                    timeout=15)
        await sleep(2.5)
        sources = await compare(service, fake_exchange, "spot", "ETHUSDT", "1m", rng)
        assert set(sources.values()) == {"stream"}
    finally:
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_a_silenced_stream_is_never_served_as_fresh(fake_exchange):
    service = start_proxy(fake_exchange, chain=(("streams", {"stale_depth": "1"}),))
    try:
        await warm(service, "usdm", "BTCUSDT", "1m")
        target = "/fapi/v1/depth?symbol=BTCUSDT&limit=20"
        assert (await ask(service, target)).source == "stream"
        fake_exchange.exchange.hubs["usdm"].silenced.add("btcusdt@depth@100ms")
        await sleep(1.5)
        answer = await ask(service, target)
        assert answer.source == "upstream"  # fell through to REST
        fake_exchange.exchange.hubs["usdm"].silenced.clear()
        streams = service.middlewares[0]
        await until(lambda: streams.books[("usdm", "BTCUSDT")].state == "live", timeout=15)
        await sleep(0.3)
        assert (await ask(service, target)).source == "stream"
    finally:
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_after_warm_up_a_freqtrade_workload_makes_no_market_data_requests(fake_exchange):
    service = start_proxy(fake_exchange)
    pairs = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "XRPUSDT"]
    try:
        for pair in pairs:
            await ask(service, f"/api/v3/klines?symbol={pair}&interval=1m&limit=1000")
            await ask(service, f"/api/v3/depth?symbol={pair}&limit=5")
            await ask(service, f"/api/v3/ticker/24hr?symbol={pair}")
        streams = service.middlewares[0]
        await until(lambda: all(streams.books[("spot", p)].state == "live" for p in pairs)
                    and all(streams.series[("spot", p, "1m")].ready for p in pairs), 15)
        await sleep(2.5)
        counters = fake_exchange.exchange.counters
        before = counters.rest_total()
        sources = []
        for _ in range(20):
            now = fake_exchange.exchange.market_ms()
            for pair in pairs:
                since = now // 60_000 * 60_000 - 5 * 60_000
                for target in (f"/api/v3/klines?symbol={pair}&interval=1m&limit=499",
                               f"/api/v3/klines?symbol={pair}&interval=1m&startTime={since}",
                               f"/api/v3/depth?symbol={pair}&limit=5",
                               f"/api/v3/ticker/24hr?symbol={pair}"):
                    answer = await ask(service, target)
                    assert answer.status == 200
                    sources.append(answer.source)
            await sleep(0.25)
        assert set(sources) == {"stream"}
        assert counters.rest_total() == before  # not one REST request reached the exchange
    finally:
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_a_failing_snapshot_is_retried_with_backoff_not_at_the_stream_rate(fake_exchange):
    fake_exchange.exchange.faults.error_status = 503
    fake_exchange.exchange.faults.error_rate = 1.0
    fake_exchange.exchange.faults.path_prefix = "/api/v3/depth"
    service = start_proxy(fake_exchange, chain=(("streams", {}),))
    try:
        await ask(service, "/api/v3/depth?symbol=BTCUSDT&limit=5")  # 503, and subscribes
        await sleep(3.5)  # ~35 depth events arrive meanwhile
        counters = fake_exchange.exchange.counters
        tries = sum(n for (path, _, _), n in counters.requests.items()
                    if path == "/api/v3/depth")
        assert 2 <= tries <= 5  # the bot's own, then snapshots at 1 s, 2 s (not 35)
        fake_exchange.exchange.faults.error_rate = 0.0
        streams = service.middlewares[0]
        await until(lambda: streams.books[("spot", "BTCUSDT")].state == "live", 15)
    finally:
        await stop(service)


@pytest_twisted.ensureDeferred
async def test_a_series_whose_first_answer_cannot_seed_it_seeds_itself(fake_exchange):
    service = start_proxy(fake_exchange, chain=(("streams", {}),))
    try:
        # An endTime page in the past cannot seed a live series: the middleware
        # fetches a page of its own instead of waiting for another bot request.
        now = fake_exchange.exchange.market_ms()
        answer = await ask(service, "/api/v3/klines?symbol=ADAUSDT&interval=1m"
                                    f"&endTime={now - 3_600_000}&limit=10")
        assert answer.source == "upstream"
        streams = service.middlewares[0]
        await until(lambda: streams.series[("spot", "ADAUSDT", "1m")].ready, 10)
        assert len(streams.series[("spot", "ADAUSDT", "1m")]) == 1000
        await until(lambda: service.middlewares[0].managers["spot"].fresh(
            "adausdt@kline_1m", 6), 10)
        answer = await ask(service, "/api/v3/klines?symbol=ADAUSDT&interval=1m&limit=1000")
        assert answer.source == "stream"
    finally:
        await stop(service)
