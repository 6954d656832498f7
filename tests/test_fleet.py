"""Bots against the fake exchange through the proxy, in virtual time."""

import random

from helpers import Harness, chain
from treq.testing import RequestTraversalAgent
from twisted.internet import task

from bnproxy.testing import FakeExchange
from bnproxy.testing.fake.instruments import default_instruments

EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z
# The bots ask spot depth only: with eight spot symbols the exchange need not
# move the books of 39 other instruments every 0.1 s tick. (Measured: the same
# 324 calls reach the exchange as with all 47; a few more bots get a stale
# cached 200 instead of a local 429, which the assertions allow either way.)
SYMBOLS = {"BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT",
           "LTCUSDT"}


def stack(spot_limit=600, **chain_settings):
    clock = task.Clock()
    clock.advance(EPOCH)
    x = FakeExchange(clock, start_ms=EPOCH * 1000, weight_limits={"spot": spot_limit},
                     ban_scale=1 / 60,
                     instruments=[i for i in default_instruments() if i.symbol in SYMBOLS])
    x.start()
    settings = {"ratelimit": {"limit.spot": str(spot_limit)}, **chain_settings}
    h = Harness(agent=RequestTraversalAgent(x.resource()), clock=clock,
                middleware=chain("allowlist", "cache", "ratelimit", **settings))
    return x, h


def test_twenty_bots_at_five_times_the_budget_never_see_binance_429():
    x, h = stack(spot_limit=600)  # budget 540 weight per minute after the 10 % margin
    rng = random.Random(5)
    symbols = list(x.symbols["spot"])
    outcomes = []
    pending = []
    # 20 bots, 150 s, together ~2700 weight a minute (depth weight 5, distinct keys).
    for _step in range(1500):
        for bot in range(20):
            if rng.random() < 0.045:
                target = (f"/api/v3/depth?symbol={rng.choice(symbols)}"
                          f"&limit={rng.randint(1, 100)}")
                d = h.start("GET", target, headers={b"X-Bnproxy-Client": f"bot{bot}".encode()})
                d.addCallback(outcomes.append)
                pending.append(d)
        h.flush()
        h.clock.advance(0.1)
    h.clock.advance(10)
    h.flush()
    assert len(outcomes) == len(pending) > 1000
    statuses = {a.status for a in outcomes}
    assert statuses <= {200, 429}
    local = [a for a in outcomes if a.status == 429]
    assert local and all(a.header(b"x-bnproxy-source") == b"local" and
                         int(a.header(b"retry-after")) >= 1 for a in local)
    assert x.counters.statuses.get(429, 0) == 0 and x.counters.statuses.get(418, 0) == 0
    assert x.counters.rest_total() <= 3 * 108  # three windows of at most 540/5 requests
    assert sum(a.status == 200 for a in outcomes) >= 3 * 100  # and the budget was used
    used_per_window = x.limiters["spot"].ips["127.0.0.1"].used
    assert used_per_window <= 540


def test_after_one_418_nothing_reaches_binance_until_the_ban_lifts():
    x, h = stack()
    assert h.request("GET", "/api/v3/depth?symbol=BTCUSDT&limit=5").status == 200
    x.ban("127.0.0.1", 30, "spot")  # Binance bans the IP (forced)
    assert h.request("GET", "/api/v3/depth?symbol=ETHUSDT&limit=5").status == 418
    seen = x.counters.rest_total()
    for _ in range(29):
        h.clock.advance(1)
        answer = h.request("GET", "/api/v3/depth?symbol=SOLUSDT&limit=5")
        assert answer.status == 418 and answer.header(b"x-bnproxy-source") == b"local"
        assert x.counters.rest_total() == seen
    h.clock.advance(1.5)
    assert h.request("GET", "/api/v3/depth?symbol=SOLUSDT&limit=5").status == 200
    assert x.counters.rest_total() == seen + 1


def test_a_cached_answer_is_served_stale_while_banned():
    x, h = stack(cache={"stale_if_error": "120"})
    fresh = h.request("GET", "/api/v3/exchangeInfo?symbol=BTCUSDT")
    x.ban("127.0.0.1", 300, "spot")
    h.clock.advance(61)  # exchangeInfo TTL is 60 s
    h.request("GET", "/api/v3/depth?symbol=ETHUSDT&limit=5")  # meets the 418: the ban begins
    stale = h.request("GET", "/api/v3/exchangeInfo?symbol=BTCUSDT")
    assert stale.header(b"x-cache") == b"STALE" and stale.body == fresh.body
