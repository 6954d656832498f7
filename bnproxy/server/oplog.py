"""twistd's operational log: text or JSON Lines, filtered by level.

``operational_observer(format, level, stream)`` makes the observer;
``install_operational_log(service, format, level, logfile)`` makes twistd use
it for a service returned by a plugin's ``makeService`` (twistd asks its
``Application`` for an ``ILogObserver`` component before it falls back to
its own text observer, and creates that application only after
``makeService`` returned: the component is set when twistd adds the service
to it). A ``.tac`` file sets it itself::

    application.setComponent(ILogObserver, operational_observer("json", "info", sys.stdout))

In JSON every line is one object (no record separator, unlike
``twisted.logger.jsonFileLogObserver``'s RFC 7464 output, which ``jq``
refuses): ``time`` (UTC, ISO 8601), ``level``, ``namespace``, ``msg`` (the
formatted message) and, for a failure, ``traceback``.
"""

from __future__ import annotations

import sys
import time
from typing import IO, Any

import orjson
from twisted.application.service import IService
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    textFileLogObserver,
)
from twisted.python.components import Componentized

LEVELS = ("debug", "info", "warn", "error")
_ALIASES = {"warning": "warn", "critical": "error"}


def parse_level(name: str) -> LogLevel:
    """``debug``, ``info``, ``warn`` (or ``warning``), ``error``; ValueError
    otherwise."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in LEVELS:
        raise ValueError(f"log level {name!r}: expected one of {', '.join(LEVELS)}")
    return LogLevel.levelWithName(key)


def event_as_json(event: dict[str, Any]) -> str:
    """One log event as one line of JSON."""
    when = event.get("log_time") or time.time()
    namespace = event.get("log_namespace")
    if not namespace or namespace == "log_legacy":  # twisted.python.log.msg / err
        namespace = event.get("log_system") or "-"
    record: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(when))
        + f".{int(when % 1 * 1000):03d}Z",
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": namespace,
        "msg": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        try:
            record["traceback"] = failure.getTraceback()
        except Exception:
            record["traceback"] = repr(failure)
    return orjson.dumps(record, default=repr).decode() + "\n"


def operational_observer(fmt: str = "text", level: str = "info",
                         stream: IO[str] | None = None) -> ILogObserver:
    """An observer writing events at ``level`` or above to ``stream`` (default
    standard output) as twistd's text lines (``fmt="text"``) or one JSON object
    per line (``"json"``)."""
    out = stream if stream is not None else sys.stdout
    if fmt == "json":
        observer: ILogObserver = FileLogObserver(out, event_as_json)
    elif fmt == "text":
        observer = textFileLogObserver(out)
    else:
        raise ValueError(f"log format {fmt!r}: expected text or json")
    return FilteringLogObserver(
        observer, [LogLevelFilterPredicate(defaultLogLevel=parse_level(level))])


def twistd_log_stream(twistd_options: Any) -> IO[str] | None:
    """The stream twistd would log to, from its options (``--logfile``,
    ``--nodaemon``): standard output, a ``LogFile`` (rotated as twistd
    rotates it), or None when twistd logs elsewhere (``--syslog``), where it
    is best left to do so."""
    from twisted.python.logfile import LogFile

    options = twistd_options or {}
    if options.get("syslog"):
        return None
    name = options.get("logfile") or ("-" if options.get("nodaemon", True) else "twistd.log")
    if name == "-":
        return sys.stdout
    return LogFile.fromFullPath(name)


def install_operational_log(service: IService, fmt: str = "text", level: str = "info",
                            stream: IO[str] | None = None) -> ILogObserver:
    """Make twistd log through ``operational_observer(fmt, level, stream)``
    once ``service`` (what ``makeService`` returns) is added to twistd's
    Application: the observer becomes the Application's ``ILogObserver``
    component, which twistd's ``AppLogger.start`` uses instead of its own
    (an explicit ``twistd --logger`` still wins). Returns the observer."""
    observer = operational_observer(fmt, level, stream)
    attach = service.setServiceParent

    def set_service_parent(parent: Any) -> Any:
        if isinstance(parent, Componentized):  # twistd's Application
            parent.setComponent(ILogObserver, observer)
        return attach(parent)

    service.setServiceParent = set_service_parent  # type: ignore[method-assign]
    return observer
