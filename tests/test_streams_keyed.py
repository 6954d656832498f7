"""Keyed public requests from streams (issue 18 item 1), in virtual time:
a bot that sends its API key on every call (python-binance, the connectors)
gets its klines, books and tickers from streams once Binance accepted the key;
a refused key is always Binance's to answer."""


from bnproxy.testing.fake.auth import DEFAULT_KEYS

KEY = next(iter(DEFAULT_KEYS)).encode()
HEADERS = ((b"x-mbx-apikey", KEY),)
PAIRS = ("BTCUSDT", "ETHUSDT")


def targets(pair):
    return (f"/api/v3/klines?symbol={pair}&interval=1m&limit=100",
            f"/api/v3/depth?symbol={pair}&limit=5",
            f"/api/v3/ticker/24hr?symbol={pair}")



def test_keyed_market_data_comes_from_streams_once_the_key_is_accepted(rig):
    assert rig.ask("/api/v3/ping", HEADERS).status == 200  # Binance accepts the key
    for pair in PAIRS:
        for target in targets(pair):
            assert rig.ask(target, HEADERS).status == 200
    streams = rig.streams
    rig.until(lambda: all(streams.books[("spot", p)].state == "live"
                          and streams.series[("spot", p, "1m")].ready for p in PAIRS), 30)
    rig.sleep(2.5)
    before = rig.exchange.counters.rest_total()
    sources = set()
    for _ in range(10):
        for pair in PAIRS:
            for target in targets(pair):
                answer = rig.ask(target, HEADERS)
                assert answer.status == 200
                sources.add(answer.source)
        rig.sleep(0.5)
    assert sources == {"stream"}
    assert rig.exchange.counters.rest_total() == before


def test_a_key_binance_refuses_is_always_forwarded(rig):
    bad = ((b"x-mbx-apikey", b"not-a-key-of-the-fake"),)
    anonymous_first = rig.ask(targets("BTCUSDT")[2])
    rig.until(lambda: rig.streams.values[("spot", "btcusdt@ticker")].body is not None, 30)
    rig.sleep(1)
    assert rig.ask(targets("BTCUSDT")[2]).source == "stream"
    before = rig.exchange.counters.rest_total()
    signed = rig.ask("/api/v3/account?timestamp=1&signature=00", bad)  # refused: 401
    assert signed.status >= 400 and anonymous_first.status == 200
    answer = rig.ask(targets("BTCUSDT")[2], bad)
    assert answer.source == "upstream"  # whatever Binance says about that key
    assert rig.exchange.counters.rest_total() == before + 2
