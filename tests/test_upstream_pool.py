"""The upstream pool and the keep-alive race (issue 18 item 4), in virtual
time over in-memory connections: twisted.web's real client protocol and
``make_agent``'s pool talk to a scripted upstream."""

import pytest
from helpers import API_KEY, Harness
from twisted.internet import task
from twisted.internet.defer import succeed
from twisted.internet.protocol import Protocol
from twisted.test import iosim
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from bnproxy.upstream.client import Deadlines, make_agent
from bnproxy.upstream.pool import POOL_IDLE_LIMIT


class _Connection(Protocol):
    """One upstream connection: answers each request head, or closes
    without a byte when the script says so."""

    def __init__(self, upstream: "ScriptedUpstream", number: int) -> None:
        self.upstream = upstream
        self.number = number
        self.served = 0
        self.buffer = b""
        self.lost = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            self.served += 1
            self.upstream.seen.append((self.number, head.split(b"\r\n", 1)[0]))
            if (self.number, self.served) in self.upstream.close_on:
                self.transport.loseConnection()  # the idle close, in flight as we wrote
                return
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 b"Content-Length: 16\r\n\r\n{\"serverTime\":1}")

    def connectionLost(self, reason=None) -> None:
        self.lost = True


@implementer(IAgentEndpointFactory)
class ScriptedUpstream:
    """An endpoint factory whose every connection is an in-memory
    ``_Connection``; ``close_on`` holds (connection number, request number
    on it) to answer by closing; ``seen`` every (connection, request line)."""

    def __init__(self, close_on=()) -> None:
        self.close_on = set(close_on)
        self.connections: list[_Connection] = []
        self.pumps: list[iosim.IOPump] = []
        self.seen: list[tuple[int, bytes]] = []

    def endpointForURI(self, uri):
        return self

    def connect(self, factory):
        client = factory.buildProtocol(None)
        server = _Connection(self, len(self.connections) + 1)
        self.connections.append(server)
        self.pumps.append(iosim.connect(server, iosim.makeFakeServer(server),
                                        client, iosim.makeFakeClient(client)))
        return succeed(client)


class PumpedAgent:
    """``make_agent``'s agent; ``flush`` moves the bytes of every connection
    (the harness calls it)."""

    def __init__(self, clock, upstream: ScriptedUpstream) -> None:
        self.upstream = upstream
        self.agent = make_agent(clock, Deadlines(), endpoint_factory=upstream)

    def request(self, method, uri, headers=None, bodyProducer=None):
        return self.agent.request(method, uri, headers, bodyProducer)

    def flush(self) -> None:
        for pump in self.upstream.pumps:
            pump.flush()


def _proxy(tmp_path, close_on=()):
    clock = task.Clock()
    upstream = ScriptedUpstream(close_on)
    h = Harness(agent=PumpedAgent(clock, upstream), clock=clock, state_dir=tmp_path)
    return h, upstream


def _retries(h, reason="stale-connection"):
    return h.service.proxy.metrics.registry.get_sample_value(
        "bnproxy_upstream_retries_total", {"market": "spot", "reason": reason}) or 0


def test_a_pooled_connection_closed_as_the_request_is_written_is_retried_once(tmp_path):
    # The upstream closes connection 1 just as the second request reaches it.
    h, upstream = _proxy(tmp_path, close_on={(1, 2)})
    assert h.request("GET", "/api/v3/time").status == 200
    h.clock.advance(5)
    answer = h.request("GET", "/api/v3/time")
    assert answer.status == 200 and answer.json() == {"serverTime": 1}
    # one retry, on a fresh connection
    assert [n for n, _ in upstream.seen] == [1, 1, 2]
    assert _retries(h) == 1
    assert b'bnproxy_upstream_retries_total{market="spot",reason="stale-connection"} 1.0' \
        in h.request("GET", "/metrics").body


@pytest.mark.parametrize("method,target,headers", [
    ("GET", "/api/v3/account?timestamp=1&signature=ab", {}),
    ("GET", "/api/v3/time", {b"X-MBX-APIKEY": API_KEY}),
    ("POST", "/api/v3/order?symbol=BTCUSDT&timestamp=1&signature=ab", {}),
    ("DELETE", "/api/v3/order?symbol=BTCUSDT&timestamp=1&signature=ab", {}),
])
def test_signed_keyed_or_unsafe_requests_on_a_closing_connection_are_never_retried(
        tmp_path, method, target, headers):
    h, upstream = _proxy(tmp_path, close_on={(1, 2)})
    assert h.request("GET", "/api/v3/time").status == 200
    answer = h.request(method, target, headers=headers)
    assert answer.status == 502 and answer.json()["code"] == -1001
    assert len(upstream.seen) == 2  # sent once
    assert len(upstream.connections) == 1
    assert _retries(h) == 0


def test_a_fresh_connection_that_closes_without_an_answer_is_not_retried(tmp_path):
    # Not the idle race: an upstream dropping requests is not asked twice.
    h, upstream = _proxy(tmp_path, close_on={(1, 1)})
    answer = h.request("GET", "/api/v3/time")
    assert answer.status == 502
    assert len(upstream.seen) == 1
    assert _retries(h) == 0


def test_an_idle_connection_is_retired_before_the_upstream_times_it_out(tmp_path):
    h, upstream = _proxy(tmp_path)
    assert h.request("GET", "/api/v3/time").status == 200
    h.clock.advance(POOL_IDLE_LIMIT - 1)
    assert h.request("GET", "/api/v3/time").status == 200
    assert len(upstream.connections) == 1  # reused while young
    h.clock.advance(POOL_IDLE_LIMIT)
    h.flush()
    assert upstream.connections[0].lost  # closed by the proxy, idle
    assert h.request("GET", "/api/v3/time").status == 200
    assert [n for n, _ in upstream.seen] == [1, 1, 2]
    assert _retries(h) == 0


def test_the_most_recently_used_connection_is_reused_and_older_ones_age_out(tmp_path):
    h, upstream = _proxy(tmp_path)
    first, second = h.start("GET", "/api/v3/time"), h.start("GET", "/api/v3/ping")
    h.flush()
    answers = []
    first.addCallback(answers.append)
    second.addCallback(answers.append)
    h.flush()
    assert len(answers) == 2 and len(upstream.connections) == 2
    for _ in range(3):
        h.clock.advance(POOL_IDLE_LIMIT / 4)
        assert h.request("GET", "/api/v3/time").status == 200
    assert [n for n, _ in upstream.seen[2:]] == [2, 2, 2]  # the most recently used one
    h.clock.advance(POOL_IDLE_LIMIT / 4 + 1)
    h.flush()
    assert [c.lost for c in upstream.connections] == [True, False]  # the other aged out


def test_an_idle_connection_is_not_reused_even_if_its_timer_runs_late(tmp_path):
    h, upstream = _proxy(tmp_path)
    assert h.request("GET", "/api/v3/time").status == 200
    h.clock.rightNow += POOL_IDLE_LIMIT + 1  # a busy reactor: the timer has not run
    assert h.request("GET", "/api/v3/time").status == 200
    assert [n for n, _ in upstream.seen] == [1, 2]
    assert upstream.connections[0].lost


def test_a_stale_connection_takes_the_older_idle_ones_with_it(tmp_path):
    h, upstream = _proxy(tmp_path, close_on={(2, 2)})
    answers = []
    h.start("GET", "/api/v3/time").addCallback(answers.append)
    h.start("GET", "/api/v3/ping").addCallback(answers.append)
    h.flush()
    assert len(answers) == 2
    h.clock.advance(1)
    # connection 2 answered last, so it is reused first, and found closed;
    # connection 1, idle for longer, is not tried: the retry opens connection 3
    answer = h.request("GET", "/api/v3/time")
    assert answer.status == 200
    assert [n for n, _ in upstream.seen][2:] == [2, 3]
    assert upstream.connections[0].lost
    assert _retries(h) == 1
