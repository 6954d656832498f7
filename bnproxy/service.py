"""The proxy's lifecycle: listen, start, drain, stop.

``ProxyService(reactor, config, agent=None)`` assembles the proxy
(``bnproxy.app.build_proxy``) and runs it: middlewares that are services start
and stop with it; stopping drains (listeners close first, in-flight requests
get ``server.drain_timeout`` seconds, waited for on a Deferred fired by the
last of them, then the rest stops: stream connections close cleanly, logs
flush). A drained SIGTERM exits 0.

With ``--workers N`` every process drains at once: the parent's stop first
tells the workers (``WorkerPool``) and closes its copies of the shared
socket, so no process accepts after SIGTERM, and the parent's drain runs
beside theirs (see ``bnproxy.server.workers``).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet import task
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from bnproxy.app import build_proxy
from bnproxy.config.model import ProxyConfig
from bnproxy.config.reader import ConfigError

_log = Logger(namespace="bnproxy.service")

FLUSH_GRACE = 0.1  # seconds after the last in-flight answer, for its bytes to leave


class ProxyService(MultiService):
    """The proxy as a Twisted service. The assembled parts (``site``,
    ``handler``, ``middlewares``, ``upstream``, ``health``, ``readiness``,
    ``context``, …) are attributes, for tests and embedding."""

    def __init__(self, reactor: Any, config: ProxyConfig, agent: Any = None) -> None:
        super().__init__()
        self.proxy = proxy = build_proxy(config, reactor, agent)
        self.access_log = proxy.access_log
        if self.access_log is not None:
            self.access_log.setServiceParent(self)  # first in: stopped last, after the drain
        self.config = config
        self.reactor = reactor
        self.markets = proxy.markets
        self.endpoints = proxy.endpoints
        self.metrics = proxy.metrics
        self.upstream = proxy.upstream
        self.context = proxy.context
        self.middlewares = proxy.middlewares
        self.handler = proxy.handler
        self.forward = proxy.forward
        self.health = proxy.health
        self.readiness = proxy.readiness
        self.dashboard = proxy.dashboard
        self.site = proxy.site
        self.shared_state = proxy.shared_state
        if IService.providedBy(self.shared_state):  # stopped with the rest, after the drain
            self.shared_state.setServiceParent(self)
        for middleware in self.middlewares:
            if IService.providedBy(middleware):
                middleware.setServiceParent(self)
        self.dashboard.setServiceParent(self)
        self.ports: list[IListeningPort] = []
        self.shared_socket: Any = None  # --workers: the socket the workers share

    def listen(self, worker_fd: int | None = None) -> None:
        """Bind every configured endpoint now, before anything starts: a port
        in use or a bad endpoint is a ConfigError (one line), not a traceback
        after start-up. With ``--workers N`` the first endpoint (tcp) is one
        socket shared with the workers; a worker (``worker_fd``, from its
        parent) serves that socket only."""
        from bnproxy.server.workers import bind_shared_socket, listen_on_socket

        listen = list(self.config.listen)
        if worker_fd is not None:
            self.ports.append(listen_on_socket(self.reactor, worker_fd, self.site))
            # the port holds its own copy: with this one closed, the socket
            # closes here when the port stops listening (the drain)
            os.close(worker_fd)
            return
        if self.config.workers > 1 and listen:
            number, interface = _tcp(listen.pop(0))
            try:
                self.shared_socket = bind_shared_socket(number, interface)
            except OSError as e:
                raise ConfigError(f"cannot listen on tcp:{number}: {e.strerror}") from None
            self.ports.append(listen_on_socket(self.reactor, self.shared_socket, self.site))
        for description in listen:
            try:
                endpoint = serverFromString(self.reactor, description)
            except (ValueError, KeyError, IndexError, TypeError) as e:
                raise ConfigError(f"listen {description!r}: {e}") from None
            result: list[Any] = []
            endpoint.listen(self.site).addBoth(result.append)
            if not result:
                raise ConfigError(f"cannot listen on {description}: no answer from the endpoint")
            if isinstance(result[0], Exception) or hasattr(result[0], "getErrorMessage"):
                error = getattr(result[0], "value", result[0])
                for port in self.ports:
                    port.stopListening()
                raise ConfigError(f"cannot listen on {description}: {_reason(error)}")
            self.ports.append(result[0])

    def startService(self) -> None:
        super().startService()
        self.readiness.start()

    def stopService(self) -> Deferred:
        Service.stopService(self)
        self.readiness.stop()
        from bnproxy.server.workers import WorkerPool

        # --workers: every worker stops accepting and drains now, beside us
        workers = [maybeDeferred(s.stopService) for s in self
                   if isinstance(s, WorkerPool) and s.running]
        return Deferred.fromCoroutine(self._drain(workers))

    async def _drain(self, workers: list[Deferred]) -> None:
        await gatherResults([maybeDeferred(p.stopListening) for p in self.ports])
        if self.shared_socket is not None:  # the workers are stopping: nothing respawns
            self.shared_socket.close()
        limit = self.config.server.drain_timeout
        forward = self.forward
        if forward.inflight:
            _log.info("draining {n} request(s), at most {s:.0f} s", n=forward.inflight, s=limit)
            idle = forward.idle()
            timer = self.reactor.callLater(max(0.0, limit), idle.cancel)
            try:
                await idle
            except Exception:  # cancelled by the deadline
                _log.warn("drain deadline reached with {n} request(s) unfinished",
                          n=forward.inflight)
            if timer.active():
                timer.cancel()
            # The last answer was handed to its transport just now: give the
            # reactor a moment to write it out (the shutdown that follows drops
            # unsent bytes).
            await task.deferLater(self.reactor, FLUSH_GRACE, lambda: None)
        if workers:
            try:
                await gatherResults(workers, consumeErrors=True)
            except Exception:
                _log.failure("the workers did not stop cleanly")
        rest = [s for s in reversed(list(self)) if s.running]
        try:
            await gatherResults([maybeDeferred(s.stopService) for s in rest],
                                consumeErrors=True)
        except Exception:
            _log.failure("a service failed to stop cleanly")
        if not forward.inflight and getattr(self.reactor, "_exitSignal", None) == \
                signal.SIGTERM:
            # A drained SIGTERM is a clean stop: exit 0 (twistd would otherwise
            # re-raise the signal to report it as the cause of death).
            self.reactor._exitSignal = None


def _tcp(description: str) -> tuple[int, str]:
    """(port, interface) of a ``tcp:PORT[:interface=ADDR]`` endpoint (what
    ``--workers`` can share)."""
    kind, *parts = description.split(":")
    port, interface = None, ""
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep and port is None and key.isdigit():
            port = int(key)
        elif key == "port" and value.isdigit():
            port = int(value)
        elif key == "interface":
            interface = value
    if kind != "tcp" or port is None:
        raise ConfigError(f"--workers shares a tcp:PORT endpoint, not {description!r}")
    return port, interface


def _reason(error: Any) -> str:
    """``Address already in use`` rather than a CannotListenError's repr."""
    socket_error = getattr(error, "socketError", None)
    if socket_error is not None:
        return getattr(socket_error, "strerror", None) or str(socket_error)
    return str(error) or type(error).__name__
