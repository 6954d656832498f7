"""The fast path (bnproxy.server.fastpath) against twisted.web: the same
bytes in, the same bytes out (Date aside), and it is really taken."""

import re

import pytest
from helpers import API_KEY, DEFAULT, Harness, chain
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

_DATE = re.compile(rb"\r\nDate: [^\r\n]*")
PEER = IPv4Address("TCP", "127.0.0.1", 5555)


def exchange(h, chunks, fast, peer=PEER):
    """Feed ``chunks`` to one connection; (what was written, the channel)."""
    protocol = h.service.site.buildProtocol(peer)
    protocol.fast = fast
    transport = StringTransport(peerAddress=peer)
    protocol.makeConnection(transport)
    for chunk in chunks:
        if not transport.disconnecting:
            protocol.dataReceived(chunk)
        h.flush()
    h.flush()
    out = _DATE.sub(b"\r\nDate: -", transport.value())
    protocol.connectionLost(Failure(ConnectionDone()))  # frees its place under the cap
    h.flush()
    return out, protocol


class Twins:
    """Two proxies with the same history: one answers through twisted.web
    only, the other with the fast path."""

    def __init__(self) -> None:
        self.slow = Harness(middleware=chain(*DEFAULT))
        self.quick = Harness(middleware=chain(*DEFAULT))

    def fill(self, *chunks):
        for h in (self.slow, self.quick):
            exchange(h, chunks, fast=False)


def same(twins, *chunks):
    """Both paths' bytes, asserted equal; the fast path's channel."""
    slow, _ = exchange(twins.slow, chunks, fast=False)
    quick, channel = exchange(twins.quick, chunks, fast=True)
    assert quick == slow
    return quick, channel


@pytest.fixture
def proxy():
    return Twins()


HITS = [b"/api/v3/depth?symbol=BTCUSDT&limit=5", b"/api/v3/depth?symbol=BTCUSDT&limit=20",
        b"/api/v3/ticker/24hr?symbol=BTCUSDT", b"/api/v3/exchangeInfo",
        b"/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=10",
        b"/api/v3/ticker/price?symbol=ETHUSDT", b"/fapi/v1/depth?symbol=BTCUSDT&limit=5",
        b"/fapi/v1/exchangeInfo", b"/spot/api/v3/exchangeInfo", b"/api/v3/time"]


def get(target, *headers, method=b"GET"):
    return b"%s %s HTTP/1.1\r\nHost: proxy\r\n%s\r\n" % (method, target, b"".join(
        h + b"\r\n" for h in headers))


@pytest.mark.parametrize("target", HITS)
def test_every_cached_endpoint_gives_twisted_webs_bytes_from_the_fast_path(proxy, target):
    proxy.fill(get(target))  # fill the caches
    out, channel = same(proxy, get(target))
    assert out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert channel.fast_served == 1


@pytest.mark.parametrize("headers", [
    (b"User-Agent: ccxt/4.0",), (b"Accept-Encoding: gzip, deflate",),
    (b"Connection: keep-alive",), (b"connection: Keep-Alive",),
    (b"If-None-Match: \"abc\"", b"If-Modified-Since: Thu, 01 Jan 2026 00:00:00 GMT"),
    (b"X-A: 1", b"X-A: 2", b"x-a: 3"), (b"X-Forwarded-For: 10.1.1.1",),
    (b"X-MBX-APIKEY: " + API_KEY,), (b"Accept:   application/json   ",), (),
])
def test_header_variations(proxy, headers):
    target = b"/api/v3/depth?symbol=BTCUSDT&limit=5"
    proxy.fill(get(target))
    same(proxy, get(target, *headers))


def test_head_and_keep_alive_and_pipelining(proxy):
    targets = HITS[:4]
    for t in targets:
        proxy.fill(get(t))
    _, channel = same(proxy, *(get(t) for t in targets))  # one read each, keep-alive
    assert channel.fast_served == 4
    _, channel = same(proxy, b"".join(get(t) for t in targets))  # pipelined in one read
    assert channel.fast_served == 4
    out, channel = same(proxy, get(targets[0], method=b"HEAD"), get(targets[1]))
    assert channel.fast_served == 2
    assert out.count(b"HTTP/1.1 200") == 2


def test_forwarded_requests_and_a_mix_with_twisted_web(proxy):
    signed = b"/api/v3/account?timestamp=1&signature=ab"
    out, channel = same(proxy, get(signed, b"X-MBX-APIKEY: " + API_KEY), get(b"/api/v3/time"))
    assert channel.fast_served == 2 and out.count(b"HTTP/1.1 200") == 2
    post = b"POST /api/v3/order?symbol=X&timestamp=1&signature=a HTTP/1.1\r\nHost: p\r\n" \
           b"Content-Length: 2\r\n\r\n{}"
    out, channel = same(proxy, get(b"/api/v3/time") + post + get(b"/api/v3/time"))
    assert out.count(b"HTTP/1.1 ") == 3
    out, channel = same(proxy, post, get(b"/api/v3/time"))
    assert out.count(b"HTTP/1.1 ") == 2


MALFORMED = [
    b"GET /api/v3/time HTTP/1.0\r\n\r\n",
    b"GET /api/v3/time HTTP/1.1\nHost: x\n\n",
    b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n",
    b"get /api/v3/time HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://evil/api/v3/time HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nX-Bad header: 1\r\n\r\n",
    b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nX-A: \x00\r\n\r\n",
    b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nX-A: \xc3\xa9\r\n\r\n",
    b"GET /api/v3/ti me HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /%68ealth HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /ready HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    b"GET /api/v3/time HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(600)) + b"\r\n",
    b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\n",  # unfinished
    b"\r\n\r\nGET /api/v3/time HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/v3/time#frag HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
]


# Odd targets the forwarding resource judges itself (400, 404, or sent as is).
ODD_TARGETS = [
    b"GET /api/v3/%2e%2e/sapi/v1/x HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/v3/time?a=%zz HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /nothing/here HTTP/1.1\r\nHost: x\r\n\r\n",
]


@pytest.mark.parametrize("data", ODD_TARGETS)
def test_odd_targets_are_judged_alike(proxy, data):
    _, channel = same(proxy, data, data)
    assert channel.fast_served == 2


@pytest.mark.parametrize("data", MALFORMED)
def test_malformed_odd_and_admin_requests_answer_as_twisted_web_does(proxy, data):
    _, channel = same(proxy, data)
    assert channel.fast_served == 0
    same(proxy, get(b"/api/v3/time") + data)  # after a safe request on the same read
    _, channel = same(proxy, get(b"/api/v3/time"), data)  # after a fast answer
    assert channel.fast_served == 1


def test_a_request_split_across_reads_goes_to_twisted_web_and_back(proxy):
    request = get(b"/api/v3/depth?symbol=BTCUSDT&limit=5")
    proxy.fill(request)
    out, channel = same(proxy, request[:10], request[10:], request)
    assert out.count(b"HTTP/1.1 200") == 2
    assert channel.fast_served == 1  # the second, once the connection was idle again


PIECES = [b"GET", b"HEAD", b"POST", b" ", b"/api/v3/time", b"/api/v3/depth?symbol=BTCUSDT",
          b"/health", b"HTTP/1.1", b"HTTP/1.0", b"\r\n", b"\n", b"\r", b"Host: x",
          b"Content-Length: 3", b"Transfer-Encoding: chunked", b"X-A: 1", b" folded", b"\t",
          b":", b"\x00", b"\xff", b"abc", b"Connection: close", b"Connection: keep-alive",
          b"0\r\n\r\n"]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=14),
       st.lists(st.integers(0, 255).map(lambda b: bytes([b])), max_size=3),
       st.booleans())
def test_byte_level_variations_get_the_same_verdict_and_bytes(proxy, pieces, noise, valid):
    data = b"".join(pieces) + b"".join(noise)
    if valid:  # a well-formed request first, so the fast path is in play
        data = get(b"/api/v3/time") + data
    same(proxy, data + b"\r\n\r\n")


def test_pipelined_forwards_wait_for_each_other(proxy):
    out, channel = same(proxy, get(b"/api/v3/time") + get(b"/api/v3/time?x=1")
                        + get(b"/api/v3/depth?symbol=BTCUSDT&limit=5"))
    assert channel.fast_served == 3
    assert out.index(b'"uri": "/api/v3/time"') < out.index(b'"uri": "/api/v3/time?x=1"')


def test_a_bot_gone_while_its_forward_is_in_flight_cancels_it():
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    from bnproxy.testing.harness import controlled_agent

    agent = controlled_agent()
    h = Harness(agent=agent)
    protocol = h.service.site.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    protocol.dataReceived(get(b"/api/v3/time") + get(b"/api/v3/ping"))
    assert protocol.fast_served == 1 and len(agent.pending) == 1
    assert h.service.proxy.forward.inflight == 1
    protocol.connectionLost(Failure(ConnectionLost()))
    assert agent.pending[0][3].called  # cancelled
    assert h.service.proxy.forward.inflight == 0
    assert transport.value() == b""


def test_a_client_sending_ahead_while_its_answer_waits_is_bounded():
    """What a pipelining client sends while its forward is in flight is kept
    for after, up to one largest request; past that the connection ends."""
    from bnproxy.testing.harness import controlled_agent

    agent = controlled_agent()
    h = Harness(agent=agent)
    protocol = h.service.site.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    protocol.dataReceived(get(b"/api/v3/time"))
    assert len(agent.pending) == 1  # the answer waits on the upstream
    bound = protocol.limits.max_body + protocol.totalHeadersSize
    chunk = get(b"/api/v3/ping") * 64
    sent = 0
    while not transport.disconnecting and sent <= bound + len(chunk):
        protocol.dataReceived(chunk)
        sent += len(chunk)
    assert transport.disconnecting and sent <= bound + len(chunk)
    assert protocol._held == b""  # nothing kept


def test_a_forward_on_its_way_is_not_idle_and_sending_ahead_pauses_reading():
    """While a forward waits for its upstream the connection is not idle (no
    keep-alive timeout) and reading goes on; a request sent meanwhile pauses
    reading until the answer is written, then is answered; the idle timeout
    counts from that answer."""
    from bnproxy.config.model import ServerLimits
    from bnproxy.testing.harness import FakeResponse, controlled_agent

    agent = controlled_agent()
    h = Harness(agent=agent, server=ServerLimits(keepalive_timeout=2))  # below the deadline
    protocol = h.service.site.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    protocol.dataReceived(get(b"/api/v3/time"))
    assert len(agent.pending) == 1 and transport.producerState == "producing"
    h.clock.advance(5)  # the answer is late: not an idle connection
    assert not transport.disconnecting
    protocol.dataReceived(get(b"/api/v3/time?x=1"))  # sent ahead
    assert transport.producerState == "paused" and len(agent.pending) == 1
    agent.answer_all(lambda m, u: FakeResponse(200, {b"content-type": b"application/json"},
                                               b'{"serverTime":1}'))
    h.flush()
    assert transport.producerState == "producing"
    assert len(agent.pending) == 1  # the request sent ahead, forwarded now
    agent.answer_all(lambda m, u: FakeResponse(200, {b"content-type": b"application/json"},
                                               b'{"serverTime":2}'))
    h.flush()
    assert transport.value().count(b"HTTP/1.1 200 OK") == 2
    h.clock.advance(protocol.timeOut - 1)
    assert not transport.disconnecting
    h.clock.advance(2)  # idle since the last answer
    assert transport.disconnecting
    protocol.connectionLost(Failure(ConnectionDone()))


BASES = [get(b"/api/v3/depth?symbol=BTCUSDT&limit=5", b"User-Agent: ccxt", b"Accept: */*"),
         get(b"/api/v3/time", b"X-MBX-APIKEY: " + API_KEY, method=b"HEAD"),
         get(b"/fapi/v1/klines?symbol=BTCUSDT&interval=1m", b"Connection: keep-alive")]
ALPHABET = b"\r\n \t:/?%#\x00\x7f\xffaZ09-_.;=,\"'"


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(BASES), st.lists(st.tuples(
    st.sampled_from(["insert", "replace", "delete"]), st.floats(0, 1),
    st.sampled_from(list(ALPHABET))), min_size=1, max_size=3), st.booleans())
def test_mutated_requests_get_the_same_bytes_from_both_parsers(proxy, base, edits, twice):
    data = bytearray(base)
    for op, where, byte in edits:
        i = min(int(where * len(data)), len(data) - 1)
        if op == "insert":
            data[i:i] = bytes([byte])
        elif op == "replace":
            data[i] = byte
        elif len(data) > 1:
            del data[i]
    request = bytes(data)
    same(proxy, request * 2 if twice else request)
