"""The connection lifecycle: stopping while a connection is being made (the
server accepted it, the preparation waits for an answer) stops cleanly."""

from __future__ import annotations

import pytest_twisted
from test_cluster import FAST, sleep, wait_until
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import LogLevel, globalLogPublisher

from bnproxy.cluster.redis_state import RedisSharedState


class Silent(Protocol):
    """Accepts and never answers: every connection stays in preparation."""

    def connectionMade(self):
        self.factory.connected.append(self)

    def connectionLost(self, reason=None):
        self.factory.lost.append(self)


@pytest_twisted.ensureDeferred
async def test_stop_during_a_connect_is_clean():
    from twisted.internet import reactor
    factory = Factory.forProtocol(Silent)
    factory.connected, factory.lost = [], []
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    errors: list = []

    def observe(event):
        if event.get("log_failure") is not None or event.get("log_level") in (
                LogLevel.error, LogLevel.critical):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        state = RedisSharedState(reactor, f"redis://:pw@127.0.0.1:{port.getHost().port}/0",
                                 **{**FAST, "connect_timeout": 5.0})
        started = state.start()
        await wait_until(lambda: len(factory.connected) == 2, "both connections accepted")
        await state.stop()  # both are waiting for AUTH's answer
        assert started.called  # whoever waited for the start is answered
        await wait_until(lambda: len(factory.lost) == 2, "both connections closed")
        await sleep(0.3)  # no reconnection follows
        assert len(factory.connected) == 2
        assert errors == [], [e.get("log_failure") or e.get("log_format") for e in errors]
    finally:
        globalLogPublisher.removeObserver(observe)
        await port.stopListening()


def test_importing_the_shared_state_leaves_the_global_reactor_alone():
    import subprocess
    import sys
    code = ("import sys, bnproxy.cluster.redis_state; "
            "assert 'twisted.internet.reactor' not in sys.modules; "
            "assert 'txredisapi' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest_twisted.ensureDeferred
async def test_a_redis_that_stops_answering_is_left_and_reconnected(redis_server, monkeypatch):
    """Every wait on Redis has a deadline: a command connection whose reply
    is later than the reply timeout is dropped (replies never pile up on a
    stopped Redis), and a new one is made once Redis answers again."""
    from bnproxy.cluster import connection

    monkeypatch.setattr(connection, "REPLY_TIMEOUT", 0.5)
    state = RedisSharedState(_reactor(), redis_server.url, **{**FAST, "connect_timeout": 0.5})
    await state.start()
    try:
        first = state.conn.proto
        assert first is not None
        redis_server.pause()
        try:
            first.ping().addErrback(lambda f: None)  # a command Redis will not answer
            await wait_until(lambda: state.conn.proto is not first, "the stuck connection left")
        finally:
            redis_server.resume()
        await wait_until(lambda: state.conn.proto is not None and state.status == "ok",
                         "reconnected")
        assert state.conn.proto is not first
    finally:
        await state.stop()


def _reactor():
    from twisted.internet import reactor
    return reactor
