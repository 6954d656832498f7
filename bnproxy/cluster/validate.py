"""What comes out of Redis, checked before it is used.

Anyone who can reach the Redis can write its keys and publish on its
channel: every ban entry and notification is parsed here (types, a finite
end no later than Binance's longest ban plus a margin, status 418 or 429),
every count is a non-negative integer. A malformed value is skipped and
logged once per key (``Rejected``); it never stops the others from being
used.
"""

from __future__ import annotations

import json
import math
from typing import Any

from twisted.logger import Logger

from bnproxy.binance.limits import BAN_STATUSES, LONGEST_BAN_HEARD

_log = Logger(namespace="bnproxy.cluster")

Ban = tuple[float, int, str]  # until (epoch s), status, cause
CAUSE_MAX = 200
NAME_MAX = 300  # an egress label or a ban scope
COUNT_MAX = 10**15


def ban_end(until: Any, now: float) -> float | None:
    """``until`` as a ban's end (epoch seconds), or None unless it is a
    finite number no later than ``now`` plus the longest ban Binance gives
    (and the margin). A ban that has ended is valid (and simply not in force)."""
    if isinstance(until, bool) or not isinstance(until, int | float):
        return None
    until = float(until)
    if not math.isfinite(until) or until > now + LONGEST_BAN_HEARD:
        return None
    return until


def ban_status(status: Any) -> int | None:
    if isinstance(status, bool) or not isinstance(status, int) or status not in BAN_STATUSES:
        return None
    return status


def _name(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > NAME_MAX:
        return None
    return value


def ban_entry(raw: Any, now: float) -> Ban | None:
    """A value of the bans hash, ``[until, status, cause]``, or None."""
    try:
        value = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(value, list) or len(value) != 3:
        return None
    until, status = ban_end(value[0], now), ban_status(value[1])
    if until is None or status is None or not isinstance(value[2], str):
        return None
    return until, status, value[2][:CAUSE_MAX]


def ban_field(field: Any) -> tuple[str, str] | None:
    """A field of the bans hash, ``EGRESS|SCOPE``, or None."""
    if not isinstance(field, str):
        return None
    egress, sep, scope = field.partition("|")
    if not sep or _name(egress) is None or _name(scope) is None:
        return None
    return egress, scope


def ban_message(raw: Any, now: float) -> tuple[str, str, float, int, str] | None:
    """A ban notification, ``{"egress", "scope", "until", "status",
    "cause"}``, as ``(egress, scope, until, status, cause)``, or None."""
    try:
        m = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if not isinstance(m, dict):
        return None
    egress, scope = _name(m.get("egress")), _name(m.get("scope"))
    until, status = ban_end(m.get("until"), now), ban_status(m.get("status"))
    cause = m.get("cause", "")
    if egress is None or scope is None or until is None or status is None \
            or not isinstance(cause, str):
        return None
    return egress, scope, until, status, cause[:CAUSE_MAX]


def count(value: Any) -> int | None:
    """A counter read from Redis (bytes, str or int) as a non-negative
    integer, or None."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not value.isdigit() or len(value) > 15:
            return None
        return int(value)
    if isinstance(value, int) and 0 <= value < COUNT_MAX:
        return value
    return None


def pairs(flat: Any) -> list[tuple[Any, Any]]:
    """A flat ``[field, value, field, value, …]`` reply (or a dict) as pairs."""
    if isinstance(flat, dict):
        return list(flat.items())
    if not isinstance(flat, list | tuple):
        return []
    return list(zip(flat[0::2], flat[1::2]))


class Rejected:
    """Logs each malformed key once (at most ``limit`` remembered)."""

    def __init__(self, limit: int = 1024) -> None:
        self._seen: set[str] = set()
        self._limit = limit

    def __call__(self, what: str, key: str) -> None:
        key = str(key)[:NAME_MAX]
        if key in self._seen or len(self._seen) > self._limit:
            return
        self._seen.add(key)
        if len(self._seen) > self._limit:
            _log.warn("more than {n} malformed values in Redis: no more are logged",
                      n=self._limit)
            return
        _log.warn("ignoring a malformed {what} in Redis: {key!r} (written by another "
                  "client? see the README on protecting Redis)", what=what, key=key)
