"""Heartbeats: every ``heartbeat_interval`` seconds each instance puts its
id in the sorted set ``PREFIX:instances`` scored by Redis's own clock; live
instances are the ids seen within ``heartbeat_ttl`` (at least
``min_instances``: what the fallback divides the budget by).

A lower count is believed only once it has lasted ``heartbeat_ttl``: the
set refills within one heartbeat interval after Redis restarted empty (or
the key was removed), and meanwhile the fair shares ``budget / live`` must
not grow as if the others had left."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred

from bnproxy.cluster import validate
from bnproxy.cluster.connection import Connection
from bnproxy.cluster.keys import Keys


class Heartbeats:
    def __init__(self, conn: Connection, keys: Keys, instance_id: str, ttl: float,
                 min_instances: int, clock: Any = None) -> None:
        self._conn = conn
        self.keys = keys
        self.instance_id = instance_id
        self._ttl_ms = int(ttl * 1000)
        self.min_instances = max(1, min_instances)
        self.live = self.min_instances
        self._clock = clock
        self._counts: list[tuple[float, int]] = []  # (when, count) within the ttl

    def beat(self) -> Deferred:
        """Heartbeat; fires with the live instances."""
        def seen(count) -> int:
            live = max(self.min_instances, validate.count(count) or 1)
            if self._clock is not None:
                now = self._clock.seconds()
                self._counts = [(t, n) for t, n in self._counts
                                if now - t < self._ttl_ms / 1000] + [(now, live)]
                live = max(n for _, n in self._counts)
            self.live = live
            return self.live

        return self._conn.script("heartbeat", [self.keys.instances],
                                 [self.instance_id, self._ttl_ms],
                                 self._conn.background_deadline).addCallback(seen)

    def leave(self) -> Deferred:
        """Leave the set (at stop)."""
        return self._conn.call(lambda p: p.execute_command(
            "ZREM", self.keys.instances, self.instance_id), self._conn.background_deadline)
