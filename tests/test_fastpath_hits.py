"""Hits answered before the chain (``IFastPathSafe``, ``server/fastpath.py``):
the same bytes as twisted.web and the chain (Date aside), and the same
records: the access line, the per-bot ledger, the metrics, the cache's and the
streams' counters. A middleware that does not declare itself safe sees every
request that reaches it, as before."""

import copy

import pytest
from helpers import API_KEY, DEFAULT, Harness, chain
from streamhelpers import VirtualRig
from test_fastpath import PEER, exchange, get
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.http import datetimeToString
from zope.interface import implementer

import bnproxy.app
from bnproxy.chain.interfaces import IFastPathSafe, IMiddleware, IMiddlewareFactory
from bnproxy.chain.messages import ProxyResponse
from bnproxy.chain.registry import discover
from bnproxy.config.model import ServerLimits
from bnproxy.plugin import IFastPathSafe as PublicIFastPathSafe

SALTED = {"logger": {"key_salt": "fixed"}}


class Lines:
    """An access log kept in memory."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, line: bytes) -> None:
        self.lines.append(line)


def named(service, name):
    return next(m for m in service.proxy.middlewares if m.name == name)


def records(service):
    """Everything an answer is recorded in, as plain values."""
    proxy = service.proxy
    out = {"answers": dict(proxy.metrics.answers), "asked": dict(proxy.metrics.asked),
           "refused": dict(proxy.metrics.refused),
           "ledger": copy.deepcopy(named(service, "logger").ledger.totals()),
           "access": list(named(service, "logger").output.lines)}
    names = [m.name for m in proxy.middlewares]
    if "cache" in names:
        out["cache"] = named(service, "cache").snapshot()
    if "streams" in names:
        streams = named(service, "streams")
        out["streams"] = (streams.served, dict(streams.refetch.credits))
    return out


class Twins:
    """Two proxies with the same history: one answers through twisted.web
    and the chain only, the other with the fast path."""

    def __init__(self, middleware=None, peer=PEER) -> None:
        middleware = middleware or chain(*DEFAULT, **SALTED)
        self.slow = Harness(middleware=middleware)
        self.quick = Harness(middleware=middleware)
        self.peer = peer
        for h in (self.slow, self.quick):
            named(h.service, "logger").output = Lines()

    def fill(self, *chunks):
        for h in (self.slow, self.quick):
            exchange(h, chunks, fast=False, peer=self.peer)

    def same(self, *chunks):
        """Both paths' bytes and records, asserted equal; the fast channel."""
        slow, _ = exchange(self.slow, chunks, fast=False, peer=self.peer)
        quick, channel = exchange(self.quick, chunks, fast=True, peer=self.peer)
        assert quick == slow
        assert records(self.quick.service) == records(self.slow.service)
        return quick, channel


CACHED = [b"/api/v3/depth?symbol=BTCUSDT&limit=5", b"/api/v3/depth?symbol=BTCUSDT&limit=20",
          b"/api/v3/ticker/24hr?symbol=BTCUSDT", b"/api/v3/exchangeInfo",
          b"/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=10",
          b"/api/v3/ticker/price?symbol=ETHUSDT", b"/fapi/v1/depth?symbol=BTCUSDT&limit=5",
          b"/fapi/v1/exchangeInfo", b"/spot/api/v3/exchangeInfo",
          b"/api/v3/ticker/bookTicker?symbol=BTCUSDT"]


@pytest.mark.parametrize("target", CACHED)
def test_a_cache_hit_is_answered_before_the_chain_with_the_same_bytes_and_records(target):
    twins = Twins()
    twins.fill(get(target))
    out, channel = twins.same(get(target, b"User-Agent: ccxt/4.1 (+x)",
                                  b"Accept-Encoding: gzip", b"X-Bnproxy-Client: bot-7"))
    assert channel.fast_hits == 1
    assert b"\r\nX-Cache: HIT\r\n" in out
    line = named(twins.quick.service, "logger").output.lines[-1]
    assert b"source=cache cache=HIT" in line and b"bot=bot-7 ua=ccxt" in line


def test_misses_forwards_and_head_go_through_the_chain_alike():
    twins = Twins()
    target = b"/api/v3/depth?symbol=BTCUSDT&limit=5"
    _, channel = twins.same(get(target))  # a miss: forwarded by the chain
    assert channel.fast_hits == 0 and channel.fast_served == 1
    _, channel = twins.same(get(target, method=b"HEAD"), get(b"/api/v3/time"), get(target))
    assert channel.fast_hits == 1  # only the GET that hits


def test_keyed_public_requests_behave_as_on_the_chain():
    """A key Binance has not accepted yet goes upstream with it (the chain);
    once accepted, the keyed request is a hit like an anonymous one, and the
    access line names the key by its salted hash. No keyed head is kept."""
    twins = Twins()
    target = b"/api/v3/depth?symbol=BTCUSDT&limit=5"
    keyed = get(target, b"X-MBX-APIKEY: " + API_KEY)
    twins.fill(get(target))
    _, channel = twins.same(keyed)
    assert channel.fast_hits == 0  # not accepted yet: sent upstream with the key
    seen = twins.quick.upstream.seen[-1]
    assert seen.header(b"x-mbx-apikey") == API_KEY
    out, channel = twins.same(keyed)
    assert channel.fast_hits == 1 and b"\r\nX-Cache: HIT\r\n" in out
    assert b" key=- " not in named(twins.quick.service, "logger").output.lines[-1]
    signed = get(target + b"&timestamp=1&signature=ab", b"X-MBX-APIKEY: " + API_KEY)
    _, channel = twins.same(signed)
    assert channel.fast_hits == 0
    twins.same(get(target))
    heads = twins.quick.service.site.fast_heads
    assert len(heads) == 1  # the anonymous head only
    assert not any(API_KEY in raw or b"signature" in raw for raw in heads)


def test_a_client_the_allowlist_refuses_gets_the_chains_403():
    twins = Twins(peer=IPv4Address("TCP", "203.0.113.9", 5555))
    target = b"/api/v3/depth?symbol=BTCUSDT&limit=5"
    out, channel = twins.same(get(target), get(target))
    assert out.count(b"HTTP/1.1 403 Forbidden") == 2 and channel.fast_hits == 0
    assert named(twins.quick.service, "allowlist").denied == 2


def test_the_keep_alive_timeout_counts_from_the_last_hit():
    """Hits mark their time instead of moving the timer each: the idle
    connection still closes exactly the keep-alive timeout after the last."""
    h = Harness(middleware=chain(*DEFAULT, **SALTED), server=ServerLimits(keepalive_timeout=75))
    target = b"/api/v3/depth?symbol=BTCUSDT&limit=5"
    exchange(h, [get(target)], fast=False)  # fills the cache
    channel = h.service.site.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    channel.makeConnection(transport)
    for _ in range(3):  # a hit at 0, 0.2 and 0.4 s (within the cache's second)
        channel.dataReceived(get(target))
        h.clock.advance(0.2)
    assert channel.fast_hits == 3
    h.clock.advance(74.7)  # 75.1 s after the first hit, 74.9 after the last
    assert not transport.disconnecting
    h.clock.advance(0.2)
    assert transport.disconnecting
    assert transport.value().count(b"HTTP/1.1 200 OK") == 3



def test_an_answer_written_again_in_a_later_second_carries_that_seconds_date():
    """The last answer's bytes are kept for its second only."""
    h = Harness(middleware=chain(*DEFAULT, **SALTED))
    channel = h.service.site.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    channel.makeConnection(transport)
    answer = ProxyResponse(200, ((b"content-type", b"application/json"),), b"{}", "stream")
    dates = []
    for step in (0.3, 0.3, 0.6, 5):
        h.clock.advance(step)
        transport.clear()
        channel._write_answer(answer)
        dates.append(transport.value().split(b"\r\nDate: ")[1].split(b"\r\n")[0])
        assert transport.value().endswith(b"\r\nContent-Length: 2\r\n\r\n{}")
    assert dates == [datetimeToString(int(t)) for t in (h.clock.seconds() - 5.9,
                                                        h.clock.seconds() - 5.6,
                                                        h.clock.seconds() - 5,
                                                        h.clock.seconds())]
    assert dates[0] == dates[1] != dates[2] != dates[3]


# -- plugins ----------------------------------------------------------------------------

SEEN: list[str] = []


@implementer(IMiddleware)
class Seer:
    """Records every request it handles; declares nothing."""

    plain_next = True

    def __init__(self, name: str) -> None:
        self.name = name

    def handle(self, request, next):
        SEEN.append(f"{self.name} {request.path}")
        return next(request)


@implementer(IFastPathSafe)
class SafeSeer(Seer):
    """Declares that hits may skip its ``handle``."""

    def fast_handle(self, request, next):
        SEEN.append(f"{self.name} fast {request.path}")
        return next(request)


@implementer(IMiddlewareFactory)
class Factory:
    description = "test"

    def __init__(self, name, kind) -> None:
        self.name = name
        self.kind = kind

    def build(self, settings, context):
        return self.kind(self.name)


@pytest.fixture
def plugins(monkeypatch):
    found = {**discover(), "seer": Factory("seer", Seer), "safe": Factory("safe", SafeSeer)}
    monkeypatch.setattr(bnproxy.app, "discover", lambda: found)
    SEEN.clear()
    yield SEEN
    SEEN.clear()


def test_the_declaration_is_in_the_public_plugin_api():
    assert PublicIFastPathSafe is IFastPathSafe


@pytest.mark.parametrize("where", [0, 1, 3])
def test_a_plugin_that_does_not_declare_sees_every_request_before_the_answer(plugins, where):
    names = list(DEFAULT)
    names.insert(where, "seer")
    twins = Twins(chain(*names, **SALTED))
    target = b"/api/v3/depth?symbol=BTCUSDT&limit=5"
    twins.fill(get(target))
    plugins.clear()
    _, channel = twins.same(get(target), get(target))
    assert channel.fast_hits == 0
    assert plugins == ["seer /api/v3/depth"] * 4  # twice on each twin


def test_a_plugin_after_the_answer_sees_no_hit_on_either_path(plugins):
    twins = Twins(chain(*DEFAULT, "seer", **SALTED))  # after the cache: as ratelimit is
    target = b"/api/v3/depth?symbol=BTCUSDT&limit=5"
    twins.fill(get(target))
    assert plugins == ["seer /api/v3/depth"] * 2  # the misses reached it
    plugins.clear()
    _, channel = twins.same(get(target))
    assert channel.fast_hits == 1 and plugins == []


def test_a_plugin_that_declares_is_asked_through_fast_handle(plugins):
    twins = Twins(chain("safe", *DEFAULT, **SALTED))
    target = b"/api/v3/depth?symbol=BTCUSDT&limit=5"
    twins.fill(get(target))
    plugins.clear()
    slow, _ = exchange(twins.slow, [get(target)], fast=False)
    quick, channel = exchange(twins.quick, [get(target)], fast=True)
    assert quick == slow and channel.fast_hits == 1
    assert plugins == ["safe /api/v3/depth", "safe fast /api/v3/depth"]


@implementer(IFastPathSafe)
class Broken(Seer):
    def fast_handle(self, request, next):
        raise RuntimeError("broken")


def test_a_fast_handle_that_raises_leaves_the_request_to_the_chain(monkeypatch):
    found = {**discover(), "broken": Factory("broken", Broken)}
    monkeypatch.setattr(bnproxy.app, "discover", lambda: found)
    twins = Twins(chain("broken", *DEFAULT, **SALTED))
    target = b"/api/v3/depth?symbol=BTCUSDT&limit=5"
    twins.fill(get(target))
    out, channel = twins.same(get(target))
    assert channel.fast_hits == 0 and out.startswith(b"HTTP/1.1 200 OK")


# -- stream answers ---------------------------------------------------------------------

STREAMED = ["/api/v3/depth?symbol=BTCUSDT&limit=5", "/api/v3/depth?symbol=BTCUSDT&limit=20",
            "/api/v3/ticker/24hr?symbol=BTCUSDT", "/api/v3/ticker/bookTicker?symbol=BTCUSDT",
            "/api/v3/ticker/price?symbol=BTCUSDT",
            "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=30",
            "/fapi/v1/depth?symbol=BTCUSDT&limit=10", "/fapi/v1/ticker/24hr?symbol=BTCUSDT",
            "/fapi/v1/klines?symbol=BTCUSDT&interval=5m&limit=100", "/api/v3/exchangeInfo"]


@pytest.fixture
def rig():
    made = VirtualRig(chain=chain(*DEFAULT, **SALTED))
    named(made.service, "logger").output = Lines()
    for target in STREAMED:
        made.ask(target)

    def warm():
        answers = [made.ask(t) for t in STREAMED]
        return all(a.source == ("cache" if "exchangeInfo" in t else "stream")
                   and a.status == 200 for t, a in zip(STREAMED, answers, strict=True))
    made.until(warm, 60)
    yield made
    made.stop()


def raw(service, data, fast):
    """One connection's bytes for ``data``, without running the reactor (the
    streams' state stays as it is between the two paths)."""
    from twisted.internet.testing import StringTransport
    protocol = service.site.buildProtocol(PEER)
    protocol.fast = fast
    transport = StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    protocol.dataReceived(data)
    out = transport.value()
    protocol.connectionLost(Failure(ConnectionDone()))
    return out, protocol


def delta(before, after):
    """What happened between two records: the new access lines, and every
    counter's difference (unchanged ones left out)."""
    if isinstance(after, dict):
        before = before or {}
        out = {}
        for key, value in after.items():
            if key == "access":
                out[key] = value[len(before[key]):]
            elif key != "hit_ratio":
                changed = delta(before.get(key), value)
                if changed:
                    out[key] = changed
        return out
    if isinstance(after, (list, tuple)):
        before = before or [0] * len(after)
        return [delta(b, a) for b, a in zip(before, after, strict=True)]
    return after - (before or 0)


def test_stream_answers_are_answered_before_the_chain_with_the_same_bytes_and_records(rig):
    for target in STREAMED:
        same_on_both_paths(rig.service, target)


def same_on_both_paths(service, target):
    import re
    data = get(target.encode(), b"User-Agent: freqtrade/2025.1")
    start = records(service)
    slow, _ = raw(service, data, fast=False)
    middle = records(service)
    quick, channel = raw(service, data, fast=True)
    end = records(service)
    date = re.compile(rb"\r\nDate: [^\r\n]*")
    assert date.sub(b"", quick) == date.sub(b"", slow)
    assert channel.fast_hits == 1
    assert b"\r\nX-Bnproxy-Source: stream\r\n" in quick or b"\r\nX-Cache: HIT\r\n" in quick
    first, second = delta(start, middle), delta(middle, end)
    assert second == first
    assert first["access"] and first["ledger"]
    if b"X-Bnproxy-Source: stream" in quick:
        assert first["streams"][0] == 1  # served from a stream, counted once


# -- a real socket ----------------------------------------------------------------------

@pytest.mark.integration
def test_hits_pipelined_past_the_sockets_buffer_arrive_whole_and_in_order(tmp_path):
    """Answers sent at once while nothing is queued, and queued by the
    transport once the kernel's buffer is full: none is lost, cut or
    reordered."""
    import socket
    import time
    import urllib.request

    from processes import free_port, twistd

    port = free_port()
    with twistd("bnproxy", "--port", f"tcp:{port}:interface=127.0.0.1",
                "--simulated-exchange", port=port, cwd=str(tmp_path)):
        targets = [b"/api/v3/exchangeInfo", b"/api/v3/time"]
        deadline = time.monotonic() + 60
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v3/exchangeInfo") as r:
                body = r.read()
                if r.headers["X-Cache"] == "HIT":
                    break
            assert time.monotonic() < deadline, "exchangeInfo never held"
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(b"".join(get(targets[i % 100 == 99]) for i in range(200)))
            time.sleep(0.5)  # not reading yet: the socket's buffers fill up
            answers = s.makefile("rb")
            for i in range(200):
                status = answers.readline()
                assert status == b"HTTP/1.1 200 OK\r\n", i
                length = None
                while (line := answers.readline()) != b"\r\n":
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
                got = answers.read(length)
                if i % 100 == 99:
                    assert b"serverTime" in got
                else:
                    assert got == body


def test_a_keyed_request_for_a_stream_goes_upstream_until_its_key_is_accepted(rig):
    target = b"/api/v3/depth?symbol=BTCUSDT&limit=5"
    raw(rig.service, get(target), fast=True)  # the anonymous head is known public
    keyed = get(target, b"X-MBX-APIKEY: " + API_KEY)
    from twisted.internet.testing import StringTransport
    channel = rig.service.site.buildProtocol(PEER)
    transport = StringTransport(peerAddress=PEER)
    channel.makeConnection(transport)
    channel.dataReceived(keyed)
    assert channel.fast_hits == 0 and transport.value() == b""  # sent upstream, with its key
    rig.until(lambda: transport.value(), 30)
    assert b"\r\nX-Bnproxy-Source: upstream\r\n" in transport.value()
    assert named(rig.service, "streams").accepted_keys.accepted(API_KEY)
    out, channel = raw(rig.service, keyed, fast=True)
    assert channel.fast_hits == 1 and b"\r\nX-Bnproxy-Source: stream\r\n" in out
    line = named(rig.service, "logger").output.lines[-1]
    assert b" key=- " not in line and API_KEY not in line
