"""Silent streams replaced (issue 18 item 5), in virtual time: a connection
that stays open but delivers nothing is replaced within its stream's
deadline, paced while the silence lasts; meanwhile the streams report
``degraded`` and the proxy stays ready."""


TICKER = "/api/v3/ticker/24hr?symbol=BTCUSDT"



def served_from_stream(rig):
    rig.ask(TICKER)
    rig.until(lambda: rig.streams.values[("spot", "btcusdt@ticker")].body is not None, 30)
    rig.sleep(1)
    assert rig.ask(TICKER).source == "stream"


def test_a_silent_stream_is_replaced_within_its_deadline_degraded_meanwhile(rig):
    served_from_stream(rig)
    manager = rig.streams.managers["spot"]
    hub = rig.exchange.hubs["spot"]
    connections = rig.exchange.counters.ws_connections_total
    hub.silence_all = True  # open, answering pings, but no message
    rig.sleep(3)
    assert manager.replaced == 0  # not before the deadline (5 s for a 24 h ticker)
    rig.sleep(4)  # the deadline, the watchdog's round
    assert manager.replaced == 1
    assert rig.exchange.counters.ws_connections_total == connections + 1  # a new one
    assert rig.exchange.counters.ws_connections == 1  # the silent one closed
    assert rig.ask(TICKER).source == "upstream"  # stale is never served as fresh
    health = rig.streams.health()
    assert health["status"] == "degraded" and rig.streams.health()["degraded"]
    assert health["markets"]["spot"]["stale"] == ["btcusdt@ticker"]
    assert rig.service.readiness.problems() == []  # degraded is not unready
    verdict = rig.service.readiness.verdict()  # what /ready, /health and the page show
    assert verdict.status == "degraded" and verdict.ready
    assert any("stale" in text for text in verdict.texts())
    hub.silence_all = False
    rig.sleep(3)
    assert rig.ask(TICKER).source == "stream"
    assert rig.streams.health()["degraded"] == [] and rig.streams.health()["status"] == "ok"


def test_replacements_are_paced_while_the_silence_lasts(rig):
    served_from_stream(rig)
    manager = rig.streams.managers["spot"]
    rig.exchange.hubs["spot"].silence_all = True
    rig.sleep(300)
    assert 4 <= manager.replaced <= 10  # 2 s doubling to 60 s, not one every few seconds
    rig.exchange.hubs["spot"].silence_all = False
    rig.sleep(3)
    assert rig.ask(TICKER).source == "stream"


def test_a_connection_of_event_driven_streams_without_any_message_is_replaced(rig):
    rig.ask("/api/v3/exchangeInfo")
    rig.ask("/api/v3/depth?symbol=BTCUSDT&limit=5")
    rig.until(lambda: rig.streams.books[("spot", "BTCUSDT")].state == "live", 30)
    manager = rig.streams.managers["spot"]
    conn = manager.connections[0]
    rig.exchange.hubs["spot"].silence_all = True
    for _ in range(5):  # Binance's server pings (every 20 s) still come: a book may be quiet
        rig.sleep(10)
        conn.framed()  # what the protocol's onPing does (autobahn's timers run on txaio's
    assert manager.replaced == 0  # reactor, not the virtual one: the fake's pings do not)
    rig.sleep(15)
    assert manager.replaced == 1  # a minute without any message
    rig.exchange.hubs["spot"].silence_all = False
    rig.until(lambda: rig.streams.books[("spot", "BTCUSDT")].state == "live", 30)


def test_a_connection_without_any_frame_is_replaced_after_one_and_a_half_pings(rig):
    rig.ask("/api/v3/exchangeInfo")
    rig.ask("/api/v3/depth?symbol=BTCUSDT&limit=5")
    rig.until(lambda: rig.streams.books[("spot", "BTCUSDT")].state == "live", 30)
    manager = rig.streams.managers["spot"]
    rig.exchange.hubs["spot"].silence_all = True  # and no ping (see above)
    rig.sleep(29)
    assert manager.replaced == 0
    rig.sleep(2)
    assert manager.replaced == 1


def test_a_stream_bots_watched_first_is_not_judged_silent_when_rest_takes_it_up(rig):
    """A stream the websocket gateway subscribed (bots only) that a REST
    series later takes up has been delivering all along: its connection is
    not replaced as silent (a replacement closes the bots' connections)."""
    frames = []
    handle = rig.streams.subscribe("spot", "btcusdt@kline_1m", frames.append)
    rig.until(lambda: frames, 30)
    manager = rig.streams.managers["spot"]
    rig.sleep(120)  # longer than a kline stream's silence limit since the acknowledgement
    assert frames and manager.replaced == 0
    rig.ask("/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=5")  # REST takes it up
    rig.sleep(10)
    assert manager.replaced == 0
    handle.close()
