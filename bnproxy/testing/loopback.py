"""A virtual-time reactor whose TCP connections reach in-memory servers.

``LoopbackReactor`` is a :class:`twisted.internet.testing.MemoryReactorClock`
(``callLater`` runs only when the test advances the clock) in which a
``connectTCP`` to a port that something ``listenTCP``-ed on is wired to that
server with in-memory transports (``twisted.test.iosim``): a real
``twisted.web`` Agent, autobahn websocket client or ``HostnameEndpoint``
talks to a real server factory, byte for byte, with no socket and no wall
clock. :meth:`LoopbackReactor.advance` delivers pending bytes, moves time,
and delivers again; :meth:`run_until` advances in steps until a Deferred
fires or a condition holds, with a deadline in virtual seconds.

Importable without pytest; used by the stream differential tests (the
proxy's stream client against the fake exchange in memory).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IHostnameResolver, IReactorPluggableNameResolver
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test import iosim
from zope.interface import implementer

__all__ = ["LoopbackReactor", "TimeoutError"]


class TimeoutError(AssertionError):
    """A condition did not hold within its virtual deadline."""


@implementer(IHostnameResolver)
class _LoopbackResolver:
    """Every name is 127.0.0.1 (an IP literal is itself)."""

    def resolveHostName(self, receiver, hostName, portNumber=0,
                        addressTypes=None, transportSemantics="TCP"):
        import ipaddress

        try:
            host = str(ipaddress.IPv4Address(hostName))
        except ValueError:
            host = "127.0.0.1"
        receiver.resolutionBegan(None)
        receiver.addressResolved(IPv4Address("TCP", host, portNumber))
        receiver.resolutionComplete()
        return receiver


@implementer(IReactorPluggableNameResolver)
class LoopbackReactor(MemoryReactorClock):
    """See the module docstring."""

    def __init__(self, start: float = 0.0) -> None:
        """``start``: the clock's first reading (an epoch time, for code
        that takes ``seconds()`` as the time of day)."""
        super().__init__()
        self.rightNow = start
        self.nameResolver = _LoopbackResolver()
        self.servers: dict[int, Any] = {}
        self.pumps: list[iosim.IOPump] = []
        self._next_port = 40000
        self._next_client_port = 50000

    def installNameResolver(self, resolver):
        old, self.nameResolver = self.nameResolver, resolver
        return old

    # -- listening ------------------------------------------------------------------
    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port == 0:
            self._next_port += 1
            port = self._next_port
        listening = super().listenTCP(port, factory, backlog, interface)
        self.servers[port] = factory
        reactor = self

        stop = listening.stopListening

        def stop_listening():
            reactor.servers.pop(port, None)
            return stop()
        listening.stopListening = stop_listening
        return listening

    # -- connecting -----------------------------------------------------------------
    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        connector = super().connectTCP(host, port, factory, timeout, bindAddress)
        server_factory = self.servers.get(port)
        if server_factory is None:
            self.callLater(0, factory.clientConnectionFailed, connector,
                           Failure(ConnectionRefusedError(f"nothing on port {port}")))
            return connector
        self._next_client_port += 1
        client_addr = IPv4Address("TCP", "127.0.0.1", self._next_client_port)
        server_addr = IPv4Address("TCP", host, port)
        server = server_factory.buildProtocol(client_addr)
        client = factory.buildProtocol(server_addr)
        if server is None or client is None:
            return connector
        server_transport = iosim.FakeTransport(server, True, server_addr, client_addr)
        client_transport = iosim.FakeTransport(client, False, client_addr, server_addr)
        pump = iosim.connect(server, server_transport, client, client_transport, greet=False,
                             clock=self)
        self.pumps.append(pump)

        def disconnect():
            client_transport.loseConnection()
        connector.disconnect = disconnect
        self.flush()
        return connector

    # -- time -----------------------------------------------------------------------
    def flush(self) -> None:
        """Deliver every waiting byte, both ways, until nothing moves."""
        for _ in range(10_000):
            MemoryReactorClock.advance(self, 0)  # calls due now
            moved = False
            for pump in list(self.pumps):
                if pump.pump(advanceClock=False):
                    moved = True
                if (pump.clientIO.disconnected and pump.serverIO.disconnected
                        and pump in self.pumps):  # a nested flush may have removed it
                    self.pumps.remove(pump)
            if not moved:
                return

    def advance(self, amount: float) -> None:
        self.flush()
        super().advance(amount)
        self.flush()

    def run_until(self, condition: Callable[[], bool] | defer.Deferred, timeout: float = 30.0,
                  step: float = 0.05) -> Any:
        """Advance in ``step`` seconds until ``condition()`` holds (or the
        Deferred fires: its result is returned, its failure raised).
        :class:`TimeoutError` after ``timeout`` virtual seconds."""
        results: list = []
        if isinstance(condition, defer.Deferred):
            condition.addBoth(results.append)

            def check() -> bool:
                return bool(results)
        else:
            check = condition
        self.flush()
        deadline = self.seconds() + timeout
        while not check():
            if self.seconds() >= deadline:
                raise TimeoutError(f"not met within {timeout} virtual seconds")
            self.advance(step)
        if results:
            if isinstance(results[0], Failure):
                results[0].raiseException()
            return results[0]
        return None

    def sleep(self, seconds: float, step: float = 0.05) -> None:
        """Let ``seconds`` of virtual time pass."""
        end = self.seconds() + seconds
        while self.seconds() < end - 1e-9:
            self.advance(min(step, end - self.seconds()))
