"""The bots' side of the server, hardened: raw bytes in, status out."""

import pytest
from helpers import Harness
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport

from bnproxy.config.model import ServerLimits


def connect(h, peer="127.0.0.1"):
    protocol = h.service.site.buildProtocol(IPv4Address("TCP", peer, 5555))
    transport = StringTransport(peerAddress=IPv4Address("TCP", peer, 5555))
    protocol.makeConnection(transport)
    return protocol, transport


def harness(**limits):
    return Harness(server=ServerLimits(**limits))


def status_of(transport) -> int:
    return int(transport.value().split(b" ", 2)[1])


def test_slow_headers_hit_an_absolute_deadline():
    h = harness(header_timeout=10)
    protocol, transport = connect(h)
    protocol.dataReceived(b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\n")
    for _ in range(9):  # a header line every second keeps the idle timer happy, not this one
        h.clock.advance(1)
        protocol.dataReceived(b"X-Slow: 1\r\n")
    assert transport.value() == b""
    h.clock.advance(1.1)
    assert status_of(transport) == 408 and transport.disconnecting
    assert h.upstream.seen == []


def test_a_slow_body_hits_its_deadline():
    h = harness(body_timeout=5)
    protocol, transport = connect(h)
    protocol.dataReceived(b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n1234")
    h.clock.advance(5.1)
    assert status_of(transport) == 408 and transport.disconnecting


def test_a_body_deadline_never_cuts_what_follows_a_complete_body():
    h = harness(body_timeout=5, keepalive_timeout=60)
    protocol, transport = connect(h)
    protocol.dataReceived(b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n1234")
    h.flush()
    assert status_of(transport) == 200
    transport.clear()
    h.clock.advance(3)
    protocol.dataReceived(b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\n")  # headers, slowly
    h.clock.advance(2.5)  # past the first body's deadline
    assert transport.value() == b"" and not transport.disconnecting
    protocol.dataReceived(b"\r\n")
    h.flush()
    assert status_of(transport) == 200 and not transport.disconnecting


def test_an_oversized_content_length_gets_413_before_the_body():
    h = harness(max_body=1000)
    protocol, transport = connect(h)
    protocol.dataReceived(b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
    assert status_of(transport) == 413 and transport.disconnecting
    assert b'"code":-1104' in transport.value()


def test_expect_100_continue_is_refused_without_a_100():
    h = harness(max_body=1000)
    protocol, transport = connect(h)
    protocol.dataReceived(b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                          b"Expect: 100-continue\r\n\r\n")
    assert b"100 Continue" not in transport.value()
    assert status_of(transport) == 413


def test_a_small_expect_100_continue_body_proceeds():
    h = harness(max_body=1000)
    protocol, transport = connect(h)
    protocol.dataReceived(b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                          b"Expect: 100-continue\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 100 Continue")
    protocol.dataReceived(b"a=1")
    h.flush()
    assert b"200 OK" in transport.value()
    assert h.upstream.seen[-1].body == b"a=1"


def test_a_chunked_body_is_capped_as_it_arrives():
    h = harness(max_body=100)
    protocol, transport = connect(h)
    protocol.dataReceived(b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n")
    for _ in range(5):
        protocol.dataReceived(b"40\r\n" + b"x" * 64 + b"\r\n")
    assert status_of(transport) == 413
    assert h.upstream.seen == []


@pytest.mark.parametrize("request_bytes,why", [
    (b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "chunked"),
    (b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
     "chunked"),
    (b"POST /api/v3/order HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
     "HTTP/1.0"),
    (b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", "folding"),
])
def test_ambiguous_framing_is_refused_with_400(request_bytes, why):
    h = harness()
    protocol, transport = connect(h)
    protocol.dataReceived(request_bytes)
    assert status_of(transport) == 400 and why.encode() in transport.value()
    assert h.upstream.seen == []


def test_header_count_and_size_are_capped():
    h = harness(max_headers=10, max_header_bytes=2000)
    protocol, transport = connect(h)
    protocol.dataReceived(b"GET /api/v3/ping HTTP/1.1\r\n" +
                          b"".join(b"X-%d: 1\r\n" % i for i in range(11)) + b"\r\n")
    assert status_of(transport) == 400
    protocol, transport = connect(h)
    protocol.dataReceived(b"GET /api/v3/ping HTTP/1.1\r\nX-Big: " + b"a" * 2100 + b"\r\n\r\n")
    assert status_of(transport) == 400
    assert h.upstream.seen == []


def test_connections_per_client_address_are_capped():
    h = harness(max_connections_per_client=2)
    first, _ = connect(h, "10.0.0.5")
    second, _ = connect(h, "10.0.0.5")
    _, third = connect(h, "10.0.0.5")
    assert status_of(third) == 503 and third.disconnecting
    _, other = connect(h, "10.0.0.6")
    assert other.value() == b""  # another address is not affected
    from twisted.internet.error import ConnectionDone
    from twisted.python.failure import Failure
    first.connectionLost(Failure(ConnectionDone()))
    _, fourth = connect(h, "10.0.0.5")
    assert fourth.value() == b""


def test_idle_keep_alive_connections_are_closed():
    h = harness(keepalive_timeout=75)
    protocol, transport = connect(h)
    protocol.dataReceived(b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\n\r\n")
    h.flush()
    assert b"200 OK" in transport.value() and not transport.disconnecting
    h.clock.advance(76)
    assert transport.disconnecting


def test_a_bot_that_stops_reading_is_cut_off():
    h = harness(send_timeout=30)
    protocol, transport = connect(h)
    aborted = []
    transport.abortConnection = lambda: aborted.append(True)
    protocol.pauseProducing()  # the transport's buffer is full: the bot does not read
    h.clock.advance(29)
    assert aborted == []
    protocol.resumeProducing()  # it read a little
    protocol.pauseProducing()
    h.clock.advance(30.1)
    assert aborted == [True]


def test_a_fold_split_across_reads_is_still_refused():
    h = harness()
    protocol, transport = connect(h)
    protocol.dataReceived(b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n")
    protocol.dataReceived(b" folded\r\n\r\n")
    assert status_of(transport) == 400 and h.upstream.seen == []
    protocol, transport = connect(h)
    protocol.dataReceived(b"GET /api/v3/ping HTTP/1.1\r\nHost: x\r\nX-A: 1\r")
    protocol.dataReceived(b"\n\tfolded\r\n\r\n")
    assert status_of(transport) == 400


def test_a_request_split_across_reads_is_fine():
    h = harness()
    protocol, transport = connect(h)
    for piece in (b"GET /api/v3/pi", b"ng HTTP/1.1\r\nHo", b"st: x\r\n", b"\r\n"):
        protocol.dataReceived(piece)
    h.flush()
    assert b"200 OK" in transport.value()


@pytest.mark.parametrize("extension,accepted", [
    (b';name="unterminated', False), (b';a="x\\"', False), (b";=v", False), (b";a=", False),
    (b';a="ok" junk', False),
    (b"", True), (b";a", True), (b';a="q;x"', True), (b';a = b ; c="d e"', True)])
def test_chunk_extensions_must_follow_the_grammar(extension, accepted):
    h = harness()
    protocol, transport = connect(h)
    protocol.dataReceived(b"POST /api/v3/order HTTP/1.1\r\nHost: x\r\n"
                          b"Transfer-Encoding: chunked\r\n\r\n4" + extension + b"\r\nabcd\r\n"
                          b"0\r\n\r\n")
    h.flush()
    if accepted:
        assert status_of(transport) == 200
        assert h.upstream.seen[0].body == b"abcd"
    else:
        assert status_of(transport) == 400
        assert h.upstream.seen == []


@pytest.mark.parametrize("target", [
    b"/sapi/../api/v3/time", b"/sapi/v1/../../api/v3/time", b"/api/v3/./time",
    b"/sapi/%2e%2e/api/v3/time", b"/sapi/%2E%2E/api/v3/time", b"/api/v3%2ftime",
    b"/api\\v3/time", b"/api/v3%5ctime", b"/api/v3/time%00", b"/s%61pi/v1/system/status",
    b"/spot/sapi/../api/v3/time",
])
def test_an_ambiguous_path_is_refused_before_routing(target):
    h = harness()
    protocol, transport = connect(h)
    protocol.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    h.flush()
    assert status_of(transport) == 400
    body = transport.value().split(b"\r\n\r\n", 1)[1]
    assert b'"code":-1100' in body
    assert h.upstream.seen == []


def test_a_dot_like_name_that_is_no_segment_passes():
    h = harness()
    protocol, transport = connect(h)
    protocol.dataReceived(b"GET /api/v3/time..x HTTP/1.1\r\nHost: x\r\n\r\n")
    h.flush()
    assert status_of(transport) == 200
