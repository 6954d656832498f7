"""Bots for the websocket gateway tests: autobahn clients on a
``LoopbackReactor`` that keep every frame's bytes as received."""

from __future__ import annotations

import orjson
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint


class RawBot(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.factory.frames.append(payload)

    def onClose(self, wasClean, code, reason):
        self.factory.closed = (code, reason)
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(reason))

    # what tests read
    def send_json(self, message) -> None:
        self.sendMessage(orjson.dumps(message))

    @property
    def frames(self) -> list[bytes]:
        return self.factory.frames

    def data_frames(self) -> list[bytes]:
        """Frames that are not answers to control messages."""
        return [f for f in self.frames if not (f.startswith(b'{"result"')
                                               or f.startswith(b'{"error"'))]

    def answers(self) -> list[dict]:
        return [orjson.loads(f) for f in self.frames
                if f.startswith((b'{"result"', b'{"error"'))]


def open_bot(reactor, port: int, path: str, timeout: float = 10.0,
             host: str = "127.0.0.1") -> RawBot:
    """A bot connected to ``ws://host:port{path}`` in virtual time, open."""
    factory = WebSocketClientFactory(f"ws://{host}:{port}{path}", reactor=reactor)
    factory.protocol = RawBot
    factory.frames = []
    factory.closed = None
    factory.opened = defer.Deferred()
    factory.setProtocolOptions(autoPingInterval=None)
    reactor.run_until(TCP4ClientEndpoint(reactor, host, port, timeout=5).connect(factory),
                      timeout)
    return reactor.run_until(factory.opened, timeout)


def refused(reactor, port: int, path: str, timeout: float = 10.0) -> str:
    """Open ``path`` expecting the upgrade to be refused; the reason."""
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port}{path}", reactor=reactor)
    factory.protocol = RawBot
    factory.frames = []
    factory.closed = None
    factory.opened = defer.Deferred()
    reactor.run_until(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
                      .connect(factory), timeout)
    try:
        reactor.run_until(factory.opened, timeout)
    except ConnectionError as e:
        return str(e)
    raise AssertionError(f"{path} was not refused")
