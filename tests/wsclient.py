"""A small autobahn client for tests: collects every message of one connection."""

from __future__ import annotations

import orjson
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint


class Collector(WebSocketClientProtocol):
    def onOpen(self):
        self.factory.opened.callback(self)

    def onMessage(self, payload, isBinary):
        self.factory.messages.append(orjson.loads(payload))
        waiters, self.factory.waiters = self.factory.waiters, []
        for w in waiters:
            w.callback(None)

    def onClose(self, wasClean, code, reason):
        self.factory.closed = True
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(reason))


async def connect(reactor, host: str, port: int, path: str) -> WebSocketClientFactory:
    factory = WebSocketClientFactory(f"ws://{host}:{port}{path}")
    factory.protocol = Collector
    factory.messages = []
    factory.waiters = []
    factory.closed = False
    factory.opened = defer.Deferred()
    await TCP4ClientEndpoint(reactor, host, port, timeout=5).connect(factory)
    factory.proto = await factory.opened.addTimeout(5, reactor)
    return factory


async def wait_for(reactor, factory, predicate, timeout: float = 5.0):
    """Wait until ``predicate(messages)`` holds; TimeoutError after ``timeout``."""
    deadline = reactor.seconds() + timeout
    while not predicate(factory.messages):
        if reactor.seconds() > deadline:
            raise TimeoutError(f"condition not met; {len(factory.messages)} messages")
        d = defer.Deferred()
        factory.waiters.append(d)
        d.addTimeout(0.2, reactor).addErrback(lambda f: None)
        await d


def connect_virtual(reactor, host: str, port: int, path: str,
                    timeout: float = 10.0) -> WebSocketClientFactory:
    """:func:`connect` on a ``bnproxy.testing.loopback.LoopbackReactor``:
    returns once open, in virtual time."""
    factory = WebSocketClientFactory(f"ws://{host}:{port}{path}", reactor=reactor)
    factory.protocol = Collector
    factory.messages = []
    factory.waiters = []
    factory.closed = False
    factory.opened = defer.Deferred()
    reactor.run_until(TCP4ClientEndpoint(reactor, host, port, timeout=5).connect(factory),
                      timeout)
    factory.proto = reactor.run_until(factory.opened, timeout)
    return factory
