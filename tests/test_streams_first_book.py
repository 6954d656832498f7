"""One snapshot per new book (issue 18 item 2), in virtual time: the first
book requests for a symbol, whatever their limits, wait on one upstream
snapshot and are answered from it."""

import json

import pytest


def upstream(rig, path):
    return sum(n for (p, _, _), n in rig.exchange.counters.requests.items() if p == path)


@pytest.mark.parametrize("market,base", [("spot", "/api/v3"), ("usdm", "/fapi/v1")])
def test_first_requests_of_limits_5_20_100_cost_one_upstream_request(rig, market, base):
    rig.ask(f"{base}/exchangeInfo")  # the symbols are known, as once a bot started
    targets = [f"{base}/depth?symbol=ETHUSDT&limit={n}" for n in (5, 20, 100)]
    answers = rig.ask_together(targets)
    assert [a.status for a in answers] == [200, 200, 200]
    assert upstream(rig, f"{base}/depth") == 1
    for answer, n in zip(answers, (5, 20, 100)):
        book = json.loads(answer.body)
        assert len(book["bids"]) == len(book["asks"]) == n
    rig.until(lambda: rig.streams.books[(market, "ETHUSDT")].state == "live", 30)
    rig.sleep(0.5)
    assert rig.ask(targets[1]).source == "stream"
    assert upstream(rig, f"{base}/depth") == 1  # the same snapshot built the book


def test_answers_from_the_first_snapshot_are_what_binance_answers(rig):
    rig.ask("/api/v3/exchangeInfo")
    rig.exchange.pause()  # no stream event: the snapshot goes after its wait, not before
    targets = [f"/api/v3/depth?symbol=BTCUSDT&limit={n}" for n in (5, 20, 100)]
    answers = rig.ask_together(targets)
    assert upstream(rig, "/api/v3/depth") == 1
    for answer, target in zip(answers, targets):
        assert answer.body == rig.rest("spot", target)
        assert answer.source == "stream"
    rig.exchange.resume()


def test_a_request_the_snapshot_cannot_cover_goes_on(rig):
    rig.ask("/api/v3/exchangeInfo")
    answers = rig.ask_together(["/api/v3/depth?symbol=BTCUSDT&limit=5",
                                 "/api/v3/depth?symbol=BTCUSDT&limit=5000"])
    assert [a.status for a in answers] == [200, 200]
    assert answers[1].source == "upstream"
    assert upstream(rig, "/api/v3/depth") == 2


def test_a_failing_snapshot_lets_the_waiting_requests_go_on(rig):
    rig.ask("/api/v3/exchangeInfo")
    faults = rig.exchange.faults
    faults.error_status, faults.error_rate, faults.path_prefix = 503, 1.0, "/api/v3/depth"
    answers = rig.ask_together(["/api/v3/depth?symbol=BTCUSDT&limit=5",
                                 "/api/v3/depth?symbol=BTCUSDT&limit=20"])
    assert [a.status for a in answers] == [503, 503]  # Binance's own answer, each
    faults.error_rate = 0.0


def test_a_series_seeded_by_several_bots_at_once_costs_one_request(rig):
    rig.ask("/api/v3/exchangeInfo")
    targets = [f"/api/v3/klines?symbol=ETHUSDT&interval=1m&limit={n}" for n in (1000, 500, 100)]
    answers = rig.ask_together(targets)
    assert [a.status for a in answers] == [200, 200, 200]
    assert upstream(rig, "/api/v3/klines") == 1
    assert [len(json.loads(a.body)) for a in answers] == [1000, 500, 100]
    assert [a.source for a in answers] == ["upstream", "stream", "stream"]
    assert json.loads(answers[1].body) == json.loads(answers[0].body)[-500:]


def test_a_request_the_seed_cannot_cover_goes_on(rig):
    rig.ask("/api/v3/exchangeInfo")
    answers = rig.ask_together(["/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=100",
                                 "/api/v3/klines?symbol=ETHUSDT&interval=1m&limit=1000"])
    assert [len(json.loads(a.body)) for a in answers] == [100, 1000]
    assert upstream(rig, "/api/v3/klines") == 2


def test_a_snapshot_that_answered_waiting_bots_is_counted_as_theirs_not_own(rig):
    rig.ask("/api/v3/exchangeInfo")
    rig.ask_together(["/api/v3/depth?symbol=ETHUSDT&limit=5",
                       "/api/v3/depth?symbol=ETHUSDT&limit=20"])
    rig.until(lambda: rig.streams.books[("spot", "ETHUSDT")].state == "live", 30)
    own = rig.streams.health()["own_weight"]
    assert own["by_purpose"]["spot"]["snapshot"] == 5
    assert own["answering_bots"]["spot"]["snapshot"] == 5  # one request, the bots'
    rig.exchange.hubs["spot"].drop()  # the stream is lost: a resync no bot waits for
    rig.until(lambda: upstream(rig, "/api/v3/depth") == 2, 60)
    rig.until(lambda: rig.streams.books[("spot", "ETHUSDT")].state == "live", 30)
    own = rig.streams.health()["own_weight"]
    assert own["by_purpose"]["spot"]["snapshot"] == 10
    assert own["answering_bots"]["spot"]["snapshot"] == 5  # the resync is the proxy's own
