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
from bnproxy.upstream.http11 import POOL_IDLE_LIMIT

OK = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
      b"Content-Length: 16\r\n\r\n{\"serverTime\":1}")


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
            self.upstream.heads.append(head)
            if (self.number, self.served) in self.upstream.close_on:
                self.transport.loseConnection()  # the idle close, in flight as we wrote
                return
            self.transport.write(self.upstream.answer)
            if self.upstream.close_after:
                self.transport.loseConnection()

    def connectionLost(self, reason=None) -> None:
        self.lost = True


@implementer(IAgentEndpointFactory)
class ScriptedUpstream:
    """An endpoint factory whose every connection is an in-memory
    ``_Connection``; ``close_on`` holds (connection number, request number
    on it) to answer by closing; ``seen`` every (connection, request line)."""

    def __init__(self, close_on=(), answer=OK, close_after=False) -> None:
        self.close_on = set(close_on)
        self.answer = answer
        self.close_after = close_after
        self.heads: list[bytes] = []
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


def _client(clock, upstream: ScriptedUpstream):
    """``make_agent``'s client; ``flush`` (the harness calls it) moves the
    bytes of every connection."""
    client = make_agent(clock, Deadlines(), endpoint_factory=upstream)
    client.flush = lambda: [pump.flush() for pump in upstream.pumps]
    return client


def _proxy(tmp_path, close_on=(), **script):
    clock = task.Clock()
    upstream = ScriptedUpstream(close_on, **script)
    h = Harness(agent=_client(clock, upstream), clock=clock, state_dir=tmp_path)
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


# The lean client's HTTP/1.1 (bnproxy.upstream.http11), seen from the bot.

def _gzip(data: bytes) -> bytes:
    import gzip
    return gzip.compress(data)


BODY = b'{"lastUpdateId":1,"bids":[],"asks":[]}'


def test_the_request_head_names_the_upstream_host_and_asks_for_gzip(tmp_path):
    h, upstream = _proxy(tmp_path)
    h.request("GET", "/api/v3/time?x=%2F", headers={b"Host": b"evil.test",
                                                     b"Connection": b"close, x-a",
                                                     b"X-A": b"1", b"X-MBX-APIKEY": API_KEY})
    lines = upstream.heads[0].split(b"\r\n")
    assert lines[0] == b"GET /api/v3/time?x=%2F HTTP/1.1"  # the raw query, untouched
    fields = [line.split(b": ", 1)[0].lower() for line in lines[1:]]
    assert sorted(fields) == [b"accept-encoding", b"host", b"x-mbx-apikey"]
    assert b"Host: spot.upstream.test" in lines and b"Accept-Encoding: gzip" in lines


def test_a_gzip_body_is_decoded_and_its_encoding_not_relayed(tmp_path):
    packed = _gzip(BODY)
    h, upstream = _proxy(tmp_path, answer=b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                         b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(packed), packed))
    answer = h.request("GET", "/api/v3/depth?symbol=BTCUSDT")
    assert answer.status == 200 and answer.body == BODY
    assert not answer.headers.hasHeader(b"content-encoding")


def test_a_chunked_body_arrives_whole_and_the_connection_is_reused(tmp_path):
    h, upstream = _proxy(tmp_path, answer=b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
                         b"\r\n5\r\n{\"lon\r\n7\r\ngUpdate\r\n6\r\nId\":1}\r\n0\r\n\r\n")
    for _ in range(2):
        answer = h.request("GET", "/api/v3/depth?symbol=BTCUSDT")
        assert answer.status == 200 and answer.json() == {"longUpdateId": 1}
    assert len(upstream.connections) == 1


def test_a_head_answer_has_no_body_and_keeps_the_connection(tmp_path):
    h, upstream = _proxy(tmp_path)
    answer = h.request("HEAD", "/api/v3/time")
    assert answer.status == 200 and answer.body == b""
    assert h.request("GET", "/api/v3/time").json() == {"serverTime": 1}
    assert len(upstream.connections) == 1


def test_connection_close_and_a_body_until_close(tmp_path):
    h, upstream = _proxy(tmp_path, answer=b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
                         + BODY, close_after=True)
    for _ in range(2):
        answer = h.request("GET", "/api/v3/depth?symbol=BTCUSDT")
        assert answer.status == 200 and answer.body == BODY
    assert len(upstream.connections) == 2  # never reused


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial\":",  # cut short
    b"HTTP/1.1 200 OK\r\nContent-Le",  # cut in the head
    b"HTTX/1.1 200 OK\r\n\r\n",  # not HTTP
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",  # ambiguous
    b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\n{}",  # bad gzip
], ids=["short-body", "short-head", "not-http", "two-lengths", "bad-gzip"])
def test_a_broken_answer_is_a_502_and_not_retried(tmp_path, answer):
    h, upstream = _proxy(tmp_path, answer=answer, close_after=True)
    result = h.request("GET", "/api/v3/depth?symbol=BTCUSDT")
    assert result.status == 502 and result.json()["code"] == -1001
    assert len(upstream.seen) == 1
    assert _retries(h, "stale-connection") == 0 and _retries(h, "not-written") == 0


def test_a_body_over_the_limit_is_refused_and_the_connection_dropped():
    clock = task.Clock()
    upstream = ScriptedUpstream(answer=b"HTTP/1.1 200 OK\r\nContent-Length: 38\r\n\r\n" + BODY)
    client = make_agent(clock, Deadlines(), endpoint_factory=upstream)
    results = []
    d = client.send("http://spot.upstream.test", b"GET", b"/api/v3/depth", (), None, 10)
    d.addCallback(lambda r: r.body).addBoth(results.append)
    for pump in upstream.pumps:
        pump.flush()
    from bnproxy.upstream.http11 import BodyTooLargeError
    assert results[0].check(BodyTooLargeError)
    assert upstream.connections[0].lost


def test_a_stalled_body_is_aborted_at_the_body_deadline(tmp_path):
    h, upstream = _proxy(tmp_path, answer=b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{")
    results = []
    h.start("GET", "/api/v3/depth?symbol=BTCUSDT").addBoth(results.append)
    h.flush()
    h.clock.advance(Deadlines().body + 1)
    h.flush()
    assert results[0].status == 504 and results[0].json()["code"] == -1007
    assert upstream.connections[0].lost


class _Socket:
    """Takes at most ``room`` bytes per send, or raises ``error``."""

    def __init__(self, room: int, error: OSError | None = None) -> None:
        self.room, self.error, self.sent = room, error, b""

    def send(self, data: bytes) -> int:
        if self.error is not None:
            raise self.error
        taken = bytes(data[:self.room])
        self.sent += taken
        return len(taken)


def _tcp(room: int, waiting: bytes = b"", error: OSError | None = None):
    """A TCP transport (Twisted's own class, no socket of the system) whose
    buffered writes are recorded."""
    from twisted.internet.tcp import Client
    transport = Client.__new__(Client)
    transport.connected = 1
    transport.socket = _Socket(room, error)
    transport._tempDataBuffer, transport._tempDataLen = [], 0
    transport.dataBuffer = waiting
    transport.buffered = []
    transport.write = transport.buffered.append
    return transport


@pytest.mark.parametrize("room,waiting,error,sent,buffered", [
    (1000, b"", None, b"GET / HTTP/1.1\r\n\r\n", []),  # all at once, no reactor turn
    (5, b"", None, b"GET /", [b" HTTP/1.1\r\n\r\n"]),  # the rest after it, in order
    (1000, b"earlier", None, b"", [b"GET / HTTP/1.1\r\n\r\n"]),  # never ahead of bytes waiting
    (1000, b"", ConnectionResetError(), b"", [b"GET / HTTP/1.1\r\n\r\n"]),  # Twisted sees it
], ids=["whole", "partial", "behind-waiting-bytes", "error"])
def test_a_request_on_a_tcp_connection_is_sent_at_once_and_never_out_of_order(
        room, waiting, error, sent, buffered):
    from bnproxy.upstream.http11 import _write
    transport = _tcp(room, waiting, error)
    _write(transport, b"GET / HTTP/1.1\r\n\r\n")
    assert transport.socket.sent == sent
    assert transport.buffered == buffered
