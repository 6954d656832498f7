"""``--workers N``: N processes serving one listening socket.

The parent binds the socket (``bind_shared_socket``), serves on it itself
(``listen_on_socket``) and spawns N-1 children (``WorkerPool``) with
``reactor.spawnProcess``, passing the socket's descriptor through
``childFDs`` under the same number and naming it in ``BNPROXY_WORKER_FD``;
each child adopts it (``worker_fd_from_env`` then ``listen_on_socket``, i.e.
``reactor.adoptStreamPort``). The kernel hands each new connection to one of
the processes accepting on the socket.

Why a shared descriptor rather than SO_REUSEPORT: the socket is bound once,
by the parent, so a privileged port, a systemd socket (``deploy/bnproxy.socket``)
or an address fixed at start-up work unchanged; no other process of the same
user can bind into the group and steal connections; and a worker that dies
loses no queued connections (they wait in the one accept queue for the
others), where an SO_REUSEPORT socket's queue dies with its process. The
price: on Linux, processes blocked on one socket are woken together and the
quickest accepts, so the spread follows load rather than strict hashing;
under load each busy process accepts less, which is the balance wanted.

Each worker is a full proxy with its own caches and its own stream
connections (stream messages cost no weight); they share the weight budget,
bans and the ledger through the shared state, which is therefore required
when N > 1 (``check_workers``).

Shutdown, all together: SIGTERM to the parent starts its drain
(``bnproxy.service.ProxyService``), which first stops the pool
(``WorkerPool.stopService``: SIGTERM to every child, no more respawns), then
stops its own listening and closes its copy of the shared socket. Each child,
on its SIGTERM, stops listening and closes its copies, so within moments
nothing holds the socket and new connections are refused (none waits in an
accept queue nobody serves); every process then drains its in-flight requests
in parallel, each for ``drain_timeout`` seconds. A child still running
``KILL_GRACE`` seconds after that is killed: the whole stop is bounded by
``drain_timeout`` plus about a second. A child whose parent disappears stops
by itself (``watch_parent``: its stdin is a pipe from the parent); one that
exits while the pool runs is started again after ``respawn_delay``.
Under systemd, ``KillMode=mixed`` (deploy/bnproxy.service) leaves the
children's SIGTERM to the parent.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.logger import Logger

_log = Logger(namespace="bnproxy.workers")

WORKER_FD_ENV = "BNPROXY_WORKER_FD"
WORKER_INDEX_ENV = "BNPROXY_WORKER"
KILL_GRACE = 0.9  # seconds past the drain before a worker still running is killed


class WorkersConfigError(ValueError):
    """A ``--workers`` setting that cannot work (one line for start-up)."""


def check_workers(count: int, shared_state: str | None) -> None:
    """Refuse ``count`` workers that could not share one budget."""
    if count < 1:
        raise WorkersConfigError(f"--workers must be at least 1, not {count}")
    if count > 1 and not shared_state:
        raise WorkersConfigError(
            f"--workers {count} needs --shared-state redis://…: without it each worker "
            "would spend the whole weight budget on its own")


def bind_shared_socket(port: int, interface: str = "", backlog: int = 511) -> socket.socket:
    """A listening TCP socket (non-blocking, SO_REUSEADDR) for the workers."""
    family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((interface or ("::" if family == socket.AF_INET6 else "0.0.0.0"), port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def listen_on_socket(reactor, sock: socket.socket | int, factory) -> IListeningPort:
    """Serve ``factory`` on an already listening socket (an object or a
    descriptor; the caller keeps and closes its own copy)."""
    if isinstance(sock, int):
        probe = socket.socket(fileno=os.dup(sock))  # detects the family
        fd, family = sock, probe.family
        probe.close()
    else:
        fd, family = sock.fileno(), sock.family
    return reactor.adoptStreamPort(fd, family, factory)


def worker_fd_from_env(environ: Mapping[str, str] = os.environ) -> int | None:
    """The listening descriptor a parent passed to this worker, or None
    (this process is the parent, or runs alone)."""
    value = environ.get(WORKER_FD_ENV)
    return int(value) if value and value.isdigit() else None


class _ParentPipe(Protocol):
    def __init__(self, on_lost: Callable[[], object]) -> None:
        self._on_lost = on_lost

    def connectionLost(self, reason=None):
        try:
            self._on_lost()
        except error.ReactorNotRunning:
            pass  # stopping already (SIGTERM): the reactor closed the pipe itself


def watch_parent(reactor, on_lost: Callable[[], object]) -> None:
    """In a worker: call ``on_lost`` (say, ``reactor.stop``) when the parent
    goes away (the stdin pipe it holds reaches end of file). The pipe also
    closes when the reactor stops for another reason (SIGTERM): a
    ``ReactorNotRunning`` from ``on_lost`` then is expected and ignored."""
    from twisted.internet import stdio

    stdio.StandardIO(_ParentPipe(on_lost), stdin=0,  # type: ignore[call-arg]  # posix keywords
                     stdout=os.open(os.devnull, os.O_WRONLY), reactor=reactor)


class _Child(ProcessProtocol):
    def __init__(self, pool: WorkerPool, index: int) -> None:
        self.pool = pool
        self.index = index
        self.ended: defer.Deferred = defer.Deferred()

    def processEnded(self, reason):
        self.pool._ended(self, reason)
        self.ended.callback(None)


class WorkerPool(Service):
    """Runs ``count - 1`` worker processes beside this one (see the module
    docstring). ``sock``: the listening socket or its descriptor (a systemd
    socket, fd 3, works as it is); it must stay open while the pool runs
    (workers that exit are started again). ``argv``: the worker's command
    line (``argv[0]`` is run; ``sys.executable`` by default when ``argv[0]``
    is a script). ``drain_timeout``: the workers' own drain deadline; one
    still running ``KILL_GRACE`` seconds after it is killed."""

    name = "workers"

    def __init__(self, reactor, count: int, sock: socket.socket | int, argv: Sequence[str],
                 *, drain_timeout: float, env: Mapping[str, str] | None = None,
                 respawn_delay: float = 1.0) -> None:
        self._reactor = reactor
        self.count = count
        self._sock = sock
        self._argv = list(argv)
        self._env = dict(os.environ if env is None else env)
        self.drain_timeout = drain_timeout
        self.respawn_delay = respawn_delay
        self.children: dict[int, _Child] = {}
        self.transports: dict[int, Any] = {}  # IProcessTransport (its pid is not declared)
        self._stopping = False

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        for index in range(1, self.count):
            self._spawn(index)

    def _spawn(self, index: int) -> None:
        if self._stopping:
            return
        fd = self._sock if isinstance(self._sock, int) else self._sock.fileno()
        env = {**self._env, WORKER_FD_ENV: str(fd), WORKER_INDEX_ENV: str(index)}
        argv = self._argv
        executable = argv[0]
        if executable.endswith(".py") or not os.access(executable, os.X_OK):
            argv = [sys.executable, *argv]
            executable = sys.executable
        child = _Child(self, index)
        self.children[index] = child
        self.transports[index] = self._reactor.spawnProcess(
            child, executable, argv, env=env, childFDs={0: "w", 1: 1, 2: 2, fd: fd})
        _log.info("worker {index} started (pid {pid})", index=index,
                  pid=self.transports[index].pid)

    def _ended(self, child: _Child, reason) -> None:
        if self.children.get(child.index) is child:
            del self.children[child.index]
            self.transports.pop(child.index, None)
        if self._stopping:
            return
        _log.warn("worker {index} exited ({reason}); starting it again in {delay} s",
                  index=child.index, reason=reason.getErrorMessage(), delay=self.respawn_delay)
        self._reactor.callLater(self.respawn_delay, self._spawn, child.index)

    def pids(self) -> list[int]:
        return [t.pid for t in self.transports.values() if t.pid]

    def stopService(self) -> defer.Deferred:
        """SIGTERM to every worker at once (each stops accepting and drains);
        fires when all have exited (SIGKILL after ``drain_timeout`` +
        ``KILL_GRACE``)."""
        super().stopService()
        self._stopping = True
        children = list(self.children.values())
        for transport in list(self.transports.values()):
            try:
                transport.signalProcess("TERM")
            except error.ProcessExitedAlready:
                pass

        def kill() -> None:
            for transport in list(self.transports.values()):
                try:
                    transport.signalProcess("KILL")
                except error.ProcessExitedAlready:
                    pass

        timer = self._reactor.callLater(max(0.0, self.drain_timeout) + KILL_GRACE, kill)
        done = defer.gatherResults([c.ended for c in children])

        def finished(result):
            if timer.active():
                timer.cancel()
            return result

        return done.addBoth(finished)


__all__ = ["KILL_GRACE", "WORKER_FD_ENV", "WORKER_INDEX_ENV", "WorkerPool", "WorkersConfigError",
           "bind_shared_socket", "check_workers", "listen_on_socket", "watch_parent",
           "worker_fd_from_env"]
