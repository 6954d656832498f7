"""Bans in Redis: the hash ``PREFIX:bans`` (``EGRESS|SCOPE`` -> ``[until,
status, cause]``), written by a script that keeps the later ``until`` and
PUBLISHes the ban on the channel ``PREFIX:bans``; every instance subscribes
and applies it at once (``BanBook``). The hash is read at start and after
every reconnection. Every entry and notification read is validated
(``bnproxy.cluster.validate``): a malformed one is skipped, logged once."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from bnproxy.binance.limits import BAN_STATUSES, LONGEST_BAN_HEARD
from bnproxy.cluster import validate
from bnproxy.cluster.connection import Connection
from bnproxy.cluster.errors import SharedStateUnavailableError
from bnproxy.cluster.keys import Keys
from bnproxy.cluster.validate import ban_end, ban_status

_log = Logger(namespace="bnproxy.cluster")

Ban = tuple[float, int, str]  # until (epoch s), status, cause
BanCallback = Callable[[str, str, float, int, str], Any]


class BanBook:
    """Known bans, the later ``until`` winning; callbacks on every change."""

    def __init__(self, clock) -> None:
        self._clock = clock
        self.bans: dict[tuple[str, str], Ban] = {}
        self._callbacks: list[BanCallback] = []

    def on_ban(self, callback: BanCallback) -> None:
        self._callbacks.append(callback)

    def merge(self, egress: str, scope: str, until: float, status: int, cause: str) -> bool:
        """Record a ban; True (and callbacks called) if it is new or later."""
        key = (egress, scope)
        now = self._clock.seconds()
        if ban_end(until, now) is None or ban_status(status) is None:
            return False  # never Binance's (see bnproxy.cluster.validate)
        known = self.bans.get(key)
        if known is not None and known[0] >= until:
            return False
        if until <= now:
            return False
        self.bans[key] = (float(until), int(status), cause)
        for callback in list(self._callbacks):
            try:
                callback(egress, scope, float(until), int(status), cause)
            except Exception:
                _log.failure("a ban callback failed")
        return True

    def in_force(self) -> dict[tuple[str, str], Ban]:
        now = self._clock.seconds()
        for key in [k for k, b in self.bans.items() if b[0] <= now]:
            del self.bans[key]
        return dict(self.bans)

    def until(self, egress: str, scope: str) -> float:
        ban = self.bans.get((egress, scope))
        if ban is None:
            return 0.0
        if ban[0] <= self._clock.seconds():
            del self.bans[(egress, scope)]
            return 0.0
        return ban[0]


class Bans:
    """The bans' calls of ``ISharedState`` on a ``Connection``;
    ``write_back`` and ``read`` are their part of a resynchronisation."""

    def __init__(self, clock, conn: Connection, keys: Keys, instance_id: str,
                 rejected: validate.Rejected) -> None:
        self._clock = clock
        self._conn = conn
        self.keys = keys
        self.instance_id = instance_id
        self._rejected = rejected
        self.book = BanBook(clock)

    def _publish(self, egress: str, scope: str, until: float, status: int,
                 cause: str) -> Deferred:
        value = json.dumps([until, status, cause])
        message = json.dumps({"egress": egress, "scope": scope, "until": until,
                              "status": status, "cause": cause, "from": self.instance_id})
        return self._conn.script("set_ban", [self.keys.bans],
                                 [self.keys.field(egress, scope), repr(float(until)), value,
                                  self.keys.ban_channel, message,
                                  repr(self._clock.seconds()), repr(LONGEST_BAN_HEARD),
                                  *BAN_STATUSES],
                                 self._conn.background_deadline)

    def set_ban(self, egress: str, scope: str, until: float, status: int,
                cause: str) -> Deferred:
        checked = validate.ban_message(json.dumps(
            {"egress": egress, "scope": scope, "until": until, "status": status,
             "cause": str(cause)}), self._clock.seconds())
        if checked is None:  # never Binance's: not kept, not spread
            _log.error("refusing to record a malformed ban: {egress} {scope} until "
                       "{until!r} ({status!r})", egress=egress, scope=scope, until=until,
                       status=status)
            return succeed(None)
        egress, scope, until, status, cause = checked
        self.book.merge(egress, scope, until, status, cause)
        if not self._conn.ok():
            return succeed(None)  # written back when Redis returns
        return self._publish(egress, scope, until, status, cause).addCallbacks(
            lambda _: None, lambda f: f.trap(SharedStateUnavailableError) and None)

    def message(self, raw) -> None:
        """A notification on the channel."""
        m = validate.ban_message(raw, self._clock.seconds())
        if m is None:
            self._rejected("ban notification", f"channel {self.keys.ban_channel}: "
                           f"{str(raw)[:100]}")
            return
        self.book.merge(*m)

    def read(self) -> Deferred:
        """Merge the bans hash into the book."""
        def merge(flat) -> None:
            now = self._clock.seconds()
            for field, value in validate.pairs(flat):
                where = validate.ban_field(field)
                ban = validate.ban_entry(value, now)
                if where is None or ban is None:
                    self._rejected("ban entry", f"{self.keys.bans} {str(field)[:100]}")
                    continue
                self.book.merge(where[0], where[1], *ban)

        return self._conn.script("read_hash", [self.keys.bans], [],
                                 self._conn.background_deadline).addCallback(merge)

    async def write_back(self) -> None:
        """Every ban known here, written to Redis (the later ``until`` wins)."""
        for (egress, scope), (until, status, cause) in self.book.in_force().items():
            await self._publish(egress, scope, until, status, cause)

    def bans(self) -> Deferred:
        if not self._conn.ok():
            return succeed(self.book.in_force())
        return self.read().addCallbacks(
            lambda _: self.book.in_force(),
            lambda f: (f.trap(SharedStateUnavailableError), self.book.in_force())[1])
