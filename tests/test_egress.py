"""Several egress addresses: the chooser (pure logic) and requests that
really leave from 127.0.0.2 / 127.0.0.3 to the fake exchange."""

from __future__ import annotations

import pytest
import pytest_twisted

from bnproxy.binance.endpoints import load_endpoints
from bnproxy.binance.markets import build_markets
from bnproxy.chain.messages import ProxyRequest
from bnproxy.upstream.client import Deadlines, Upstream
from bnproxy.upstream.egress import (
    EgressAddressError,
    EgressChooser,
    check_egress_address,
    egress_agents,
)

A, B, C = "127.0.0.2", "127.0.0.3", "127.0.0.4"


def chooser(used: dict, banned: set, budget: int | None = 1000) -> EgressChooser:
    return EgressChooser([A, B, C], lambda a, pool: (used.get(a, 0), budget),
                         lambda a, pool: (a, pool) in banned)


def test_most_headroom_wins():
    c = chooser({A: 900, B: 100, C: 500}, set())
    assert c.choose("spot", 10) == B
    assert c.choose("spot", 901) is None  # fits nowhere
    assert c.choose("spot", 900) == B


def test_a_banned_address_is_never_chosen():
    used = {A: 900, B: 0, C: 500}
    c = chooser(used, {(B, "spot")})
    assert [c.choose("spot", 1) for _ in range(5)] == [C] * 5
    assert c.choose("usdm", 1) == B  # banned for spot only
    assert chooser(used, {(A, "spot"), (B, "spot"), (C, "spot")}).choose("spot") is None


def test_ties_are_shared_round_robin():
    c = chooser({}, set())
    picks = [c.choose("spot", 1) for _ in range(6)]
    assert sorted(picks) == sorted([A, B, C] * 2)


def test_no_budget_counts_as_unlimited_and_connections_spread():
    c = chooser({A: 10**9}, set(), budget=None)
    assert c.choose("sapi", 10**6) is not None
    c = chooser({}, {(A, "spot")})
    assert c.choose_for_connection("spot", {A: 0, B: 3, C: 1}) == C
    assert c.choose_for_connection("spot", {B: 3, C: 3}) in (B, C)


def test_addresses_checked_at_start():
    assert check_egress_address(" 127.0.0.2 ") == "127.0.0.2"
    with pytest.raises(EgressAddressError, match="not an IP address"):
        check_egress_address("eth0")
    with pytest.raises(EgressAddressError, match="not an address of this host"):
        check_egress_address("192.0.2.77")  # TEST-NET-1: never assigned here
    with pytest.raises(ValueError):
        EgressChooser([A, A], lambda a, p: (0, 1), lambda a, p: False)


@pytest_twisted.ensureDeferred
async def test_requests_leave_from_the_chosen_address(fake_exchange):
    from twisted.internet import reactor
    markets = build_markets(rest={"spot": fake_exchange.rest("spot")})
    agents = egress_agents(reactor, [A, B], Deadlines(connect=5, headers=5, body=5))
    upstream = Upstream(reactor, markets, egress_agents=agents,
                        egress_of=lambda r: dict(r.headers).get(b"x-test-egress",
                                                                b"").decode() or None)
    endpoint = load_endpoints().lookup("spot", "GET", "/api/v3/depth")

    def request(egress: str | None) -> ProxyRequest:
        headers = ((b"x-test-egress", egress.encode()),) if egress else ()
        return ProxyRequest("GET", "spot", "/api/v3/depth", b"symbol=BTCUSDT&limit=5",
                            headers, b"", "bot", 0.0, endpoint)

    for egress in (A, A, B):
        response = await upstream(request(egress))
        assert response.status == 200, response.body
    limiter = fake_exchange.exchange.limiters["spot"]
    weight = endpoint.weight({"limit": "5"})
    now = fake_exchange.exchange.market_ms()
    assert limiter.used(A, now) == 2 * weight  # the fake counts per client address
    assert limiter.used(B, now) == weight
    assert limiter.used("127.0.0.1", now) == 0
    # an address with no agent fails closed, and is not sent from elsewhere
    response = await upstream(request(C))
    assert response.status == 502
    assert limiter.used("127.0.0.1", now) == 0 and limiter.used(C, now) == 0
    for agent in agents.values():
        await agent._pool.closeCachedConnections()
