"""The access log's own writer: lines buffered in memory, written in blocks.

One ``write(line)`` per answer appends to a list (no system call); the
lines go out together at least once a second (a ``LoopingCall`` on the
injected clock), as soon as 64 KiB are waiting, and when the service stops,
as nginx's ``access_log … buffer=64k flush=1s``. The target is standard
output (what Docker and journald collect), a file (reopened by ``reopen()``,
which ``reopen_on_sigusr1`` calls on SIGUSR1 for logrotate), or nothing.

twistd's own log keeps operational events (``bnproxy.server.oplog``): an
access line through twistd's per-event observer cost 40 % of a bare answer.
"""

from __future__ import annotations

import signal
import sys
import weakref
from typing import IO, Any, cast

from twisted.application.service import Service
from twisted.internet import task
from twisted.logger import Logger
from zope.interface import implementer

from bnproxy.chain.interfaces import IAccessLog, IProblemReporter

_log = Logger(namespace="bnproxy.server.accesslog")

FLUSH_SECONDS = 1.0
FLUSH_BYTES = 64 * 1024
STDOUT = "-"
NONE = "none"


def _stdout() -> IO[bytes]:
    """The process's standard output as bytes. Taken when the writer is made:
    twistd later replaces ``sys.stdout`` with a logging file."""
    stream: Any = getattr(sys.stdout, "buffer", None) or getattr(sys.__stdout__, "buffer", None)
    return cast(IO[bytes], stream)


@implementer(IAccessLog, IProblemReporter)
class AccessLogWriter(Service):
    """Buffers access lines and writes them out in blocks.

    ``target``: ``"-"`` (standard output) or a file path (opened for
    appending, created if missing); ``stream``: a binary stream to use instead
    (tests). ``reopen()`` closes and reopens the file (after logrotate moved
    it); for standard output it only flushes.
    """

    def __init__(self, clock, target: str = STDOUT, stream: IO[bytes] | None = None,
                 flush_seconds: float = FLUSH_SECONDS, flush_bytes: int = FLUSH_BYTES) -> None:
        self.target = target
        self._clock = clock
        self._path = None if stream is not None or target == STDOUT else target
        self._out: IO[bytes] = stream if stream is not None else (
            _stdout() if self._path is None else self._open(self._path))
        self._limit = flush_bytes
        self._lines: list[bytes] = []
        self._size = 0
        self._every = flush_seconds
        self._flusher = task.LoopingCall(self.flush)
        self._flusher.clock = clock
        self.lost = 0  # lines that could not be written (a full disk, a closed pipe)
        self._failing: str | None = None  # the last write's error, until one succeeds

    @staticmethod
    def _open(path: str) -> IO[bytes]:
        return open(path, "ab")

    def write(self, line: bytes) -> None:
        self._lines.append(line)
        self._size += len(line)
        if self._size >= self._limit:
            self.flush()

    def flush(self) -> None:
        """Write out every waiting line, in one write."""
        if not self._lines:
            return
        block = b"".join(self._lines)
        n = len(self._lines)
        self._lines = []
        self._size = 0
        try:
            self._out.write(block)
            self._out.flush()
            self._failing = None
        except (OSError, ValueError) as e:  # ValueError: the stream was closed
            self.lost += n
            self._failing = str(e)[:200]
            _log.error("access log {target}: {n} line(s) lost: {e}", target=self.target,
                       n=n, e=e)

    def health_problems(self) -> list[tuple[str, str, str]]:
        """``degraded`` while the last write failed (lines are being lost)."""
        if self._failing is None:
            return []
        return [("access-log", "degraded", f"access log {self.target} failing, "
                 f"{self.lost} line(s) lost: {self._failing}")]

    def reopen(self) -> None:
        """Flush, then reopen the file by its path (logrotate has moved the
        old one away); standard output is only flushed."""
        self.flush()
        if self._path is None:
            return
        try:
            fresh = self._open(self._path)
        except OSError as e:
            _log.error("access log {path} cannot be reopened, still writing to the old "
                       "file: {e}", path=self._path, e=e)
            return
        old, self._out = self._out, fresh
        old.close()
        _log.info("access log {path} reopened", path=self._path)

    def startService(self) -> None:
        super().startService()
        if not self._flusher.running:
            self._flusher.start(self._every, now=False)

    def stopService(self) -> Any:
        if self._flusher.running:
            self._flusher.stop()
        self.flush()
        if self._path is not None:
            self._out.close()
        return super().stopService()


def open_access_log(clock, target: str | None = STDOUT, **kwargs: Any) -> AccessLogWriter | None:
    """The writer for ``--access-log``: ``-`` (standard output, the default),
    ``none`` (no access log: returns None) or a file path. Raises
    ``OSError`` when the file cannot be opened."""
    if target is None or target.lower() == NONE:
        return None
    return AccessLogWriter(clock, target or STDOUT, **kwargs)


_reopened: weakref.WeakSet[Any] = weakref.WeakSet()


def reopen_on_sigusr1(reactor, *files: Any) -> None:
    """On SIGUSR1, call ``reopen()`` of each of ``files`` (``postrotate: kill
    -USR1``): access log writers, and the operational log's
    ``twisted.python.logfile.LogFile`` when there is one (twistd installs its
    own SIGUSR1 handler only for the observer it makes itself). None is
    skipped.

    Call from the twistd plugin or the tac file (only they touch process-wide
    state); repeated calls add files. The handler only schedules the reopens
    in the reactor thread (``callFromThread``): a signal may arrive in the
    middle of a write."""
    for f in files:
        if f is not None:
            _reopened.add(f)

    def handler(signum, frame) -> None:
        for f in list(_reopened):
            reactor.callFromThread(f.reopen)

    signal.signal(signal.SIGUSR1, handler)
