"""The gateway's fast path keeps the gateway's promises: frames framed as
autobahn frames them, an upstream burst split as autobahn splits it (control
frames and partial frames included), stream messages routed and decoded as
before, and each bot receiving exactly the streams it holds in its framing
as bots subscribe, unsubscribe and switch framing (the cohorts)."""

from __future__ import annotations

import base64
import hashlib

import orjson
import pytest
from autobahn.websocket.protocol import PreparedMessage
from test_ws_gateway import GatewayRig
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from bnproxy.binance.streams import StreamPath, raw_data
from bnproxy.chain.interfaces import IStreamHub
from bnproxy.middleware.streams import manager as streams_manager
from bnproxy.server.websocket import Gateway, text_frame


@pytest.fixture
def rig():
    r = GatewayRig()
    yield r
    r.stop()


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_frame_is_the_bytes_autobahn_frames(size):
    payload = b"x" * size
    assert text_frame(payload) == PreparedMessage(payload, False, False, True).payloadHybi


class Recorder:
    """What ``_Protocol`` hands its connection (and its manager)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.pings = 0
        self.reads = 0
        self.manager = self

    def read_done(self) -> None:
        self.reads += 1

    def received(self, payload: bytes) -> None:
        self.messages.append(payload)

    def framed(self) -> None:
        self.pings += 1

    def opened(self, protocol) -> None:
        pass

    def closed(self, protocol) -> None:
        pass


def open_upstream() -> tuple[streams_manager._Protocol, Recorder, StringTransport]:
    factory = streams_manager.WebSocketClientFactory("ws://127.0.0.1:1/stream",
                                                     reactor=Clock())
    factory.protocol = streams_manager._Protocol
    factory.setProtocolOptions(autoPingInterval=None, maxFramePayloadSize=1 << 20)
    recorder = Recorder()
    factory.connection = recorder
    protocol = factory.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    key = next(line.split(b": ")[1] for line in transport.value().split(b"\r\n")
               if line.lower().startswith(b"sec-websocket-key"))
    accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11")
                              .digest())
    protocol.dataReceived(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
    transport.clear()
    return protocol, recorder, transport


def message(i: int, size: int = 40) -> bytes:
    return b'{"stream":"btcusdt@trade","data":{"t":%d,"p":"%s"}}' % (i, b"1" * size)


def test_an_upstream_burst_reaches_the_connection_whole_and_in_order_whatever_it_holds():
    protocol, recorder, transport = open_upstream()
    ping = b"\x89\x04ping"
    fragmented = b"\x01\x05" + message(5)[:5] + b"\x80" + bytes([len(message(5)) - 5]) + \
        message(5)[5:]
    big = message(6, 70000)
    non_ascii = '{"stream":"btcusdt@trade","data":{"p":"é"}}'.encode()
    stream = (text_frame(message(1)) + text_frame(message(2, 200)) + ping
              + text_frame(message(3)) + text_frame(message(4)) + fragmented + text_frame(big)
              + text_frame(non_ascii) + text_frame(message(7)))
    for cut in (7, 700, 70005):  # chunks end mid-header, mid-payload, anywhere
        stream_left = stream
        protocol2, recorder2, transport2 = open_upstream()
        while stream_left:
            protocol2.dataReceived(stream_left[:cut])
            stream_left = stream_left[cut:]
        assert recorder2.messages == [message(1), message(2, 200), message(3), message(4),
                                      message(5), big, non_ascii, message(7)], cut
        assert recorder2.pings == 1
        assert recorder2.reads == 1 + -(-len(stream) // cut)  # after every read (+ the 101)
        assert transport2.value().startswith(b"\x8a")  # the ping answered with a pong
    protocol.dataReceived(stream)
    assert len(recorder.messages) == 8 and recorder.pings == 1


def test_a_frame_over_the_size_limit_still_fails_the_connection():
    protocol, recorder, transport = open_upstream()
    transport.registerProducer(protocol, True)  # as a TCP transport has one
    protocol.maxFramePayloadSize = 100
    protocol.dataReceived(text_frame(message(1, 200)))
    assert recorder.messages == []
    assert transport.disconnecting  # autobahn failed the connection


@pytest.mark.parametrize("payload,expected", [
    (b'{"stream":"btcusdt@trade","data":{"p":"1"}}', ("btcusdt@trade", 33)),
    (b'{"stream":"!miniTicker@arr","data":[1,2]}', ("!miniTicker@arr", 35)),
    (b'{"data":{"p":"1"},"stream":"btcusdt@trade"}', None),
    (b'{"stream":"bt\\"c","data":{}}', None),
    (b'{"result":null,"id":1}', None),
    (b'{"stream":"btcusdt@trade","data":[1]', None),
])
def test_the_stream_name_is_read_from_binances_layout_only(payload, expected):
    assert streams_manager.split_combined(payload) == expected


def test_rest_responders_get_the_decoded_data_in_any_layout():
    from twisted.internet.testing import MemoryReactorClock

    from bnproxy.binance.markets import PRODUCTION

    manager = streams_manager.StreamManager(MemoryReactorClock(), PRODUCTION["spot"])
    got = []
    manager.ensure("btcusdt@trade", got.append)
    manager.ensure("ethusdt@trade", streams_manager.relay_only)
    relayed = []
    manager.relay = lambda name, payload: relayed.append(name)
    conn = manager.placed["btcusdt@trade"]
    for payload in (b'{"stream":"btcusdt@trade","data":{"p":"1"}}',
                    b'{"stream":"btcusdt@trade","data":{"p":"2"},"x":1}',
                    b'{"data":{"p":"3"},"stream":"btcusdt@trade"}',
                    b'{"stream":"ethusdt@trade","data":{"p":"4"}}'):
        conn.received(payload)
    assert got == [{"p": "1"}, {"p": "2"}, {"p": "3"}]
    assert manager.fresh("ethusdt@trade", 1.0)  # held for bots: seen, never decoded
    assert manager.messages == 4


def streams_of(frames: list[bytes]) -> set[str]:
    return {orjson.loads(f).get("s", "").lower() + "@" + orjson.loads(f).get("e", "")
            for f in frames}


def test_each_bot_receives_what_it_holds_in_its_framing_as_that_changes(rig):
    both = "/ws/btcusdt@trade/ethusdt@trade"
    a, b = rig.via_proxy(both), rig.via_proxy(both)
    combined = rig.via_proxy("/stream?streams=btcusdt@trade/ethusdt@trade")
    rig.until(lambda: all(streams_of(x.data_frames()) == {"btcusdt@trade", "ethusdt@trade"}
                          for x in (a, b)), 60)
    rig.until(lambda: len({orjson.loads(f)["stream"] for f in combined.data_frames()}) == 2,
              60)
    assert rig.gateway.health()["cohorts"] == 2  # a and b share one
    a.send_json({"method": "UNSUBSCRIBE", "params": ["ethusdt@trade"], "id": 1})
    rig.sleep(1)
    na, nb = len(a.data_frames()), len(b.data_frames())
    rig.until(lambda: len(a.data_frames()) > na + 3 and
              streams_of(b.data_frames()[nb:]) == {"btcusdt@trade", "ethusdt@trade"}, 60)
    assert streams_of(a.data_frames()[na:]) == {"btcusdt@trade"}
    b.send_json({"method": "SET_PROPERTY", "params": ["combined", True], "id": 2})
    rig.sleep(1)
    nb = len(b.frames)
    rig.until(lambda: len(b.frames) > nb + 3, 60)
    assert all(f.startswith(b'{"stream":"') for f in b.frames[nb:])
    assert rig.gateway.health()["cohorts"] == 2  # b joined the combined bot's
    a.sendClose(1000)
    b.sendClose(1000)
    combined.sendClose(1000)
    rig.sleep(2)
    assert rig.gateway.health()["cohorts"] == 0 and not rig.gateway.taps


def test_frames_written_at_once_keep_their_order_when_the_socket_fills():
    """A bot's frames are sent at once while nothing waits for its socket,
    and queue behind what waits once it is full: the bot reads every byte,
    in order, whatever the socket took each time."""
    import socket

    from twisted.internet import tcp
    from twisted.internet.testing import MemoryReactor

    from bnproxy.server.websocket import BotProtocol, Limits

    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport = tcp.Connection(ours, None, reactor=MemoryReactor())
    transport.connected = True

    class Gateway:
        limits = Limits(max_backlog=1 << 30)
    bot = BotProtocol()
    bot.gateway = Gateway()
    bot.state = bot.STATE_OPEN
    bot.transport, bot.direct = transport, True
    frames = [text_frame(bytes([65 + i % 26]) * (1000 + 7919 * i % 90000)) for i in range(300)]
    received = bytearray()
    for i, frame in enumerate(frames):
        assert bot.deliver(frame, len(frame))
        if i % 50 == 49:  # now and then the bot reads, and the reactor writes
            received += theirs.recv(1 << 22)
            transport.doWrite()
    for _ in range(10_000):  # until nothing is left to send (or the bytes are lost)
        if not transport.dataBuffer and not transport._tempDataLen:
            break
        transport.doWrite()
        try:
            received += theirs.recv(1 << 22)
        except BlockingIOError:
            pass
    while True:
        try:
            received += theirs.recv(1 << 22)
        except BlockingIOError:
            break
    assert bytes(received) == b"".join(frames)
    ours.close()
    theirs.close()


@implementer(IStreamHub)
class MemoryHub:
    """An ``IStreamHub`` in memory: ``read`` relays payloads as one upstream read."""

    def __init__(self) -> None:
        self.listeners: dict = {}
        self.after: list = []

    def stream_markets(self):
        return ("spot",)

    def subscribe(self, market, stream, listener, lost=None):
        self.listeners[stream] = listener
        return self

    def close(self) -> None:
        pass

    def after_read(self, callback) -> None:
        self.after.append(callback)

    def read(self, *payloads: bytes) -> None:
        for payload in payloads:
            self.listeners["btcusdt@trade"](payload)
        for callback in self.after:
            callback()


class Written(StringTransport):
    """A bot's transport noting, in a log shared by the bots, who was written when."""

    def __init__(self, name: str, log: list[str]) -> None:
        super().__init__()
        self.name, self.log = name, log

    def write(self, data: bytes) -> None:
        self.log.append(self.name)
        super().write(data)


def memory_bot(gateway: Gateway, transport: StringTransport, combined: bool = True):
    bot = gateway.build(StreamPath("spot", None, combined, ("btcusdt@trade",)), "10.0.0.1", None)
    bot.transport, bot.state = transport, bot.STATE_OPEN
    bot.onOpen()
    return bot


def test_a_reads_frames_are_written_to_bots_as_soon_as_the_read_is_relayed():
    hub, clock = MemoryHub(), Clock()
    gateway = Gateway(clock, hub)
    transport = StringTransport()
    memory_bot(gateway, transport)
    hub.listeners["btcusdt@trade"](message(1))
    hub.listeners["btcusdt@trade"](message(2))
    assert transport.value() == b""  # queued while the read is relayed
    for callback in hub.after:
        callback()
    assert transport.value() == text_frame(message(1)) + text_frame(message(2))
    assert not clock.getDelayedCalls()  # nothing left for the end of the turn
    hub.listeners["btcusdt@trade"](message(3))  # a frame from outside a read
    clock.advance(0)
    assert transport.value().endswith(text_frame(message(3)))


def test_no_bot_is_always_written_last_in_a_burst():
    """A burst goes to a cohort's bots one ``send`` after another; the bot
    written last waits for all the others. Who goes first turns, so over as
    many bursts as bots each bot is first once and last once, and each still
    receives every frame once, in order."""
    hub, log = MemoryHub(), []
    gateway = Gateway(Clock(), hub)
    transports = {f"bot{i}": Written(f"bot{i}", log) for i in range(5)}
    for transport in transports.values():
        memory_bot(gateway, transport)
    assert gateway.health()["cohorts"] == 1
    bursts = []
    for i in range(5):
        log.clear()
        hub.read(message(2 * i), message(2 * i + 1))
        bursts.append(list(log))
    assert all(sorted(b) == sorted(transports) for b in bursts)  # one write per bot and burst
    assert {b[0] for b in bursts} == set(transports)
    assert {b[-1] for b in bursts} == set(transports)
    every = b"".join(text_frame(message(i)) for i in range(10))
    assert all(t.value() == every for t in transports.values())


def test_no_cohort_is_always_written_last_in_a_burst():
    """Bots in other framings (other cohorts) are not always behind the
    first cohort's: the cohorts take turns too."""
    hub, log = MemoryHub(), []
    gateway = Gateway(Clock(), hub)
    raw, combined = Written("raw", log), Written("combined", log)
    memory_bot(gateway, raw, combined=False)
    memory_bot(gateway, combined, combined=True)
    firsts = []
    for i in range(4):
        log.clear()
        hub.read(message(i))
        assert sorted(log) == ["combined", "raw"]
        firsts.append(log[0])
    assert set(firsts) == {"raw", "combined"}
    assert combined.value() == b"".join(text_frame(message(i)) for i in range(4))
    assert raw.value() == b"".join(text_frame(raw_data("btcusdt@trade", message(i)))
                                   for i in range(4))


def test_bots_joining_and_leaving_between_bursts_are_each_written_once_a_burst():
    hub, log = MemoryHub(), []
    gateway = Gateway(Clock(), hub)
    transports = {f"bot{i}": Written(f"bot{i}", log) for i in range(6)}
    bots = {name: memory_bot(gateway, t) for name, t in list(transports.items())[:3]}
    firsts = []
    for i, name in enumerate(list(transports)[3:]):
        log.clear()
        hub.read(message(i))
        assert sorted(log) == sorted(bots)
        firsts.append(log[0])
        bots[name] = memory_bot(gateway, transports[name])  # joins
        gateway.closed(bots.pop(sorted(bots)[0]))  # and one leaves
    assert len(set(firsts)) > 1
    log.clear()
    hub.read(message(9))
    assert sorted(log) == sorted(bots)
