"""bnproxy.testing.loopback: TCP in memory, time virtual."""

import pytest
from twisted.internet import protocol
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.web.client import Agent, readBody

from bnproxy.testing.fake.run import start_exchange
from bnproxy.testing.loopback import LoopbackReactor, TimeoutError


def test_an_agent_reaches_a_listening_site_in_memory():
    reactor = LoopbackReactor(start=1_767_225_600)
    running = start_exchange(reactor, start_ms=1_767_225_600_000)
    response = reactor.run_until(Agent(reactor).request(
        b"GET", (running.rest("spot") + "/api/v3/time").encode()), 5)
    assert response.code == 200
    assert b"serverTime" in reactor.run_until(readBody(response), 5)
    assert reactor.seconds() - 1_767_225_600 < 1  # no wall clock involved
    running.stop()


def test_nothing_listening_is_a_refused_connection():
    reactor = LoopbackReactor()
    d = HostnameEndpoint(reactor, "127.0.0.1", 9).connect(protocol.Factory.forProtocol(
        protocol.Protocol))
    with pytest.raises(ConnectionRefusedError):
        reactor.run_until(d, 5)


def test_a_condition_that_never_holds_times_out_in_virtual_seconds():
    reactor = LoopbackReactor()
    with pytest.raises(TimeoutError):
        reactor.run_until(lambda: False, timeout=3600)
    assert reactor.seconds() == pytest.approx(3600, abs=0.1)
