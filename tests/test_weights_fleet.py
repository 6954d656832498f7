"""The fake exchange is an oracle for weights: it charges from its own table
(bnproxy/testing/fake/weights.py), so a wrong weight in the proxy's table
breaks the fleet's promise at the fake, where it would break at Binance.

The scenario is tests/test_fleet.py's: twenty bots asking spot depth at five
times the budget, in virtual time; its main check is "Binance never sent a
429 and the fake's used weight stayed within the budget"."""

from __future__ import annotations

import random

import pytest
from test_fleet import stack

from bnproxy.binance import endpoints

BUDGET = 540  # spot_limit 600 less the governor's 10 % margin
LATENCY = 0.3


def twenty_bots():
    x, h = stack(spot_limit=600)
    # A round trip to Binance takes time: the used-weight header of an answer
    # arrives after the next requests have left (in the harness without
    # latency, each answer is in before the next request, and the header
    # alone keeps even a wrong table within the budget).
    x.faults.latency = LATENCY
    rng = random.Random(5)
    symbols = list(x.symbols["spot"])
    outcomes: list = []
    most = 0
    for _step in range(1500):
        for bot in range(20):
            if rng.random() < 0.045:
                target = (f"/api/v3/depth?symbol={rng.choice(symbols)}"
                          f"&limit={rng.randint(1, 100)}")
                d = h.start("GET", target, headers={b"X-Bnproxy-Client": f"bot{bot}".encode()})
                d.addCallback(outcomes.append)
        h.flush()
        st = x.limiters["spot"].ips.get("127.0.0.1")
        most = max(most, st.used if st else 0)
        h.clock.advance(0.1)
    h.clock.advance(10)
    h.flush()
    upstream_429s = x.counters.statuses.get(429, 0) + x.counters.statuses.get(418, 0)
    return outcomes, upstream_429s, most


def main_check_holds(upstream_429s: int, most_used: int) -> bool:
    return upstream_429s == 0 and most_used <= BUDGET


@pytest.fixture
def depth_weight_one(monkeypatch):
    """The proxy's table with spot depth at weight 1 (Binance: 5 up to limit 100)."""
    weight_fn, cache_class = endpoints._MARKET_DATA[("spot", "/api/v3/depth")]
    monkeypatch.setitem(endpoints._MARKET_DATA, ("spot", "/api/v3/depth"),
                        (lambda p: 1, cache_class))
    endpoints.load_endpoints.cache_clear()
    yield
    monkeypatch.undo()
    endpoints.load_endpoints.cache_clear()


def test_with_the_right_weights_the_main_check_holds():
    outcomes, upstream_429s, most = twenty_bots()
    print(f"right weights: {upstream_429s} upstream 429/418, most used {most}")
    assert len(outcomes) > 1000
    assert main_check_holds(upstream_429s, most), (upstream_429s, most)


def test_a_wrong_weight_in_the_proxys_table_fails_the_main_check(depth_weight_one):
    assert endpoints.load_endpoints().lookup("spot", "GET", "/api/v3/depth").weight({}) == 1
    outcomes, upstream_429s, most = twenty_bots()
    print(f"depth at weight 1: {upstream_429s} upstream 429/418, most used {most}")
    assert len(outcomes) > 1000
    assert not main_check_holds(upstream_429s, most), (upstream_429s, most)
