"""No liveness traffic the fleet already provides (issue 18 item 3), in
virtual time: upstream answers and stream messages keep a market alive; a
quiet market is pinged at most once a minute; one failed ping does not make
the proxy unready."""




def pings(rig):
    return sum(n for (p, _, _), n in rig.exchange.counters.requests.items()
               if p.endswith("/ping"))


def test_a_quiet_proxy_pings_each_market_at_most_once_a_minute(rig):
    rig.sleep(1)
    assert rig.service.readiness.problems() == []
    before = pings(rig)
    rig.sleep(300)  # readiness asks every 15 s: 20 pings before
    assert pings(rig) - before <= 5
    assert rig.service.readiness.problems() == []


def test_streams_and_answers_are_the_liveness_signal(rig):
    rig.ask("/api/v3/ticker/24hr?symbol=BTCUSDT")  # subscribes: messages keep coming
    rig.until(lambda: rig.streams.values[("spot", "btcusdt@ticker")].body is not None, 30)
    before = pings(rig)
    for _ in range(10):
        rig.sleep(30)
        assert rig.ask("/api/v3/ticker/24hr?symbol=BTCUSDT").status == 200  # keeps it used
    assert pings(rig) == before
    assert rig.streams.pings_spared >= 15
    assert rig.service.readiness.problems() == []


def _fail_next_ping(rig):
    faults = rig.exchange.faults
    faults.stall_headers, faults.path_prefix = True, "/api/v3/ping"  # unanswered: a 504
    reach = rig.service.upstream.reachability["spot"]
    rig.until(lambda: reach["error"] is not None, 120)
    return faults


def test_one_failed_ping_does_not_make_the_proxy_unready(rig):
    rig.sleep(1)
    faults = _fail_next_ping(rig)
    faults.stall_headers = False  # the upstream is back before the confirmation
    rig.sleep(2)
    assert rig.service.readiness.problems() == []


def test_a_failure_confirmed_makes_the_market_unreachable(rig):
    rig.sleep(1)
    _fail_next_ping(rig)  # and it stays unanswered
    rig.sleep(15)
    assert any("upstream spot unreachable" in p for p in rig.service.readiness.problems())


def test_one_failed_bot_request_does_not_leave_the_proxy_unready(rig):
    rig.sleep(1)
    faults = rig.exchange.faults
    faults.stall_headers, faults.path_prefix = True, "/api/v3/trades"  # unanswered: a 504
    before = pings(rig)
    assert rig.ask("/api/v3/trades?symbol=BTCUSDT").status == 504
    faults.stall_headers = False
    rig.sleep(2)  # the next readiness probe is 4 s away
    assert pings(rig) == before + 1  # a ping confirmed that it was one failure ...
    assert rig.service.readiness.problems() == []  # ... so the proxy is ready


def test_an_outage_stays_unreachable_and_is_not_pinged_every_second(rig):
    rig.sleep(1)
    faults = rig.exchange.faults
    faults.stall_headers, faults.path_prefix = True, ""  # nothing answers
    own = rig.streams.refetch.requests
    before = own[("spot", "ping")]
    assert rig.ask("/api/v3/trades?symbol=BTCUSDT").status == 504  # 10 s
    assert rig.service.readiness.problems() == []  # one failure is not an outage ...
    rig.sleep(12)  # ... a confirming ping 1 s later, unanswered too (10 s), makes two
    for _ in range(5):
        assert any("upstream spot unreachable" in p
                   for p in rig.service.readiness.problems())
        assert rig.ask("/api/v3/trades?symbol=BTCUSDT").status == 504  # 10 s each
        assert any("upstream spot unreachable" in p
                   for p in rig.service.readiness.problems())
    assert own[("spot", "ping")] - before <= 12  # not one a second
    faults.stall_headers = False
    rig.sleep(20)
    assert rig.service.readiness.problems() == []
