"""Requests asking Binance for another format (microsecond timestamps, SBE)
are never answered from streams, which are rebuilt as Binance's default
JSON in milliseconds; the websocket gateway refuses a ``timeUnit`` stream
URL at its handshake rather than send millisecond frames. In virtual time."""


from bnproxy.binance.marketdata import default_format
from bnproxy.binance.streams import default_stream_format
from bnproxy.chain.messages import ProxyRequest

TARGETS = ("/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=100",
           "/api/v3/depth?symbol=BTCUSDT&limit=5",
           "/api/v3/ticker/24hr?symbol=BTCUSDT",
           "/api/v3/exchangeInfo")
OTHER_FORMATS = (((b"x-mbx-time-unit", b"MICROSECOND"),),
                 ((b"x-mbx-time-unit", b"microsecond"),),
                 ((b"accept", b"application/sbe"), (b"x-mbx-sbe", b"3:5")),
                 ((b"accept", b"application/sbe, application/json"),))



def test_another_format_is_binances_to_answer(rig):
    for target in TARGETS:
        assert rig.ask(target).status == 200
    streams = rig.streams
    rig.until(lambda: streams.books[("spot", "BTCUSDT")].state == "live"
              and streams.series[("spot", "BTCUSDT", "1m")].ready, 30)
    rig.sleep(2.5)
    json_accepted = ((b"accept", b"application/json"),)
    for target in TARGETS[:3]:
        assert rig.ask(target).source == "stream"
        assert rig.ask(target, json_accepted).source == "stream"
    for target in TARGETS:
        for headers in OTHER_FORMATS:  # Binance's answer (or the cache's copy of it)
            answer = rig.ask(target, headers)
            assert answer.status == 200 and answer.source in ("upstream", "cache"), headers


def test_the_fast_path_leaves_another_format_to_the_chain(rig):
    target = TARGETS[2]
    assert rig.ask(target).status == 200
    rig.until(lambda: rig.streams.values[("spot", "btcusdt@ticker")].body is not None, 30)
    rig.sleep(1)
    path, _, query = target.partition("?")
    endpoint = rig.service.endpoints.lookup("spot", "GET", path)

    def fast(headers):
        request = ProxyRequest("GET", "spot", path, query.encode(), headers, b"",
                               "127.0.0.1", rig.reactor.seconds(), endpoint)
        return rig.streams.fast_handle(request, lambda r: None)

    assert fast(()).source == "stream"
    for headers in OTHER_FORMATS:
        assert fast(headers) is None
        assert fast(headers) is None  # (a head seen before is not taken for a public one)


def test_the_rules():
    assert default_format(())
    assert default_format(((b"accept", b"*/*"), (b"user-agent", b"x")))
    assert not any(default_format(h) for h in OTHER_FORMATS)
    assert default_stream_format("") and default_stream_format("streams=btcusdt@trade")
    assert not default_stream_format("timeUnit=MICROSECOND")
    assert not default_stream_format("streams=btcusdt@trade&timeunit=microsecond")
